import type { StorageAttestation } from '../attestation/storageAttestation.js';
import type { Capacity } from '../capacity/capacity.js';
import type { FunctionRequest, Invocation } from '../capacity/invokeWorker.js';
import type { LeaseRequest, WorkerLease } from '../capacity/workerLease.js';
import type { CodeCache } from '../code/codeCache.js';
import { parseWorkerCode } from '../code/codeFormat.js';
import { openSealedSecrets } from '../code/sealedSecrets.js';
import type { RunnableCode, StoredCode } from '../code/workerCode.js';
import type { Config } from '../config.js';
import { isServiceError, toServiceError } from '../errors.js';
import type { Sealing } from '../secrets/sealing.js';
import { AttestationRefusedError, downloadCode } from './codeDownload.js';

/** What every run needs and outlives it. */
export interface PipelineDependencies {
  readonly config: Config;
  /** Where each invocation's workerd runs (src/capacity/). */
  readonly capacity: Capacity;
  readonly codeCache: CodeCache;
  /** The document presented to the storage server with each download. */
  readonly attestation: StorageAttestation;
  /** The key sealed secrets are opened with, where this instance has one. */
  readonly sealing: Sealing;
}

/** One client request to run a function. */
export interface RunRequest extends Omit<LeaseRequest, 'prepare'> {
  /** The HTTP request the function receives. */
  readonly request: FunctionRequest;
}

/** What the function answered, whatever its status, with what a signature over it needs. */
export interface RunResult {
  /** The function's answer: status, headers, body exactly as it answered. */
  readonly answer: Invocation;
  /** sha256 of the code that ran, as the storage server served it. */
  readonly codeSha256: Buffer;
  /** Its row in the usage ledger, when one is kept. */
  readonly invocationId?: number;
}

/**
 * Runs a stored function once, start to finish: the request flow of the service. Every failure is
 * a ServiceError, and on every path nothing is left behind.
 */
export async function runFunction(deps: PipelineDependencies, request: RunRequest): Promise<RunResult> {
  let lease: WorkerLease | undefined;
  try {
    // 1–5. A workerd listening with the code, in a cgroup of its own: a spare of the cached code,
    //      or a free cgroup (a busy server answers 503 here) whose standby starts workerd once the
    //      code is prepared (2–4). The time limit runs from the start to the answer.
    lease = await deps.capacity.lease({ ...request, prepare: () => prepareCode(deps, request) });

    // 6. The request, to the function; its whole answer back.
    const answer = await lease.invoke(request.request);
    return { answer, codeSha256: lease.code.sha256 };
  } catch (error) {
    throw toServiceError(error);
  } finally {
    // 7. Nothing left behind, on every path: the process, its cgroup, its files. The answer does
    //    not wait for it; work the function handed to waitUntil first gets what is left of its time.
    lease?.release();
  }
}

// 2–4. The code: from the cache, or from the storage server on presenting an attestation
// document; then parsed (one script, or a bundle of modules) and its sealed secrets opened, inside
// the enclave: their plaintext is only in the config workerd reads.
async function prepareCode(deps: PipelineDependencies, request: RunRequest): Promise<RunnableCode> {
  const { codeId } = request;
  const { code: stored, sha256 } = await deps.codeCache.get(codeId, () => fetchCode(deps, request));
  const code = openSealedSecrets(await parseWorkerCode(stored.bytes, stored.contentType), deps.sealing);
  return { codeId, stored, sha256, code };
}

// 2–3. A document that proves where the code will run, then the code. A document the storage
// server refuses is not presented again; a reused one is replaced at once, for this download too.
async function fetchCode(deps: PipelineDependencies, request: RunRequest): Promise<StoredCode> {
  const { config, attestation } = deps;
  const { codeId, signal, stages } = request;
  const presented = await stages.run('attestation', () => attestation.get(signal));
  try {
    return await stages.run('download', () =>
      downloadCode({
        url: config.storageUrl,
        codeId,
        attestation: presented.document,
        maxBytes: config.maxCodeBytes,
        timeoutMs: config.upstreamTimeoutMs,
        signal,
      }),
    );
  } catch (error) {
    if (!isServiceError(error, 'CODE_DOWNLOAD_FAILED') || !(error.cause instanceof AttestationRefusedError))
      throw error;
    attestation.refused(presented.document);
    if (!presented.reused) throw error;
    return fetchCode(deps, request);
  }
}
