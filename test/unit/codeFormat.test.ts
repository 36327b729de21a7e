import { describe, expect, test } from 'vitest';
import { isEsModule, maxModules, parseWorkerCode } from '../../src/code/codeFormat.js';

const script = (text: string) => Buffer.from(text);

async function bundle(parts: Array<[string, string | Blob, string?]>): Promise<{ bytes: Buffer; contentType: string }> {
  const form = new FormData();
  for (const [name, value, file] of parts) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, value, file ?? name);
  }
  const packed = new Response(form);
  return { bytes: Buffer.from(await packed.arrayBuffer()), contentType: packed.headers.get('content-type')! };
}
const esModule = (text: string) => new Blob([text], { type: 'application/javascript+module' });
const metadata = JSON.stringify({ main_module: 'index.js' });

describe('isEsModule', () => {
  test.each([
    ['export default', 'export default { fetch() {} };'],
    ['a named export', 'export const answer = 42;'],
    ['an import', "import x from 'y';"],
    ['a re-export', "export * from './lib.js';"],
  ])('is true for %s', async (_name, code) => {
    expect(await isEsModule(script(code))).toBe(true);
  });

  test.each([
    ['a service worker', "addEventListener('fetch', (e) => e.respondWith(new Response('hi')));"],
    [
      'the words in strings and comments',
      "// export default\nconst s = 'import x from y'; addEventListener('fetch', () => {});",
    ],
    ['a dynamic import()', "addEventListener('fetch', () => import('x'));"],
    ['code that does not parse', 'export default {'],
  ])('is false for %s', async (_name, code) => {
    expect(await isEsModule(script(code))).toBe(false);
  });
});

describe('parseWorkerCode', () => {
  test('a plain script is a service worker, unless it has import or export declarations', async () => {
    expect(
      await parseWorkerCode(script("addEventListener('fetch', () => {})"), 'application/javascript'),
    ).toMatchObject({
      format: 'service-worker',
    });
    expect(await parseWorkerCode(script('export default {}'), undefined)).toMatchObject({
      format: 'modules',
      modules: [{ name: 'main.js', type: 'esModule' }],
    });
  });

  test('a bundle becomes typed modules with the main one first', async () => {
    const { bytes, contentType } = await bundle([
      ['metadata', metadata],
      ['add.wasm', new Blob([new Uint8Array([0, 97, 115, 109])], { type: 'application/wasm' })],
      ['data.json', new Blob(['{}'], { type: 'application/json' })],
      ['note.txt', new Blob(['hi'], { type: 'text/plain' })],
      ['blob.bin', new Blob(['\u0001'], { type: 'application/octet-stream' })],
      ['index.js', esModule('export default {}')],
    ]);
    const code = await parseWorkerCode(bytes, contentType);
    expect(code.format).toBe('modules');
    if (code.format !== 'modules') return;
    expect(code.modules.map((module) => [module.name, module.type])).toEqual([
      ['index.js', 'esModule'],
      ['add.wasm', 'wasm'],
      ['data.json', 'json'],
      ['note.txt', 'text'],
      ['blob.bin', 'data'],
    ]);
    expect(code.modules[3]!.content.toString()).toBe('hi');
  });

  test.each<[string, Array<[string, string | Blob, string?]>, RegExp]>([
    ['no metadata part', [['index.js', esModule('')]], /no "metadata" part/],
    [
      'metadata that is not JSON',
      [
        ['metadata', '{'],
        ['index.js', esModule('')],
      ],
      /not JSON/,
    ],
    [
      'no main_module',
      [
        ['metadata', '{}'],
        ['index.js', esModule('')],
      ],
      /main_module/,
    ],
    [
      'a missing main module',
      [
        ['metadata', JSON.stringify({ main_module: 'app.js' })],
        ['index.js', esModule('')],
      ],
      /"app\.js" is not one of the parts/,
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
      'a name with ../',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        ['../x.js', esModule('')],
      ],
      /"\.\.\/x\.js" is not allowed/,
    ],
    [
      'a name with a slash',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        ['lib/x.js', esModule('')],
      ],
      /not allowed/,
    ],
    [
      'a name that is only dots',
      [
        ['metadata', metadata],
        ['index.js', esModule('')],
        ['..', esModule('')],
      ],
      /not allowed/,
    ],
    [
      'a name used twice',
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
        ['x.py', new Blob([''], { type: 'text/x-python' })],
      ],
      /content type/,
    ],
    [
      'a module sent as a plain field',
      [
        ['metadata', metadata],
        ['index.js', 'export default {}'],
      ],
      /no content type/,
    ],
  ])('refuses a bundle with %s (400)', async (_name, parts, detail) => {
    const { bytes, contentType } = await bundle(parts);
    const parsing = parseWorkerCode(bytes, contentType);
    await expect(parsing).rejects.toMatchObject({ code: 'INVALID_BUNDLE', status: 400 });
    await expect(parsing.catch((error: { data: string }) => error.data)).resolves.toMatch(detail);
  });

  test(`takes up to ${maxModules} modules and refuses more (400)`, async () => {
    const parts = (count: number) => [
      ['metadata', metadata] as [string, string],
      ...Array.from({ length: count }, (_, i): [string, Blob] => [i === 0 ? 'index.js' : `m${i}.js`, esModule('')]),
    ];
    const most = await bundle(parts(maxModules));
    await expect(parseWorkerCode(most.bytes, most.contentType)).resolves.toMatchObject({ format: 'modules' });
    const tooMany = await bundle(parts(maxModules + 1));
    const parsing = parseWorkerCode(tooMany.bytes, tooMany.contentType);
    await expect(parsing).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
      data: `the bundle has more than ${maxModules} modules`,
    });
  });

  test('refuses a multipart body it cannot read', async () => {
    await expect(parseWorkerCode(script('garbage'), 'multipart/form-data; boundary=nope')).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
    });
  });
});
