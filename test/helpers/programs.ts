import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import path from 'node:path';

// The full path of an executable found on PATH (or in the sbin directories, where Debian puts
// nginx for root), or undefined when there is none.
export async function findProgram(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'].filter((dir) => dir !== '');
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    const runnable = await access(candidate, constants.X_OK).then(
      () => true,
      () => false,
    );
    if (runnable) return candidate;
  }
  return undefined;
}

// Decides once per file whether the tests that need a system program run; under CI a skip is a
// failure, because .ci/run installs the program.
export async function programOrSkip(name: string, debianPackage: string): Promise<boolean> {
  if (await findProgram(name)) return true;
  const reason = `${name} is not installed (Debian package ${debianPackage}; .ci/run installs it)`;
  if (process.env.CI === 'true') throw new Error(`CI=true but the ${name} tests cannot run: ${reason}`);
  console.warn(`Skipping the tests that need ${name}: ${reason}`);
  return false;
}
