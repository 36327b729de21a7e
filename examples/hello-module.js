// The hello function as an ES module: {"name": "Ada"} -> "Hello, Ada!"
export default {
  async fetch(request) {
    const input = await request.json();
    return new Response(`Hello, ${input.name ?? 'world'}!`);
  },
};
