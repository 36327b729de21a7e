// There is no Docker engine here: these tests check what can be checked without one, against the
// files `npm run build` leaves in this checkout.
import { access, constants, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  commandOf,
  copiedFiles,
  localPath,
  parseDockerfile,
  provider,
  runsOf,
  type Source,
} from '../helpers/dockerfile.js';
import { parseIni } from '../helpers/ini.js';
import { projectRoot } from '../helpers/projectRoot.js';

// glibc's minor version (2.x) in each distribution release the node images are built on; workerd
// needs 2.35 or newer.
const glibcMinor: Readonly<Record<string, number>> = { bullseye: 31, bookworm: 36, trixie: 41, jammy: 35, noble: 39 };
const workerdGlibcMinor = 35;
// Node.js 20 left maintenance in April 2026; even majors from 22 on are maintained LTS lines.
const oldestMaintainedLts = 22;

const stages = parseDockerfile(await readFile(path.join(projectRoot, 'Dockerfile.enclave'), 'utf8'));
const image = stages.at(-1)!;
const files = await copiedFiles(stages, image, projectRoot);
const [command = ''] = commandOf(image);
// The start script sits in <app>/scripts/ and finds everything else from there.
const appDir = path.posix.dirname(path.posix.dirname(command));
const startScript = await readFile(path.join(projectRoot, 'scripts/enclave-start.sh'), 'utf8');
const supervisordConf = await readFile(path.join(projectRoot, 'supervisord.conf'), 'utf8');

const exists = (file: string) =>
  access(file).then(
    () => true,
    () => false,
  );

// The file of this checkout that provides a path of the image, or undefined.
function providedBy(imagePath: string): { source: Source; local: string | undefined } | undefined {
  const found = provider(files, imagePath);
  if (!found) return undefined;
  const root = localPath(found.source, projectRoot);
  return { source: found.source, local: root === undefined ? undefined : path.join(root, found.within) };
}

describe('Dockerfile.enclave', () => {
  beforeAll(async () => {
    if (!(await exists(path.join(projectRoot, 'dist/src/main.js'))))
      throw new Error('run `npm run build` first: these tests read dist/');
  });

  test('builds in stages, on images with glibc 2.35 or newer and a maintained Node.js LTS', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const { base } of stages) {
      const match = /^node:(\d+)-([a-z]+)(?:-slim)?$/.exec(base);
      expect(match, `${base} should be node:<major>-<release>[-slim]`).not.toBeNull();
      const [, major, release] = match!;
      expect(glibcMinor[release!], `glibc of ${release}`).toBeGreaterThanOrEqual(workerdGlibcMinor);
      expect(Number(major) % 2, `Node.js ${major} is not an LTS line`).toBe(0);
      expect(Number(major)).toBeGreaterThanOrEqual(oldestMaintainedLts);
    }
  });

  test("gives the image production dependencies only, and the build stage's output but not its node_modules", () => {
    expect(runsOf(image).some((run) => /\bnpm ci\b[^&]*--omit=dev/.test(run))).toBe(true);
    // With install scripts off, the ledger's native SQLite binary arrives only through a rebuild.
    expect(runsOf(image).some((run) => /\bnpm rebuild better-sqlite3\b/.test(run))).toBe(true);
    const fromStages = files.filter((file) => file.source.kind === 'stage');
    expect(fromStages.length).toBeGreaterThan(0);
    for (const file of fromStages) expect(file.target).not.toMatch(/node_modules/);
    expect(providedBy(`${appDir}/dist/src/main.js`)?.source.kind).toBe('stage');
  });

  test('every file it copies from the build context exists after npm run build, and .dockerignore keeps none of them out', async () => {
    const lines = (await readFile(path.join(projectRoot, '.dockerignore'), 'utf8'))
      .split('\n')
      .map((line) => line.trim());
    const ignored = lines.filter((line) => line !== '' && !line.startsWith('#'));
    // Plain names only, which is all the check below understands.
    for (const pattern of ignored) expect(pattern).toMatch(/^[\w.-]+$/);
    const everyStage = (await Promise.all(stages.map((stage) => copiedFiles(stages, stage, projectRoot)))).flat();
    const fromContext = everyStage.flatMap((file) => (file.source.kind === 'context' ? [file.source.path] : []));
    expect(fromContext).toContain('src');
    expect(fromContext.length).toBeGreaterThan(0);
    for (const source of fromContext) {
      expect(await exists(path.join(projectRoot, source)), `${source} exists`).toBe(true);
      expect(ignored, `${source} is sent to the build`).not.toContain(source.split('/')[0]);
    }
  });

  test('what it copies from the build stage is what npm run build makes here', async () => {
    for (const file of files) {
      if (file.source.kind !== 'stage') continue;
      const { stage } = file.source;
      expect(
        runsOf(stage).some((run) => /\bnpm run build\b/.test(run)),
        `stage ${stage.name} runs npm run build`,
      ).toBe(true);
      expect(await exists(localPath(file.source, projectRoot)!), `${file.source.path} of stage ${stage.name}`).toBe(
        true,
      );
    }
  });

  test('starts scripts/enclave-start.sh, which runs the setup scripts and supervisord with the supervisord.conf the image has', async () => {
    expect(providedBy(command)?.local).toBe(path.join(projectRoot, 'scripts/enclave-start.sh'));
    expect((await stat(path.join(projectRoot, 'scripts/enclave-start.sh'))).mode & constants.S_IXUSR).toBeTruthy();
    // The script's own directory decides where supervisord.conf and the setup scripts are.
    expect(startScript).toMatch(/^app=\$\(cd "\$\(dirname "\$0"\)\/\.\." && pwd\)$/m);
    expect(startScript).toMatch(/^exec supervisord -c "\$app\/supervisord\.conf"/m);
    expect(providedBy(`${appDir}/supervisord.conf`)?.local).toBe(path.join(projectRoot, 'supervisord.conf'));
    for (const script of ['cgroupv1_setup.sh', 'cgroupv2_setup.sh']) {
      expect(startScript).toContain(`./${script}`);
      expect(providedBy(`${appDir}/${script}`)?.local).toBe(path.join(projectRoot, script));
      // What a setup script sources from beside itself must sit beside it in the image too.
      const text = await readFile(path.join(projectRoot, script), 'utf8');
      for (const [, sourced] of text.matchAll(/^\. "\$\(dirname "\$0"\)\/([\w.-]+)"$/gm))
        expect(providedBy(`${appDir}/${sourced}`)?.local, `${sourced}, sourced by ${script}`).toBe(
          path.join(projectRoot, sourced!),
        );
    }
    expect(runsOf(image).some((run) => /apt-get install[^&]*\bsupervisor\b/.test(run))).toBe(true);
  });

  test('every program of supervisord.conf, and every program the start script runs, is a file the image has', async () => {
    const programs = [...parseIni(supervisordConf)].filter(([section]) => section.startsWith('program:'));
    expect(programs.map(([section]) => section)).toEqual([
      'program:server',
      'program:my-server-proxy',
      'program:attestation-server',
    ]);
    const executables = programs.map(([, values]) => {
      const [program = '', ...args] = values.get('command')!.replaceAll('%(here)s', appDir).split(/\s+/);
      // node's own flags come before the script it runs.
      return program === 'node' ? (args.find((arg) => !arg.startsWith('-')) ?? '') : program;
    });
    executables.push(...[...startScript.matchAll(/^\s*(\/\S+)\s/gm)].map((match) => match[1]!));
    expect(executables).toContain(`${appDir}/dist/src/main.js`);
    for (const executable of executables) {
      const found = providedBy(executable);
      expect(found, `${executable} is in the image`).toBeDefined();
      if (found!.local !== undefined) expect(await exists(found!.local), `${executable} exists here`).toBe(true);
      // Downloaded programs are fixed versions, not whatever the server has today.
      if (found!.source.kind === 'url') expect(found!.source.url).toMatch(/_v\d+\.\d+\.\d+_/);
    }
  });

  test("makes the signing key at every start with the project's own program, and signs and checks the attested key", () => {
    expect(startScript).toMatch(/^node "\$app\/dist\/src\/keygen\.js" --secret "\$SIGNER_KEY_PATH" --public /m);
    expect(providedBy(`${appDir}/dist/src/keygen.js`)?.source.kind).toBe('stage');
    const env = Object.fromEntries(
      image.instructions
        .filter((instruction) => instruction.keyword === 'ENV')
        .flatMap((instruction) => instruction.args.split(/\s+/).map((pair) => pair.split('=') as [string, string])),
    );
    expect(env.SIGNER_KEY_PATH).toBe(`${appDir}/id.sec`);
    expect(env.ATTESTATION_KEY_CHECK).toBe('true');
    // The attestation server is asked for the key and the nonce, and listens where ATTESTATION_URL's default points.
    const attestationServer = parseIni(supervisordConf).get('program:attestation-server')!.get('command')!;
    expect(attestationServer).toMatch(/--ip-addr 127\.0\.0\.1:1300$/);
  });

  test('every variable supervisord.conf needs is given a value by the start script', () => {
    const variables = [...new Set([...supervisordConf.matchAll(/%\(ENV_(\w+)\)s/g)].map((match) => match[1]!))];
    expect(variables.length).toBeGreaterThan(0);
    for (const variable of variables)
      expect(startScript).toMatch(new RegExp(`^export ${variable}="\\$\\{${variable}:-`, 'm'));
  });
});
