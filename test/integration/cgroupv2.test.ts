// The cgroup v2 lane. Enclaves run cgroup v2, but this machine's cgroups are v1 (hybrid), so the
// service's v2 path runs for real only in a guest: scripts/v2-vm.sh boots Debian's kernel with
// cgroup_no_v1=all under qemu and runs test/v2/ there against the built service (`npm run build`
// first). Needs qemu-system-x86, busybox-static and the kernel in the script's cache, which
// .ci/run installs; without them the lane is skipped with the reason, and under CI=true fails.
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, test } from 'vitest';
import { projectRoot } from '../helpers/projectRoot.js';

const script = path.join(projectRoot, 'scripts/v2-vm.sh');
// The guest's whole run, boot included, takes about a minute and a half; the script stops it
// after this long, and the test waits a little longer, so the script always ends first and takes
// the guest with it.
const laneTimeoutS = 480;

// Decides whether the lane runs; under CI a skip is a failure, because .ci/run installs what it needs.
async function v2VmOrSkip(): Promise<boolean> {
  const check = await execa(script, ['--check'], { reject: false });
  if (check.exitCode === 0) return true;
  const reason = check.stdout.trim() || check.stderr.trim() || `scripts/v2-vm.sh --check exited with ${check.exitCode}`;
  if (process.env.CI === 'true') throw new Error(`CI=true but the cgroup v2 lane cannot run: ${reason}`);
  console.warn(`Skipping the cgroup v2 lane: ${reason}`);
  return false;
}

const ready = await v2VmOrSkip();

describe.runIf(ready)('the cgroup v2 lane', () => {
  test(
    'the built service passes test/v2/ in a guest whose kernel has cgroup v2 only',
    async () => {
      const started = Date.now();
      const guestTest = [
        'env',
        'NO_COLOR=1',
        'node_modules/.bin/vitest',
        'run',
        '--config',
        'test/v2/vitest.config.ts',
        '--configLoader',
        'runner',
      ];
      const result = await execa(script, ['-t', String(laneTimeoutS), projectRoot, ...guestTest], {
        reject: false,
        all: true,
        // A backstop only: SIGTERM lets the script stop the guest on its way out.
        timeout: (laneTimeoutS + 30) * 1000,
        killSignal: 'SIGTERM',
      });
      const output = result.all ?? '';
      expect(result.exitCode, output).toBe(0);
      // Every test in the guest passed: a line "Tests N passed (N)", which vitest writes as
      // "N passed | K skipped (M)" when some were skipped, so that a skip fails here.
      const summary = /Tests\s+(\d+) passed \((\d+)\)/.exec(output);
      expect(summary, output).not.toBeNull();
      expect(summary?.[1], output).toBe(summary?.[2]);
      const seconds = Math.round((Date.now() - started) / 1000);
      console.log(
        `cgroup v2 lane: ${summary?.[1]} tests passed in the guest, ${seconds} s with its boot\n` +
          output
            .split('\n')
            .filter((line) => /^\s+[✓↓×]/.test(line))
            .join('\n'),
      );
    },
    (laneTimeoutS + 60) * 1000,
  );
});
