// What the numbers were measured on, so a result file says which machine and versions it is about.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';

const require = createRequire(import.meta.url);

export interface MachineInfo {
  readonly date: string;
  readonly os: string;
  readonly kernel: string;
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGb: number;
  readonly node: string;
  readonly workerd: string;
  readonly miniflare: string;
}

/** Describes this machine and the versions of what is compared. */
export async function describeMachine(): Promise<MachineInfo> {
  const release = await readFile('/etc/os-release', 'utf8').catch(() => '');
  const pretty = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(release)?.[1] ?? os.type();
  return {
    date: new Date().toISOString(),
    os: pretty,
    kernel: os.release(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGb: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    workerd: packageVersion('workerd'),
    miniflare: packageVersion('miniflare'),
  };
}

function packageVersion(name: string): string {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
