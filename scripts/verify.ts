// Recovers the address that signed an answer of POST /api/serverless (`npm run verify -- …`).
// Prints the address; with --expect, exits 1 when another key signed it. Exits 2 on bad usage.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { sha256 } from '../src/code/codeCache.js';
import { recoverSigner, type SignedFields, signatureHeader, timestampHeader } from '../src/signing.js';

const usage = `Usage: npm run verify -- [options]

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

class UsageError extends Error {}

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
        expect: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

async function main(): Promise<void> {
  const values = readArgs();
  if (values.help) {
    console.log(usage);
    return;
  }
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
  const address = recoverSigner(fields, answer.signature);
  console.log(address);
  if (values.expect !== undefined && values.expect.toLowerCase() !== address.toLowerCase()) {
    console.error(`signed by ${address}, not by ${values.expect}`);
    process.exitCode = mismatchExit;
  }
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

// Reads `curl -i` output: header blocks (any 1xx ones first, e.g. 100 Continue), then the JSON body.
function parseResponse(raw: Buffer): Answer {
  let rest = raw.toString('utf8');
  for (;;) {
    const end = /\r?\n\r?\n/.exec(rest);
    if (!end) throw new UsageError('--response has no blank line between the headers and the body');
    const [statusLine = '', ...headerLines] = rest.slice(0, end.index).split(/\r?\n/);
    rest = rest.slice(end.index + end[0].length);
    if (/^HTTP\/[\d.]+ 1\d\d\b/.test(statusLine)) continue;
    const headers = new Map(
      headerLines.map((line) => {
        const colon = line.indexOf(':');
        return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
      }),
    );
    const timestamp = headers.get(timestampHeader.toLowerCase());
    const signature = headers.get(signatureHeader.toLowerCase());
    if (timestamp === undefined || signature === undefined) {
      throw new UsageError(
        `--response has no ${timestampHeader} and ${signatureHeader} headers: it is not a signed 200 answer`,
      );
    }
    const body = JSON.parse(rest) as { data?: unknown; encoding?: unknown };
    if (typeof body.data !== 'string') throw new UsageError("--response's body has no data string");
    return { timestamp, signature, data: body.data, encoding: body.encoding === 'base64' ? 'base64' : 'utf8' };
  }
}

main().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`verify: ${message}`);
  if (error instanceof UsageError) console.error(`\n${usage}`);
  process.exitCode = usageExit;
});
