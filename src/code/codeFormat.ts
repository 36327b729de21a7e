import { init as initLexer, parse as lexModule } from 'es-module-lexer';
import { ServiceError } from '../errors.js';

/** The kinds of module a worker can be made of, by the capnp field that declares each one. */
export type ModuleType = 'esModule' | 'wasm' | 'json' | 'text' | 'data';

/** One module of a bundle: its name as other modules import it, its kind and its bytes. */
export interface WorkerModule {
  readonly name: string;
  readonly type: ModuleType;
  readonly content: Buffer;
}

/** What workerd runs: a single service-worker script, or ES modules whose first is the main one. */
export type WorkerCode =
  | { readonly format: 'service-worker'; readonly script: Buffer }
  | { readonly format: 'modules'; readonly modules: readonly WorkerModule[] };

// The part types of a Workers multipart upload, as Cloudflare's API defines them.
const moduleTypes: Readonly<Record<string, ModuleType>> = {
  'application/javascript+module': 'esModule',
  'text/javascript+module': 'esModule',
  'application/wasm': 'wasm',
  'application/json': 'json',
  'text/plain': 'text',
  'application/octet-stream': 'data',
};
const metadataPart = 'metadata';
const maxModuleNameLength = 128;
/**
 * Enough for any real bundle; every module is a file written before workerd starts and unlinked,
 * on the event loop, once the code is done with.
 */
export const maxModules = 256;
// A module name is one plain file name: it can never name a path.
const moduleName = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

// Parsed code by the cached download it came from: a warm request need not parse it again.
const parsed = new WeakMap<Buffer, Promise<WorkerCode>>();

/**
 * Turns what the storage server answered into the code workerd runs: a multipart bundle by its
 * content type, otherwise one script, an ES module if it has import or export declarations.
 */
export function parseWorkerCode(body: Buffer, contentType: string | undefined): Promise<WorkerCode> {
  let code = parsed.get(body);
  if (!code) {
    code = parse(body, contentType);
    parsed.set(body, code);
  }
  return code;
}

async function parse(body: Buffer, contentType: string | undefined): Promise<WorkerCode> {
  if (contentType?.toLowerCase().startsWith('multipart/form-data')) return parseBundle(body, contentType);
  if (await isEsModule(body))
    return { format: 'modules', modules: [{ name: 'main.js', type: 'esModule', content: body }] };
  return { format: 'service-worker', script: body };
}

/**
 * Whether a script is an ES module: it has import or export declarations, or uses import.meta.
 * Decided by a lexer made for this, which skips strings, comments and regular expressions (a
 * regex would be fooled by "import" in a comment) in one pass, without building a syntax tree: its
 * time is linear in the script's size and its memory a few times the script's, whatever the code
 * is. Code it cannot lex is left to workerd as a script, which reports the syntax error to the user.
 */
export async function isEsModule(script: Buffer): Promise<boolean> {
  const source = script.toString('utf8');
  // Without either word there can be no import or export declaration (a keyword cannot be written
  // with escapes), and most service workers are spared the lexing.
  if (!/\b(?:import|export)\b/.test(source)) return false;
  await initLexer();
  try {
    const [, , , hasModuleSyntax] = lexModule(source);
    return hasModuleSyntax;
  } catch {
    return false;
  }
}

async function parseBundle(body: Buffer, contentType: string): Promise<WorkerCode> {
  let form: FormData;
  try {
    form = await new Response(new Uint8Array(body), { headers: { 'content-type': contentType } }).formData();
  } catch (cause) {
    throw invalid('the multipart body cannot be read', cause);
  }
  const mainModule = readMainModule(form.get(metadataPart));
  const modules: WorkerModule[] = [];
  for (const [name, part] of form) {
    if (name === metadataPart) continue;
    if (typeof part === 'string') throw invalid(`part "${name}" has no content type (send each module as a file part)`);
    if (modules.length === maxModules) throw invalid(`the bundle has more than ${maxModules} modules`);
    modules.push({
      name: checkedName(name, modules),
      type: moduleTypeOf(name, part.type),
      content: Buffer.from(await part.arrayBuffer()),
    });
  }
  const main = modules.find((module) => module.name === mainModule);
  if (!main) throw invalid(`main_module "${mainModule}" is not one of the parts`);
  if (main.type !== 'esModule')
    throw invalid(`main_module "${mainModule}" must be an ES module (application/javascript+module)`);
  // workerd runs the first module listed as the main one.
  return { format: 'modules', modules: [main, ...modules.filter((module) => module !== main)] };
}

function readMainModule(metadata: FormDataEntryValue | null): string {
  if (metadata === null) throw invalid('the bundle has no "metadata" part');
  if (typeof metadata !== 'string') throw invalid('the "metadata" part must be text, not a file');
  let parsed: unknown;
  try {
    parsed = JSON.parse(metadata);
  } catch (cause) {
    throw invalid('the "metadata" part is not JSON', cause);
  }
  const main = (parsed as { main_module?: unknown } | null)?.main_module;
  if (typeof main !== 'string' || main === '') throw invalid('the "metadata" part has no "main_module" string');
  return main;
}

function checkedName(name: string, earlier: readonly WorkerModule[]): string {
  if (name.length > maxModuleNameLength || !moduleName.test(name) || name.includes('..')) {
    throw invalid(`module name "${name}" is not allowed: use a plain file name (letters, digits, _ . -), no paths`);
  }
  if (earlier.some((module) => module.name === name)) throw invalid(`module name "${name}" appears twice`);
  return name;
}

function moduleTypeOf(name: string, contentType: string): ModuleType {
  const type = moduleTypes[contentType.split(';')[0]!.trim().toLowerCase()];
  if (!type)
    throw invalid(
      `part "${name}" has content type "${contentType}"; expected one of ${Object.keys(moduleTypes).join(', ')}`,
    );
  return type;
}

function invalid(detail: string, cause?: unknown): ServiceError {
  return new ServiceError('INVALID_BUNDLE', { data: detail, cause });
}
