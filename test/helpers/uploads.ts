// Workers uploads made in a test: a multipart body from named parts, and ES module parts.
export async function bundle(
  parts: Array<[string, string | Blob, string?]>,
): Promise<{ bytes: Buffer; contentType: string }> {
  const form = new FormData();
  for (const [name, value, file] of parts) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, value, file ?? name);
  }
  const packed = new Response(form);
  return { bytes: Buffer.from(await packed.arrayBuffer()), contentType: packed.headers.get('content-type')! };
}
export const esModule = (text: string) => new Blob([text], { type: 'application/javascript+module' });
