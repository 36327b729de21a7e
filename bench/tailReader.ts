// A reader of a service's live tail (GET /admin/tail) held open through the bench, as an operator
// watching a function would: it reads every event and counts them.
import http from 'node:http';
import type { Cleanup } from './cleanup.js';

/** What a tail reader has received so far. */
export interface TailCounts {
  /** `invocation` events. */
  readonly invocations: number;
  /** Events the service said this reader lost (`lost` events' counts added up). */
  readonly lost: number;
}

export interface BenchTail {
  counts(): TailCounts;
  close(): void;
}

/** Opens a tail on a code_id of the service's operator listener; resolves once the stream has begun. */
export function openBenchTail(adminUrl: string, codeId: string, cleanup: Cleanup): Promise<BenchTail> {
  return new Promise((resolve, reject) => {
    const counts = { invocations: 0, lost: 0 };
    const tailRequest = http.get(`${adminUrl}/admin/tail?code_id=${encodeURIComponent(codeId)}`, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        reject(new Error(`GET /admin/tail answered ${response.statusCode}`));
        return;
      }
      let pending = '';
      response.setEncoding('utf8');
      response.on('data', (text: string) => {
        pending += text;
        const blocks = pending.split('\n\n');
        pending = blocks.pop()!;
        for (const block of blocks) {
          if (block.startsWith('event: invocation\n')) counts.invocations += 1;
          const lost = /^event: lost\ndata: \{"lost":(\d+)\}/.exec(block);
          if (lost) counts.lost += Number(lost[1]);
        }
      });
      const close = cleanup.add(`close the tail of ${codeId}`, () => void tailRequest.destroy());
      resolve({ counts: () => ({ ...counts }), close: () => void close() });
    });
    tailRequest.on('error', reject);
  });
}
