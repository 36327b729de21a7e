import os from 'node:os';
import { describe, expect, test } from 'vitest';
import { deniedRanges, egressDenyList, hostAddressBlocks } from '../../src/code/egress.js';

describe('the egress deny list', () => {
  test('holds every address of every interface of this machine, as single-address blocks', () => {
    const own = Object.values(os.networkInterfaces()).flatMap((addresses) => addresses ?? []);
    expect(own.length).toBeGreaterThan(0);
    const denied = egressDenyList();
    for (const address of own) {
      expect(denied).toContain(`${address.address.split('%')[0]}/${address.family === 'IPv4' ? 32 : 128}`);
    }
  });

  test('drops the zone of a link-local address, which CIDR notation cannot carry', () => {
    const blocks = hostAddressBlocks({
      eth0: [
        { address: '192.0.2.2', family: 'IPv4', netmask: '255.255.255.0', mac: '', internal: false, cidr: null },
        {
          address: 'fe80::1%eth0',
          family: 'IPv6',
          netmask: 'ffff:ffff:ffff:ffff::',
          mac: '',
          internal: false,
          cidr: null,
          scopeid: 2,
        },
      ],
    });
    expect(blocks).toEqual(['192.0.2.2/32', 'fe80::1/128']);
  });

  test.each([
    ['the IPv4-compatible form of 127.0.0.1', '::/96'],
    ['6to4, which wraps 127.0.0.1 as 2002:7f00:1::', '2002::/16'],
    ['NAT64, which wraps 127.0.0.1 as 64:ff9b::7f00:1', '64:ff9b::/96'],
    ['the benchmarking range', '198.18.0.0/15'],
    ['TEST-NET-2', '198.51.100.0/24'],
    ['TEST-NET-3', '203.0.113.0/24'],
    ['"this network", where 0.0.0.0 is the machine itself', '0.0.0.0/8'],
  ])('denies %s', (_name, block) => {
    expect(deniedRanges).toContain(block);
  });
});
