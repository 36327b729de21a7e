import { stat } from 'node:fs/promises';
import path from 'node:path';

// One Dockerfile instruction, continuation lines joined.
export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, ... */
  readonly keyword: string;
  /** Its --name=value flags, e.g. { from: 'build' }. */
  readonly flags: Readonly<Record<string, string>>;
  /** Everything after the keyword and the flags, ARG defaults substituted. */
  readonly args: string;
}

// One build stage: its base image, its name and what it does, in order.
export interface Stage {
  readonly base: string;
  readonly name: string | undefined;
  /** The working directory in force at the end of the stage. */
  readonly workdir: string;
  readonly instructions: readonly Instruction[];
}

// Where a file of the final image comes from.
export type Source =
  | { readonly kind: 'context'; readonly path: string }
  | { readonly kind: 'stage'; readonly stage: Stage; readonly path: string }
  | { readonly kind: 'url'; readonly url: string };

// Reads a Dockerfile into its stages: comments and parser directives dropped, continuation lines
// joined, ARG defaults substituted, relative WORKDIRs resolved.
export function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = '';
    if (whole !== '') logical.push(whole);
  }

  const stages: { base: string; name: string | undefined; workdir: string; instructions: Instruction[] }[] = [];
  const args = new Map<string, string>();
  for (const entry of logical) {
    const [word = '', ...rest] = entry.split(/\s+/);
    const keyword = word.toUpperCase();
    const flags: Record<string, string> = {};
    while (rest[0]?.startsWith('--')) {
      const [name = '', value = ''] = rest.shift()!.slice(2).split('=');
      flags[name] = value;
    }
    const argsText = rest
      .join(' ')
      .replace(/\$\{(\w+)\}|\$(\w+)/g, (match, a?: string, b?: string) => args.get((a ?? b)!) ?? match);
    if (keyword === 'FROM') {
      const [base = '', as, name] = argsText.split(/\s+/);
      stages.push({ base, name: as?.toUpperCase() === 'AS' ? name : undefined, workdir: '/', instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) throw new Error(`${keyword} before the first FROM`);
    if (keyword === 'ARG') {
      const [name = '', value = ''] = argsText.split('=');
      args.set(name, value);
    }
    if (keyword === 'WORKDIR') stage.workdir = path.posix.resolve(stage.workdir, argsText);
    stage.instructions.push({ keyword, flags, args: argsText });
  }
  return stages;
}

// The sources and destination of a COPY or ADD, in shell form or JSON (exec) form.
function sourcesAndDestination(instruction: Instruction): { sources: string[]; destination: string } {
  const parts = instruction.args.startsWith('[')
    ? (JSON.parse(instruction.args) as string[])
    : instruction.args.split(/\s+/);
  return { sources: parts.slice(0, -1), destination: parts.at(-1)! };
}

// Every file a stage COPYs or ADDs: each source with the path it lands at in the image.
// `directory` says whether the source is a directory, whose contents (not itself) are copied.
export async function copiedFiles(
  stages: readonly Stage[],
  stage: Stage,
  projectRoot: string,
): Promise<{ source: Source; target: string; directory: boolean }[]> {
  const files: { source: Source; target: string; directory: boolean }[] = [];
  let workdir = '/';
  for (const instruction of stage.instructions) {
    if (instruction.keyword === 'WORKDIR') workdir = path.posix.resolve(workdir, instruction.args);
    if (instruction.keyword !== 'COPY' && instruction.keyword !== 'ADD') continue;
    const { sources, destination } = sourcesAndDestination(instruction);
    const into = path.posix.resolve(workdir, destination);
    const intoDirectory = destination.endsWith('/') || sources.length > 1;
    for (const raw of sources) {
      const source = sourceOf(stages, instruction, raw);
      const local = localPath(source, projectRoot);
      const directory =
        local !== undefined &&
        (await stat(local).then(
          (s) => s.isDirectory(),
          () => false,
        ));
      const name = source.kind === 'url' ? path.posix.basename(new URL(source.url).pathname) : path.posix.basename(raw);
      files.push({ source, target: directory || !intoDirectory ? into : path.posix.join(into, name), directory });
    }
  }
  return files;
}

function sourceOf(stages: readonly Stage[], instruction: Instruction, raw: string): Source {
  if (/^https?:\/\//.test(raw)) return { kind: 'url', url: raw };
  const from = instruction.flags.from;
  if (from === undefined) return { kind: 'context', path: path.posix.normalize(raw) };
  const stage = stages.find((each) => each.name === from);
  if (!stage) throw new Error(`COPY --from=${from} names no stage of this Dockerfile`);
  return { kind: 'stage', stage, path: path.posix.resolve(stage.workdir, raw) };
}

// Where a source is in this checkout: a context path as it is, a build stage's path relative to
// that stage's working directory (the stage copies the project there and builds it as
// `npm run build` does here); undefined for a URL.
export function localPath(source: Source, projectRoot: string): string | undefined {
  if (source.kind === 'url') return undefined;
  if (source.kind === 'context') return path.join(projectRoot, source.path);
  return path.join(projectRoot, path.posix.relative(source.stage.workdir, source.path));
}

// Which copied file provides a path of the final image, and the path inside that source.
export function provider(
  files: readonly { source: Source; target: string; directory: boolean }[],
  imagePath: string,
): { source: Source; within: string } | undefined {
  for (const file of [...files].reverse()) {
    if (file.target === imagePath) return { source: file.source, within: '' };
    if (file.directory && imagePath.startsWith(`${file.target}/`)) {
      return { source: file.source, within: imagePath.slice(file.target.length + 1) };
    }
  }
  return undefined;
}

// The commands a stage RUNs, in order.
export function runsOf(stage: Stage): string[] {
  return stage.instructions
    .filter((instruction) => instruction.keyword === 'RUN')
    .map((instruction) => instruction.args);
}

// The command of the last CMD in exec (JSON) form.
export function commandOf(stage: Stage): string[] {
  const cmd = stage.instructions.filter((instruction) => instruction.keyword === 'CMD').at(-1);
  if (!cmd?.args.startsWith('[')) throw new Error('the final stage has no CMD in exec form');
  return JSON.parse(cmd.args) as string[];
}
