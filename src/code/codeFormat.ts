import { init as initLexer, parse as lexModule } from 'es-module-lexer';
import { noSettings, type WorkerCode } from './workerCode.js';
import { parseWorkersUpload } from './workersUpload.js';

// Parsed code by the cached download it came from: a warm request need not parse it again.
const parsed = new WeakMap<Buffer, Promise<WorkerCode>>();

/**
 * Turns what the storage server answered into the code workerd runs: a Workers upload
 * (src/code/workersUpload.ts) by its multipart content type, otherwise one script, an ES module if
 * it has import or export declarations, with the service's default settings.
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
  if (contentType?.toLowerCase().startsWith('multipart/form-data')) return parseWorkersUpload(body, contentType);
  if (await isEsModule(body)) {
    return { format: 'modules', modules: [{ name: 'main.js', type: 'esModule', content: body }], settings: noSettings };
  }
  return { format: 'service-worker', script: body, settings: noSettings };
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
