import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { referenceAnswer } from '../helpers/reference.js';
import { noLeftovers, type Stack, startStack, wranglerFixturesDir } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

// What `wrangler deploy` uploaded for real projects (test/fixtures/wrangler/), run by the service
// through POST /api/serverless, and by workerd itself with the upload's metadata honoured.
describe.runIf(cgroups)('the uploads wrangler makes', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 } });
  });
  afterAll(() => stack?.close());

  test.each([
    ['wasm-import', 'a bundle importing WebAssembly by the name wrangler gives it (./<sha1>-add.wasm)'],
    ['text-import', 'a bundle importing text and data files'],
    ['no-bundle-folders', 'modules uploaded with folder names (lib/greet.js)'],
    ['service-worker', 'a service worker uploaded with body_part and a plain_text binding'],
    ['bindings', 'plain_text, json and secret_text bindings'],
    ['nodejs-compat', 'node:buffer, node:crypto and AsyncLocalStorage under nodejs_compat'],
    ['old-date', 'the behaviour of compatibility date 2022-01-01'],
  ])('%s: %s, answered as workerd answers it', async (name) => {
    const input = {};
    const reference = await referenceAnswer(path.join(wranglerFixturesDir, name), {
      url: 'http://127.0.0.1/',
      init: { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(input) },
    });
    expect(reference.status).toBe(200);
    const response = await stack.invoke({ code_id: name, input });
    expect(response.body).toMatchObject({ status: 'success' });
    expect(response.body.data).toBe(reference.body);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test.each([
    [
      'bundle-future-date',
      /requires compatibility date "2099-01-01", but the newest date supported by this server binary is "\d{4}-\d{2}-\d{2}"/,
    ],
    ['bundle-unknown-flag', /No such compatibility flag: no_such_flag_anywhere/],
  ])("%s: a date or flag workerd refuses is a 400 with workerd's own words", async (name, words) => {
    const response = await stack.invoke({ code_id: name });
    expect(response.statusCode).toBe(400);
    expect(response.body).toMatchObject({
      status: 'error',
      message: "workerd refused the code's compatibility date or flags",
    });
    expect(response.body.data).toMatch(words);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
