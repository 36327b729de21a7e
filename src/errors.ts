/**
 * Why an invocation ended, one word of a set (docs/api.md#outcomes): the same in the usage header,
 * the ledger, /metrics, the log line and the tail. A function's answer with its own error status is `ok`.
 */
export const outcomes = [
  'ok',
  'exception',
  'cpu_limit',
  'memory_limit',
  'wall_limit',
  'response_limit',
  'crashed',
  'client_gone',
  'shutdown',
  'busy',
  'invalid_code',
  'code_unavailable',
  'bad_request',
  'internal',
] as const;
export type Outcome = (typeof outcomes)[number];

// Every failure the service can answer with, in one table: a stable code, the outcome it stands
// for, the HTTP status and the message users see. Code matches on `error.code`, never on message text.
const definitions = {
  INVALID_PAYLOAD: { outcome: 'bad_request', status: 400, message: 'Invalid payload' },
  PAYLOAD_TOO_LARGE: {
    outcome: 'bad_request',
    status: 413,
    message: 'The request body is larger than this service accepts (MAX_BODY_BYTES)',
  },
  UNSUPPORTED_MEDIA_TYPE: {
    outcome: 'bad_request',
    status: 415,
    message: 'The request body must be JSON (Content-Type: application/json)',
  },
  ROUTE_NOT_FOUND: { outcome: 'bad_request', status: 404, message: 'No such endpoint' },
  USER_CODE_INVALID: {
    outcome: 'invalid_code',
    status: 400,
    message:
      'Failed to generate a response. Syntax error in your JavaScript code. Please check the syntax and try again.',
  },
  INVALID_BUNDLE: { outcome: 'invalid_code', status: 400, message: 'The stored code bundle is invalid' },
  UNSUPPORTED_BINDING: {
    outcome: 'invalid_code',
    status: 400,
    message: 'The code needs a binding of a type this runtime cannot provide',
  },
  // data names the binding and why, never its value.
  SEALED_SECRET_INVALID: {
    outcome: 'invalid_code',
    status: 400,
    message: 'A sealed secret binding does not open with this image’s sealing key',
  },
  // A 503: another instance may hold the sealing key, and no user code has run.
  SEALING_UNAVAILABLE: {
    outcome: 'code_unavailable',
    status: 503,
    message: 'The code has sealed secrets, and this instance cannot open them (no sealing key)',
  },
  UNSUPPORTED_LANGUAGE: {
    outcome: 'invalid_code',
    status: 400,
    message: 'This runtime runs JavaScript and WebAssembly; the code is in a language it does not run',
  },
  INVALID_COMPATIBILITY: {
    outcome: 'invalid_code',
    status: 400,
    message: "workerd refused the code's compatibility date or flags",
  },
  CODE_TOO_LARGE: {
    outcome: 'invalid_code',
    status: 413,
    message: 'The stored code is larger than this service runs (MAX_CODE_BYTES)',
  },
  CODE_NOT_FOUND: { outcome: 'code_unavailable', status: 404, message: 'No code was found for this code_id' },
  // A limit code asks for (its upload's `limits`) past what the operator allows.
  LIMIT_NOT_ALLOWED: {
    outcome: 'invalid_code',
    status: 400,
    message: "The code's limits ask for more than this instance allows",
  },
  EXECUTION_TIMEOUT: {
    outcome: 'wall_limit',
    status: 408,
    message: 'Server timeout, fetching response took a long time',
  },
  // Not a 503, as Workers answers it: the function ran, so a load balancer must not run it again elsewhere.
  CPU_LIMIT_EXCEEDED: {
    outcome: 'cpu_limit',
    status: 500,
    message: "The function used more CPU time than its limit (CPU_LIMIT_MS, or its code's limits.cpu_ms)",
  },
  OUT_OF_MEMORY: { outcome: 'memory_limit', status: 500, message: 'The execution of the code has run out of memory.' },
  USER_CODE_FAILED: {
    outcome: 'exception',
    status: 500,
    message:
      'The server failed to retrieve a response. Please ensure that you have implemented appropriate exception handling in your JavaScript code.',
  },
  // The function's own answer, not a failure of the service's: its status (a 4xx or 5xx as it is,
  // anything else not a success as 502) and body are in data.
  FUNCTION_ERROR_STATUS: {
    outcome: 'ok',
    status: 502,
    message: 'The function answered with a status that is not a success',
  },
  RESPONSE_TOO_LARGE: {
    outcome: 'response_limit',
    status: 500,
    message: "The function's response is larger than this service returns (MAX_RESPONSE_BYTES)",
  },
  WORKERD_CRASHED: { outcome: 'crashed', status: 500, message: 'The workerd runtime exited before it answered' },
  ATTESTATION_FAILED: {
    outcome: 'code_unavailable',
    status: 500,
    message: 'There was a problem in generating the attestation document',
  },
  CODE_DOWNLOAD_FAILED: {
    outcome: 'code_unavailable',
    status: 500,
    message: 'There was a problem in fetching the code from the storage server',
  },
  CODE_FILE_FAILED: { outcome: 'internal', status: 500, message: 'Error generating the JS file' },
  CONFIG_FILE_FAILED: { outcome: 'internal', status: 500, message: 'Error generating the configuration file.' },
  WORKERD_START_FAILED: { outcome: 'internal', status: 500, message: 'Error running the workerd runtime' },
  INVOCATION_FAILED: { outcome: 'internal', status: 500, message: 'Failed to generate the response' },
  SERVER_BUSY: { outcome: 'busy', status: 503, message: 'Server busy' },
  SHUTTING_DOWN: { outcome: 'shutdown', status: 503, message: 'Server is shutting down' },
  DRAINING: { outcome: 'shutdown', status: 503, message: 'Server is draining: it starts no new work' },
  // GET /health's alone: every cgroup of the pool is occupied by another process or unjoinable.
  POOL_UNUSABLE: { outcome: 'busy', status: 503, message: 'No usable cgroup in the pool' },
  LEDGER_UNAVAILABLE: {
    outcome: 'internal',
    status: 503,
    message: 'The usage ledger cannot be written (LEDGER_PATH): no work runs unrecorded',
  },
  // Not a 503: the function ran, so a load balancer must not run it again elsewhere.
  LEDGER_WRITE_FAILED: {
    outcome: 'internal',
    status: 500,
    message: 'The function ran, but its usage could not be recorded (LEDGER_PATH); its answer is withheld',
  },
  // The operator's listener: endpoints of a part the service was started without.
  LEDGER_NOT_CONFIGURED: { outcome: 'bad_request', status: 404, message: 'No usage ledger (LEDGER_PATH)' },
  CLAIMS_NOT_CONFIGURED: {
    outcome: 'bad_request',
    status: 404,
    message: 'Claims need a usage ledger (LEDGER_PATH) and a key (SIGNER_KEY_PATH)',
  },
  // The operator's listener: GET /admin/tail with maxTails open already.
  TAIL_LIMIT: { outcome: 'busy', status: 503, message: 'As many tails are open as this service holds' },
  NO_CLAIM_YET: { outcome: 'bad_request', status: 404, message: 'No claim yet' },
  // Not a 503: the function had started, so a load balancer must not run it again elsewhere.
  SHUTDOWN_INTERRUPTED: {
    outcome: 'shutdown',
    status: 500,
    message: 'The server shut down while the function was running',
  },
  CLIENT_CLOSED: { outcome: 'client_gone', status: 499, message: 'The client closed the request' },
  INTERNAL_ERROR: { outcome: 'internal', status: 500, message: 'Internal server error' },
} as const satisfies Record<string, { readonly outcome: Outcome; readonly status: number; readonly message: string }>;

/** The stable code of every failure the service can answer with. */
export type ErrorCode = keyof typeof definitions;
/** Every error code, in the table's order. */
export const errorCodes = Object.keys(definitions) as readonly ErrorCode[];

/** A failure with a stable code; `data` is what the user sees in the envelope's data field. */
export class ServiceError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly data: unknown;

  constructor(
    code: ErrorCode,
    options: { readonly data?: unknown; readonly cause?: unknown; readonly status?: number } = {},
  ) {
    super(definitions[code].message, { cause: options.cause });
    this.name = 'ServiceError';
    this.code = code;
    // Only FUNCTION_ERROR_STATUS takes another status than its own: the function's.
    this.status = options.status ?? definitions[code].status;
    this.data = options.data ?? null;
  }
}

/** The outcome of an invocation answered with this failure's code, or `ok` without one. */
export function outcomeOf(code: ErrorCode | undefined): Outcome {
  return code === undefined ? 'ok' : definitions[code].outcome;
}

/** Tells whether an unknown thrown value is one of ours with the given code. */
export function isServiceError(error: unknown, code?: ErrorCode): error is ServiceError {
  return error instanceof ServiceError && (code === undefined || error.code === code);
}

/**
 * The error for a signal that fired: its own reason when that is one of ours (the client went
 * away, the service is shutting down), otherwise the invocation's time limit.
 */
export function abortError(signal: AbortSignal): ServiceError {
  return isServiceError(signal.reason)
    ? signal.reason
    : new ServiceError('EXECUTION_TIMEOUT', { cause: signal.reason });
}

/** Turns anything thrown into one of ours, so every answer has a code, a status and a message. */
export function toServiceError(error: unknown): ServiceError {
  return error instanceof ServiceError ? error : new ServiceError('INTERNAL_ERROR', { cause: error });
}

/** A start-up failure (bad configuration, missing binary, empty pool): the service must not run. */
export class StartupError extends Error {
  override readonly name = 'StartupError';
}
