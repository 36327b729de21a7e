import { describe, expect, test } from 'vitest';
import { isEsModule, parseWorkerCode } from '../../src/code/codeFormat.js';
import { bundle, esModule } from '../helpers/uploads.js';

const script = (text: string) => Buffer.from(text);

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

  test('a multipart body is a Workers upload (test/unit/workersUpload.test.ts)', async () => {
    const { bytes, contentType } = await bundle([
      ['metadata', metadata],
      ['index.js', esModule('export default {}')],
    ]);
    expect(await parseWorkerCode(bytes, contentType)).toMatchObject({
      format: 'modules',
      modules: [{ name: 'index.js' }],
    });
  });

  test("one script gets the service's defaults and no bindings", async () => {
    expect((await parseWorkerCode(script('export default {}'), undefined)).settings).toEqual({
      compatibilityDate: undefined,
      compatibilityFlags: undefined,
      bindings: [],
    });
  });
});
