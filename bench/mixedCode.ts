// Mixed code: more code_ids than the pool has cgroups, requested in a Zipf order, the way the
// functions of many tenants are: a few often, most seldom. Each code_id is the hello example with a
// comment of its own, so each is code of its own to the service (its own download, files, spares).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir, removeTempDir } from '../src/dev/tempDir.js';
import type { Cleanup } from './cleanup.js';

/** How many code_ids the mixed section spreads its requests over. */
export const mixedCodeIds = 50;
// Zipf's exponent: the k-th most requested code_id is requested in proportion to 1 / k^s.
const zipfExponent = 1;
// A fixed seed: every run requests the same code_ids in the same order.
const seed = 0x5eed;

/** The code_ids of the mixed section, written as files into a folder the storage server serves. */
export interface MixedCode {
  readonly dir: string;
  readonly codeIds: readonly string[];
}

/** Writes mixedCodeIds variants of the code at codePath into a new temporary folder. */
export async function writeMixedCode(codePath: string, cleanup: Cleanup): Promise<MixedCode> {
  const dir = await makeTempDir('oyster-bench-mixed-');
  cleanup.add(`remove ${dir}`, () => removeTempDir(dir));
  const code = await readFile(codePath, 'utf8');
  const codeIds = Array.from({ length: mixedCodeIds }, (_, i) => `mixed-${i}`);
  await Promise.all(codeIds.map((codeId) => writeFile(path.join(dir, `${codeId}.js`), `// ${codeId}\n${code}`)));
  return { dir, codeIds };
}

/** A sequence of count code_ids drawn from codeIds with Zipf weights, the same on every run. */
export function zipfSequence(codeIds: readonly string[], count: number): string[] {
  const weights = codeIds.map((_, rank) => 1 / (rank + 1) ** zipfExponent);
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  const random = mulberry32(seed);
  return Array.from({ length: count }, () => {
    let draw = random() * total;
    for (const [i, weight] of weights.entries()) {
      draw -= weight;
      if (draw <= 0) return codeIds[i]!;
    }
    return codeIds[codeIds.length - 1]!;
  });
}

// A small seeded generator of uniform numbers in [0, 1).
function mulberry32(state: number): () => number {
  let s = state;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
