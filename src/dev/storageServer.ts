import { readFileSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import { attestationVerifier } from '../attestation/verify.js';
import { listen, type RunningServer } from './listen.js';

const maxRequestBytes = 64 * 1024;
const base64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// A key names a file in the code folder; anything path-like is simply not found.
const safeKey = /^[A-Za-z0-9_-]+$/;

export interface StorageServerOptions {
  /** Folders holding the stored code, searched in order: <key>.js is one script, a folder <key>/
   * holding upload.body and upload.content-type is a Workers upload served byte for byte (as
   * wrangler sent it), any other folder <key>/ a bundle of its files (its metadata.json names the
   * main module, else index.js). */
  readonly codeDirs: readonly string[];
  /**
   * When set, a request's attestation document must verify against this root (PEM) now, as the
   * real storage server checks it against AWS's; unset, any bytes are taken.
   */
  readonly attestationRoot?: string;
  /**
   * With attestationRoot: a document made longer ago than this (its timestamp) is refused too, as
   * by a storage server that wants recent proof; unset, any age the certificates allow.
   */
  readonly maxDocumentAgeMs?: number;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
}

/**
 * Serves stored code the way the real storage server does: POST /load {"key": …} with an
 * Attestation header (base64) answers the stored code, 404 for an unknown key, 400 for a bad body,
 * 401 without a valid (or recent enough) attestation.
 */
export function startStorageServer(options: StorageServerOptions): Promise<RunningServer> {
  const server = createServer((request, response) => {
    handle(options, request, response).catch(() => response.writeHead(500).end());
  });
  return listen(server, options.host ?? '127.0.0.1', options.port ?? 0);
}

async function handle(
  options: StorageServerOptions,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  if (request.method !== 'POST' || new URL(request.url ?? '/', 'http://x').pathname !== '/load') {
    response.writeHead(404).end('not found');
    return;
  }
  const header = request.headers.attestation;
  const attestation =
    typeof header === 'string' && header !== '' && base64.test(header) ? Buffer.from(header, 'base64') : undefined;
  if (!attestation || !accepts(options, attestation)) {
    response.writeHead(401).end('missing or invalid Attestation header');
    return;
  }
  const key = parseKey(await readBody(request));
  if (key === undefined) {
    response.writeHead(400).end('expected a JSON body {"key": string}');
    return;
  }
  const code = safeKey.test(key) ? await findCode(options.codeDirs, key) : undefined;
  if (!code) {
    response.writeHead(404).end('no code stored under this key');
    return;
  }
  response.writeHead(200, { 'content-type': code.contentType }).end(code.bytes);
}

// The content type of each module file of a bundle folder, by its extension.
const partTypes: Readonly<Record<string, string>> = {
  '.js': 'application/javascript+module',
  '.mjs': 'application/javascript+module',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.txt': 'text/plain',
};
const metadataFile = 'metadata.json';
const uploadBodyFile = 'upload.body';
const defaultMainModule = 'index.js';

// Looks each candidate up with stat() and reads it synchronously: opens that fail in the thread
// pool, each throwing an error, cost this stand-in more CPU than the request it answers, and the
// benchmark runs it on the same cores as the service.
async function findCode(
  codeDirs: readonly string[],
  key: string,
): Promise<{ bytes: Buffer; contentType: string } | undefined> {
  for (const dir of codeDirs) {
    const script = path.join(dir, `${key}.js`);
    if (statSync(script, { throwIfNoEntry: false })?.isFile())
      return { bytes: readFileSync(script), contentType: 'application/javascript' };
    const folder = path.join(dir, key);
    if (!statSync(folder, { throwIfNoEntry: false })?.isDirectory()) continue;
    return statSync(path.join(folder, uploadBodyFile), { throwIfNoEntry: false })?.isFile()
      ? readUpload(folder)
      : readBundle(folder);
  }
  return undefined;
}

// A captured Workers upload: its exact body and content type (with the boundary).
function readUpload(folder: string): { bytes: Buffer; contentType: string } {
  return {
    bytes: readFileSync(path.join(folder, uploadBodyFile)),
    contentType: readFileSync(path.join(folder, 'upload.content-type'), 'utf8').trim(),
  };
}

// Packs a folder as a Workers multipart upload: a metadata part naming the main module, then one
// file part per module, typed by its extension.
async function readBundle(folder: string): Promise<{ bytes: Buffer; contentType: string }> {
  const names = (await readdir(folder)).sort();
  const metadata = names.includes(metadataFile)
    ? await readFile(path.join(folder, metadataFile), 'utf8')
    : JSON.stringify({ main_module: defaultMainModule });
  const form = new FormData();
  form.append('metadata', metadata);
  for (const name of names.filter((entry) => entry !== metadataFile)) {
    const type = partTypes[path.extname(name)] ?? 'application/octet-stream';
    form.append(name, new Blob([await readFile(path.join(folder, name))], { type }), name);
  }
  const packed = new Response(form);
  return { bytes: Buffer.from(await packed.arrayBuffer()), contentType: packed.headers.get('content-type')! };
}

// Remembers the chains it verified: each further document of the same enclave costs one signature check.
const verifyDocument = attestationVerifier();

function accepts({ attestationRoot, maxDocumentAgeMs }: StorageServerOptions, document: Buffer): boolean {
  if (attestationRoot === undefined) return true;
  try {
    const { timestamp } = verifyDocument(document, { rootPem: attestationRoot });
    return maxDocumentAgeMs === undefined || Date.now() - timestamp <= maxDocumentAgeMs;
  } catch {
    return false;
  }
}

async function readBody(request: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of request) {
    body += String(chunk);
    if (body.length > maxRequestBytes) break;
  }
  return body;
}

function parseKey(body: string): string | undefined {
  try {
    const parsed = JSON.parse(body) as { key?: unknown } | null;
    return typeof parsed?.key === 'string' ? parsed.key : undefined;
  } catch {
    return undefined;
  }
}
