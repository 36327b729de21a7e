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
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { projectRoot } from './projectRoot.js';
import { wranglerDeploy } from './wranglerDeploy.js';

const fixturesDir = path.join(projectRoot, 'test/fixtures/wrangler');

// Flags a project needs beyond `wrangler deploy`, relative to its project/ folder.
const deployArgs: Record<string, string[]> = {
  // The only way wrangler 4 puts a secret_text binding into the script upload itself.
  bindings: ['--secrets-file', 'secrets.env'],
};

async function capture(name: string): Promise<void> {
  const upload = await wranglerDeploy(path.join(fixturesDir, name, 'project'), deployArgs[name]);
  console.log(`== ${name}\n${upload.output}`);
  await writeFile(path.join(fixturesDir, name, 'upload.body'), upload.body);
  await writeFile(path.join(fixturesDir, name, 'upload.content-type'), upload.contentType);
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
