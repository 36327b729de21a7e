import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { referenceAnswer } from '../helpers/reference.js';
import { noLeftovers, type Stack, startStack, wranglerFixturesDir } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();
const functionError = 'The function answered with a status that is not a success';

// What POST /api/serverless makes of the function's own answer: any 2xx is a success, any other
// status is reported as the function's, with its body, never as a crash and never empty.
describe.runIf(cgroups)("the function's answer in the envelope", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 } });
  });
  afterAll(() => stack?.close());

  test.each([
    [201, '{"id":1}'],
    [202, 'accepted'],
    [204, null],
  ])('a %i is a success, its body in data', async (status, body) => {
    const response = await stack.invoke({ code_id: 'status', input: { status, body } });
    expect(response.statusCode).toBe(200);
    expect(response.body).toEqual({ status: 'success', message: 'Response successfully generated', data: body ?? '' });
  });

  test.each([
    [404, 'no such thing', 404],
    [418, "I'm a teapot", 418],
    [500, 'my own failure', 500],
    [503, 'come back later', 503],
  ])("the function's own %i is answered with that status and its body", async (status, body, answered) => {
    const response = await stack.invoke({ code_id: 'status', input: { status, body } });
    expect(response.statusCode).toBe(answered);
    expect(response.body).toEqual({ status: 'error', message: functionError, data: { status, body } });
  });

  test("a redirect is not followed and not a success: 502, with the function's status", async () => {
    const response = await stack.invoke({ code_id: 'status', input: { status: 302, location: '/elsewhere' } });
    expect(response.statusCode).toBe(502);
    expect(response.body).toEqual({ status: 'error', message: functionError, data: { status: 302, body: '' } });
  });

  test("a throw is a crash, told apart from the function's own 500 by its message, with the exception in data", async () => {
    const response = await stack.invoke({ code_id: 'throw' });
    expect(response.statusCode).toBe(500);
    expect(response.body.message).not.toBe(functionError);
    expect(response.body.message).toContain('exception handling');
    expect(String(response.body.data)).toMatch(/Error/);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('a body that is not UTF-8 comes back as base64, byte for byte what workerd answers', async () => {
    const reference = await referenceAnswer(path.join(wranglerFixturesDir, 'binary-response'), {
      url: 'http://127.0.0.1/',
      init: { method: 'POST', body: '{}' },
    });
    const response = await stack.invoke({ code_id: 'binary-response', input: {} });
    expect(response.statusCode).toBe(200);
    expect(response.body).toMatchObject({ status: 'success', encoding: 'base64' });
    expect(Buffer.from(response.body.data as string, 'base64').equals(reference.bytes)).toBe(true);
    expect(reference.bytes[0]).toBe(0x89);
  });
});
