/**
 * The SSE transport: a {@link WebSocketLike} over `EventSource` and `fetch`,
 * for networks where WebSocket does not pass (some corporate proxies, some
 * mobile networks). The rest of the client does not know the difference:
 * it "sends" the frames it always sends and receives the frames it always
 * receives.
 *
 * - `subscribe` / `unsubscribe`: the stream (`GET /v1/sse?room=…`) is opened,
 *   or opened again, for the rooms wanted, with `lastEventId` carrying each
 *   room's cursor (docs/protocol.md, "Server-Sent Events"). This transport
 *   follows the position of every room from the frames it passes on, so a
 *   stream opened again resumes exactly; `unsubscribed` is answered here.
 * - `publish`: `POST /v1/rooms/{room}/events` with the publish id as the
 *   `Idempotency-Key`, answered as `ack` or `error`.
 * - `ping`: answered with `pong` here (the server's heartbeats are comments,
 *   which `EventSource` does not show).
 * - `presence` and `auth` are not available over SSE.
 *
 * A lost stream is a close (1006) and the client reconnects as it does a
 * socket, with its cursors: `EventSource`'s own reconnect is not used. The
 * server's `close` event is a close with its code.
 */
import type { WebSocketConstructor, WebSocketLike } from './types.js';

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

/** The part of `EventSource` this transport uses. */
export interface EventSourceLike {
  readonly readyState: number;
  // `any`, as in WebSocketLike: implementations type their events differently.
  onerror: ((ev: any) => void) | null;
  addEventListener(type: string, listener: (ev: any) => void): void;
  close(): void;
}

export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

/** The part of `fetch` a publish uses. */
export type PublishFetch = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string },
) => Promise<{ status: number; json(): Promise<unknown> }>;

/** Named events of the stream; `message` is the default one (`event` frames). */
const NAMED = ['welcome', 'subscribed', 'caught_up', 'reset'] as const;

interface Position {
  epoch?: string | undefined;
  seq?: number | undefined;
}

/** The stream id for `rooms` at `positions`: `EPOCHS/ENTRIES`, as the server writes it. */
export function streamId(rooms: string[], positions: Map<string, Position>): string {
  const epochs: string[] = [];
  const entries = rooms.map((room) => {
    const at = positions.get(room);
    if (at?.seq === undefined) return '-';
    const epoch = at.epoch && /^[A-Za-z0-9_.:-]+$/.test(at.epoch) ? at.epoch : '';
    let index = epochs.indexOf(epoch);
    if (index < 0) index = epochs.push(epoch) - 1;
    return index === 0 ? `${at.seq}` : `${at.seq}.${index}`;
  });
  return `${epochs.join(',')}/${entries.join(',')}`;
}

/**
 * A WebSocket constructor whose sockets speak SSE and HTTP to the server the
 * URL names (`ws(s)://host/…/v1/ws[?token=…]`, as the connection builds it).
 */
export function sseTransport(EventSourceImpl: EventSourceConstructor, fetchImpl: PublishFetch): WebSocketConstructor {
  return class SseSocket implements WebSocketLike {
    readyState = CONNECTING;
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: string }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    private readonly http: string;
    private readonly token: string | null;
    /** Rooms in the order they were subscribed, and what each asked for. */
    private readonly rooms: string[] = [];
    private readonly wanted = new Map<string, { rewind?: number | undefined }>();
    private readonly positions = new Map<string, Position>();
    private es: EventSourceLike | null = null;
    private restart: ReturnType<typeof setTimeout> | null = null;

    constructor(url: string) {
      const u = new URL(url);
      this.token = u.searchParams.get('token');
      const scheme = u.protocol === 'wss:' ? 'https:' : 'http:';
      this.http = `${scheme}//${u.host}${u.pathname.replace(/\/v1\/ws$/, '')}`;
      queueMicrotask(() => {
        if (this.readyState !== CONNECTING) return;
        this.readyState = OPEN;
        this.onopen?.({});
      });
    }

    send(data: string): void {
      if (this.readyState !== OPEN) throw new Error('the SSE transport is not open');
      const frame = JSON.parse(data) as Record<string, unknown>;
      switch (frame.type) {
        case 'subscribe':
          return this.subscribe(frame);
        case 'unsubscribe':
          return this.unsubscribe(String(frame.room));
        case 'publish':
          return void this.publish(frame);
        case 'ping':
          return this.deliver({ type: 'pong' });
        default:
          return this.deliver({
            type: 'error',
            code: 'bad_request',
            message: `${String(frame.type)} is not available over SSE`,
            ...(typeof frame.id === 'string' ? { id: frame.id } : {}),
            ...(typeof frame.room === 'string' ? { room: frame.room } : {}),
          });
      }
    }

    close(code = 1000, reason = ''): void {
      if (this.readyState === CLOSED) return;
      this.stopStream();
      this.readyState = CLOSED;
      const onclose = this.onclose;
      queueMicrotask(() => onclose?.({ code, reason }));
    }

    private subscribe(frame: Record<string, unknown>): void {
      const room = String(frame.room);
      if (this.wanted.has(room)) {
        return this.deliver({ type: 'error', code: 'already_subscribed', message: 'already subscribed to this room', room });
      }
      this.rooms.push(room);
      this.wanted.set(room, { rewind: typeof frame.rewind === 'number' ? frame.rewind : undefined });
      if (typeof frame.cursor === 'number') {
        this.positions.set(room, { seq: frame.cursor, epoch: typeof frame.epoch === 'string' ? frame.epoch : undefined });
      }
      this.scheduleStream();
    }

    private unsubscribe(room: string): void {
      if (!this.wanted.delete(room)) {
        return this.deliver({ type: 'error', code: 'not_subscribed', message: 'not subscribed to this room', room });
      }
      this.rooms.splice(this.rooms.indexOf(room), 1);
      this.positions.delete(room);
      this.deliver({ type: 'unsubscribed', room });
      this.scheduleStream();
    }

    /** Opens the stream for the current rooms once the subscribes sent together are all in. */
    private scheduleStream(): void {
      if (this.restart !== null) return;
      this.restart = setTimeout(() => {
        this.restart = null;
        if (this.readyState === OPEN) this.openStream();
      }, 0);
    }

    private openStream(): void {
      this.stopStream();
      if (this.rooms.length === 0) return;
      const params = new URLSearchParams();
      for (const room of this.rooms) params.append('room', room);
      params.set('lastEventId', streamId(this.rooms, this.positions));
      const rewinds = this.rooms.map((r) => this.wanted.get(r)?.rewind).filter((r): r is number => r !== undefined);
      if (rewinds.length > 0) params.set('rewind', String(Math.max(...rewinds)));
      if (this.token) params.set('token', this.token);
      const es = new EventSourceImpl(`${this.http}/v1/sse?${params}`);
      this.es = es;
      const pass = (ev: { data: string }) => {
        if (this.es !== es) return;
        this.track(ev.data);
        this.onmessage?.({ data: ev.data });
      };
      es.addEventListener('message', pass);
      for (const name of NAMED) es.addEventListener(name, pass);
      es.addEventListener('close', (ev) => {
        if (this.es !== es) return;
        const close = JSON.parse(ev.data) as { code: number; reason: string; error?: object };
        if (close.error) this.onmessage?.({ data: JSON.stringify(close.error) });
        this.lost(close.code, close.reason);
      });
      es.onerror = () => {
        if (this.es === es) this.lost(1006, 'the event stream was lost');
      };
    }

    /** Follows each room's position from the frames passed on. */
    private track(data: string): void {
      let frame: { type?: string; room?: string; seq?: number; epoch?: string };
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      if (!frame.room || !this.wanted.has(frame.room)) return;
      const at = this.positions.get(frame.room) ?? {};
      switch (frame.type) {
        case 'subscribed':
          if (at.epoch === undefined && frame.epoch !== undefined) this.positions.set(frame.room, { ...at, epoch: frame.epoch });
          break;
        case 'reset':
          this.positions.set(frame.room, { epoch: frame.epoch });
          break;
        case 'event':
        case 'caught_up':
          if (typeof frame.seq === 'number') this.positions.set(frame.room, { ...at, seq: frame.seq });
          break;
      }
    }

    /** The stream is gone: this socket closes, and the client reconnects with its cursors. */
    private lost(code: number, reason: string): void {
      this.close(code, reason);
    }

    private stopStream(): void {
      if (this.restart !== null) {
        clearTimeout(this.restart);
        this.restart = null;
      }
      const es = this.es;
      this.es = null;
      if (es && es.readyState !== CLOSED) es.close();
    }

    private async publish(frame: Record<string, unknown>): Promise<void> {
      const id = String(frame.id);
      const room = String(frame.room);
      const body: Record<string, unknown> = { data: frame.data };
      if (typeof frame.expected_seq === 'number') body.expected_seq = frame.expected_seq;
      const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': id };
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      let status: number;
      let answer: Record<string, unknown>;
      try {
        const res = await fetchImpl(`${this.http}/v1/rooms/${encodeURIComponent(room)}/events`, {
          method: 'POST',
          headers,
          body: JSON.stringify(body),
        });
        status = res.status;
        answer = ((await res.json().catch(() => ({}))) ?? {}) as Record<string, unknown>;
      } catch {
        // Not known to be appended: the client sends it again (same id) on the next connection.
        if (this.readyState === OPEN) this.lost(1006, 'publish request failed');
        return;
      }
      if (this.readyState !== OPEN) return;
      if (status === 200 || status === 201) {
        this.onmessage?.({ data: JSON.stringify({ type: 'ack', id, room, seq: answer.seq }) });
      } else {
        const error: Record<string, unknown> = { type: 'error', code: answer.error ?? 'internal', message: answer.message ?? `HTTP ${status}`, id, room };
        if (typeof answer.head === 'number') error.head = answer.head;
        this.onmessage?.({ data: JSON.stringify(error) });
      }
    }

    /** A frame answered here, delivered after `send` returns, as the network would. */
    private deliver(frame: object): void {
      queueMicrotask(() => {
        if (this.readyState === OPEN) this.onmessage?.({ data: JSON.stringify(frame) });
      });
    }
  };
}
