// Time limits shared by every side.

/** Far above any healthy invocation; a hung one fails instead of stalling the bench. */
export const invocationTimeoutMs = 30_000;
