// Adds two numbers in WebAssembly: {"a": 2, "b": 3} -> "5"
import addModule from './add.wasm';

const { exports } = new WebAssembly.Instance(addModule);

export default {
  async fetch(request) {
    const { a, b } = await request.json();
    return new Response(String(exports.add(a, b)));
  },
};
