/**
 * Reads the HTTP history route, `GET /v1/rooms/{room}/events?after=&limit=`,
 * for gap healing and the reconciliation poll: one page per call, with a
 * timeout, the session's token, and one retry with a fresh token after a 401.
 * Kept apart from the socket: it is the client's only HTTP.
 */
import type { Credentials } from './credentials.js';
import { HubcastError } from './errors.js';
import type { HistoryPage, WireEvent } from './room.js';
import type { FetchLike, HubcastClientOptions } from './types.js';
import { isInteger } from './wire.js';

export class HistoryReader {
  private readonly fetchImpl: FetchLike;

  constructor(
    /** The server's HTTP base (`http(s)://host:port[/prefix]`). */
    private readonly httpBase: string,
    /** Read on every use, like every option. */
    private readonly options: HubcastClientOptions,
    private readonly credentials: Credentials,
  ) {
    // Called as a plain function, never as a method: a browser's fetch throws
    // "Illegal invocation" when its `this` is not the global object.
    const userFetch = options.fetch;
    this.fetchImpl = (url, init) => {
      const f = userFetch ?? (globalThis as { fetch?: FetchLike }).fetch;
      if (!f) return Promise.reject(new TypeError('no fetch available: pass the `fetch` option'));
      return f(url, init);
    };
  }

  /** One page of `room` after `after`; fails with `history_unavailable`. */
  async read(room: string, after: number, limit: number): Promise<HistoryPage> {
    try {
      return await this.readOnce(room, after, limit);
    } catch (err) {
      // Credentials that ran out: one more try with a fresh token.
      if (err instanceof HubcastError && err.status === 401 && this.options.getToken) {
        await this.credentials.refresh();
        return this.readOnce(room, after, limit);
      }
      throw err;
    }
  }

  private async readOnce(room: string, after: number, limit: number): Promise<HistoryPage> {
    const url = `${this.httpBase}/v1/rooms/${room}/events?after=${after}&limit=${limit}`;
    const timeoutMs = this.options.historyTimeoutMs ?? 10_000;
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = controller && timeoutMs > 0 ? setTimeout(() => controller.abort(), timeoutMs) : null;
    try {
      const init: { method: string; signal?: AbortSignal; headers?: Record<string, string> } = { method: 'GET' };
      if (controller) init.signal = controller.signal;
      if (this.credentials.token) init.headers = { authorization: `Bearer ${this.credentials.token}` };
      const res = await this.fetchImpl(url, init);
      let body: unknown = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      if (!res.ok) {
        const b = body as { error?: unknown; message?: unknown } | null;
        const code = typeof b?.error === 'string' ? b.error : 'history_unavailable';
        throw new HubcastError('history_unavailable', `GET ${url}: ${res.status} ${code}${typeof b?.message === 'string' ? `: ${b.message}` : ''}`, {
          room,
          status: res.status,
        });
      }
      return parseHistory(body, room, url);
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }
}

function parseHistory(body: unknown, room: string, url: string): HistoryPage {
  const b = body as { epoch?: unknown; head?: unknown; earliest?: unknown; events?: unknown } | null;
  const bad = () => new HubcastError('history_unavailable', `GET ${url}: unexpected answer`, { room });
  if (!b || typeof b !== 'object' || !Array.isArray(b.events) || !isInteger(b.head)) throw bad();
  const events: WireEvent[] = [];
  for (const e of b.events as Array<{ seq?: unknown; ts?: unknown; data?: unknown }>) {
    if (!e || !isInteger(e.seq)) throw bad();
    events.push({ seq: e.seq, ts: typeof e.ts === 'number' ? e.ts : 0, data: e.data });
  }
  return {
    epoch: typeof b.epoch === 'string' ? b.epoch : null,
    head: b.head,
    earliest: isInteger(b.earliest) ? b.earliest : 1,
    events,
  };
}
