import { decrypt } from 'eciesjs';
import { describe, expect, test } from 'vitest';
import { openSealedSecrets } from '../../../src/code/sealedSecrets.js';
import type { WorkerCode } from '../../../src/code/workerCode.js';
import { ServiceError } from '../../../src/errors.js';
import { seal, unseal } from '../../../src/secrets/sealedValue.js';
import { sealingKeyOf, sealingUserData, UnsealError } from '../../../src/secrets/sealing.js';
import { deriveSealingKey } from '../../../src/secrets/sealingKey.js';

const key = deriveSealingKey(new Uint8Array(32).fill(1));
const other = deriveSealingKey(new Uint8Array(32).fill(2));

// Why a sealed value does not open, or its plaintext.
const opened = (sealed: string, name = 'API_KEY', with_ = key) => {
  try {
    return unseal(with_.secretKey, with_.keyId, name, sealed);
  } catch (error) {
    if (error instanceof UnsealError) return `fails: ${error.reason}`;
    throw error;
  }
};

describe('sealed values', () => {
  test('the same master secret gives the same sealing key; another gives another', () => {
    expect(deriveSealingKey(new Uint8Array(32).fill(1))).toEqual(key);
    expect(other.keyId).not.toBe(key.keyId);
    expect(key.publicKey).toHaveLength(33);
    expect(key.keyId).toMatch(/^[0-9a-f]{16}$/);
  });

  test('open to their plaintext, and are ECIES that eciesjs itself opens (the name inside)', () => {
    const sealed = seal(key.publicKey, key.keyId, 'API_KEY', 'sk-live-ünïcode');
    expect(sealed).toMatch(new RegExp(`^sealed:v1:${key.keyId}:[A-Za-z0-9+/]+=*$`));
    expect(opened(sealed)).toBe('sk-live-ünïcode');
    const inner = Buffer.from(sealed.split(':')[3]!, 'base64');
    expect(JSON.parse(Buffer.from(decrypt(key.secretKey, inner)).toString())).toEqual({
      name: 'API_KEY',
      value: 'sk-live-ünïcode',
    });
  });

  test('refuse another key id, a changed byte, another binding name and a broken armor, each by name', () => {
    const sealed = seal(key.publicKey, key.keyId, 'API_KEY', 'secret');
    expect(opened(sealed, 'API_KEY', other)).toBe('fails: another key');
    const bytes = Buffer.from(sealed.split(':')[3]!, 'base64');
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 1;
    expect(opened(`sealed:v1:${key.keyId}:${bytes.toString('base64')}`)).toBe('fails: tampered');
    expect(opened(sealed, 'OTHER_NAME')).toBe('fails: another binding');
    expect(opened('sealed:v1:nothex:abc')).toBe('fails: malformed');
  });

  test('the sealing key goes into user_data and is read back from it; other user data names none', () => {
    expect(sealingKeyOf(sealingUserData(key))).toEqual({ keyId: key.keyId, publicKey: Buffer.from(key.publicKey) });
    expect(sealingKeyOf(Buffer.from('{"total_memory":1}'))).toBeUndefined();
    expect(sealingKeyOf(Buffer.from([0xff]))).toBeUndefined();
    expect(sealingKeyOf(undefined)).toBeUndefined();
  });
});

describe('openSealedSecrets', () => {
  const codeWith = (bindings: WorkerCode['settings']['bindings']): WorkerCode => ({
    format: 'modules',
    modules: [],
    settings: { compatibilityDate: undefined, compatibilityFlags: undefined, bindings },
  });
  const failure = (fn: () => unknown) => {
    try {
      fn();
      return undefined;
    } catch (error) {
      expect(error).toBeInstanceOf(ServiceError);
      const { code, status, data } = error as ServiceError;
      return { code, status, data };
    }
  };
  const on = {
    state: 'on',
    keyId: key.keyId,
    publicKey: key.publicKey,
    open: (name: string, sealed: string) => unseal(key.secretKey, key.keyId, name, sealed),
  } as const;

  test('opens sealed secret_text bindings and leaves plain text, other secrets and code without any as they are', () => {
    const code = codeWith([
      { name: 'TOKEN', type: 'secretText', value: seal(key.publicKey, key.keyId, 'TOKEN', 'abc') },
      { name: 'PLAIN', type: 'secretText', value: 'not sealed' },
      { name: 'LOOKS', type: 'text', value: seal(key.publicKey, key.keyId, 'LOOKS', 'x') },
    ]);
    const [token, plain, looks] = openSealedSecrets(code, on).settings.bindings;
    expect(token).toEqual({ name: 'TOKEN', type: 'secretText', value: 'abc' });
    expect(plain).toEqual(code.settings.bindings[1]);
    expect(looks).toEqual(code.settings.bindings[2]);
    const none = codeWith([{ name: 'A', type: 'text', value: 'a' }]);
    expect(openSealedSecrets(none, { state: 'off' })).toBe(none);
  });

  test('a value that does not open is a 400 naming the binding, never the value; no key here is a 503', () => {
    const sealed = seal(other.publicKey, other.keyId, 'TOKEN', 'the-plaintext');
    const code = codeWith([{ name: 'TOKEN', type: 'secretText', value: sealed }]);
    const refused = failure(() => openSealedSecrets(code, on));
    expect(refused).toEqual({
      code: 'SEALED_SECRET_INVALID',
      status: 400,
      data: { binding: 'TOKEN', reason: 'another key' },
    });
    expect(JSON.stringify(refused)).not.toContain('the-plaintext');
    expect(failure(() => openSealedSecrets(code, { state: 'off' }))).toMatchObject({
      code: 'SEALING_UNAVAILABLE',
      status: 503,
      data: { binding: 'TOKEN' },
    });
    expect(failure(() => openSealedSecrets(code, { state: 'unavailable', reason: 'KMS said no' }))).toMatchObject({
      data: { binding: 'TOKEN', reason: 'KMS said no' },
    });
  });

  test('more than 32 sealed secrets in one upload are refused before any is opened', () => {
    const many = Array.from({ length: 33 }, (_, i) => ({
      name: `S${i}`,
      type: 'secretText' as const,
      value: `sealed:v1:${key.keyId}:AAAA`,
    }));
    expect(failure(() => openSealedSecrets(codeWith(many), on))).toMatchObject({ code: 'SEALED_SECRET_INVALID' });
  });
});
