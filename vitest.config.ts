import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // test/v2/ runs only inside the cgroup v2 guest, started by test/integration/cgroupv2.test.ts.
    exclude: [...configDefaults.exclude, 'test/v2/**'],
    // The integration tests start real workerd processes on a 2-core machine; one file at a time
    // keeps their time limits meaningful.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
