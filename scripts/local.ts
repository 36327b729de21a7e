// Runs the whole stack on this machine as root: the development attestation and storage servers,
// a cgroup pool if there is none, and the service itself (`npm run local`).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import 'dotenv/config';
import { parseConfig } from '../src/config.js';
import { rootPath } from '../src/dev/attestationServer.js';
import { startDevServers } from '../src/dev/devServers.js';
import { projectRoot } from '../src/dev/projectRoot.js';
import { writeKeyPair } from '../src/keyFiles.js';
import { serviceNodeFlags } from '../src/nodeFlags.js';
import { CgroupPool } from '../src/sandbox/cgroupPool.js';
import { detectCgroupVersion } from '../src/sandbox/cgroups.js';

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error('npm run local needs root: it creates cgroups and moves workerd into them');
  const config = parseConfig(process.env);

  const hasPool = await CgroupPool.open({
    root: config.cgroupRoot,
    version: config.cgroupVersion,
    prefix: config.cgroupPrefix,
  }).then(
    () => true,
    () => false,
  );
  if (!hasPool) {
    const version = config.cgroupVersion ?? (await detectCgroupVersion(config.cgroupRoot));
    const script = path.join(projectRoot, version === 2 ? 'cgroupv2_setup.sh' : 'cgroupv1_setup.sh');
    execFileSync(script, [], {
      stdio: 'inherit',
      env: { ...process.env, CGROUP_ROOT: config.cgroupRoot, CGROUP_PREFIX: config.cgroupPrefix },
    });
  }

  // Answers are signed, as in the enclave: with a key made for this run unless SIGNER_KEY_PATH names one.
  const keyDir =
    config.signerKeyPath === undefined ? await mkdtemp(path.join(os.tmpdir(), 'oyster-local-')) : undefined;
  const signerKeyPath = config.signerKeyPath ?? path.join(keyDir!, 'id.sec');
  if (keyDir) await writeKeyPair(signerKeyPath, path.join(keyDir, 'id.pub'));
  const servers = await startDevServers({ ...config, signerKeyPath });
  console.log(
    `attestation server ${servers.attestation.url} (its root: ${servers.attestation.url}${rootPath}), ` +
      `storage server ${servers.storage.url}/load serving examples/`,
  );

  const service = spawn(process.execPath, [...serviceNodeFlags, path.join(projectRoot, 'dist/src/main.js')], {
    stdio: 'inherit',
    env: { ...process.env, SIGNER_KEY_PATH: signerKeyPath },
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => service.kill(signal));
  service.on('exit', (code) => {
    void Promise.all([servers.close(), keyDir && rm(keyDir, { recursive: true, force: true })]).then(() =>
      process.exit(code ?? 1),
    );
  });
}

main().catch((error: unknown) => {
  console.error(`npm run local: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
