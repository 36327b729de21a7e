import { createServer } from 'node:http';
import { listen, type RunningServer } from './listen.js';

/**
 * Stands in for the enclave's attestation document: CBOR-like bytes that are deliberately not
 * valid UTF-8 (0xff, 0xfe, a lone 0x80, an overlong 0xc0 0xaf), so any text decoding corrupts them.
 */
export const devAttestationDocument: Buffer = Buffer.from([
  0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59, 0x01, 0x00, 0xff, 0xfe, 0x80, 0x00, 0xc0, 0xaf, 0xed, 0xa0, 0x80,
  0x6f, 0x79, 0x73, 0x74, 0x65, 0x72, 0xf5, 0xf6, 0xf7, 0xfd, 0x9f, 0x92, 0x96,
]);

export interface AttestationServerOptions {
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
}

/**
 * Serves the fixed attestation document on every GET, as raw bytes without a content type, like
 * the attestation server inside an enclave.
 */
export function startAttestationServer(options: AttestationServerOptions = {}): Promise<RunningServer> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET') {
      response.writeHead(405).end();
      return;
    }
    response.writeHead(200, { 'content-length': devAttestationDocument.length });
    response.end(devAttestationDocument);
  });
  return listen(server, options.host ?? '127.0.0.1', options.port ?? 0);
}
