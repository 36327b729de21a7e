// The answer of POST /admin/claims and what its signature covers. Apart from signing.ts, so that
// the ledger never loads the signing library: a service without SIGNER_KEY_PATH does not need it.
import type { SignedClaim } from '../signing.js';

/** What one code_id used, as a claim's answer states it. */
export interface ClaimAnswerCode {
  readonly code_id: string;
  readonly invocations: number;
  readonly cpu_us: number;
  readonly wall_us: number;
  readonly bytes_in: number;
  readonly bytes_out: number;
}

/** A usage claim as POST /admin/claims answers it (its data), signature included. */
export interface ClaimAnswer {
  readonly claim_id: number;
  readonly nonce: string;
  readonly until_ms: number;
  readonly codes: readonly ClaimAnswerCode[];
  readonly signature: string;
}

/** What the signature of a claim's answer covers. */
export function signedClaimOf(claim: Omit<ClaimAnswer, 'signature'>): SignedClaim {
  return {
    claimId: claim.claim_id,
    nonce: Buffer.from(claim.nonce, 'hex'),
    untilMs: claim.until_ms,
    codes: claim.codes.map((code) => ({
      codeId: code.code_id,
      invocations: code.invocations,
      cpuUs: code.cpu_us,
      wallUs: code.wall_us,
      bytesIn: code.bytes_in,
      bytesOut: code.bytes_out,
    })),
  };
}
