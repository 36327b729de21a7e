import { existsSync } from 'node:fs';
import path from 'node:path';

/**
 * The project's root directory, whether this runs from the sources (src/dev) or the build
 * (dist/src/dev): the nearest directory above holding package.json. Read once, at load.
 */
export const projectRoot: string = (() => {
  let dir = import.meta.dirname;
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
