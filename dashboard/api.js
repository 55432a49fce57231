// The dashboard's only way to the server: the same public HTTP and WebSocket
// API every client uses. URLs are relative to the page, so the dashboard also
// works behind a reverse proxy that mounts hubcast under a path prefix.

// ─── Credentials: the ONE place where requests are authenticated ───────────
//
// With auth configured, the dashboard's data routes (/v1/stats, /v1/rooms,
// /metrics) require the admin credential: an API key with `admin = true` in
// `[[auth.api_keys]]`. (With no credentials configured, protected mode trusts
// loopback clients and no credential is asked for.) When /v1/stats answers
// 401 or 403, app.js opens the login dialog (#login in index.html), which
// calls setToken(); from then on `authorize` adds `Authorization: Bearer <key>` to
// every fetch below, and `socketUrl` adds `?token=<key>` to the inspector's
// WebSocket (browsers cannot set headers on an upgrade). The key is kept in
// sessionStorage: this tab only, gone when it closes. Nothing else in the
// dashboard touches credentials.

const TOKEN_KEY = 'hubcast.admin-token';
let token = sessionStorage.getItem(TOKEN_KEY) || '';

export function setToken(value) {
  token = value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function hasToken() {
  return token !== '';
}

function authorize(headers) {
  if (token) headers.set('Authorization', `Bearer ${token}`);
  return headers;
}

/** The ws:// or wss:// URL of a path, for the page's own origin. */
export function socketUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) url.searchParams.set('token', token);
  return url.href;
}

// ─── Requests ───────────────────────────────────────────────────────────────

export class HttpError extends Error {
  constructor(status, body) {
    super(body && body.message ? `${status} ${body.error}: ${body.message}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * fetch() with the credential, a timeout, and the answer read once.
 * Resolves to {status, headers, body, text, ms} for any HTTP answer; rejects
 * only on network failure or timeout.
 */
export async function request(path, { method = 'GET', headers = {}, body, timeoutMs = 8000 } = {}) {
  const h = authorize(new Headers(headers));
  if (body !== undefined && !h.has('Content-Type')) h.set('Content-Type', 'application/json');
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const started = performance.now();
  try {
    const response = await fetch(path, { method, headers: h, body, signal: controller.signal, cache: 'no-store' });
    const text = await response.text();
    const ms = performance.now() - started;
    let json = null;
    if ((response.headers.get('content-type') || '').includes('json')) {
      try { json = JSON.parse(text); } catch { json = null; }
    }
    return { status: response.status, headers: response.headers, body: json, text, ms };
  } finally {
    clearTimeout(timer);
  }
}

/** GET a JSON document; rejects with HttpError on a non-2xx answer. */
export async function getJson(path) {
  const answer = await request(path);
  if (answer.status < 200 || answer.status > 299) throw new HttpError(answer.status, answer.body);
  return answer.body;
}

/** GET a text document (the Prometheus exposition). */
export async function getText(path) {
  const answer = await request(path);
  if (answer.status < 200 || answer.status > 299) throw new HttpError(answer.status, answer.body);
  return answer.text;
}

/** The path of a room's routes, with the name escaped. */
export function roomPath(room, rest = '') {
  return `v1/rooms/${encodeURIComponent(room)}${rest}`;
}

/** Room names the server accepts (docs/protocol.md). */
export function validRoom(room) {
  return /^[A-Za-z0-9_\-:.@=]{1,128}$/.test(room);
}
