import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { childPids, commandLine, descendantPids, exitedWithin, isRunning, signal } from './processes.js';
import { projectRoot } from './projectRoot.js';

// The enclave image's start command (Dockerfile.enclave's CMD), run from this checkout.
const startScript = path.join(projectRoot, 'scripts/enclave-start.sh');
// Longer than the service program's stopwaitsecs (15 s in supervisord.conf).
const stopTimeoutMs = 20_000;

// supervisord, started the way the enclave image starts it, as a child of the test.
export interface Supervisord {
  readonly pid: number;
  /** Everything the start script and supervisord (and so every program) wrote so far. */
  output(): string;
  /** Resolves with the exit code (or signal) once supervisord has exited. */
  readonly exited: Promise<number | NodeJS.Signals | null>;
  /** The pid of the running program whose command line contains commandPart, if there is one. */
  programPid(commandPart: string): Promise<number | undefined>;
  /** SIGTERM, then SIGKILL for it and everything under it if it has not exited in time. Safe to repeat. */
  stop(): Promise<number | NodeJS.Signals | null>;
}

// Runs scripts/enclave-start.sh (cgroup pool for the detected version, then supervisord with
// supervisord.conf) with PATH and the given environment; extra arguments go to supervisord.
// Its stdout and stderr go to outputFile: supervisord.conf sends every program's log to
// /dev/stdout, which can be opened again when it is a file (or a pipe, or the enclave's console)
// but not when it is the socket a Node child process gets for 'pipe'. Appending keeps
// supervisord's lines and its programs' lines from overwriting one another.
export function startEnclaveStartPath(
  env: Readonly<Record<string, string>>,
  supervisordArgs: readonly string[],
  outputFile: string,
): Supervisord {
  const out = openSync(outputFile, 'a');
  const child = spawn(startScript, supervisordArgs, {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  if (child.pid === undefined) throw new Error(`${startScript} did not start`);
  const pid = child.pid;
  const output = () => readFileSync(outputFile, 'utf8');
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) =>
    child.once('exit', (code, sig) => resolve(code ?? sig)),
  );
  let done = false;
  void exited.then(() => (done = true));

  return {
    pid,
    output,
    exited,
    programPid: async (commandPart) => {
      // The start script execs supervisord, so its programs are the script process's children.
      for (const candidate of await childPids(pid)) {
        if ((await commandLine(candidate)).includes(commandPart) && (await isRunning(candidate))) return candidate;
      }
      return undefined;
    },
    stop: async () => {
      if (done) return exited;
      const everything = [pid, ...(await descendantPids(pid))];
      signal(pid, 'SIGTERM');
      if (!(await exitedWithin(exited, stopTimeoutMs))) for (const each of everything) signal(each, 'SIGKILL');
      return exited;
    },
  };
}
