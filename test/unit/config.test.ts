import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, expectTypeOf, test } from 'vitest';
import { type Config, parseConfig, type Setting, settingNames, settings } from '../../src/config.js';
import { StartupError } from '../../src/errors.js';
import { projectRoot } from '../helpers/projectRoot.js';

describe('parseConfig', () => {
  test('gives the documented defaults for an empty environment', () => {
    const config = parseConfig({});
    expect(config).toMatchObject({
      port: 6000,
      host: '127.0.0.1',
      cgroupVersion: undefined,
      cgroupRoot: '/sys/fs/cgroup',
      cgroupPrefix: 'workerd',
      runtimePath: path.resolve('./runtime/'),
      attestationUrl: 'http://127.0.0.1:1300/attestation/raw',
      attestationKeyCheck: true,
      storageUrl: 'http://127.0.0.1:3000/load',
      executionTimeoutMs: 30_000,
      upstreamTimeoutMs: 5_000,
      maxBodyBytes: 1024 * 1024,
      maxCodeBytes: 10 * 1024 * 1024,
      maxResponseBytes: 1024 * 1024,
      allowPublicEgress: true,
      idleGcMs: 10_000,
      requestTimeoutMs: 10_000,
      keepAliveTimeoutMs: 5_000,
      maxConnections: 1_000,
      logLevel: 'info',
    });
    expect(config.workerdPath).toMatch(/workerd$/);
    expect(config.compatibilityDate).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });

  test('reads every variable by its documented name', () => {
    const config = parseConfig({
      PORT: '7000',
      ADMIN_PORT: '7001',
      ADMIN_HOST: '::1',
      CGROUP_VERSION: '2',
      CGROUP_PREFIX: 'pool_',
      RUNTIME_PATH: '/tmp/rt',
      EXECUTION_TIMEOUT_MS: '1500',
      ALLOW_PUBLIC_EGRESS: 'false',
      IDLE_GC_MS: '0',
      REQUEST_TIMEOUT_MS: '2000',
      KEEP_ALIVE_TIMEOUT_MS: '1000',
      MAX_CONNECTIONS: '64',
    });
    expect(config).toMatchObject({
      port: 7000,
      adminPort: 7001,
      adminHost: '::1',
      cgroupVersion: 2,
      cgroupPrefix: 'pool_',
      runtimePath: '/tmp/rt',
      executionTimeoutMs: 1500,
      allowPublicEgress: false,
      idleGcMs: 0,
      requestTimeoutMs: 2000,
      keepAliveTimeoutMs: 1000,
      maxConnections: 64,
    });
  });

  test('gives a Config every field of the table, an unset optional one too', () => {
    expect(Object.keys(parseConfig({}))).toEqual(Object.keys(settings));
  });

  test("turns a variable's text into its field's value: paths resolved, flags split, cgroup version a number", () => {
    expect(
      parseConfig({
        RUNTIME_PATH: 'rt',
        LEDGER_PATH: 'ledger/usage.sqlite',
        COMPATIBILITY_FLAGS: 'nodejs_compat, streams_enable_constructors',
        CGROUP_VERSION: '1',
        ATTESTATION_KEY_CHECK: '0',
      }),
    ).toMatchObject({
      runtimePath: path.resolve('rt'),
      ledgerPath: path.resolve('ledger/usage.sqlite'),
      compatibilityFlags: ['nodejs_compat', 'streams_enable_constructors'],
      cgroupVersion: 1,
      attestationKeyCheck: false,
    });
    expect(parseConfig({ COMPATIBILITY_FLAGS: ',' }).compatibilityFlags).toEqual([]);
  });

  test('types each field by what its setting parses to', () => {
    expectTypeOf<Config['cgroupVersion']>().toEqualTypeOf<1 | 2 | undefined>();
    expectTypeOf<Config['compatibilityFlags']>().toEqualTypeOf<readonly string[]>();
    expectTypeOf<Config['adminPort']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<Config['ledgerPath']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<Config['attestationKeyCheck']>().toEqualTypeOf<boolean>();
    expectTypeOf<Config['runtimePath']>().toEqualTypeOf<string>();
  });

  test('has no operator listener unless ADMIN_PORT is set, and on loopback when it is', () => {
    expect(parseConfig({}).adminPort).toBeUndefined();
    expect(parseConfig({ ADMIN_PORT: '6001' })).toMatchObject({ adminPort: 6001, adminHost: '127.0.0.1' });
  });

  test('refuses an ADMIN_PORT that is the public PORT, naming it', () => {
    expect(() => parseConfig({ PORT: '6000', ADMIN_PORT: '6000' })).toThrow(/ADMIN_PORT: must differ from PORT/);
  });

  test('refuses SEALING_KMS_BLOB without SEALING_KMS_REGION, naming the region', () => {
    expect(() => parseConfig({ SEALING_KMS_BLOB: '/app/sealing.blob' })).toThrow(
      /^Invalid configuration:\n {2}SEALING_KMS_REGION: must be set with SEALING_KMS_BLOB/,
    );
  });

  test('treats an empty value as unset', () => {
    expect(parseConfig({ PORT: '' }).port).toBe(6000);
  });

  test.each([
    ['PORT', 'seventy'],
    ['PORT', '70000'],
    ['CGROUP_VERSION', '3'],
    ['CGROUP_PREFIX', '../x'],
    ['EXECUTION_TIMEOUT_MS', '0'],
    ['ATTESTATION_URL', 'not a url'],
    ['STORAGE_URL', 'ftp://127.0.0.1/load'],
    ['ALLOW_PUBLIC_EGRESS', 'maybe'],
    ['LOG_LEVEL', 'loud'],
    ['RUNTIME_PATH', '/tmp/run\ntime'],
    ['IDLE_GC_MS', '-1'],
    ['IDLE_GC_MS', '3000000000'],
    ['EXECUTION_TIMEOUT_MS', '3000000000'],
  ])('refuses a bad %s (%s) with a message that names it', (name, value) => {
    expect(() => parseConfig({ [name]: value })).toThrow(StartupError);
    expect(() => parseConfig({ [name]: value })).toThrow(name);
  });
});

describe('the settings, declared in src/config.ts', () => {
  const read = (file: string) => readFile(path.join(projectRoot, file), 'utf8');

  // The doc's Default column: the table's shownDefault where it has one, else the default as code, else "unset".
  const shownDefault = (setting: Setting) =>
    setting.shownDefault ?? (setting.default === undefined ? 'unset' : `\`${setting.default}\``);

  test("docs/configuration.md lists each in the table's order, and nothing else, with its default", async () => {
    const rows = (await read('docs/configuration.md')).matchAll(/^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*?) \|/gm);
    expect([...rows].map(([, name, shown]) => [name, shown])).toEqual(
      Object.values(settings).map((setting: Setting) => [setting.env, shownDefault(setting)]),
    );
  });

  // .env.example's lines `NAME=value` and commented-out ones `# NAME=value`.
  const assignments = async () =>
    [...(await read('.env.example')).matchAll(/^(#? ?)([A-Z][A-Z0-9_]*)=(.*)$/gm)].map(([, comment, name, value]) => ({
      commented: comment !== '',
      name: name!,
      value: value!,
    }));

  test('.env.example names each once, and nothing else', async () => {
    expect((await assignments()).map((line) => line.name).sort()).toEqual([...settingNames].sort());
  });

  // So that copying it to .env changes nothing: other values are examples, and are commented out.
  test('.env.example sets a variable only to its default', async () => {
    const defaults = new Map(Object.values(settings).map((setting: Setting) => [setting.env, setting.default]));
    for (const { name, value } of (await assignments()).filter((line) => !line.commented)) {
      expect(`${name}=${value}`).toBe(`${name}=${defaults.get(name)}`);
    }
  });

  test('.env.example shows only values the service accepts, its examples too', async () => {
    const all = Object.fromEntries((await assignments()).map((line) => [line.name, line.value]));
    expect(() => parseConfig(all)).not.toThrow();
  });
});
