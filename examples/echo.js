// Answers with exactly the body it was sent.
addEventListener('fetch', (event) => event.respondWith(echo(event.request)));

async function echo(request) {
  return new Response(await request.text());
}
