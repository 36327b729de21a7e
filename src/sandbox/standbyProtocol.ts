import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

/** The standby's exit status when it cannot put itself into its cgroup. */
export const cgroupJoinFailed = 125;
/**
 * A run's status when the workerd binary cannot be executed: the shell's own for a command found
 * but not executable (126) or not found (127), which workerd never exits with.
 */
export const cannotExecStatuses: readonly number[] = [126, 127];
/** How many bytes of each workerd's output (stdout and stderr) the service keeps: the end, where the error is. */
export const outputTailBytes = 64 * 1024;

/**
 * The standby: a shell that puts itself into every cgroup named before "--" (workerd is capped
 * from its first instruction on, before it reads any user code), then starts a fresh workerd for
 * each config path it reads on stdin, one at a time, and waits for it to end. Forking a workerd
 * from this small shell, already inside the cgroup, costs far less than forking the service's
 * large process and joining a cgroup for each request, where a write to cgroup.procs can wait for
 * an RCU grace period (docs/architecture.md has the measurements).
 * - fd 3: each workerd's process says {"event":"exec","turn":N,"pid":P} just before it becomes
 *   workerd (its pid, read from /proc, as dash has no $BASHPID); then workerd says
 *   {"event":"listen","socket":"http","port":40123} once it listens. A binary that is not
 *   executable ends the run with status 126 instead, on the end line itself, so that no reading
 *   of two pipes in some order can miss it.
 * - stdout: each workerd's output (its stderr too), then, once it has ended, a line
 *   "<marker> <turn> <status>". The marker is random, so a function's output cannot fake the end
 *   of its run. The service reads this pipe within a budget (src/sandbox/outputBudget.ts). The
 *   shell's own stderr is a pipe of its own.
 */
export const standbyScript = [
  'marker=$1; shift',
  `while [ "$1" != -- ]; do echo $$ > "$1" || exit ${cgroupJoinFailed}; shift; done; shift`,
  'turn=0',
  'while IFS= read -r config; do',
  '  turn=$((turn + 1))',
  `  (exec 2>&1; [ -x "$1" ] || exit ${cannotExecStatuses[0]}`,
  '    read -r pid _ </proc/self/stat; echo "{\\"event\\":\\"exec\\",\\"turn\\":$turn,\\"pid\\":$pid}" >&3',
  '    exec "$@" "$config" </dev/null) &',
  '  wait $!',
  '  echo "$marker $turn $?"',
  'done',
].join('\n');

/** The standby shell's $0: `ps` shows it, and the tests look for stray standbys by it. */
export const standbyName = 'workerd-standby';
/**
 * Splits the standby's output into its runs (exported for its tests): everything up to a line "<marker> <turn> <status>"
 * belongs to that turn's workerd. A marker cut across chunks is held back until it is whole.
 */
export function splitRuns(
  marker: string,
  onOutput: (chunk: Buffer) => void,
  onEnd: (turn: number, status: number) => void,
): { push(chunk: Buffer): void } {
  const markerBytes = Buffer.from(marker);
  const endLine = new RegExp(`^${marker} (\\d+) (\\d+)\n`);
  let held = Buffer.alloc(0);
  return {
    push(chunk) {
      let data = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
      for (;;) {
        const at = data.indexOf(markerBytes);
        if (at === -1) {
          // The data may end in the first bytes of a marker: hold those back.
          const keep = markerStartAtEnd(data, markerBytes);
          if (data.length > keep) onOutput(data.subarray(0, data.length - keep));
          held = Buffer.from(data.subarray(data.length - keep));
          return;
        }
        if (at > 0) onOutput(data.subarray(0, at));
        const newline = data.indexOf(10, at);
        if (newline === -1) {
          held = Buffer.from(data.subarray(at));
          return;
        }
        const match = endLine.exec(data.subarray(at, newline + 1).toString('latin1'));
        if (match) onEnd(Number(match[1]), Number(match[2]));
        data = data.subarray(newline + 1);
      }
    },
  };
}

// How many bytes at the end of data are the first bytes of the marker.
function markerStartAtEnd(data: Buffer, marker: Buffer): number {
  for (let length = Math.min(data.length, marker.length - 1); length > 0; length -= 1) {
    if (data.subarray(data.length - length).equals(marker.subarray(0, length))) return length;
  }
  return 0;
}

/**
 * Follows the control fd, one JSON object per line: a run's {"event":"exec","turn":1,"pid":123}
 * just before its process becomes workerd, then workerd's
 * {"event":"listen","socket":"http","port":40123}.
 */
export function watchControl(
  controlFd: Readable | undefined,
  on: { exec(turn: number, pid: number): void; listen(port: number): void },
): void {
  if (!controlFd) return;
  const lines = createInterface({ input: controlFd, crlfDelay: Infinity });
  lines.on('line', (line) => {
    const message = parseJson(line) as { event?: unknown; turn?: unknown; pid?: unknown; port?: unknown } | undefined;
    if (message?.event === 'exec' && typeof message.turn === 'number' && typeof message.pid === 'number')
      on.exec(message.turn, message.pid);
    else if (message?.event === 'listen' && typeof message.port === 'number') on.listen(message.port);
  });
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
