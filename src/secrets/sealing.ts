// What the service knows of sealing without loading its cryptography: whether it is on, the armor
// of a sealed value, and the sealing key as attestation documents carry it in user_data.

/** The start of every sealed value: sealed:v1:<key id>:<base64>. */
export const armorPrefix = 'sealed:v1:';

/**
 * Whether this instance can open sealed secrets. On, it holds the key's id and public key, and a
 * function that opens a sealed value of a binding (throwing an UnsealError).
 */
export type Sealing =
  | { readonly state: 'off' }
  | { readonly state: 'unavailable'; readonly reason: string }
  | {
      readonly state: 'on';
      readonly keyId: string;
      readonly publicKey: Uint8Array;
      open(name: string, sealed: string): string;
    };

/** No KMS settings: sealed secrets are off. */
export const sealingOff: Sealing = { state: 'off' };

/** Why a sealed value does not open; the binding's name goes with it, never the value. */
export type UnsealFailure = 'another key' | 'malformed' | 'tampered' | 'another binding';

export class UnsealError extends Error {
  override readonly name = 'UnsealError';
  constructor(readonly reason: UnsealFailure) {
    super(`the sealed value does not open: ${reason}`);
  }
}

/** Whether a binding's value is sealed (and so must be opened), by its prefix alone. */
export function isSealed(value: string): boolean {
  return value.startsWith(armorPrefix);
}

/** What the attestation document's user_data carries of the sealing key: its id and public key, as JSON. */
export function sealingUserData(key: { readonly keyId: string; readonly publicKey: Uint8Array }): Uint8Array {
  return Buffer.from(
    JSON.stringify({ sealing: { key_id: key.keyId, public_key: Buffer.from(key.publicKey).toString('hex') } }),
  );
}

/** The sealing key an attestation document's user_data names, if it names one. */
export function sealingKeyOf(userData: Uint8Array | undefined): { keyId: string; publicKey: Uint8Array } | undefined {
  if (!userData) return undefined;
  try {
    const { sealing } = JSON.parse(Buffer.from(userData).toString('utf8')) as {
      sealing?: { key_id?: unknown; public_key?: unknown };
    };
    const keyId = sealing?.key_id;
    const publicKey = sealing?.public_key;
    if (typeof keyId !== 'string' || !/^[0-9a-f]{16}$/.test(keyId)) return undefined;
    if (typeof publicKey !== 'string' || !/^0[23][0-9a-f]{64}$/.test(publicKey)) return undefined;
    return { keyId, publicKey: Buffer.from(publicKey, 'hex') };
  } catch {
    return undefined;
  }
}
