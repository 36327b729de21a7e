// The attestation document a cold invocation presents to the storage server: reused while it is
// recent (ATTESTATION_REUSE_MS), replaced once the storage server refuses it.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, test } from 'vitest';
import { awsNitroRootPem } from '../../src/attestation/verify.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, type StackOptions, startStack } from '../helpers/stack.js';
import { countRequests, type RequestCounts } from '../helpers/upstreams.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('the attestation document shown to the storage server', () => {
  let stack: Stack | undefined;
  let counts: RequestCounts | undefined;
  afterEach(async () => {
    counts?.stop();
    await stack?.close();
    stack = undefined;
  });

  // A stack whose every invocation downloads its code (no code cache), counting the upstreams' requests.
  const coldStack = async (options: StackOptions) => {
    stack = await startStack({ ...options, env: { CODE_CACHE_MAX_BYTES: '0', ...options.env } });
    counts = countRequests(stack);
    return { stack, counts };
  };
  const statuses = async (current: Stack, times: number) => {
    const answers: number[] = [];
    for (let i = 0; i < times; i += 1) answers.push((await current.invoke({ code_id: 'hello' })).statusCode);
    return answers;
  };

  test('is asked for once for downloads within ATTESTATION_REUSE_MS', async () => {
    const { stack, counts } = await coldStack({});
    expect(await statuses(stack, 3)).toEqual([200, 200, 200]);
    expect({ attestation: counts.attestation, storage: counts.storage }).toEqual({ attestation: 1, storage: 3 });
  });

  test('is asked for with every download when ATTESTATION_REUSE_MS is 0', async () => {
    const { stack, counts } = await coldStack({ env: { ATTESTATION_REUSE_MS: '0' } });
    expect(await statuses(stack, 3)).toEqual([200, 200, 200]);
    expect({ attestation: counts.attestation, storage: counts.storage }).toEqual({ attestation: 3, storage: 3 });
  });

  test('is replaced at once when the storage server finds a reused one too old, and the download succeeds', async () => {
    const { stack, counts } = await coldStack({ storage: { maxDocumentAgeMs: 300 } });
    expect(await statuses(stack, 1)).toEqual([200]);
    await sleep(500);
    // The kept document is now older than the storage server takes: refused, then a new one, then the code.
    const replaced = await stack.invoke({ code_id: 'hello' });
    expect(replaced.statusCode).toBe(200);
    const stages = String(replaced.headers['server-timing']).match(/\b(attestation|download);/g);
    expect(stages).toEqual(['attestation;', 'download;', 'attestation;', 'download;']);
    expect(await statuses(stack, 1)).toEqual([200]);
    expect({ attestation: counts.attestation, storage: counts.storage }).toEqual({ attestation: 2, storage: 4 });
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('that the storage server refuses when new is the answer, 500 CODE_DOWNLOAD_FAILED, and is not shown again', async () => {
    // A storage server that checks against AWS's root refuses every development document.
    const { stack, counts } = await coldStack({ storage: { attestationRoot: awsNitroRootPem } });
    const first = await stack.invoke({ code_id: 'hello' });
    expect(first.statusCode).toBe(500);
    expect(first.headers['x-oyster-error']).toBe('CODE_DOWNLOAD_FAILED');
    expect({ attestation: counts.attestation, storage: counts.storage }).toEqual({ attestation: 1, storage: 1 });
    expect(await statuses(stack, 1)).toEqual([500]);
    expect({ attestation: counts.attestation, storage: counts.storage }).toEqual({ attestation: 2, storage: 2 });
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
