import { access, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { projectRoot } from './projectRoot.js';

const verifyCommand = path.join(projectRoot, 'dist/scripts/verify.js');

/** `npm run verify -- …` as a client runs it, from the build; never throws on its exit status. */
export async function runVerify(...args: string[]) {
  await access(verifyCommand).catch(() => {
    throw new Error('run `npm run build` first: this test runs dist/scripts/verify.js');
  });
  return execa(process.execPath, [verifyCommand, ...args], { reject: false });
}

/** Saves an answer as `curl -si` prints it, headers and body, for `npm run verify -- --response`. */
export async function saveAnswer(file: string, url: string, ...curlArgs: string[]): Promise<void> {
  await execa('curl', ['-si', '-o', file, ...curlArgs, url]);
}

/** GETs a URL and saves its body's exact bytes (a document, a root certificate); answers its status and headers. */
export async function saveBody(
  url: string,
  file: string,
): Promise<{ status: number; headers: Record<string, unknown> }> {
  const response = await request(url);
  await writeFile(file, Buffer.from(await response.body.arrayBuffer()));
  return { status: response.statusCode, headers: response.headers };
}
