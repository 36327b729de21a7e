import { createHash, createPrivateKey, type KeyObject, sign } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import { encode } from 'cborg';
import { sigStructure } from '../attestation/document.js';
import { maxNonceBytes, maxPublicKeyBytes, maxUserDataBytes } from '../attestation/limits.js';
import { devIntermediatePem, devLeafKeyPem, devLeafPem, devRootPem } from './devAttestationChain.js';
import { listen, type RunningServer } from './listen.js';

/** The path of the raw document, as Marlin's attestation servers serve it; ATTESTATION_URL names it. */
export const rawDocumentPath = '/attestation/raw';
const hexDocumentPath = '/attestation/hex';
/** Where the development root is served, for `npm run verify -- --root`. */
export const rootPath = '/root.pem';

const devModuleId = 'i-00000000000000000-enc0000000000000000';
const pcrCount = 16;
const pcrBytes = 48;
/**
 * The development image's PCRs: PCR0, 1 and 2 are the SHA-384 of "oyster-serverless development
 * PCR<n>", the rest zero, as the Nitro Secure Module reports PCRs no one extended.
 */
export const devPcrs: ReadonlyMap<number, Uint8Array> = new Map(
  Array.from({ length: pcrCount }, (_, index) => [
    index,
    index <= 2
      ? new Uint8Array(createHash('sha384').update(`oyster-serverless development PCR${index}`).digest())
      : new Uint8Array(pcrBytes),
  ]),
);

// What a request may set, and its largest size in bytes, as the Nitro Secure Module takes them.
const queryFields = { public_key: maxPublicKeyBytes, user_data: maxUserDataBytes, nonce: maxNonceBytes } as const;
const hexBytes = /^(?:[0-9a-fA-F]{2})*$/;
const protectedHeader = encode(new Map([[1, -35]]));
const pemToDer = (pem: string) => new Uint8Array(Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64'));
const [certificate, cabundle] = [pemToDer(devLeafPem), [devRootPem, devIntermediatePem].map(pemToDer)];
let leafKey: KeyObject | undefined;

/** What one document attests besides the fixed parts. */
export interface DevDocumentFields {
  readonly publicKey?: Uint8Array;
  readonly userData?: Uint8Array;
  readonly nonce?: Uint8Array;
  /** ms since the epoch; now when unset. */
  readonly timestamp?: number;
}

/**
 * A development attestation document: the Nitro Secure Module's format (an untagged COSE_Sign1 of
 * its payload, signed ES384), but signed by the development chain, so it verifies only against
 * the development root.
 */
export function makeDevDocument(fields: DevDocumentFields = {}): Buffer {
  const payload = encode(
    new Map<string, unknown>([
      ['module_id', devModuleId],
      ['digest', 'SHA384'],
      ['timestamp', fields.timestamp ?? Date.now()],
      ['pcrs', devPcrs],
      ['certificate', certificate],
      ['cabundle', cabundle],
      ['public_key', fields.publicKey ?? null],
      ['user_data', fields.userData ?? null],
      ['nonce', fields.nonce ?? null],
    ]),
  );
  leafKey ??= createPrivateKey(devLeafKeyPem);
  const signature = sign('sha384', sigStructure(protectedHeader, payload), { key: leafKey, dsaEncoding: 'ieee-p1363' });
  return Buffer.from(encode([protectedHeader, new Map(), payload, new Uint8Array(signature)]));
}

export interface AttestationServerOptions {
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /**
   * The key a document attests when a request asks for none, as Marlin's attestation server reads
   * it from its --pub-key file; a request's public_key parameter wins, as with its custom server.
   */
  readonly publicKey?: Uint8Array;
  /** Attest publicKey whatever a request asks: a server that reads only its file (a stand-in for a misconfigured one). */
  readonly ignoreRequestedKey?: boolean;
}

/**
 * Serves development documents like the attestation server inside an enclave: GET
 * /attestation/raw (bytes) or /attestation/hex, with optional public_key, user_data and nonce
 * query parameters in hex; a bad parameter answers 400. GET /root.pem answers the development root.
 */
export function startAttestationServer(options: AttestationServerOptions = {}): Promise<RunningServer> {
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://x');
    if (request.method !== 'GET') return void response.writeHead(405).end();
    if (url.pathname === rootPath) return void send(response, 'application/x-pem-file', devRootPem);
    if (url.pathname !== rawDocumentPath && url.pathname !== hexDocumentPath) return void response.writeHead(404).end();
    const fields = parseQuery(url.searchParams);
    if (typeof fields === 'string') return void response.writeHead(400).end(fields);
    const publicKey = options.ignoreRequestedKey ? options.publicKey : (fields.publicKey ?? options.publicKey);
    const document = makeDevDocument({ ...fields, publicKey });
    if (url.pathname === rawDocumentPath) send(response, 'application/octet-stream', document);
    else send(response, 'text/plain; charset=utf-8', document.toString('hex'));
  });
  return listen(server, options.host ?? '127.0.0.1', options.port ?? 0);
}

// The document's fields from the query, or what is wrong with it.
function parseQuery(query: URLSearchParams): DevDocumentFields | string {
  const bytes: Partial<Record<keyof typeof queryFields, Uint8Array>> = {};
  for (const [name, maxBytes] of Object.entries(queryFields) as [keyof typeof queryFields, number][]) {
    const value = query.get(name);
    if (value === null || value === '') continue;
    if (!hexBytes.test(value) || value.length > 2 * maxBytes) return `${name} must be hex, at most ${maxBytes} bytes`;
    bytes[name] = new Uint8Array(Buffer.from(value, 'hex'));
  }
  return { publicKey: bytes.public_key, userData: bytes.user_data, nonce: bytes.nonce };
}

function send(response: ServerResponse, contentType: string, body: string | Buffer): void {
  response.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) }).end(body);
}
