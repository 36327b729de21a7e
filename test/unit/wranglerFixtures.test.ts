import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { projectRoot } from '../helpers/projectRoot.js';
import { startWorkersApi } from '../helpers/workersApi.js';

// The committed wrangler fixtures are what the real wrangler uploaded (see
// test/fixtures/wrangler/README.md). These checks make sure each one is whole and matches its
// project, so a test that feeds one to the service is testing wrangler's format and not a bad
// capture.

const fixturesDir = path.join(projectRoot, 'test/fixtures/wrangler');

type Part = { name: string; type: string };

// What wrangler 4.86.0 put in each upload besides `metadata`: the content type of each part, in
// order, with the names that are not content-hashed. Bundled imports of non-JS files are named
// `./<sha1 of the file>-<file name>`.
const expectedParts: Record<string, Array<[string | RegExp, string]>> = {
  'binary-response': [['index.js', 'application/javascript+module']],
  bindings: [['index.js', 'application/javascript+module']],
  'hono-app': [['index.js', 'application/javascript+module']],
  'itty-router-app': [['index.js', 'application/javascript+module']],
  limits: [['index.js', 'application/javascript+module']],
  'memory-limit': [['index.js', 'application/javascript+module']],
  'no-bundle-folders': [
    ['index.js', 'application/javascript+module'],
    ['lib/greet.js', 'application/javascript+module'],
    ['lib/text/capitalize.js', 'application/javascript+module'],
  ],
  'nodejs-compat': [['index.js', 'application/javascript+module']],
  'old-date': [['index.js', 'application/javascript+module']],
  'service-worker': [['index.js', 'application/javascript']],
  'source-maps': [
    ['index.js', 'application/javascript+module'],
    ['index.js.map', 'application/source-map'],
  ],
  'status-codes': [['index.js', 'application/javascript+module']],
  'text-import': [
    ['index.js', 'application/javascript+module'],
    [/^\.\/[0-9a-f]{40}-blob\.bin$/, 'application/octet-stream'],
    [/^\.\/[0-9a-f]{40}-notes\.md$/, 'text/plain'],
    [/^\.\/[0-9a-f]{40}-page\.html$/, 'text/plain'],
  ],
  'wait-until': [['index.js', 'application/javascript+module']],
  'wasm-import': [
    ['index.js', 'application/javascript+module'],
    [/^\.\/[0-9a-f]{40}-add\.wasm$/, 'application/wasm'],
  ],
};

async function readFixture(name: string) {
  const dir = path.join(fixturesDir, name);
  const body = await readFile(path.join(dir, 'upload.body'));
  const contentType = await readFile(path.join(dir, 'upload.content-type'), 'utf8');
  const form = await new Response(new Uint8Array(body), { headers: { 'content-type': contentType } }).formData();
  const metadataPart = form.get('metadata');
  if (typeof metadataPart !== 'string') throw new Error(`${name}: the metadata part is not a text field`);
  const metadata = JSON.parse(metadataPart) as Record<string, unknown>;
  const parts: Part[] = [];
  for (const [partName, value] of form) {
    if (partName === 'metadata') continue;
    if (typeof value === 'string') throw new Error(`${name}: part ${partName} is a text field, not a file`);
    parts.push({ name: partName, type: value.type });
  }
  // The project's configuration, to tie the capture to what it was captured from.
  const projectFiles = await readdir(path.join(dir, 'project'));
  const configFile = projectFiles.find((file) => /^wrangler\.(toml|jsonc?)$/.test(file));
  const config = configFile ? await readFile(path.join(dir, 'project', configFile), 'utf8') : '';
  return { body, contentType, form, metadata, parts, config };
}

describe('the wrangler fixtures', async () => {
  const names = (await readdir(fixturesDir, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();

  test('are the ones this test knows', () => {
    expect(names).toEqual(Object.keys(expectedParts).sort());
  });

  describe.each(names)('%s', (name) => {
    test('is one multipart body whose boundary is in its content type', async () => {
      const { body, contentType } = await readFixture(name);
      const boundary = /^multipart\/form-data; boundary=(.+)$/.exec(contentType)?.[1];
      expect(boundary).toBeDefined();
      expect(body.subarray(0, boundary!.length + 4).toString('latin1')).toBe(`--${boundary}\r\n`);
      expect(body.subarray(-(boundary!.length + 8)).toString('latin1')).toBe(`\r\n--${boundary}--\r\n`);
    });

    test('names its main module in the metadata, and that module is one of the parts', async () => {
      const { metadata, parts } = await readFixture(name);
      // main_module for ES modules, body_part for a service worker; never both.
      const main = metadata.main_module ?? metadata.body_part;
      expect([metadata.main_module, metadata.body_part].filter((value) => value !== undefined)).toHaveLength(1);
      const mainPart = parts.find((part) => part.name === main);
      expect(mainPart?.type).toBe(
        metadata.main_module === undefined ? 'application/javascript' : 'application/javascript+module',
      );
    });

    test('has the parts wrangler uploads for its project', async () => {
      const { parts } = await readFixture(name);
      const expected = expectedParts[name]!;
      expect(parts.map((part) => part.type)).toEqual(expected.map(([, type]) => type));
      parts.forEach((part, index) => {
        const [expectedName] = expected[index]!;
        if (typeof expectedName === 'string') expect(part.name).toBe(expectedName);
        else expect(part.name).toMatch(expectedName);
      });
    });

    test("carries its project's compatibility date", async () => {
      const { metadata, config } = await readFixture(name);
      const date = /"?compatibility_date"?\s*[=:]\s*"([^"]+)"/.exec(config)?.[1];
      expect(date, 'the project names a compatibility date').toBeDefined();
      expect(metadata.compatibility_date).toBe(date);
    });
  });

  test('bundled imports name parts that exist', async () => {
    for (const name of ['text-import', 'wasm-import']) {
      const { form, parts } = await readFixture(name);
      const main = await (form.get('index.js') as File).text();
      const imported = [...main.matchAll(/^import \w+ from "([^"]+)";$/gm)].map((match) => match[1]);
      expect(imported.length).toBeGreaterThan(0);
      for (const specifier of imported) expect(parts.map((part) => part.name)).toContain(specifier);
    }
  });

  test('bindings: a string var, a JSON var and a secret, as wrangler sends them', async () => {
    const { metadata } = await readFixture('bindings');
    expect(metadata.bindings).toEqual([
      { name: 'API_HOST', type: 'plain_text', text: 'api.example.com' },
      { name: 'FEATURES', type: 'json', json: { beta: true, limit: 10, regions: ['eu', 'us'] } },
      { name: 'API_KEY', type: 'secret_text', text: 'fixture-secret-value' },
    ]);
    // --secrets-file also asks the API to keep secrets the upload does not name.
    expect(metadata.keep_bindings).toEqual(['secret_text', 'secret_key']);
  });

  test('nodejs-compat and old-date carry their flags and date', async () => {
    expect((await readFixture('nodejs-compat')).metadata.compatibility_flags).toEqual(['nodejs_compat']);
    expect((await readFixture('old-date')).metadata.compatibility_date).toBe('2022-01-01');
  });
});

describe('the stand-in Cloudflare API', () => {
  test('keeps a script upload byte for byte, with its content type', async () => {
    const api = await startWorkersApi();
    try {
      const form = new FormData();
      form.set('metadata', JSON.stringify({ main_module: 'index.js' }));
      form.set('index.js', new File(['export default {}'], 'index.js', { type: 'application/javascript+module' }));
      const request = new Request(`${api.baseUrl}/accounts/a1/workers/scripts/hello?excludeScript=true`, {
        method: 'PUT',
        body: form,
      });
      const sent = Buffer.from(await request.clone().arrayBuffer());
      const response = await fetch(request);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ success: true, result: { id: 'hello' } });
      expect(api.uploads).toEqual([
        { scriptName: 'hello', contentType: request.headers.get('content-type'), body: sent },
      ]);
    } finally {
      await api.close();
    }
  });

  test('answers a call it does not know with an API error, and logs it', async () => {
    const api = await startWorkersApi();
    try {
      const response = await fetch(`${api.baseUrl}/accounts/a1/workers/scripts/hello/schedules`, { method: 'PUT' });
      expect(response.status).toBe(404);
      expect(await response.json()).toMatchObject({ success: false, errors: [{ code: 7003 }] });
      expect(api.requests).toEqual([
        { method: 'PUT', path: '/accounts/a1/workers/scripts/hello/schedules', query: '', status: 404 },
      ]);
    } finally {
      await api.close();
    }
  });
});
