// Runs the whole stack on this machine as root: the development attestation and storage servers,
// a cgroup pool if there is none, and the service itself (`npm run local`).
import { execFileSync, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import 'dotenv/config';
import { CgroupPool } from '../src/capacity/cgroupPool.js';
import { parseConfig } from '../src/config.js';
import { rootPath } from '../src/dev/attestationServer.js';
import { cgroupSetupScript } from '../src/dev/cgroupSetupScript.js';
import { startDevServers } from '../src/dev/devServers.js';
import { devKmsKeyId } from '../src/dev/kmsServer.js';
import { projectRoot } from '../src/dev/projectRoot.js';
import { makeTempDir, removeTempDir } from '../src/dev/tempDir.js';
import { writeKeyPair } from '../src/keyFiles.js';
import { detectCgroupVersion } from '../src/sandbox/cgroups.js';
import { generateSealingBlob } from '../src/secrets/blob.js';
import { serviceNodeFlags } from '../src/serviceNodeFlags.js';

const devKmsEndpoint = 'http://127.0.0.1:4000';
const devKmsRegion = 'us-east-1';

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
    execFileSync(cgroupSetupScript(version), [], {
      stdio: 'inherit',
      env: { ...process.env, CGROUP_ROOT: config.cgroupRoot, CGROUP_PREFIX: config.cgroupPrefix },
    });
  }

  // As in the enclave: answers signed with a key made for this run (unless SIGNER_KEY_PATH names
  // one), and sealed secrets opened with a key the development KMS releases to the development
  // image (unless SEALING_KMS_BLOB names a blob), from a blob made for this run.
  const keyDir = await makeTempDir('oyster-local-');
  const signerKeyPath = config.signerKeyPath ?? path.join(keyDir, 'id.sec');
  if (config.signerKeyPath === undefined) await writeKeyPair(signerKeyPath, path.join(keyDir, 'id.pub'));
  const sealing = {
    SEALING_KMS_ENDPOINT: config.sealingKmsEndpoint ?? devKmsEndpoint,
    SEALING_KMS_REGION: config.sealingKmsRegion ?? devKmsRegion,
    SEALING_KMS_BLOB: config.sealingKmsBlob ?? path.join(keyDir, 'sealing.blob'),
    // The SDK signs every request; the development KMS does not check by whom.
    AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'development',
    AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'development',
  };
  // This process makes the blob with the SDK, and the service reads the same settings.
  Object.assign(process.env, sealing);
  const servers = await startDevServers({ ...config, signerKeyPath, sealingKmsEndpoint: sealing.SEALING_KMS_ENDPOINT });
  if (config.sealingKmsBlob === undefined) {
    const blob = await generateSealingBlob({
      keyId: devKmsKeyId,
      region: sealing.SEALING_KMS_REGION,
      endpoint: sealing.SEALING_KMS_ENDPOINT,
    });
    await writeFile(sealing.SEALING_KMS_BLOB, `${blob}\n`);
  }
  console.log(
    `attestation server ${servers.attestation.url} (its root: ${servers.attestation.url}${rootPath}), ` +
      `storage server ${servers.storage.url}/load serving examples/, development KMS ${sealing.SEALING_KMS_ENDPOINT}`,
  );

  const service = spawn(process.execPath, [...serviceNodeFlags, path.join(projectRoot, 'dist/src/main.js')], {
    stdio: 'inherit',
    env: { ...process.env, SIGNER_KEY_PATH: signerKeyPath },
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => service.kill(signal));
  service.on('exit', (code) => {
    void Promise.all([servers.close(), removeTempDir(keyDir)]).then(() => process.exit(code ?? 1));
  });
}

main().catch((error: unknown) => {
  console.error(`npm run local: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
