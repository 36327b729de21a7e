import os from 'node:os';

/**
 * Address blocks user code may never connect to, on top of what workerd's "public" already
 * leaves out (loopback, private and link-local ranges). Each one either leads back to this machine
 * on some hosts, or wraps an IPv4 address (loopback included) in an IPv6 one that "public" lets
 * through, or is not the public internet at all.
 */
export const deniedRanges: readonly string[] = [
  // "This network": on Linux, a connection to 0.0.0.0 reaches the machine itself.
  '0.0.0.0/8',
  // Shared address space (carrier-grade NAT): the provider's network, not the internet.
  '100.64.0.0/10',
  // IETF protocol assignments, benchmarking and documentation ranges (TEST-NET-1, -2, -3).
  '192.0.0.0/24',
  '192.0.2.0/24',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  // Multicast, reserved and broadcast.
  '224.0.0.0/3',
  // IPv4-compatible (::127.0.0.1) and IPv4-mapped (::ffff:127.0.0.1) IPv6 addresses.
  '::/96',
  '::ffff:0:0/96',
  // NAT64 (64:ff9b::7f00:1 is 127.0.0.1 through a translator) and its local-use prefix.
  '64:ff9b::/96',
  '64:ff9b:1::/48',
  // Teredo and 6to4 (2002:7f00:1:: wraps 127.0.0.1) carry IPv4 addresses inside IPv6 ones.
  '2001::/32',
  '2002::/16',
  // IPv6 documentation range, unique-local and multicast addresses.
  '2001:db8::/32',
  'fc00::/7',
  'ff00::/8',
];

/**
 * The machine's own addresses, on every interface, as single-address blocks: with the service
 * listening on a public address, one of them would lead user code back to it. Read once, at
 * start-up; an address added to an interface later is not among them.
 */
export function hostAddressBlocks(interfaces = os.networkInterfaces()): string[] {
  const blocks = new Set<string>();
  for (const addresses of Object.values(interfaces)) {
    for (const address of addresses ?? []) {
      // A link-local IPv6 address carries its zone (fe80::1%eth0), which CIDR notation cannot.
      const bare = address.address.split('%')[0]!;
      blocks.add(`${bare}/${address.family === 'IPv4' ? 32 : 128}`);
    }
  }
  return [...blocks];
}

/** Everything user code's egress must deny: the fixed ranges and this machine's own addresses. */
export function egressDenyList(): string[] {
  return [...deniedRanges, ...hostAddressBlocks()];
}
