import { describe, expect, test } from 'vitest';
import { maxModules, parseWorkersUpload } from '../../src/code/workersUpload.js';
import { bundle, esModule } from '../helpers/uploads.js';

type Parts = Array<[string, string | Blob, string?]>;
const metadata = JSON.stringify({ main_module: 'index.js' });
const parse = async (parts: Parts) => {
  const { bytes, contentType } = await bundle(parts);
  return parseWorkersUpload(bytes, contentType);
};
// wrangler sends the metadata as a file part of JSON, not as a plain field.
const metadataFile = (value: object) => new Blob([JSON.stringify(value)], { type: 'application/json' });

describe('a Workers upload with main_module', () => {
  test('becomes typed modules, the main one first, named as uploaded (folders and all)', async () => {
    const code = await parse([
      ['metadata', metadataFile({ main_module: 'index.js' })],
      ['./0a1b2c-add.wasm', new Blob([new Uint8Array([0, 97, 115, 109])], { type: 'application/wasm' })],
      ['data.json', new Blob(['{}'], { type: 'application/json' })],
      ['note.txt', new Blob(['hi'], { type: 'text/plain' })],
      ['blob.bin', new Blob(['\u0001'], { type: 'application/octet-stream' })],
      ['lib/greet.cjs', new Blob(['module.exports = 1'], { type: 'application/javascript' })],
      ['index.js', esModule('export default {}')],
    ]);
    expect(code.format).toBe('modules');
    if (code.format !== 'modules') return;
    expect(code.modules.map((module) => [module.name, module.type])).toEqual([
      ['index.js', 'esModule'],
      ['0a1b2c-add.wasm', 'wasm'],
      ['data.json', 'json'],
      ['note.txt', 'text'],
      ['blob.bin', 'data'],
      ['lib/greet.cjs', 'commonJsModule'],
    ]);
    expect(code.modules[3]!.content.toString()).toBe('hi');
  });

  test('leaves source maps out of the worker', async () => {
    const code = await parse([
      ['metadata', metadata],
      ['index.js', esModule('export default {}')],
      ['index.js.map', new Blob(['{}'], { type: 'application/source-map' })],
    ]);
    expect(code.format === 'modules' && code.modules.map((module) => module.name)).toEqual(['index.js']);
  });

  test('takes the compatibility date and flags, and accepts the fields that change nothing here', async () => {
    const code = await parse([
      [
        'metadata',
        metadataFile({
          main_module: 'index.js',
          compatibility_date: '2022-01-01',
          compatibility_flags: ['nodejs_compat'],
          usage_model: 'standard',
          logpush: false,
          tags: ['a'],
          observability: { enabled: true },
        }),
      ],
      ['index.js', esModule('export default {}')],
    ]);
    expect(code.settings).toMatchObject({ compatibilityDate: '2022-01-01', compatibilityFlags: ['nodejs_compat'] });
  });

  test("takes the limits it asks for: Workers' cpu_ms and this runtime's memory_mb", async () => {
    const code = await parse([
      ['metadata', metadataFile({ main_module: 'index.js', limits: { cpu_ms: 50, memory_mb: 128, subrequests: 5 } })],
      ['index.js', esModule('export default {}')],
    ]);
    expect(code.settings.limits).toEqual({ cpuMs: 50, memoryMb: 128 });
  });

  test('gives plain_text, secret_text and json bindings their values', async () => {
    const code = await parse([
      [
        'metadata',
        metadataFile({
          main_module: 'index.js',
          bindings: [
            { name: 'GREETING', type: 'plain_text', text: 'hello' },
            { name: 'API_KEY', type: 'secret_text', text: 's3cret' },
            { name: 'SETTINGS', type: 'json', json: { depth: [1, 2] } },
          ],
        }),
      ],
      ['index.js', esModule('export default {}')],
    ]);
    expect(code.settings.bindings).toEqual([
      { name: 'GREETING', type: 'text', value: 'hello' },
      { name: 'API_KEY', type: 'secretText', value: 's3cret' },
      { name: 'SETTINGS', type: 'json', value: '{"depth":[1,2]}' },
    ]);
  });
});

describe('a Workers upload with body_part (a service worker)', () => {
  test('is the script, with the parts its bindings name as WebAssembly, text and data', async () => {
    const code = await parse([
      [
        'metadata',
        metadataFile({
          body_part: 'script',
          bindings: [
            { name: 'ADD', type: 'wasm_module', part: 'add' },
            { name: 'PAGE', type: 'text_blob', part: 'page' },
            { name: 'BYTES', type: 'data_blob', part: 'bytes' },
          ],
        }),
      ],
      ['script', new Blob(["addEventListener('fetch', () => {})"], { type: 'application/javascript' })],
      ['add', new Blob([new Uint8Array([0, 97, 115, 109])], { type: 'application/wasm' })],
      ['page', new Blob(['<p>hi</p>'], { type: 'text/plain' })],
      ['bytes', new Blob([new Uint8Array([255])], { type: 'application/octet-stream' })],
    ]);
    expect(code.format).toBe('service-worker');
    if (code.format !== 'service-worker') return;
    expect(code.script.toString()).toContain('addEventListener');
    expect(code.settings.bindings.map((binding) => [binding.name, binding.type])).toEqual([
      ['ADD', 'wasmModule'],
      ['PAGE', 'textBlob'],
      ['BYTES', 'dataBlob'],
    ]);
  });
});

describe('what a Workers upload cannot be', () => {
  test.each<[string, Parts, RegExp]>([
    ['no metadata part', [['index.js', esModule('')]], /no "metadata" part/],
    [
      'a limit that is not a positive whole number',
      [
        ['metadata', JSON.stringify({ main_module: 'index.js', limits: { cpu_ms: 0.5 } })],
        ['index.js', esModule('')],
      ],
      /limits\.cpu_ms: /,
    ],
    [
      'metadata that is not JSON',
      [
        ['metadata', '{'],
        ['index.js', esModule('')],
      ],
      /not JSON/,
    ],
    [
      'neither main_module nor body_part',
      [
        ['metadata', '{}'],
        ['index.js', esModule('')],
      ],
      /neither "main_module" nor "body_part"/,
    ],
    [
      'both main_module and body_part',
      [
        ['metadata', JSON.stringify({ main_module: 'index.js', body_part: 'index.js' })],
        ['index.js', esModule('')],
      ],
      /both/,
    ],
    [
      'a missing main module',
      [
        ['metadata', JSON.stringify({ main_module: 'app.js' })],
        ['index.js', esModule('')],
      ],
      /"app\.js" is not one of the modules/,
    ],
    [
      'a main module that is not an ES module',
      [
        ['metadata', metadata],
        ['index.js', new Blob([''], { type: 'text/plain' })],
      ],
      /must be an ES module/,
    ],
    [
      'a module name with a control character',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        ['a\u0007b.js', esModule('')],
      ],
      /is not allowed: must not contain control characters/,
    ],
    [
      'a module name of more than 256 characters',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        [`${'a'.repeat(257)}.js`, esModule('')],
      ],
      /is not allowed/,
    ],
    [
      'a part used twice',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        ['index.js', esModule('')],
      ],
      /appears twice/,
    ],
    [
      'an unknown content type',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        ['x.png', new Blob([''], { type: 'image/png' })],
      ],
      /content type "image\/png"/,
    ],
    [
      'a module sent as a plain field',
      [
        ['metadata', metadata],
        ['index.js', 'export default {}'],
      ],
      /no content type/,
    ],
    [
      'a compatibility date that is not a date',
      [
        ['metadata', JSON.stringify({ main_module: 'index.js', compatibility_date: 'yesterday' })],
        ['index.js', esModule('')],
      ],
      /compatibility_date: must be a date/,
    ],
    [
      'a binding part that is not there',
      [
        ['metadata', JSON.stringify({ body_part: 's', bindings: [{ name: 'PAGE', type: 'text_blob', part: 'page' }] })],
        ['s', new Blob([''], { type: 'application/javascript' })],
      ],
      /names part "page", which is not one of the parts/,
    ],
    [
      'a service worker binding that is not a JavaScript identifier',
      [
        ['metadata', JSON.stringify({ body_part: 's', bindings: [{ name: 'a-b', type: 'plain_text', text: 'x' }] })],
        ['s', new Blob([''], { type: 'application/javascript' })],
      ],
      /must be a JavaScript identifier/,
    ],
  ])('refuses %s (400)', async (_name, parts, detail) => {
    const parsing = parse(parts);
    await expect(parsing).rejects.toMatchObject({ code: 'INVALID_BUNDLE', status: 400 });
    await expect(parsing.catch((error: { data: string }) => error.data)).resolves.toMatch(detail);
  });

  test.each(['kv_namespace', 'r2_bucket', 'd1', 'durable_object_namespace', 'queue', 'service', 'ai'])(
    'refuses a %s binding it cannot provide, naming the binding and its type, never a secret value',
    async (type) => {
      const parsing = parse([
        [
          'metadata',
          metadataFile({
            main_module: 'index.js',
            bindings: [
              { name: 'API_KEY', type: 'secret_text', text: 's3cret' },
              { name: 'STORE', type, id: 'x' },
            ],
          }),
        ],
        ['index.js', esModule('')],
      ]);
      await expect(parsing).rejects.toMatchObject({
        code: 'UNSUPPORTED_BINDING',
        status: 400,
        data: { binding: 'STORE', type },
      });
      await expect(
        parsing.catch((error: unknown) => JSON.stringify(error, Object.getOwnPropertyNames(error))),
      ).resolves.not.toContain('s3cret');
    },
  );

  test('refuses Python with a 400 that says this runtime does not run it', async () => {
    const parsing = parse([
      ['metadata', JSON.stringify({ main_module: 'index.py' })],
      ['index.py', new Blob(['print(1)'], { type: 'text/x-python' })],
    ]);
    await expect(parsing).rejects.toMatchObject({
      code: 'UNSUPPORTED_LANGUAGE',
      status: 400,
      data: { part: 'index.py', language: 'Python' },
    });
  });

  test(`takes up to ${maxModules} parts and refuses more (400)`, async () => {
    const parts = (count: number): Parts => [
      ['metadata', metadata],
      ...Array.from({ length: count }, (_, i): [string, Blob] => [i === 0 ? 'index.js' : `m${i}.js`, esModule('')]),
    ];
    await expect(parse(parts(maxModules))).resolves.toMatchObject({ format: 'modules' });
    await expect(parse(parts(maxModules + 1))).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
      data: `the upload has more than ${maxModules} parts`,
    });
  });

  test('refuses a multipart body it cannot read', async () => {
    await expect(
      parseWorkersUpload(Buffer.from('garbage'), 'multipart/form-data; boundary=nope'),
    ).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
    });
  });
});
