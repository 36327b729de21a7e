import { setTimeout as sleep } from 'node:timers/promises';
import { AttestationError, decodeAttestation } from './attestation/document.js';
import { fetchAttestation } from './attestation/fetchAttestation.js';
import type { Config } from './config.js';
import { StartupError } from './errors.js';
import { addressOf, type Signer, secp256k1PublicKey } from './signing.js';

/** How long start-up waits for the attestation server: under supervisord it starts beside the service. */
export const waitForServerMs = 30_000;
const retryEveryMs = 250;

/**
 * Refuses to start unless the attestation server's document attests the signer's own key, so that
 * no answer is signed with a key a client could not tie to this enclave (ATTESTATION_KEY_CHECK).
 */
export async function checkAttestedKey(
  config: Pick<Config, 'attestationUrl' | 'upstreamTimeoutMs' | 'signerKeyPath'>,
  signer: Signer,
  waitMs = waitForServerMs,
): Promise<void> {
  const where = `ATTESTATION_URL=${config.attestationUrl}`;
  const document = await fetchWithin(where, waitMs, () =>
    fetchAttestation({
      url: config.attestationUrl,
      publicKey: signer.publicKey,
      timeoutMs: config.upstreamTimeoutMs,
      signal: new AbortController().signal,
    }),
  );
  let attested: Uint8Array | undefined;
  try {
    attested = decodeAttestation(document).payload.publicKey;
  } catch (error) {
    if (!(error instanceof AttestationError)) throw error;
    throw new StartupError(`${where} answered something that is not an attestation document (${error.message})`);
  }
  const key = attested && secp256k1PublicKey(attested);
  const ours = addressOf(secp256k1PublicKey(signer.publicKey)!);
  if (key && addressOf(key) === ours) return;
  const theirs = attested
    ? `public key ${Buffer.from(attested).toString('hex')}${key ? ` (address ${addressOf(key)})` : ''}`
    : 'no public key';
  throw new StartupError(
    `${where} attests ${theirs}, not the signer's key ${Buffer.from(signer.publicKey).toString('hex')} ` +
      `(address ${ours}, SIGNER_KEY_PATH=${config.signerKeyPath}); answers would be signed with a key no ` +
      'document vouches for. Set ATTESTATION_KEY_CHECK=false only where the attestation server is a stand-in',
  );
}

async function fetchWithin(where: string, waitMs: number, fetch: () => Promise<Buffer>): Promise<Buffer> {
  for (const deadline = Date.now() + waitMs; ; await sleep(retryEveryMs)) {
    try {
      return await fetch();
    } catch (error) {
      if (Date.now() >= deadline) {
        const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : String(error);
        throw new StartupError(`${where}: no attestation document within ${waitMs} ms (${cause})`, {
          cause: error,
        });
      }
    }
  }
}
