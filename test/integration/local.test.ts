import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import getPort from 'get-port';
import { request } from 'undici';
import { describe, expect, test } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { cgroupsOrSkip, removeCgroups } from '../helpers/cgroups.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { runVerify, saveAnswer, saveBody } from '../helpers/verifyCommand.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('npm run local', () => {
  test('makes a pool when there is none, starts the development servers and the service, and serves the examples', async () => {
    const prefix = `oylocal${randomBytes(4).toString('hex')}-`;
    const runtimePath = await makeTempDir('oyster-runtime-');
    const [port, attestationPort, storagePort] = [await getPort(), await getPort(), await getPort()];
    const local = spawn(process.execPath, [path.join(projectRoot, 'dist/scripts/local.js')], {
      env: {
        PATH: process.env.PATH,
        PORT: String(port),
        HOST: '127.0.0.1',
        CGROUP_PREFIX: prefix,
        RUNTIME_PATH: runtimePath,
        ATTESTATION_URL: `http://127.0.0.1:${attestationPort}/attestation/raw`,
        STORAGE_URL: `http://127.0.0.1:${storagePort}/load`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    local.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    local.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise((resolve) => local.once('exit', resolve));
    try {
      const answer = await waitFor(
        'the service to answer',
        () =>
          request(`http://127.0.0.1:${port}/api/serverless`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ code_id: 'primes', input: { num: 100 } }),
          }).then(
            async (response) => (await response.body.json()) as { data: unknown },
            () => undefined,
          ),
        15_000,
      );
      expect(answer.data).toBe('The prime factors of 100 are 2,2,5,5');
      // The whole chain, as the README shows it: the document for a nonce, verified with the
      // development root, and a signed answer verified against the key it attests.
      await saveBody(`http://127.0.0.1:${attestationPort}/root.pem`, path.join(runtimePath, 'root.pem'));
      await saveBody(`http://127.0.0.1:${port}/attestation?nonce=c0ffee`, path.join(runtimePath, 'doc.cbor'));
      const body = '{"code_id": "primes", "input": {"num": 100}}';
      await saveAnswer(
        path.join(runtimePath, 'answer.txt'),
        `http://127.0.0.1:${port}/api/serverless`,
        '-H',
        'content-type: application/json',
        '--data-binary',
        body,
      );
      const verified = await runVerify(
        ...['--attestation', path.join(runtimePath, 'doc.cbor'), '--root', path.join(runtimePath, 'root.pem')],
        ...['--nonce', 'c0ffee', '--request', body, '--code-file', path.join(projectRoot, 'examples/primes.js')],
        ...['--response', path.join(runtimePath, 'answer.txt')],
      );
      expect(verified.exitCode, verified.stderr).toBe(0);
      expect(verified.stdout).toMatch(/answer signed by 0x[0-9a-fA-F]{40}/);
      // Sealed secrets are on, with a key the development KMS released to the development image.
      expect(verified.stdout).toMatch(/sealing key [0-9a-f]{16} 0[23][0-9a-f]{64}/);
      expect(output).toContain(`cgroup v`);
      expect(output).toContain(`${prefix}1..${prefix}20`);
      local.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      local.kill('SIGKILL');
      await removeCgroups(prefix);
      await removeTempDir(runtimePath);
    }
  });
});
