// The peer: Miniflare, the Workers simulator developers run locally, used the way a per-request
// sandbox would use it: a new instance per invocation, one dispatchFetch, dispose.
import { Miniflare } from 'miniflare';
import type { RuntimeDefaults } from '../src/code/workerdConfig.js';
import type { Cleanup } from './cleanup.js';

export interface MiniflareRunner {
  /** New Miniflare, one POST of body, dispose; resolves with the answer. */
  invoke(body: string, signal: AbortSignal): Promise<string>;
  /** Disposes every instance still alive. */
  remove(): Promise<void>;
}

/** Prepares invocations of one service-worker script with a fixed compatibility date and flags. */
export function prepareMiniflare(code: string, compatibility: RuntimeDefaults, cleanup: Cleanup): MiniflareRunner {
  const live = new Set<Miniflare>();
  const remove = cleanup.add('miniflare instances', async () => {
    await Promise.allSettled([...live].map((instance) => instance.dispose()));
    live.clear();
  });
  const invoke = async (body: string, signal: AbortSignal) => {
    const instance = new Miniflare({
      script: code,
      compatibilityDate: compatibility.compatibilityDate,
      compatibilityFlags: [...compatibility.compatibilityFlags],
    });
    live.add(instance);
    try {
      const response = await instance.dispatchFetch('http://localhost/', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal,
      });
      const text = await response.text();
      if (response.status !== 200) throw new Error(`Miniflare answered ${response.status}: ${text}`);
      return text;
    } finally {
      await instance.dispose();
      live.delete(instance);
    }
  };
  return { invoke, remove };
}
