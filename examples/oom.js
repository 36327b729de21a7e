// Allocates without bound until the cgroup's memory limit kills workerd.
addEventListener('fetch', (event) => {
  const kept = [];
  for (;;) kept.push(new Uint8Array(32 * 1024 * 1024).fill(1));
});
