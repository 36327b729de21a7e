import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { projectRoot } from './projectRoot.js';
import { startWorkersApi } from './workersApi.js';

const wrangler = path.join(projectRoot, 'node_modules/.bin/wrangler');

/** What wrangler sent as the script upload: the exact body, and its content type with the boundary. */
export interface WranglerUpload {
  readonly body: Buffer;
  readonly contentType: string;
  /** wrangler's own output, for a failure's message. */
  readonly output: string;
}

/**
 * Runs the real `wrangler deploy` in a project against a local stand-in for the Cloudflare API,
 * with dummy credentials and no network, and answers the one script upload it sent.
 */
export async function wranglerDeploy(projectDir: string, args: readonly string[] = []): Promise<WranglerUpload> {
  const api = await startWorkersApi();
  // A home of its own keeps a developer's wrangler login and settings out of the upload.
  const home = await makeTempDir('wrangler-home-');
  try {
    const run = await promisify(execFile)(wrangler, ['deploy', ...args], {
      cwd: projectDir,
      env: {
        PATH: process.env.PATH,
        HOME: home,
        CLOUDFLARE_API_BASE_URL: api.baseUrl,
        CLOUDFLARE_API_TOKEN: 'fixture-token',
        CLOUDFLARE_ACCOUNT_ID: '0123456789abcdef0123456789abcdef',
        WRANGLER_SEND_METRICS: 'false',
        WRANGLER_SEND_ERROR_REPORTS: 'false',
        // The banner asks the npm registry for a newer wrangler; the deploy stays offline.
        WRANGLER_HIDE_BANNER: 'true',
        NO_COLOR: '1',
      },
    }).catch((error: { stdout?: string; stderr?: string }) => {
      throw new Error(`wrangler deploy failed in ${projectDir}:\n${error.stdout}${error.stderr}`);
    });
    const requests = api.requests.map(
      (request) => `  ${request.status} ${request.method} ${request.path}${request.query}`,
    );
    const output = `${run.stdout}${run.stderr}${requests.join('\n')}`;
    if (api.uploads.length !== 1)
      throw new Error(`expected one script upload, the stand-in got ${api.uploads.length}:\n${output}`);
    return { ...api.uploads[0]!, output };
  } finally {
    await api.close();
    await removeTempDir(home);
    // wrangler bundles into project/.wrangler/tmp; nothing of it belongs to the project.
    await rm(path.join(projectDir, '.wrangler'), { recursive: true, force: true });
  }
}
