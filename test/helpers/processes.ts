import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

// The state letter of a process (R, S, Z, ...), or undefined once it is gone.
async function processState(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // The command name in parentheses may hold spaces or parentheses; the state follows the last ')'.
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
}

// Whether a process is alive: it exists and is not a zombie waiting to be reaped.
export async function isRunning(pid: number): Promise<boolean> {
  const state = await processState(pid);
  return state !== undefined && state !== 'Z';
}

// The parent pid in a /proc/<pid>/stat line (0 for an empty one): the field after the state.
function parentIn(stat: string): number {
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

// The pids whose parent is ppid, read from /proc.
export async function childPids(ppid: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (parentIn(await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '')) === ppid) children.push(Number(entry));
  }
  return children;
}

// The same, without giving the event loop a turn.
export function childPidsSync(ppid: number): number[] {
  const stat = (entry: string) => {
    try {
      return readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      return '';
    }
  };
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && parentIn(stat(entry)) === ppid)
    .map(Number);
}

// A process's children, their children and so on, deepest last.
export async function descendantPids(pid: number): Promise<number[]> {
  const found: number[] = [];
  for (const child of await childPids(pid)) found.push(child, ...(await descendantPids(child)));
  return found;
}

// A process's command line with its arguments joined by spaces, or '' once it is gone.
export async function commandLine(pid: number): Promise<string> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return raw.split('\0').join(' ').trim();
}

// Whether a pid is a running `workerd serve`; a standby waiting in a cgroup is still the shell
// that will exec it.
export async function isWorkerd(pid: number): Promise<boolean> {
  const [program, command] = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  return program?.endsWith('/workerd') === true && command === 'serve';
}

/** Whether a process's exit (the promise that settles with it) came within ms; its timer keeps no test alive. */
export function exitedWithin(exited: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([exited.then(() => true), sleep(ms, false, { ref: false })]);
}

// Sends a signal to a pid this test started, ignoring one that has already gone.
export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** A process's resident memory now, in bytes. */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) * 1024;
}
