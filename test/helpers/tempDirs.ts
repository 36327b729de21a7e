import { afterEach } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';

/** Temporary directories for the tests of a file or describe block, each removed after the test that made it. */
export interface TempDirsPerTest {
  /** Makes one, its name starting with prefix. */
  make(prefix: string): Promise<string>;
  /** Has a directory made some other way removed after the test as well; returns it. */
  removeLater(dir: string): string;
}

/** Registers the afterEach that removes them; call it once, at the top of a file or describe block. */
export function tempDirsRemovedAfterEach(): TempDirsPerTest {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map(removeTempDir));
  });
  const removeLater = (dir: string) => {
    dirs.push(dir);
    return dir;
  };
  return { make: async (prefix) => removeLater(await makeTempDir(prefix)), removeLater };
}
