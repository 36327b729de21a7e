import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Miniflare, type MiniflareOptions } from 'miniflare';

// Module types as Miniflare names them, by the part types wrangler sends.
const moduleTypes: Readonly<Record<string, 'ESModule' | 'CommonJS' | 'CompiledWasm' | 'Text' | 'Data'>> = {
  'application/javascript+module': 'ESModule',
  'application/javascript': 'CommonJS',
  'application/wasm': 'CompiledWasm',
  'text/plain': 'Text',
  'application/octet-stream': 'Data',
};

/**
 * What workerd itself answers for a captured Workers upload, its metadata honoured: the upload is
 * read here on its own (not by the service's parser) into Miniflare's options, and Miniflare runs
 * it in workerd. The reference the service's answers are compared with.
 */
export async function referenceAnswer(
  uploadDir: string,
  request: { readonly url: string; readonly init: RequestInit },
): Promise<{ status: number; body: string; bytes: Buffer; headers: Headers }> {
  const [bytes, contentType] = await Promise.all([
    readFile(path.join(uploadDir, 'upload.body')),
    readFile(path.join(uploadDir, 'upload.content-type'), 'utf8'),
  ]);
  const form = await new Response(new Uint8Array(bytes), {
    headers: { 'content-type': contentType.trim() },
  }).formData();
  const metadata = JSON.parse(String(form.get('metadata'))) as {
    main_module?: string;
    body_part?: string;
    compatibility_date: string;
    compatibility_flags?: string[];
    bindings?: Array<{ name: string; type: string; text?: string; json?: unknown }>;
  };
  const bindings: Record<string, unknown> = {};
  for (const binding of metadata.bindings ?? [])
    bindings[binding.name] = binding.type === 'json' ? binding.json : binding.text;
  const parts: Array<[string, File]> = [];
  for (const [name, part] of form) if (name !== 'metadata' && typeof part !== 'string') parts.push([name, part]);
  const common = {
    compatibilityDate: metadata.compatibility_date,
    compatibilityFlags: metadata.compatibility_flags ?? [],
    bindings,
  };
  let options: MiniflareOptions;
  if (metadata.body_part !== undefined) {
    const script = parts.find(([name]) => name === metadata.body_part)![1];
    options = { ...common, script: await script.text() };
  } else {
    const ordered = [...parts].sort(
      ([a], [b]) => Number(b === metadata.main_module) - Number(a === metadata.main_module),
    );
    const modules = [];
    for (const [name, part] of ordered) {
      const type = moduleTypes[part.type];
      if (!type) continue;
      modules.push({ type, path: name.replace(/^\.\//, ''), contents: new Uint8Array(await part.arrayBuffer()) });
    }
    options = { ...common, modules, modulesRoot: '' };
  }
  const miniflare = new Miniflare(options);
  try {
    const response = await miniflare.dispatchFetch(request.url, request.init as never);
    const bytes = Buffer.from(await response.arrayBuffer());
    return {
      status: response.status,
      body: bytes.toString('utf8'),
      bytes,
      headers: response.headers as unknown as Headers,
    };
  } finally {
    await miniflare.dispose();
  }
}
