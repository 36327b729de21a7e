// Remakes the wrangler fixtures: runs the real `wrangler deploy` on each project under
// test/fixtures/wrangler/<name>/project/ against a local stand-in for the Cloudflare API, and keeps
// the script upload it sent as <name>/upload.body (the exact bytes) and <name>/upload.content-type
// (the header, with the multipart boundary, and no newline after it).
//
//   npx tsx test/helpers/captureWranglerFixtures.ts            # every fixture
//   npx tsx test/helpers/captureWranglerFixtures.ts hono-app   # only the ones named
//
// It needs no network and no Cloudflare account. The boundary is random, so every capture
// rewrites upload.body even when nothing else changed. It lives under test/ and not scripts/
// because the service's build (and its Docker image) compiles scripts/ without test/.
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from './projectRoot.js';
import { startWorkersApi } from './workersApi.js';

const fixturesDir = path.join(projectRoot, 'test/fixtures/wrangler');
const wrangler = path.join(projectRoot, 'node_modules/.bin/wrangler');

// Flags a project needs beyond `wrangler deploy`, relative to its project/ folder.
const deployArgs: Record<string, string[]> = {
  // The only way wrangler 4 puts a secret_text binding into the script upload itself.
  bindings: ['--secrets-file', 'secrets.env'],
};

async function capture(name: string): Promise<void> {
  const projectDir = path.join(fixturesDir, name, 'project');
  const api = await startWorkersApi();
  // A home of its own keeps a developer's wrangler login and settings out of the capture.
  const home = await mkdtemp(path.join(tmpdir(), 'wrangler-home-'));
  try {
    const run = await promisify(execFile)(wrangler, ['deploy', ...(deployArgs[name] ?? [])], {
      cwd: projectDir,
      env: {
        PATH: process.env.PATH,
        HOME: home,
        CLOUDFLARE_API_BASE_URL: api.baseUrl,
        CLOUDFLARE_API_TOKEN: 'fixture-token',
        CLOUDFLARE_ACCOUNT_ID: '0123456789abcdef0123456789abcdef',
        WRANGLER_SEND_METRICS: 'false',
        WRANGLER_SEND_ERROR_REPORTS: 'false',
        // The banner asks the npm registry for a newer wrangler; the capture stays offline.
        WRANGLER_HIDE_BANNER: 'true',
        NO_COLOR: '1',
      },
    }).catch((error: { stdout?: string; stderr?: string }) => {
      console.error(error.stdout, error.stderr);
      throw new Error(`${name}: wrangler deploy failed`);
    });
    console.log(`== ${name}\n${run.stdout}${run.stderr}`);
    for (const request of api.requests)
      console.log(`  ${request.status} ${request.method} ${request.path}${request.query}`);

    if (api.uploads.length !== 1)
      throw new Error(`${name}: expected one script upload, the stand-in got ${api.uploads.length}`);
    const upload = api.uploads[0]!;
    await writeFile(path.join(fixturesDir, name, 'upload.body'), upload.body);
    await writeFile(path.join(fixturesDir, name, 'upload.content-type'), upload.contentType);
  } finally {
    await api.close();
    await rm(home, { recursive: true, force: true });
    // wrangler bundles into project/.wrangler/tmp; nothing of it belongs in the fixture.
    await rm(path.join(projectDir, '.wrangler'), { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const all = (await readdir(fixturesDir, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
  const names = process.argv.length > 2 ? process.argv.slice(2) : all;
  const unknown = names.filter((name) => !all.includes(name));
  if (unknown.length > 0) throw new Error(`No such fixture: ${unknown.join(', ')}`);
  // One at a time: each deploy bundles with esbuild, and the output stays readable.
  for (const name of names) await capture(name);
}

await main();
