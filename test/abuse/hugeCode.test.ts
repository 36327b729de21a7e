import { execFile } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { projectRoot } from '../helpers/projectRoot.js';

const heapLimitMb = 64;

// Decides the format of a 9.5 MB script whose comments say "import" on every line (so the cheap
// word check cannot spare it), and prints the answer. Run from the build, in a Node whose heap is
// capped: a parser that built a syntax tree needed over 300 MB for it.
const decideHugeScript = `
import { isEsModule } from ${JSON.stringify(pathToFileURL(path.join(projectRoot, 'dist/src/code/codeFormat.js')).href)};
const line = 'x = "export"; // import { a } from "b"\\nx = [x, /import/g, \\\`export \${x}\\\`].length;\\n';
const script = Buffer.from(line.repeat(Math.ceil(9.5e6 / line.length)));
console.log(await isEsModule(script), await isEsModule(Buffer.concat([script, Buffer.from('export default {};')])));
`;

describe('the format of huge code', () => {
  test(`is decided within a ${heapLimitMb} MB heap, for a 9.5 MB script that mentions import on every line`, async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [`--max-old-space-size=${heapLimitMb}`, '--input-type=module', '-e', decideHugeScript],
      {
        cwd: projectRoot,
      },
    );
    expect(stdout.trim()).toBe('false true');
  });
});
