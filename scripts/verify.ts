// Verifies an attestation document, and recovers the address that signed an answer of
// POST /api/serverless, an exchange of ANY /fn/<code_id>/…, or a usage claim (`npm run verify -- …`).
// Exits 1 when a check fails (the document's, or the answer's signer against --expect or the
// attested key), 2 on bad usage.
import { readFile, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import {
  AttestationError,
  maxDocumentBytes,
  type VerifiedAttestation,
  verifyAttestation,
} from '../src/attestation/verify.js';
import { sha256 } from '../src/code/codeCache.js';
import { type ClaimAnswer, signedClaimOf } from '../src/ledger/claims.js';
import { sealingKeyOf } from '../src/secrets/sealing.js';
import {
  recoverSigner,
  type SignedExchange,
  type SignedFields,
  signatureHeader,
  timestampHeader,
} from '../src/signing.js';
import { UsageError, verifyOptions } from './attestationOptions.js';

const usage = `Usage: npm run verify -- [options]

An attestation document (GET /attestation), checked from the root to its payload:
  --attestation <path>    the document's raw bytes
  --at <ms | ISO 8601>    the moment its certificates must be valid at (default: now)
  --root <path>           the root certificate (PEM) it must chain to (default: AWS's Nitro
                          Enclaves root, G1)
  --pcr <index>=<hex>     a PCR it must have (repeatable), e.g. --pcr 0=…
  --nonce <hex>           the nonce it must carry
  --json                  print what it attests as one JSON object
With an answer too (the options below), the answer must be signed by the attested key.

What was asked (either --request, or --code-id and --input/--input-file):
  --request <json>        the exact JSON body you POSTed; code_id and input are taken from it
                          as the service takes them
  --code-id <id>          the request's code_id
  --input <text>          the bytes the service sent to the function: JSON.stringify(input ?? {});
                          default {}
  --input-file <path>     the same bytes, from a file
The code that ran (one of):
  --code-file <path>      the exact code
  --code-sha256 <hex>     its sha256
The answer (either --response, or all of --timestamp, --signature and --data):
  --response <path>       the raw answer, headers and body, as \`curl -i\` prints it
  --timestamp <seconds>   the X-Oyster-Timestamp header
  --signature <hex>       the X-Oyster-Signature header
  --data <text>           the answer's data string
  --encoding base64       when the answer says "encoding": "base64" (a body that is not UTF-8)
An exchange of the HTTP route instead (with --code-id, the code, and --response):
  --method <method>       the request's method, e.g. GET
  --target <path>         the path and query after /fn/<code_id>, from /, e.g. /items/7?x=1
  --request-body-file <path>  the request's body (default none)
A usage claim instead (POST /admin/claims, GET /admin/claims/latest):
  --claim <path>          the claim's answer as JSON (the whole answer, or its data)
Checking:
  --expect <address>      exit 1 unless this address signed the answer`;

const sha256Hex = /^(?:0x)?([0-9a-fA-F]{64})$/;
const decimal = /^\d+$/;
const mismatchExit = 1;
const usageExit = 2;

// The signature and the signed output, from an answer.
interface Answer {
  readonly timestamp: string;
  readonly signature: string;
  readonly data: string;
  /** How data carries the function's bytes: as text, or as base64 when they are not UTF-8. */
  readonly encoding: 'utf8' | 'base64';
}

type Values = ReturnType<typeof readArgs>;

function readArgs() {
  try {
    return parseArgs({
      options: {
        request: { type: 'string' },
        'code-id': { type: 'string' },
        input: { type: 'string' },
        'input-file': { type: 'string' },
        'code-file': { type: 'string' },
        'code-sha256': { type: 'string' },
        response: { type: 'string' },
        timestamp: { type: 'string' },
        signature: { type: 'string' },
        data: { type: 'string' },
        encoding: { type: 'string' },
        method: { type: 'string' },
        target: { type: 'string' },
        'request-body-file': { type: 'string' },
        claim: { type: 'string' },
        expect: { type: 'string' },
        attestation: { type: 'string' },
        at: { type: 'string' },
        root: { type: 'string' },
        pcr: { type: 'string', multiple: true },
        nonce: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

// The options that describe an answer or a claim, whose signer is then checked.
const answerOptions = ['request', 'code-id', 'response', 'signature', 'claim', 'method'] as const;

async function main(): Promise<void> {
  const values = readArgs();
  if (values.help) {
    console.log(usage);
    return;
  }
  const attested = values.attestation === undefined ? undefined : await checkAttestation(values, values.attestation);
  if (attested && !answerOptions.some((option) => values[option] !== undefined)) {
    console.log(values.json ? JSON.stringify(attestationJson(attested)) : attestationSummary(attested));
    return;
  }
  const signer = await answerSigner(values);
  if (attested) {
    if (values.json) console.log(JSON.stringify({ ...attestationJson(attested), answer_signer: signer }));
    else console.log(`${attestationSummary(attested)}\nanswer signed by ${signer}`);
    if (attested.signer === undefined) fail('public_key: the document attests no secp256k1 key');
    else if (attested.signer !== signer)
      fail(`the answer is signed by ${signer}, not by the attested key ${attested.signer}`);
  } else {
    console.log(signer);
  }
  if (values.expect !== undefined && values.expect.toLowerCase() !== signer.toLowerCase())
    fail(`signed by ${signer}, not by ${values.expect}`);
}

function fail(message: string): void {
  console.error(`verify: ${message}`);
  process.exitCode = mismatchExit;
}

// The address that signed the answer, exchange or claim the options describe.
async function answerSigner(values: Values): Promise<string> {
  if (values.method !== undefined) return verifyExchange(values);
  if (values.claim !== undefined) return verifyClaim(values.claim);
  const request = await askedFor(values);
  const answer =
    values.response !== undefined ? parseResponse(await readFile(values.response)) : explicitAnswer(values);
  if (!decimal.test(answer.timestamp))
    throw new UsageError(`the timestamp must be decimal unix seconds, not ${answer.timestamp}`);
  const fields: SignedFields = {
    timestamp: Number(answer.timestamp),
    codeId: request.codeId,
    codeSha256: await codeSha256(values),
    input: request.input,
    output: Buffer.from(answer.data, answer.encoding),
  };
  return recoverSigner(fields, answer.signature);
}

// An exchange of the HTTP route: the request as given, the answer as `curl -i` printed it.
async function verifyExchange(values: Values): Promise<string> {
  const { method, target } = values;
  if (
    values['code-id'] === undefined ||
    method === undefined ||
    target === undefined ||
    values.response === undefined
  ) {
    throw new UsageError('an exchange needs --code-id, --method, --target and --response');
  }
  const answer = parseHttp(await readFile(values.response));
  const { timestamp, signature } = signatureOf(answer.headers);
  const fields: SignedExchange = {
    timestamp: Number(timestamp),
    codeId: values['code-id'],
    codeSha256: await codeSha256(values),
    method,
    target,
    requestBody:
      values['request-body-file'] === undefined ? new Uint8Array() : await readFile(values['request-body-file']),
    status: answer.status,
    contentType: answer.headers.get('content-type') ?? '',
    responseBody: answer.body,
  };
  return recoverSigner(fields, signature);
}

// A usage claim, as the admin endpoint answered it (the envelope, or its data alone).
async function verifyClaim(file: string): Promise<string> {
  const parsed = JSON.parse(await readFile(file, 'utf8')) as { data?: unknown };
  const claim = (parsed.data ?? parsed) as ClaimAnswer;
  return recoverSigner(signedClaimOf(claim), claim.signature);
}

// Verifies the document; a failed check ends the run with exit 1, naming it.
async function checkAttestation(values: Values, file: string): Promise<VerifiedAttestation> {
  const options = await verifyOptions(values);
  const { size } = await stat(file);
  try {
    // Refused by its size before it is read: a document is a few KiB.
    if (size > maxDocumentBytes)
      throw new AttestationError('size', `it has ${size} bytes, more than ${maxDocumentBytes}`);
    return verifyAttestation(await readFile(file), options);
  } catch (error) {
    if (!(error instanceof AttestationError)) throw error;
    console.error(`verify: the attestation fails the check ${error.message}`);
    process.exit(mismatchExit);
  }
}

// What a document attests, as --json prints it.
function attestationJson(attested: VerifiedAttestation) {
  const hex = (bytes: Uint8Array | undefined) => (bytes === undefined ? null : Buffer.from(bytes).toString('hex'));
  const sealing = sealingKeyOf(attested.userData);
  return {
    module_id: attested.moduleId,
    timestamp: attested.timestamp,
    digest: attested.digest,
    pcrs: Object.fromEntries([...attested.pcrs].map(([index, value]) => [index, hex(value)])),
    public_key: hex(attested.publicKey),
    user_data: hex(attested.userData),
    nonce: hex(attested.nonce),
    signer: attested.signer ?? null,
    // The key secrets are sealed to, where the instance has one (npm run seal).
    sealing: sealing ? { key_id: sealing.keyId, public_key: hex(sealing.publicKey) } : null,
  };
}

function attestationSummary(attested: VerifiedAttestation): string {
  const json = attestationJson(attested);
  return [
    `attestation verified: ${json.module_id}, made ${new Date(json.timestamp).toISOString()}`,
    ...[0, 1, 2].map((index) => `PCR${index} ${json.pcrs[index] ?? 'absent'}`),
    `public key ${json.public_key ?? 'none'}${json.signer ? ` (signer ${json.signer})` : ''}`,
    `nonce ${json.nonce ?? 'none'}`,
    `sealing key ${json.sealing ? `${json.sealing.key_id} ${json.sealing.public_key}` : 'none'}`,
  ].join('\n');
}

// code_id and input bytes, from the request body (parsed and re-serialised as the service does) or given apart.
async function askedFor(values: Values): Promise<{ codeId: string; input: Uint8Array }> {
  if (values.request !== undefined) {
    const body = JSON.parse(values.request) as { code_id?: unknown; input?: unknown };
    if (typeof body.code_id !== 'string') throw new UsageError('--request has no string code_id');
    return { codeId: body.code_id, input: Buffer.from(JSON.stringify(body.input ?? {}), 'utf8') };
  }
  if (values['code-id'] === undefined) throw new UsageError('give --request, or --code-id');
  // The service sends {} when a request has no input.
  const input =
    values['input-file'] !== undefined
      ? await readFile(values['input-file'])
      : Buffer.from(values.input ?? '{}', 'utf8');
  return { codeId: values['code-id'], input };
}

async function codeSha256(values: Values): Promise<Uint8Array> {
  if (values['code-file'] !== undefined) return sha256(await readFile(values['code-file']));
  const hex = values['code-sha256'] === undefined ? undefined : sha256Hex.exec(values['code-sha256'])?.[1];
  if (hex === undefined) throw new UsageError('give --code-file, or --code-sha256 with 64 hex digits');
  return Buffer.from(hex, 'hex');
}

function explicitAnswer(values: Values): Answer {
  const { timestamp, signature, data, encoding = 'utf8' } = values;
  if (timestamp === undefined || signature === undefined || data === undefined) {
    throw new UsageError('give --response, or all of --timestamp, --signature and --data');
  }
  if (encoding !== 'utf8' && encoding !== 'base64')
    throw new UsageError(`--encoding is base64 or utf8, not ${encoding}`);
  return { timestamp, signature, data, encoding };
}

// Reads `curl -i` output: header blocks (any 1xx ones first, e.g. 100 Continue), then the body.
function parseHttp(raw: Buffer): { status: number; headers: Map<string, string>; body: Buffer } {
  let rest = raw;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) throw new UsageError('--response has no blank line between the headers and the body');
    const [statusLine = '', ...headerLines] = rest.subarray(0, end).toString('latin1').split('\r\n');
    rest = rest.subarray(end + 4);
    const status = /^HTTP\/[\d.]+ (\d{3})\b/.exec(statusLine)?.[1];
    if (status === undefined) throw new UsageError(`--response does not begin with a status line: ${statusLine}`);
    if (status.startsWith('1')) continue;
    const headers = new Map(
      headerLines.map((line) => {
        const colon = line.indexOf(':');
        return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
      }),
    );
    return { status: Number(status), headers, body: rest };
  }
}

function signatureOf(headers: Map<string, string>): { timestamp: string; signature: string } {
  const timestamp = headers.get(timestampHeader.toLowerCase());
  const signature = headers.get(signatureHeader.toLowerCase());
  if (timestamp === undefined || signature === undefined) {
    throw new UsageError(
      `--response has no ${timestampHeader} and ${signatureHeader} headers: it is not a signed answer`,
    );
  }
  if (!decimal.test(timestamp)) throw new UsageError(`the timestamp must be decimal unix seconds, not ${timestamp}`);
  return { timestamp, signature };
}

// A signed answer of the JSON route.
function parseResponse(raw: Buffer): Answer {
  const { headers, body } = parseHttp(raw);
  const { timestamp, signature } = signatureOf(headers);
  const envelope = JSON.parse(body.toString('utf8')) as { data?: unknown; encoding?: unknown };
  if (typeof envelope.data !== 'string') throw new UsageError("--response's body has no data string");
  return { timestamp, signature, data: envelope.data, encoding: envelope.encoding === 'base64' ? 'base64' : 'utf8' };
}

main().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`verify: ${message}`);
  if (error instanceof UsageError) console.error(`\n${usage}`);
  process.exitCode = usageExit;
});
