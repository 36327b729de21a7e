// Does not compile.
addEventListener('fetch', (event) => {
  event.respondWith(new Response('never'
});
