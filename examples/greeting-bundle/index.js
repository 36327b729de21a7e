// A bundle with a JSON and a text module: {"name": "Ada"} -> "Bonjour, Ada! (v2)"
import settings from './settings.json';
import greeting from './greeting.txt';

export default {
  async fetch(request) {
    const { name } = await request.json();
    return new Response(`${greeting.trim()}, ${name}! (v${settings.version})`);
  },
};
