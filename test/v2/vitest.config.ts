import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

// The cgroup v2 lane's own configuration, used only inside the guest that scripts/v2-vm.sh boots
// (test/integration/cgroupv2.test.ts runs it there):
//   vitest run --config test/v2/vitest.config.ts --configLoader runner
// The guest sees the project read-only: the runner loader and a cache under /tmp keep vite from
// writing into node_modules.
export default defineConfig({
  root: path.resolve(import.meta.dirname, '../..'),
  cacheDir: path.join(os.tmpdir(), 'oyster-v2-vite'),
  test: {
    include: ['test/v2/**/*.test.ts'],
    // Everything in the emulated guest runs 100-200 times slower; each test sets its own limits
    // too, from the same stretch factor.
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
