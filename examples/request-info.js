// Answers with what it was asked, as JSON: for trying the HTTP route, /fn/request-info/<path…>.
export default {
  async fetch(request) {
    const url = new URL(request.url);
    return Response.json({
      method: request.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      user: request.headers.get('x-user'),
      body: await request.text(),
    });
  },
};
