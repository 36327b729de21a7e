// The verify command as a client runs it, from the files `npm run build` leaves in dist/, on an
// answer signed with a fresh key exactly as the service signs one.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256 } from '../../src/code/codeCache.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { loadSigner, type Signer, signatureHeader, timestampHeader } from '../../src/signing.js';
import { writeSignerKey } from '../helpers/signerKey.js';
import { runVerify as verify } from '../helpers/verifyCommand.js';

const mismatchExit = 1;
const usageExit = 2;

const code = "addEventListener('fetch', (event) => event.respondWith(new Response('ok')));\n";
// Spaces, key order and number forms the service's re-serialisation changes: --request must redo it.
const requestBody = '{ "code_id": "signed-example", "input": { "b": 1.0, "a": "é", "2": [1e2] } }';
const sentInput = JSON.stringify((JSON.parse(requestBody) as { input: unknown }).input);
const data = 'Ünïcode and "quotes"\nacross lines';
const timestamp = 1_767_225_600;

let dir: string;
let signer: Signer;
let codeFile: string;
let responseFile: string;
let signature: string;

beforeAll(async () => {
  dir = await makeTempDir('verify-');
  const keyFile = await writeSignerKey(dir);
  signer = await loadSigner(keyFile);
  codeFile = path.join(dir, 'code.js');
  await writeFile(codeFile, code);
  signature = signer.sign({
    timestamp,
    codeId: 'signed-example',
    codeSha256: sha256(Buffer.from(code)),
    input: Buffer.from(sentInput),
    output: Buffer.from(data),
  });
  // As `curl -i` prints an answer that needed a 100 Continue first.
  const body = JSON.stringify({ status: 'success', message: 'Response successfully generated', data });
  responseFile = path.join(dir, 'answer.txt');
  await writeFile(
    responseFile,
    [
      'HTTP/1.1 100 Continue\r\n\r\n',
      'HTTP/1.1 200 OK\r\n',
      'content-type: application/json; charset=utf-8\r\n',
      `${timestampHeader.toLowerCase()}: ${timestamp}\r\n`,
      `${signatureHeader.toLowerCase()}: ${signature}\r\n`,
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n`,
      body,
    ].join(''),
  );
});

afterAll(async () => {
  if (dir) await removeTempDir(dir);
});

describe('scripts/verify', () => {
  test('prints the address that signed a raw answer, from the request as the client sent it', async () => {
    const result = await verify(
      '--request',
      requestBody,
      '--code-file',
      codeFile,
      '--response',
      responseFile,
      '--expect',
      signer.address,
    );
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe(signer.address);
  });

  test('takes every field apart too', async () => {
    const result = await verify(
      '--code-id',
      'signed-example',
      '--input',
      sentInput,
      '--code-sha256',
      sha256(Buffer.from(code)).toString('hex'),
      '--timestamp',
      String(timestamp),
      '--signature',
      signature,
      '--data',
      data,
    );
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe(signer.address);
  });

  test('with --expect, exits 1 when the answer was changed', async () => {
    const result = await verify(
      '--request',
      requestBody,
      '--code-file',
      codeFile,
      '--timestamp',
      String(timestamp + 1),
      '--signature',
      signature,
      '--data',
      data,
      '--expect',
      signer.address,
    );
    expect(result.exitCode).toBe(mismatchExit);
    expect(result.stdout).not.toBe(signer.address);
    expect(result.stderr).toContain(`not by ${signer.address}`);
  });

  test('exits 2 on a missing field, a missing file or a malformed signature', async () => {
    const noCode = await verify('--request', requestBody, '--response', responseFile);
    expect(noCode.exitCode).toBe(usageExit);
    expect(noCode.stderr).toContain('give --code-file, or --code-sha256');
    expect(noCode.stderr).toContain('Usage: npm run verify');
    const noFile = await verify(
      '--request',
      requestBody,
      '--code-file',
      codeFile,
      '--response',
      path.join(dir, 'none.txt'),
    );
    expect(noFile.exitCode).toBe(usageExit);
    expect(noFile.stderr).toContain('ENOENT');
    const malformed = await verify(
      '--request',
      requestBody,
      '--code-file',
      codeFile,
      '--timestamp',
      String(timestamp),
      '--signature',
      '0x1234',
      '--data',
      data,
    );
    expect(malformed.exitCode).toBe(usageExit);
    expect(malformed.stderr).toMatch(/^verify: .*signature/);
  });

  test('checks an exchange of the HTTP route: method, path and query, both bodies, status and content type', async () => {
    const requestBody = Buffer.from('{"name":"cup"}');
    const responseBody = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0xff]);
    const exchange = {
      timestamp,
      codeId: 'signed-example',
      codeSha256: sha256(Buffer.from(code)),
      method: 'POST',
      target: '/items?x=1',
      requestBody,
      status: 201,
      contentType: 'image/png',
      responseBody,
    };
    const exchangeSignature = signer.sign(exchange);
    const requestFile = path.join(dir, 'request.body');
    await writeFile(requestFile, requestBody);
    const answerFile = path.join(dir, 'exchange.txt');
    const head = [
      'HTTP/1.1 201 Created',
      'content-type: image/png',
      `${timestampHeader.toLowerCase()}: ${timestamp}`,
      `${signatureHeader.toLowerCase()}: ${exchangeSignature}`,
      `content-length: ${responseBody.length}`,
    ].join('\r\n');
    await writeFile(answerFile, Buffer.concat([Buffer.from(`${head}\r\n\r\n`), responseBody]));
    const asked = [
      '--code-id',
      'signed-example',
      '--code-file',
      codeFile,
      '--method',
      'POST',
      '--response',
      answerFile,
    ];
    const good = await verify(
      ...asked,
      '--target',
      '/items?x=1',
      '--request-body-file',
      requestFile,
      '--expect',
      signer.address,
    );
    expect(good.exitCode).toBe(0);
    expect(good.stdout).toBe(signer.address);
    const otherPath = await verify(
      ...asked,
      '--target',
      '/items',
      '--request-body-file',
      requestFile,
      '--expect',
      signer.address,
    );
    expect(otherPath.exitCode).toBe(mismatchExit);
  });
});
