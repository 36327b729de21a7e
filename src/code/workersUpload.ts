import { z } from 'zod';
import { hasControlCharacters } from '../controlCharacters.js';
import { ServiceError } from '../errors.js';
import { guardModuleName } from './responseGuard.js';
import type { ModuleType, WorkerBinding, WorkerCode, WorkerModule, WorkerSettings } from './workerCode.js';

/**
 * Enough for any real bundle; every module is a file written before workerd starts and unlinked,
 * on the event loop, once the code is done with.
 */
export const maxModules = 256;
const maxNameLength = 256;
const maxFlags = 64;
const maxBindings = 256;
const metadataPart = 'metadata';
const maxMetadataBytes = 1024 * 1024;
// Larger than any limit an operator can allow; the service checks each against the operator's bounds.
const maxLimit = 2 ** 31 - 1;

// The part types of a Workers upload, by the module each becomes (as wrangler sends them).
const moduleTypes: Readonly<Record<string, ModuleType>> = {
  'application/javascript+module': 'esModule',
  'text/javascript+module': 'esModule',
  'application/javascript': 'commonJsModule',
  'text/javascript': 'commonJsModule',
  'application/wasm': 'wasm',
  'application/json': 'json',
  'text/plain': 'text',
  'application/octet-stream': 'data',
};
// Part types that carry nothing to run: kept out of the worker.
const skippedTypes = new Set(['application/source-map']);
// Part types of code in a language this runtime does not run.
const otherLanguages: Readonly<Record<string, string>> = {
  'text/x-python': 'Python',
  'text/x-python-requirement': 'Python',
};
// Script types of a service worker's body part.
const scriptTypes = new Set(['application/javascript', 'text/javascript']);

// A name as the worker sees it (a module's, a binding's): printable, bounded.
const name = z
  .string()
  .min(1)
  .max(maxNameLength)
  .refine((text) => !hasControlCharacters(text), 'must not contain control characters');

// The metadata part: the fields this runtime acts on; any other field (usage_model, logpush,
// tags, observability, …) changes nothing here and is accepted.
const metadataSchema = z.looseObject({
  main_module: name.optional(),
  body_part: name.optional(),
  compatibility_date: z
    .string()
    .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date, YYYY-MM-DD')
    .optional(),
  compatibility_flags: z
    .array(z.string().regex(/^[a-z0-9_]{1,128}$/, 'must be a compatibility flag (lowercase letters, digits, _)'))
    .max(maxFlags)
    .optional(),
  bindings: z
    .array(z.looseObject({ name, type: z.string().min(1).max(maxNameLength) }))
    .max(maxBindings)
    .optional(),
  // Workers' cpu_ms, and this runtime's memory_mb; wrangler passes both on from its config's [limits].
  limits: z
    .looseObject({
      cpu_ms: z.number().int().positive().max(maxLimit).optional(),
      memory_mb: z.number().int().positive().max(maxLimit).optional(),
    })
    .optional(),
});
type Metadata = z.infer<typeof metadataSchema>;
type RawBinding = NonNullable<Metadata['bindings']>[number];

/**
 * Reads a Workers script upload, the multipart body `wrangler deploy` sends: a `metadata` part
 * and one file part per module (`main_module`), or a service worker's script (`body_part`) with
 * the parts its bindings name. Everything it cannot honour is refused with a 400 that says what.
 */
export async function parseWorkersUpload(body: Buffer, contentType: string): Promise<WorkerCode> {
  let form: FormData;
  try {
    form = await new Response(new Uint8Array(body), { headers: { 'content-type': contentType } }).formData();
  } catch (cause) {
    throw invalid('the multipart body cannot be read', cause);
  }
  const metadata = await readMetadata(form.get(metadataPart));
  const parts = new Map<string, File>();
  for (const [partName, part] of form) {
    if (partName === metadataPart) continue;
    if (typeof part === 'string')
      throw invalid(`part "${partName}" has no content type (send each module as a file part)`);
    if (parts.has(partName)) throw invalid(`part "${partName}" appears twice`);
    if (parts.size === maxModules) throw invalid(`the upload has more than ${maxModules} parts`);
    refuseOtherLanguage(partName, part.type);
    parts.set(partName, part);
  }
  const bindings = await readBindings(metadata.bindings ?? [], parts, metadata.body_part !== undefined);
  const settings: WorkerSettings = {
    compatibilityDate: metadata.compatibility_date,
    compatibilityFlags: metadata.compatibility_flags,
    bindings: bindings.values,
    ...(metadata.limits && { limits: { cpuMs: metadata.limits.cpu_ms, memoryMb: metadata.limits.memory_mb } }),
  };
  if (metadata.main_module !== undefined && metadata.body_part !== undefined) {
    throw invalid('the "metadata" part has both "main_module" and "body_part"; a worker is one or the other');
  }
  if (metadata.body_part !== undefined) {
    const script = parts.get(metadata.body_part);
    if (!script) throw invalid(`body_part "${metadata.body_part}" is not one of the parts`);
    if (!scriptTypes.has(mediaType(script.type))) {
      throw invalid(
        `body_part "${metadata.body_part}" must be JavaScript (application/javascript), not "${script.type}"`,
      );
    }
    return { format: 'service-worker', script: Buffer.from(await script.arrayBuffer()), settings };
  }
  if (metadata.main_module === undefined)
    throw invalid('the "metadata" part has neither "main_module" nor "body_part"');
  const modules: WorkerModule[] = [];
  for (const [partName, part] of parts) {
    if (bindings.parts.has(partName) || skippedTypes.has(mediaType(part.type))) continue;
    modules.push({
      name: moduleName(partName),
      type: moduleTypeOf(partName, part.type),
      content: Buffer.from(await part.arrayBuffer()),
    });
  }
  const mainName = moduleName(metadata.main_module);
  if (modules.some((module) => module.name === guardModuleName))
    throw invalid(`module name "${guardModuleName}" is reserved`);
  const main = modules.find((module) => module.name === mainName);
  if (!main) throw invalid(`main_module "${metadata.main_module}" is not one of the modules`);
  if (main.type !== 'esModule') {
    throw invalid(`main_module "${metadata.main_module}" must be an ES module (application/javascript+module)`);
  }
  // workerd runs the first module listed as the main one.
  return { format: 'modules', modules: [main, ...modules.filter((module) => module !== main)], settings };
}

async function readMetadata(part: FormDataEntryValue | null): Promise<Metadata> {
  if (part === null) throw invalid('the upload has no "metadata" part');
  // wrangler sends the metadata as a file part of type application/json; curl -F sends a field.
  if (typeof part !== 'string' && part.size > maxMetadataBytes)
    throw invalid('the "metadata" part is larger than 1 MiB');
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof part === 'string' ? part : await part.text());
  } catch (cause) {
    throw invalid('the "metadata" part is not JSON', cause);
  }
  const result = metadataSchema.safeParse(parsed);
  if (!result.success) {
    throw invalid(
      `the "metadata" part is not valid: ${result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`,
    );
  }
  return result.data;
}

// Binding types by what each becomes; a type not here is one this runtime cannot provide.
const bindingReaders: Readonly<
  Record<string, (binding: RawBinding, part: (field: string) => Promise<Buffer>) => Promise<WorkerBinding>>
> = {
  plain_text: async (binding) => ({ name: binding.name, type: 'text', value: textField(binding, 'text') }),
  secret_text: async (binding) => ({ name: binding.name, type: 'secretText', value: textField(binding, 'text') }),
  json: async (binding) => {
    if (!('json' in binding)) throw invalid(`binding "${binding.name}" of type json has no "json" value`);
    return { name: binding.name, type: 'json', value: JSON.stringify(binding.json) };
  },
  wasm_module: async (binding, part) => ({ name: binding.name, type: 'wasmModule', content: await part('part') }),
  text_blob: async (binding, part) => ({ name: binding.name, type: 'textBlob', content: await part('part') }),
  data_blob: async (binding, part) => ({ name: binding.name, type: 'dataBlob', content: await part('part') }),
};

// The bindings, and the parts they take (which are then not modules).
async function readBindings(
  raw: readonly RawBinding[],
  parts: ReadonlyMap<string, File>,
  serviceWorker: boolean,
): Promise<{ values: WorkerBinding[]; parts: Set<string> }> {
  const values: WorkerBinding[] = [];
  const used = new Set<string>();
  for (const binding of raw) {
    const read = bindingReaders[binding.type];
    if (!read) {
      throw new ServiceError('UNSUPPORTED_BINDING', { data: { binding: binding.name, type: binding.type } });
    }
    if (values.some((earlier) => earlier.name === binding.name))
      throw invalid(`binding "${binding.name}" appears twice`);
    if (serviceWorker && !/^[A-Za-z_$][\w$]*$/.test(binding.name)) {
      throw invalid(`binding "${binding.name}" must be a JavaScript identifier: a service worker sees it as a global`);
    }
    if (binding.type === 'wasm_module' && !serviceWorker) {
      throw invalid(
        `binding "${binding.name}" of type wasm_module needs a service worker (body_part); modules import .wasm files`,
      );
    }
    const part = async (field: string) => {
      const partName = textField(binding, field);
      const file = parts.get(partName);
      if (!file) throw invalid(`binding "${binding.name}" names part "${partName}", which is not one of the parts`);
      used.add(partName);
      return Buffer.from(await file.arrayBuffer());
    };
    values.push(await read(binding, part));
  }
  return { values, parts: used };
}

function textField(binding: RawBinding, field: string): string {
  const value = (binding as Record<string, unknown>)[field];
  if (typeof value !== 'string')
    throw invalid(`binding "${binding.name}" of type ${binding.type} has no "${field}" string`);
  return value;
}

/**
 * The name a part is imported by. wrangler names a bundled file "./<sha1>-<file>" and imports it
 * by that specifier, which workerd resolves against the root of the bundle: the name is the path
 * without the leading "./". A name never becomes a path on disk (module files are numbered).
 */
function moduleName(partName: string): string {
  const result = name.safeParse(partName);
  if (!result.success) throw invalid(`module name "${partName}" is not allowed: ${result.error.issues[0]?.message}`);
  return partName.replace(/^(?:\.\/)+/, '');
}

function moduleTypeOf(partName: string, contentType: string): ModuleType {
  const type = moduleTypes[mediaType(contentType)];
  if (!type) {
    throw invalid(
      `part "${partName}" has content type "${contentType}"; expected one of ${Object.keys(moduleTypes).join(', ')}`,
    );
  }
  return type;
}

function refuseOtherLanguage(partName: string, contentType: string): void {
  const language = otherLanguages[mediaType(contentType)];
  if (language)
    throw new ServiceError('UNSUPPORTED_LANGUAGE', { data: { part: partName, content_type: contentType, language } });
}

function mediaType(contentType: string): string {
  return contentType.split(';')[0]!.trim().toLowerCase();
}

function invalid(detail: string, cause?: unknown): ServiceError {
  return new ServiceError('INVALID_BUNDLE', { data: detail, cause });
}
