import { describe, expect, test } from 'vitest';
import { abortError, isServiceError, ServiceError, toServiceError } from '../../src/errors.js';

describe('ServiceError', () => {
  test.each([
    ['INVALID_PAYLOAD', 400, 'Invalid payload'],
    ['CODE_NOT_FOUND', 404, 'No code was found for this code_id'],
    ['EXECUTION_TIMEOUT', 408, 'Server timeout, fetching response took a long time'],
    ['OUT_OF_MEMORY', 500, 'The execution of the code has run out of memory.'],
    ['ATTESTATION_FAILED', 500, 'There was a problem in generating the attestation document'],
    ['CODE_DOWNLOAD_FAILED', 500, 'There was a problem in fetching the code from the storage server'],
    ['CODE_FILE_FAILED', 500, 'Error generating the JS file'],
    ['CONFIG_FILE_FAILED', 500, 'Error generating the configuration file.'],
    ['WORKERD_START_FAILED', 500, 'Error running the workerd runtime'],
    ['INVOCATION_FAILED', 500, 'Failed to generate the response'],
    ['SERVER_BUSY', 503, 'Server busy'],
    ['LEDGER_NOT_CONFIGURED', 404, 'No usage ledger (LEDGER_PATH)'],
    ['CLAIMS_NOT_CONFIGURED', 404, 'Claims need a usage ledger (LEDGER_PATH) and a key (SIGNER_KEY_PATH)'],
    ['NO_CLAIM_YET', 404, 'No claim yet'],
  ] as const)('%s answers %i "%s"', (code, status, message) => {
    const error = new ServiceError(code);
    expect(error).toMatchObject({ code, status, message, data: null });
  });

  test('is matched by code, not by message', () => {
    const error = new ServiceError('CODE_NOT_FOUND', { data: { code_id: 'x' } });
    expect(isServiceError(error, 'CODE_NOT_FOUND')).toBe(true);
    expect(isServiceError(error, 'SERVER_BUSY')).toBe(false);
    expect(isServiceError(new Error('No code was found for this code_id'))).toBe(false);
  });

  test('anything else thrown becomes a 500 that keeps the cause', () => {
    const cause = new TypeError('boom');
    const error = toServiceError(cause);
    expect(error).toMatchObject({ code: 'INTERNAL_ERROR', status: 500, cause });
  });

  test('an aborted signal means the time limit, unless it carries one of our errors', () => {
    const timedOut = AbortSignal.abort(new DOMException('timed out', 'TimeoutError'));
    expect(abortError(timedOut).code).toBe('EXECUTION_TIMEOUT');
    const closed = AbortSignal.abort(new ServiceError('CLIENT_CLOSED'));
    expect(abortError(closed).code).toBe('CLIENT_CLOSED');
  });
});
