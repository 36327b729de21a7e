// Greets whoever the input names: {"name": "Ada"} -> "Hello, Ada!"
addEventListener('fetch', (event) => event.respondWith(greet(event.request)));

async function greet(request) {
  const input = await request.json();
  return new Response(`Hello, ${input.name ?? 'world'}!`);
}
