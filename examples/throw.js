// Throws on every request, as code without exception handling does.
addEventListener('fetch', () => {
  throw new Error('the function failed on purpose');
});
