import http from 'node:http';
import { waitFor } from './wait.js';

/** One event of GET /admin/tail, as it arrived. */
export interface TailEvent {
  readonly type: string;
  readonly data: Record<string, unknown>;
  /** When it arrived (performance.now()). */
  readonly atMs: number;
}

/** An open tail: the events so far, and a way to wait for one. */
export interface OpenTail {
  readonly events: TailEvent[];
  /** Waits for an event that matches, up to timeoutMs. */
  next(match: (event: TailEvent) => boolean, timeoutMs?: number): Promise<TailEvent>;
  close(): void;
}

/** Opens GET /admin/tail?code_id= on an operator listener and parses its Server-Sent Events. */
export function openTail(adminUrl: string, codeId: string): Promise<OpenTail> {
  return new Promise((resolve, reject) => {
    const request = http.get(`${adminUrl}/admin/tail?code_id=${encodeURIComponent(codeId)}`, (response) => {
      if (response.statusCode !== 200) {
        reject(new Error(`GET /admin/tail answered ${response.statusCode}`));
        response.resume();
        return;
      }
      const events: TailEvent[] = [];
      let buffered = '';
      response.setEncoding('utf8');
      response.on('data', (text: string) => {
        buffered += text;
        for (let end = buffered.indexOf('\n\n'); end !== -1; end = buffered.indexOf('\n\n')) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const type = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (type && data) events.push({ type, data: JSON.parse(data), atMs: performance.now() });
        }
      });
      resolve({
        events,
        next: async (match, timeoutMs = 5_000) => {
          await waitFor('a tail event', async () => events.some(match), timeoutMs);
          return events.find(match)!;
        },
        close: () => request.destroy(),
      });
    });
    request.on('error', reject);
  });
}
