import { request } from 'undici';

// One answer of the service (or of a proxy in front of it), with its body as text.
export interface Answer {
  readonly statusCode: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
}

// POSTs a JSON payload to a service's /api/serverless.
export async function invoke(baseUrl: string, payload: unknown): Promise<Answer> {
  const response = await request(`${baseUrl}/api/serverless`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(payload),
  });
  return { statusCode: response.statusCode, headers: response.headers, body: await response.body.text() };
}

// GETs a URL and answers its status code.
export async function statusOf(url: string): Promise<number> {
  const response = await request(url);
  await response.body.dump();
  return response.statusCode;
}

// GETs a URL and answers its JSON body, e.g. /health's {"data": {"free": n, ...}}.
export async function getJson<T>(url: string): Promise<T> {
  const response = await request(url);
  return (await response.body.json()) as T;
}

// POSTs to an operator endpoint (no body) and answers its JSON body.
export async function postJson<T>(url: string): Promise<T> {
  const response = await request(url, { method: 'POST' });
  return (await response.body.json()) as T;
}

/**
 * The fields of a header of name=value pairs separated by commas (X-Oyster-Usage), or of
 * name;dur=value pairs once ";dur" is taken out (Server-Timing), as numbers.
 */
export function headerFields(header: unknown, separator: string): Record<string, number> {
  const fields: Record<string, number> = {};
  for (const field of String(header ?? '').split(',')) {
    const [name, value] = field.trim().split(separator);
    if (name && value !== undefined) fields[name] = Number(value);
  }
  return fields;
}
