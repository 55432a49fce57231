/**
 * The server's two endpoints from the one base URL the application gives:
 * the WebSocket (`ws(s)://…/v1/ws`) and the HTTP base of the history route.
 * Either scheme family is accepted and a path prefix (a reverse proxy's) is kept.
 */

/** Turns `url` into the WebSocket endpoint and the HTTP base. */
export function deriveUrls(url: string): { ws: string; http: string } {
  const loc = (globalThis as { location?: { href?: string } }).location;
  const base = new URL(url, loc?.href);
  let ws: string;
  let http: string;
  switch (base.protocol) {
    case 'ws:':
    case 'http:':
      ws = 'ws:';
      http = 'http:';
      break;
    case 'wss:':
    case 'https:':
      ws = 'wss:';
      http = 'https:';
      break;
    default:
      throw new TypeError(`unsupported URL scheme ${base.protocol} (use http(s):// or ws(s)://)`);
  }
  let path = base.pathname.replace(/\/+$/, '');
  if (path.endsWith('/v1/ws')) path = path.slice(0, -'/v1/ws'.length);
  return { ws: `${ws}//${base.host}${path}/v1/ws`, http: `${http}//${base.host}${path}` };
}
