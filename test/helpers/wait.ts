import { setTimeout as sleep } from 'node:timers/promises';

const pollMs = 10;

// Polls a condition until it holds, failing with the description after timeoutMs. A check that
// throws (a process read just as it goes away) counts as not holding yet.
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 5_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(pollMs);
  }
}
