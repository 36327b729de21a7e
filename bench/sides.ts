// The things compared: bare workerd (the limit), bare workerd in a cgroup, Miniflare (the peer),
// and the service cold and with its code cache warm, each behind the same "run hello once" call.
import { Agent, request } from 'undici';
import type { Driver } from './driverProcess.js';
import type { ServiceProcess } from './serviceProcess.js';
import { invocationTimeoutMs } from './timeouts.js';

export type SideKey =
  | 'limit'
  | 'cgroup'
  | 'miniflare'
  | 'cold'
  | 'warm'
  | 'cold-before'
  | 'warm-before'
  | 'spares'
  | 'http'
  | 'no-queue'
  | 'tailed'
  | 'mixed-warm'
  | 'mixed-spares';

/** The sides that are a service of this project's, of this build or the one before. */
export type ServiceSideKey = Exclude<SideKey, 'limit' | 'cgroup' | 'miniflare'>;

/** Whether a side runs the build compared with this one (BENCH_BASELINE): measured, but held to no target. */
export function isBuildBefore(key: SideKey): boolean {
  return key === 'cold-before' || key === 'warm-before';
}

/** The function every side runs, and its input; its answer proves the run really happened. */
export const benchCodeId = 'hello';
const benchInput = { name: 'bench' };
const expectedAnswer = 'Hello, bench!';
/** The function's request body, as every side sends it to the worker. */
export const benchBody = JSON.stringify(benchInput);

/** Why an invocation failed, in a few stable words for error counts. */
export class InvocationError extends Error {
  override readonly name = 'InvocationError';
  constructor(
    readonly kind: string,
    message: string,
    /** The service had no free cgroup (503 Server busy); a client backs off and retries. */
    readonly busy = false,
  ) {
    super(message);
  }
}

/** CPU in ms used so far by the processes of a side: cumulative, read before and after a load. */
export interface SideCpu {
  /** The side's own process: the service, or the driver that spawns bare workerd. */
  readonly process: number;
  /** The workerd it runs: with their standby shells (the service's cgroups), or spawned and reaped by the driver. */
  readonly workerd: number | undefined;
}

export interface Side {
  readonly key: SideKey;
  readonly label: string;
  /** Runs the function once, end to end; throws an InvocationError when it did not answer as expected. */
  invoke(): Promise<void>;
  /** Durations in ms by stage name of each successful invocation, where the side reports them. */
  readonly stages: Map<string, number[]>;
  /** The service process behind this side, whose CPU and memory the bench watches. */
  readonly service?: ServiceProcess;
  /** The CPU its processes have used so far, where the bench can read it. */
  cpu?(): Promise<SideCpu>;
}

/** A service side: its process, and a client to close at the end. */
export interface ServiceSide extends Side {
  readonly service: ServiceProcess;
  close(): Promise<void>;
}

/** Bare workerd spawned directly from a lean process, no cgroup: one workerd start and nothing else. */
export function limitSide(bare: Driver): Side {
  return bareSide('limit', 'bare workerd (no cgroup)', bare);
}

/** Bare workerd joined to a cgroup by the same shell wrapper the service uses: the cost of cgroup placement. */
export function cgroupSide(bare: Driver): Side {
  return bareSide('cgroup', 'bare workerd in a cgroup (sh join)', bare);
}

// A bare side records its start, execution and cleanup under the names the service's Server-Timing uses.
function bareSide(key: 'limit' | 'cgroup', label: string, bare: Driver): Side {
  const stages = new Map<string, number[]>();
  const invoke = () =>
    expectAnswer(key, async () => {
      const { answer, parts } = await bare.invoke(benchBody);
      if (parts) {
        record(stages, 'start', parts.startMs);
        record(stages, 'execution', parts.executionMs);
        record(stages, 'cleanup', parts.cleanupMs);
      }
      return answer;
    });
  const cpu = async (): Promise<SideCpu> => {
    const { ownMs, reapedChildrenMs } = await bare.cpu();
    return { process: ownMs, workerd: reapedChildrenMs };
  };
  return { key, label, invoke, stages, cpu };
}

/** A fresh Miniflare per invocation, in a process of its own. */
export function miniflareSide(miniflare: Driver): Side {
  return {
    key: 'miniflare',
    label: 'Miniflare (new/dispatch/dispose)',
    invoke: () => expectAnswer('miniflare', async () => (await miniflare.invoke(benchBody)).answer),
    stages: new Map(),
  };
}

/**
 * Invocations over HTTP of a running service, with a kept-alive connection as a real client has:
 * POST /api/serverless (the JSON route), or the function's own request through its HTTP route,
 * POST /fn/<code_id>/ with the same input as the body.
 */
export function serviceSide(
  key: ServiceSideKey,
  label: string,
  service: ServiceProcess,
  route: 'json' | 'http' = 'json',
  /** The code_id of each next invocation (of the JSON route). */
  nextCodeId: () => string = () => benchCodeId,
): ServiceSide {
  const agent = new Agent({ keepAliveTimeout: 10_000 });
  const stages = new Map<string, number[]>();
  const invoke = () =>
    expectAnswer(key, async (signal) => {
      const body =
        route === 'json' ? JSON.stringify({ code_id: nextCodeId(), input: benchInput }) : JSON.stringify(benchInput);
      const url = route === 'json' ? `${service.url}/api/serverless` : `${service.url}/fn/${benchCodeId}/`;
      const response = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        dispatcher: agent,
        signal,
      });
      const text = await response.body.text();
      if (response.statusCode !== 200) {
        throw new InvocationError(
          `HTTP ${response.statusCode}`,
          `${key}: ${response.statusCode} ${text.slice(0, 300)}`,
          response.statusCode === 503,
        );
      }
      // The service's own account of its stages, when it sends one.
      for (const [name, ms] of parseServerTiming(response.headers['server-timing'])) record(stages, name, ms);
      return route === 'json' ? ((JSON.parse(text) as { data?: unknown }).data as string) : text;
    });
  const cpu = async (): Promise<SideCpu> => ({ process: await service.cpuMs(), workerd: service.workerdCpuMs() });
  return { key, label, invoke, service, stages, cpu, close: () => agent.close() };
}

/** The name;dur=ms entries of a Server-Timing header (RFC: comma-separated metrics, ;-separated params). */
export function parseServerTiming(header: string | string[] | undefined): Array<[string, number]> {
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  const entries: Array<[string, number]> = [];
  for (const metric of text.split(',')) {
    const [name, ...params] = metric.split(';').map((part) => part.trim());
    const duration = params.find((param) => param.startsWith('dur='));
    if (!name || !duration) continue;
    const ms = Number(duration.slice('dur='.length).replace(/^"|"$/g, ''));
    if (Number.isFinite(ms)) entries.push([name, ms]);
  }
  return entries;
}

function record(stages: Map<string, number[]>, name: string, ms: number): void {
  const values = stages.get(name);
  if (values) values.push(ms);
  else stages.set(name, [ms]);
}

async function expectAnswer(key: SideKey, run: (signal: AbortSignal) => Promise<string>): Promise<void> {
  let answer: string;
  try {
    answer = await run(AbortSignal.timeout(invocationTimeoutMs));
  } catch (error) {
    if (error instanceof InvocationError) throw error;
    const name = (error as Error)?.name;
    if (name === 'TimeoutError' || name === 'AbortError')
      throw new InvocationError('timeout', `${key}: no answer in ${invocationTimeoutMs} ms`);
    throw new InvocationError('failed', `${key}: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (answer !== expectedAnswer) {
    throw new InvocationError(
      'wrong answer',
      `${key}: expected ${JSON.stringify(expectedAnswer)}, got ${JSON.stringify(answer)}`,
    );
  }
}
