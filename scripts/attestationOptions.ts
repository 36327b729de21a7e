// What `npm run verify` and `npm run seal` read alike: the options of an attestation check.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { VerifyOptions } from '../src/attestation/verify.js';

/** Bad usage: the commands exit 2 and print their usage. */
export class UsageError extends Error {}

const decimal = /^\d+$/;

/** The attestation options both commands take: --root, --at, --pcr, --nonce. */
export interface AttestationArgs {
  readonly root?: string;
  readonly at?: string;
  readonly pcr?: string[];
  readonly nonce?: string;
}

/** The verifier's options from the command line; a bad one is a UsageError naming it. */
export async function verifyOptions(values: AttestationArgs): Promise<VerifyOptions> {
  const rootPem = values.root === undefined ? undefined : await readFile(values.root, 'utf8');
  if (rootPem !== undefined) {
    try {
      new X509Certificate(rootPem);
    } catch {
      throw new UsageError(`--root ${values.root} is not a PEM certificate`);
    }
  }
  return {
    rootPem,
    atMs: values.at === undefined ? undefined : parseMoment(values.at),
    pcrs: new Map((values.pcr ?? []).map(parsePcr)),
    nonce: values.nonce === undefined ? undefined : hexBytes('--nonce', values.nonce),
  };
}

function parseMoment(at: string): number {
  const ms = decimal.test(at) ? Number(at) : Date.parse(at);
  if (!Number.isSafeInteger(ms)) throw new UsageError(`--at is unix ms or an ISO 8601 date, not ${at}`);
  return ms;
}

function parsePcr(option: string): [number, Uint8Array] {
  const match = /^(\d{1,2})=(.*)$/.exec(option);
  if (!match) throw new UsageError(`--pcr is <index>=<hex>, not ${option}`);
  return [Number(match[1]), hexBytes(`--pcr ${match[1]}`, match[2]!)];
}

export function hexBytes(option: string, value: string): Uint8Array {
  const hex = /^(?:0x)?((?:[0-9a-fA-F]{2})+)$/.exec(value)?.[1];
  if (hex === undefined) throw new UsageError(`${option} must be bytes in hex, not ${value}`);
  return Buffer.from(hex, 'hex');
}
