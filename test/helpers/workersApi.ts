import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listen, type RunningServer } from '../../src/dev/listen.js';

// A stand-in for the part of the Cloudflare API that `wrangler deploy` talks to, so that the real
// wrangler CLI can deploy on a machine with no way out, and the script upload it sends can be kept
// byte for byte as a test fixture. Point wrangler at it with CLOUDFLARE_API_BASE_URL=<baseUrl>.
//
// It plays an account on which the Worker does not exist yet: that is the case in which wrangler
// sends the whole script with `PUT /accounts/:account/workers/scripts/:name` (for a Worker that
// exists, wrangler 4 posts the same form to `.../versions` and then makes a deployment).

/** One request the stand-in received, as a line of the capture's log. */
export interface ApiRequest {
  readonly method: string;
  /** The path after the API's base, e.g. /accounts/0123/workers/services/hello */
  readonly path: string;
  readonly query: string;
  /** The status the stand-in answered with. */
  readonly status: number;
}

/** The script upload wrangler sent, exactly as it came over the wire. */
export interface ScriptUpload {
  readonly scriptName: string;
  /** With its boundary: the body cannot be parsed without it. */
  readonly contentType: string;
  readonly body: Buffer;
}

/** A running stand-in and what it has seen. */
export interface WorkersApi extends RunningServer {
  /** What to set CLOUDFLARE_API_BASE_URL to. */
  readonly baseUrl: string;
  readonly requests: readonly ApiRequest[];
  readonly uploads: readonly ScriptUpload[];
}

const basePath = '/client/v4';

// wrangler reads every answer as the API's envelope and looks only at `result` when
// `success` is true, and at `errors[0].code` when it is not.
type Answer = { status: number; body: unknown };
const ok = (result: unknown): Answer => ({ status: 200, body: { success: true, errors: [], messages: [], result } });
const notFound = (code: number, message: string): Answer => ({
  status: 404,
  body: { success: false, errors: [{ code, message }], messages: [], result: null },
});
// The API's code for "this Worker does not exist"; wrangler treats it as a first deploy.
const workerNotFound = () => notFound(10007, 'This Worker does not exist on your account.');

type Route = {
  method: string;
  pattern: RegExp;
  answer: (match: RegExpMatchArray, request: { body: Buffer; contentType: string }) => Answer;
};

/** Starts the stand-in on a free loopback port. */
export async function startWorkersApi(): Promise<WorkersApi> {
  const requests: ApiRequest[] = [];
  const uploads: ScriptUpload[] = [];

  const routes: Route[] = [
    // Asked first, to warn about edits made in the dashboard; "not found" makes this a first deploy.
    { method: 'GET', pattern: /^\/accounts\/[^/]+\/workers\/services\/[^/]+$/, answer: workerNotFound },
    // Asked to warn when the last deployment was split between versions.
    { method: 'GET', pattern: /^\/accounts\/[^/]+\/workers\/scripts\/[^/]+\/deployments$/, answer: workerNotFound },
    // Asked to see which KV, D1 or R2 bindings would need resources made for them; wrangler goes on
    // without settings when there are none.
    { method: 'GET', pattern: /^\/accounts\/[^/]+\/workers\/scripts\/[^/]+\/settings$/, answer: workerNotFound },
    {
      method: 'PUT',
      pattern: /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)$/,
      answer: (match, { body, contentType }) => {
        uploads.push({ scriptName: decodeURIComponent(match[1]!), contentType, body });
        // wrangler prints startup_time_ms and turns deployment_id into the version id it reports.
        return ok({
          id: decodeURIComponent(match[1]!),
          etag: 'fixture-etag',
          deployment_id: '00000000000040008000000000000000',
          startup_time_ms: 1,
        });
      },
    },
    // The account's workers.dev subdomain, which wrangler prints the Worker's URL with.
    { method: 'GET', pattern: /^\/accounts\/[^/]+\/workers\/subdomain$/, answer: () => ok({ subdomain: 'fixtures' }) },
    // wrangler reads whether workers.dev is on for the script, then sets it; it reads back what it set.
    {
      method: 'GET',
      pattern: /^\/accounts\/[^/]+\/workers\/scripts\/[^/]+\/subdomain$/,
      answer: () => ok({ enabled: false, previews_enabled: false }),
    },
    {
      method: 'POST',
      pattern: /^\/accounts\/[^/]+\/workers\/scripts\/[^/]+\/subdomain$/,
      answer: (_match, { body }) => ok(JSON.parse(body.toString('utf8'))),
    },
  ];

  const answer = async (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(request.url ?? '/', 'http://stand-in');
    const path = url.pathname.startsWith(basePath) ? url.pathname.slice(basePath.length) : url.pathname;
    const method = request.method ?? 'GET';

    let reply: Answer | undefined;
    for (const route of routes) {
      const match = route.method === method ? path.match(route.pattern) : null;
      if (match) {
        reply = route.answer(match, { body, contentType: request.headers['content-type'] ?? '' });
        break;
      }
    }
    // A call the stand-in does not know: answered so that wrangler fails loudly, and logged so that
    // whoever reads the capture's output sees which call to add.
    reply ??= notFound(7003, `The stand-in API has no route for ${method} ${path}`);

    requests.push({ method, path, query: url.search, status: reply.status });
    response.writeHead(reply.status, { 'content-type': 'application/json' }).end(JSON.stringify(reply.body));
  };

  const server = createServer((request, response) => {
    answer(request, response).catch((error: unknown) => {
      response.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(error) }));
    });
  });
  const running = await listen(server, '127.0.0.1', 0);
  return { ...running, baseUrl: `${running.url}${basePath}`, requests, uploads };
}
