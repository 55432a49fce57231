/**
 * Test doubles: a WebSocket whose server side the test drives, and a fetch
 * whose answers the test gives.
 */
import type { FetchLike, WebSocketLike } from '../../src/index.js';

export interface SentFrame {
  socket: FakeSocket;
  text: string;
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closedByClient: { code: number | undefined; reason: string | undefined } | null = null;

  constructor(
    readonly url: string,
    private readonly log: SentFrame[],
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('InvalidStateError: socket is not open');
    this.log.push({ socket: this, text: data });
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 2;
    queueMicrotask(() => {
      this.readyState = 3;
      this.onclose?.({ code: code ?? 1005, reason: reason ?? '' });
    });
  }

  // ---- the server's side

  get isOpen(): boolean {
    return this.readyState === 1;
  }

  accept(): void {
    if (this.readyState !== 0) throw new Error(`accept: socket is in state ${this.readyState}`);
    this.readyState = 1;
    this.onopen?.({});
  }

  refuse(): void {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: '' });
  }

  deliver(frame: unknown): void {
    if (this.readyState !== 1) return;
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }

  serverClose(code: number, reason = ''): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

export function fakeWebSocket() {
  const sockets: FakeSocket[] = [];
  const sent: SentFrame[] = [];
  class WebSocket extends FakeSocket {
    constructor(url: string) {
      super(url, sent);
      sockets.push(this);
    }
  }
  return { WebSocket, sockets, sent };
}

export interface FetchRequest {
  url: URL;
  headers: Record<string, string>;
  respond(status: number, body: unknown): void;
  fail(error?: unknown): void;
}

export function fakeFetch() {
  const requests: FetchRequest[] = [];
  const fetch: FetchLike = (url, init) =>
    new Promise((resolve, reject) => {
      requests.push({
        url: new URL(url),
        headers: init?.headers ?? {},
        respond: (status, body) => resolve({ ok: status >= 200 && status < 300, status, json: async () => body }),
        fail: (error = new TypeError('Failed to fetch')) => reject(error),
      });
    });
  return { fetch, requests };
}
