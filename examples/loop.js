// Never answers: spins the CPU until the time limit kills it.
addEventListener('fetch', (event) => {
  for (;;) {}
});
