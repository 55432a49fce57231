import { Emitter, type Listener } from './emitter.js';
import { HubcastError } from './errors.js';
import {
  type BackoffConfig,
  backoffDelay,
  decideReconnect,
  isValidRoomName,
  LOCAL_ABNORMAL,
  LOCAL_HEARTBEAT_TIMEOUT,
  terminalErrorCode,
  TERMINAL_CLOSE_CODES,
} from './policy.js';
import { type HistoryPage, Room, type RoomHost, type WireEvent } from './room.js';
import type {
  ClientEvents,
  ConnectionState,
  FetchLike,
  HubcastClientOptions,
  PublishAck,
  PublishOptions,
  PresenceMember,
  RoomOptions,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';

const OPEN = 1;
/** The longest publish id (it is also the server's idempotency key). */
const MAX_ID_BYTES = 128;
/** Publish errors that mean "nothing was appended, try again (same id) after a backoff". */
const RETRYABLE_PUBLISH_ERRORS = new Set(['store_unavailable', 'shutting_down', 'over_capacity', 'rate_limited', 'token_expired']);

interface PendingPublish {
  id: string;
  room: string;
  frame: string;
  resolve: (ack: PublishAck) => void;
  reject: (err: HubcastError) => void;
  promise: Promise<PublishAck>;
  /** The socket generation it was last sent on (0: not sent on the current socket). */
  sentOn: number;
  attempts: number;
  retryTimer: ReturnType<typeof setTimeout> | null;
  timeoutTimer: ReturnType<typeof setTimeout> | null;
}

interface Heartbeat {
  intervalMs: number;
  timeoutMs: number;
}

/** Turns `url` into the WebSocket endpoint and the HTTP base. */
function deriveUrls(url: string): { ws: string; http: string } {
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

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

/** A random publish id: 128 bits, hex. */
function newId(): string {
  const bytes = new Uint8Array(16);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let id = '';
  for (const b of bytes) id += b.toString(16).padStart(2, '0');
  return id;
}

function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * A hubcast client: one WebSocket, any number of room subscriptions, and
 * acknowledged publishes. See README.md and docs/clients.md.
 */
export class HubcastClient {
  private readonly emitter: Emitter<ClientEvents>;
  private readonly WS: WebSocketConstructor;
  private readonly fetchImpl: FetchLike;
  private readonly urls: { ws: string; http: string };
  private readonly backoff: BackoffConfig | null;
  private readonly heartbeat: Heartbeat | null;
  private readonly random: () => number;
  private readonly options: HubcastClientOptions;

  private currentState: ConnectionState = 'idle';
  private ws: WebSocketLike | null = null;
  /** Incremented for every connection attempt; callbacks of older attempts are ignored. */
  private generation = 0;
  private welcomed = false;
  private failedAttempts = 0;
  private sessionId: string | null = null;
  /** The last token `getToken` returned. */
  private token: string | null = null;
  private refreshing: Promise<string | null> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private reconcileTimer: ReturnType<typeof setInterval> | null = null;

  private heartbeatTimer: ReturnType<typeof setTimeout> | null = null;
  private lastFrameAt = 0;
  private framesReceived = 0;
  private ping: { sentAt: number; frames: number } | null = null;

  /** Token bucket pacing socket publishes (`maxPublishesPerSecond`). */
  private publishBudget = 0;
  private publishBudgetAt = -1;
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;

  private readonly rooms = new Map<string, Room<unknown>>();
  /** Room names whose `unsubscribe` is still in flight on the current socket. */
  private readonly draining = new Set<string>();
  private readonly pending = new Map<string, PendingPublish>();
  /**
   * Presence requests waiting for a `presence` frame, per room; `sent`: asked on the current
   * socket; `id` (`presence:N`) is echoed by the server in the answer and in a refusal, so
   * neither is taken for a subscription's.
   */
  private readonly presenceRequests = new Map<string, { id: string; sent: boolean; waiters: Array<PresenceWaiter> }>();
  private nextPresenceId = 0;
  private readonly host: RoomHost;

  /**
   * @throws TypeError when `options.url` is missing or not http(s)/ws(s), or when there is no
   * WebSocket implementation (no global `WebSocket`, as on Node 20, and no `WebSocket` option).
   */
  constructor(options: HubcastClientOptions) {
    if (!options || typeof options.url !== 'string') throw new TypeError('options.url is required');
    this.options = options;
    this.urls = deriveUrls(options.url);
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      // Fail here, not later as a `closed` state whose cause shows only on an `error` event.
      throw new TypeError(
        'no WebSocket implementation: this runtime has no global WebSocket (Node 20 has none), so pass one ' +
          "in the `WebSocket` option, e.g. `import WebSocket from 'ws'` and `new HubcastClient({ url, WebSocket })`",
      );
    }
    this.WS = WS;
    // Called as a plain function, never as a method: a browser's fetch throws
    // "Illegal invocation" when its `this` is not the global object.
    const userFetch = options.fetch;
    this.fetchImpl = (url, init) => {
      const f = userFetch ?? (globalThis as { fetch?: FetchLike }).fetch;
      if (!f) return Promise.reject(new TypeError('no fetch available: pass the `fetch` option'));
      return f(url, init);
    };
    this.random = options.random ?? Math.random;
    this.backoff =
      options.reconnect === false
        ? null
        : {
            minDelayMs: options.reconnect?.minDelayMs ?? 250,
            maxDelayMs: options.reconnect?.maxDelayMs ?? 30_000,
            tryAgainLaterMs: options.reconnect?.tryAgainLaterMs ?? 5_000,
          };
    this.heartbeat =
      options.heartbeat === false
        ? null
        : { intervalMs: options.heartbeat?.intervalMs ?? 10_000, timeoutMs: options.heartbeat?.timeoutMs ?? 5_000 };
    this.emitter = new Emitter<ClientEvents>((err, event) => {
      if (event !== 'error') this.reportListenerError(err);
    });
    const client = this;
    this.host = {
      send: (frame) => this.sendFrame(frame),
      isOpen: () => this.currentState === 'open',
      isDraining: (room) => this.draining.has(room),
      fetchHistory: (room, after, limit) => this.fetchHistory(room, after, limit),
      get historyPageSize() {
        return client.options.historyPageSize ?? 1000;
      },
      retryDelay: (attempt) =>
        backoffDelay(attempt, this.backoff ?? { minDelayMs: 250, maxDelayMs: 30_000, tryAgainLaterMs: 0 }, this.random),
      reportError: (err) => this.emitter.emit('error', err),
      removeRoom: (room, onServer) => this.removeRoom(room, onServer),
      publishesInFlight: (room) => {
        for (const entry of this.pending.values()) if (entry.room === room && entry.sentOn === this.generation) return true;
        return false;
      },
      publish: (room, data, opts) => this.publish(room, data, opts),
      requestPresence: (room) => this.presence(room),
    };
  }

  // ---------------------------------------------------------------- public API

  /** The connection state: `idle` → `connecting` → `open` ⇄ `reconnecting` … → `closed`. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The server's id of the current session, once `welcome` arrived. */
  get session(): string | null {
    return this.sessionId;
  }

  /** Number of publishes waiting for an ack. */
  get pendingPublishes(): number {
    return this.pending.size;
  }

  on<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): () => void {
    return this.emitter.on(event, listener);
  }

  once<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): () => void {
    return this.emitter.once(event, listener);
  }

  off<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): void {
    this.emitter.off(event, listener);
  }

  /**
   * The subscription to `name`, created on first use (options apply then).
   * Subscribes at once when connected, else as soon as the socket opens.
   */
  room<T = unknown>(name: string, options: RoomOptions = {}): Room<T> {
    if (!isValidRoomName(name)) throw new HubcastError('invalid_room', `invalid room name ${JSON.stringify(name)}`);
    const existing = this.rooms.get(name);
    if (existing) return existing as Room<T>;
    const room = new Room<T>(this.host, name, options, (err) => this.reportListenerError(err));
    this.rooms.set(name, room as Room<unknown>);
    if (this.currentState === 'idle' && this.options.autoConnect !== false) this.connect();
    else if (this.currentState === 'open') room.subscribeNow();
    return room;
  }

  /**
   * Asks the server for `room`'s presence members (sorted by `id`). Needs the
   * token's `presence` grant for the room, not a subscription. Queued while
   * offline and asked again after a reconnect; resolves with the next
   * `presence` frame of the room, fails with the server's error (`forbidden`)
   * or `closed`.
   */
  presence(room: string): Promise<PresenceMember[]> {
    if (!isValidRoomName(room)) return Promise.reject(new HubcastError('invalid_room', `invalid room name ${JSON.stringify(room)}`, { room }));
    return new Promise<PresenceMember[]>((resolve, reject) => {
      let entry = this.presenceRequests.get(room);
      if (!entry) {
        entry = { id: `presence:${++this.nextPresenceId}`, sent: false, waiters: [] };
        this.presenceRequests.set(room, entry);
      }
      entry.waiters.push({ resolve, reject });
      if (this.currentState === 'idle' && this.options.autoConnect !== false) this.connect();
      else this.sendPresenceRequests();
    });
  }

  /** Connects (or reconnects now, skipping a pending backoff). Also restarts a client that was closed. */
  connect(): void {
    if (this.currentState === 'connecting' || this.currentState === 'open') return;
    this.clearReconnectTimer();
    this.startReconcile();
    void this.openSocket();
  }

  /**
   * Publishes `data` to `room` over the socket. Resolves with the seq once
   * the server acknowledged it (durably appended). Queued while offline and
   * resent after every reconnect with the same `id`, which the server uses as
   * the idempotency key, so it is appended at most once. Rejects with a
   * {@link HubcastError}: `conflict` (with `head`) when `expectedSeq` was not the
   * head, `too_large`, `queue_full`, `timeout`, `closed`, or the terminal close.
   */
  publish(room: string, data: unknown, options: PublishOptions = {}): Promise<PublishAck> {
    if (!isValidRoomName(room)) {
      return Promise.reject(new HubcastError('invalid_room', `invalid room name ${JSON.stringify(room)}`, { room }));
    }
    const id = options.id ?? newId();
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > MAX_ID_BYTES) {
      return Promise.reject(new HubcastError('bad_request', `publish id must be 1 to ${MAX_ID_BYTES} bytes`, { room }));
    }
    const existing = this.pending.get(id);
    if (existing) return existing.promise;
    if (this.currentState === 'closed') {
      return Promise.reject(new HubcastError('closed', 'the client is closed', { room, id }));
    }
    if (options.expectedSeq !== undefined && !isInteger(options.expectedSeq)) {
      return Promise.reject(new HubcastError('bad_request', 'expectedSeq must be a non-negative integer', { room, id }));
    }
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (err) {
      return Promise.reject(new HubcastError('bad_request', `data is not JSON-serializable: ${String(err)}`, { room, id }));
    }
    if (json === undefined) {
      return Promise.reject(new HubcastError('bad_request', 'data is not JSON-serializable', { room, id }));
    }
    const maxBytes = this.options.maxEventBytes ?? 1024 * 1024;
    if (utf8Length(json) > maxBytes) {
      return Promise.reject(new HubcastError('too_large', `data is larger than ${maxBytes} bytes`, { room, id }));
    }
    if (this.pending.size >= (this.options.maxQueuedPublishes ?? 1000)) {
      return Promise.reject(new HubcastError('queue_full', 'too many publishes waiting for an ack', { room, id }));
    }
    let frame = `{"type":"publish","id":${JSON.stringify(id)},"room":${JSON.stringify(room)},"data":${json}`;
    if (options.expectedSeq !== undefined) frame += `,"expected_seq":${options.expectedSeq}`;
    frame += '}';

    let resolve!: (ack: PublishAck) => void;
    let reject!: (err: HubcastError) => void;
    const promise = new Promise<PublishAck>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: PendingPublish = {
      id,
      room,
      frame,
      resolve,
      reject,
      promise,
      sentOn: 0,
      attempts: 0,
      retryTimer: null,
      timeoutTimer: null,
    };
    this.pending.set(id, entry);
    const timeoutMs = options.timeoutMs ?? this.options.publishTimeoutMs ?? 0;
    if (timeoutMs > 0) {
      entry.timeoutTimer = setTimeout(() => {
        this.settlePublish(
          entry,
          new HubcastError('timeout', `publish ${id} was not acknowledged within ${timeoutMs} ms; it may still be appended: retry with the same id to find out`, { room, id }),
        );
      }, timeoutMs);
    }
    if (this.currentState === 'idle' && this.options.autoConnect !== false) this.connect();
    else this.pumpPublishes();
    return promise;
  }

  /**
   * Gets a fresh token from `getToken` and hands it to the open session in
   * an `auth` message (the client does this by itself on `token_expired`).
   * Resolves with the new token, or `null` if there is none.
   */
  refreshToken(): Promise<string | null> {
    if (!this.options.getToken) return Promise.resolve(null);
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const token = (await this.options.getToken!()) ?? null;
        this.token = token;
        if (token) this.sendFrame({ type: 'auth', token });
        return token;
      } catch (err) {
        this.emitter.emit('error', new HubcastError('token_error', `getToken failed: ${String(err)}`, { cause: err }));
        return null;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Closes the socket for good: pending publishes fail with `closed`, iterators end. `connect()` starts again. */
  close(): void {
    if (this.currentState === 'closed' && this.ws === null) return;
    this.teardownSocket(1000, 'client closed');
    this.welcomed = false;
    this.sessionId = null;
    this.draining.clear();
    this.stopReconcile();
    this.clearReconnectTimer();
    for (const room of this.rooms.values()) room.clientClosed();
    this.rejectAllPublishes(new HubcastError('closed', 'the client was closed'));
    this.rejectPresenceRequests(new HubcastError('closed', 'the client was closed'));
    this.setState('closed', { code: 1000, reason: 'client closed' });
  }

  // ------------------------------------------------------------- connection

  private async openSocket(): Promise<void> {
    const gen = ++this.generation;
    this.setState('connecting');
    let token: string | null | undefined;
    if (this.options.getToken) {
      try {
        token = await this.options.getToken();
        this.token = token ?? null;
      } catch (err) {
        if (gen !== this.generation || this.currentState !== 'connecting') return;
        this.emitter.emit('error', new HubcastError('token_error', `getToken failed: ${String(err)}`, { cause: err }));
        this.afterDisconnect(LOCAL_ABNORMAL, 'getToken failed', false);
        return;
      }
      if (gen !== this.generation || this.currentState !== 'connecting') return;
    }
    const url =
      token && this.options.sendTokenAs !== 'message' ? `${this.urls.ws}?token=${encodeURIComponent(token)}` : this.urls.ws;
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url);
    } catch (err) {
      this.emitter.emit('error', new HubcastError('closed', `cannot open a WebSocket to ${url}: ${String(err)}`, { cause: err }));
      this.afterDisconnect(LOCAL_ABNORMAL, 'WebSocket constructor threw', false);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = () => {
      if (this.ws === ws) this.onOpen();
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (this.ws === ws) this.onMessage(ev.data);
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (this.ws === ws) this.onSocketClose(typeof ev.code === 'number' ? ev.code : LOCAL_ABNORMAL, ev.reason ?? '');
    };
    ws.onerror = () => {
      // A close event follows; it carries the code.
    };
    const connectTimeoutMs = this.options.connectTimeoutMs ?? 10_000;
    if (connectTimeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        this.connectTimer = null;
        if (this.ws === ws && this.currentState === 'connecting') {
          this.teardownSocket(4000, 'connect timeout');
          this.socketGone(LOCAL_ABNORMAL, 'connect timeout');
        }
      }, connectTimeoutMs);
    }
  }

  private onOpen(): void {
    this.clearConnectTimer();
    this.draining.clear();
    this.setState('open');
    this.startHeartbeat();
    // Messages are handled in order: the credentials come before anything that needs them.
    if (this.options.sendTokenAs === 'message' && this.token) this.sendFrame({ type: 'auth', token: this.token });
    for (const room of this.rooms.values()) room.subscribeNow();
    this.sendPresenceRequests();
    this.pumpPublishes();
  }

  /** Sends one `presence` request per room with waiters not yet asked on this socket. */
  private sendPresenceRequests(): void {
    if (this.currentState !== 'open') return;
    for (const [room, entry] of this.presenceRequests) {
      if (!entry.sent && this.sendFrame({ type: 'presence', room, id: entry.id })) entry.sent = true;
    }
  }

  private rejectPresenceRequests(error: HubcastError, room?: string): void {
    for (const [name, entry] of [...this.presenceRequests]) {
      if (room !== undefined && name !== room) continue;
      this.presenceRequests.delete(name);
      for (const waiter of entry.waiters) waiter.reject(error);
    }
  }

  private onSocketClose(code: number, reason: string): void {
    this.teardownSocket();
    this.socketGone(code, reason);
  }

  /** Detaches the current socket (closing it with `code` if given). */
  private teardownSocket(code?: number, reason?: string): void {
    this.clearConnectTimer();
    this.stopHeartbeat();
    if (this.pumpTimer !== null) {
      clearTimeout(this.pumpTimer);
      this.pumpTimer = null;
    }
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    if (code !== undefined) {
      try {
        ws.close(code, reason);
      } catch {
        // Already closing, or the code is not allowed: the socket is dropped anyway.
      }
    }
  }

  /** The socket is gone: reset per-socket state, then reconnect or stop. */
  private socketGone(code: number, reason: string): void {
    const welcomed = this.welcomed;
    this.welcomed = false;
    this.sessionId = null;
    this.draining.clear();
    for (const room of this.rooms.values()) room.socketClosed();
    for (const entry of this.pending.values()) entry.sentOn = 0;
    for (const entry of this.presenceRequests.values()) entry.sent = false;
    this.afterDisconnect(code, reason, welcomed);
  }

  private afterDisconnect(code: number, reason: string, welcomed: boolean): void {
    if (this.currentState === 'closed') return;
    this.failedAttempts = welcomed ? 0 : this.failedAttempts + 1;
    if (TERMINAL_CLOSE_CODES.has(code)) {
      const error = new HubcastError(terminalErrorCode(code), `connection closed with ${code}${reason ? `: ${reason}` : ''}; not retrying`, {
        closeCode: code,
      });
      this.stopReconcile();
      for (const room of this.rooms.values()) room.clientClosed(error);
      this.rejectAllPublishes(error);
      this.rejectPresenceRequests(error);
      this.emitter.emit('error', error);
      this.setState('closed', { code, reason, error });
      return;
    }
    if (!this.backoff) {
      this.stopReconcile();
      for (const room of this.rooms.values()) room.clientClosed();
      this.rejectAllPublishes(new HubcastError('closed', 'connection closed and reconnect is disabled', { closeCode: code }));
      this.rejectPresenceRequests(new HubcastError('closed', 'connection closed and reconnect is disabled', { closeCode: code }));
      this.setState('closed', { code, reason });
      return;
    }
    const decision = decideReconnect(code, this.failedAttempts, welcomed, this.backoff, this.random);
    if (!decision.retry) return; // unreachable: terminal codes handled above
    this.setState('reconnecting', { code, reason, delayMs: decision.delayMs, attempt: this.failedAttempts });
    this.clearReconnectTimer();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.currentState === 'reconnecting') void this.openSocket();
    }, decision.delayMs);
  }

  private setState(state: ConnectionState, detail: Omit<StateChange, 'state' | 'previous'> = {}): void {
    const previous = this.currentState;
    this.currentState = state;
    const change: StateChange = { state, previous, ...detail };
    this.emitter.emit('state', change);
    this.emitter.emit(state as Exclude<ConnectionState, 'idle'>, change);
  }

  private sendFrame(frame: object | string): boolean {
    const ws = this.ws;
    if (!ws || this.currentState !== 'open' || ws.readyState !== OPEN) return false;
    try {
      ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
      return true;
    } catch {
      return false; // the close event follows
    }
  }

  // --------------------------------------------------------------- messages

  private onMessage(raw: unknown): void {
    this.lastFrameAt = Date.now();
    this.framesReceived += 1;
    if (typeof raw !== 'string') {
      this.protocolViolation('a binary frame');
      return;
    }
    let frame: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(raw);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
      frame = parsed as Record<string, unknown>;
    } catch {
      this.protocolViolation(`a frame that is not a JSON object: ${raw.slice(0, 100)}`);
      return;
    }
    const room = typeof frame.room === 'string' ? this.rooms.get(frame.room) : undefined;
    switch (frame.type) {
      case 'welcome':
        this.welcomed = true;
        this.failedAttempts = 0;
        this.sessionId = typeof frame.session === 'string' ? frame.session : null;
        this.emitter.emit('welcome', {
          session: this.sessionId ?? '',
          heartbeatMs: isInteger(frame.heartbeat_ms) ? frame.heartbeat_ms : 0,
        });
        return;
      case 'subscribed':
        if (typeof frame.epoch !== 'string' || !isInteger(frame.head)) return this.protocolViolation('a malformed subscribed');
        room?.onSubscribed(frame.epoch, frame.head, frame.echo !== false);
        return;
      case 'reset':
        if (typeof frame.epoch !== 'string') return this.protocolViolation('a malformed reset');
        room?.onReset(frame.epoch, isInteger(frame.earliest) ? frame.earliest : null);
        return;
      case 'event':
        if (!isInteger(frame.seq) || !('data' in frame)) return this.protocolViolation('a malformed event');
        room?.onEvent({ seq: frame.seq, ts: typeof frame.ts === 'number' ? frame.ts : 0, data: frame.data } satisfies WireEvent);
        return;
      case 'batch': {
        // Consecutive live events of a batching room: processed one by one, exactly like `event` frames.
        if (!Array.isArray(frame.events)) return this.protocolViolation('a malformed batch');
        for (const item of frame.events as unknown[]) {
          const e = item as Record<string, unknown> | null;
          if (e === null || typeof e !== 'object' || !isInteger(e.seq) || !('data' in e)) {
            this.protocolViolation('a malformed event in a batch');
            continue; // the missing seq is a gap, healed like any other
          }
          room?.onEvent({ seq: e.seq, ts: typeof e.ts === 'number' ? e.ts : 0, data: e.data } satisfies WireEvent);
        }
        return;
      }
      case 'presence': {
        const members = parseMembers(frame.members);
        if (typeof frame.room !== 'string' || members === null) return this.protocolViolation('a malformed presence');
        if (typeof frame.id === 'string') {
          // The answer to a presence request.
          const entry = this.presenceRequests.get(frame.room);
          if (entry?.sent && entry.id === frame.id) {
            this.presenceRequests.delete(frame.room);
            for (const waiter of entry.waiters) waiter.resolve(members.map((m) => ({ ...m })));
          }
          return;
        }
        room?.onPresence(members); // the member list of a presence subscription
        return;
      }
      case 'join':
      case 'leave': {
        const member = parseMember(frame.member);
        if (member === null) return this.protocolViolation(`a malformed ${frame.type}`);
        room?.onMembership(frame.type as 'join' | 'leave', member);
        return;
      }
      case 'caught_up':
        if (!isInteger(frame.seq)) return this.protocolViolation('a malformed caught_up');
        room?.onCaughtUp(frame.seq);
        return;
      case 'unsubscribed':
        this.onUnsubscribed(frame.room);
        return;
      case 'ack':
        this.onAck(frame);
        return;
      case 'error':
        this.onErrorFrame(frame);
        return;
      case 'authenticated': {
        const info: { sub?: string; exp?: number } = {};
        if (typeof frame.sub === 'string') info.sub = frame.sub;
        if (typeof frame.exp === 'number') info.exp = frame.exp;
        this.emitter.emit('authenticated', info);
        return;
      }
      case 'pong':
        return; // liveness is recorded above, for every frame
      default:
        return; // unknown types are ignored (forward compatibility)
    }
  }

  private onUnsubscribed(name: unknown): void {
    if (typeof name !== 'string') return;
    if (this.draining.delete(name)) {
      // An unsubscribe the app asked for finished; a new subscription of the name may be waiting.
      this.rooms.get(name)?.subscribeNow();
      return;
    }
    this.rooms.get(name)?.onUnsubscribed();
  }

  private onAck(frame: Record<string, unknown>): void {
    if (typeof frame.id !== 'string') return;
    const entry = this.pending.get(frame.id);
    if (!entry) return; // already settled (timeout), or a duplicate ack
    if (!isInteger(frame.seq)) return this.protocolViolation('a malformed ack');
    this.settlePublish(entry, { id: entry.id, room: typeof frame.room === 'string' ? frame.room : entry.room, seq: frame.seq });
  }

  private onErrorFrame(frame: Record<string, unknown>): void {
    const code = typeof frame.code === 'string' ? frame.code : 'unknown';
    const message = typeof frame.message === 'string' ? frame.message : code;
    const roomName = typeof frame.room === 'string' ? frame.room : undefined;
    if (typeof frame.id === 'string') {
      const request = roomName === undefined ? undefined : this.presenceRequests.get(roomName);
      if (roomName !== undefined && request?.sent && request.id === frame.id) {
        this.rejectPresenceRequests(new HubcastError(code, message, { room: roomName }), roomName);
        return;
      }
      const entry = this.pending.get(frame.id);
      if (entry) {
        if (RETRYABLE_PUBLISH_ERRORS.has(code) && this.backoff) {
          // Nothing was appended: send again (same id) after a backoff.
          entry.sentOn = 0;
          const delay = backoffDelay(entry.attempts++, this.backoff, this.random);
          entry.retryTimer = setTimeout(() => {
            entry.retryTimer = null;
            this.pumpPublishes();
          }, delay);
          return;
        }
        const details: { room: string; id: string; head?: number } = { room: entry.room, id: entry.id };
        if (isInteger(frame.head)) details.head = frame.head;
        this.settlePublish(entry, new HubcastError(code, message, details));
        return;
      }
    }
    if (code === 'token_expired' && roomName === undefined && frame.id === undefined) {
      // The session's token ran out: send a fresh one within the server's grace period.
      if (this.options.getToken) {
        void this.refreshToken();
        return;
      }
    }
    if (roomName !== undefined) {
      if (this.draining.has(roomName) && code === 'not_subscribed') {
        this.onUnsubscribed(roomName);
        return;
      }
      const room = this.rooms.get(roomName);
      if (room) {
        room.onSubscriptionError(code, message);
        return;
      }
    }
    const details: { room?: string } = {};
    if (roomName !== undefined) details.room = roomName;
    this.emitter.emit('error', new HubcastError(code, message, details));
  }

  private protocolViolation(what: string): void {
    this.emitter.emit('error', new HubcastError('protocol_violation', `the server sent ${what}; ignored`));
  }

  // ----------------------------------------------------------------- publish

  /**
   * Sends the pending publishes not yet sent on this socket, in call order,
   * at most `maxPublishesPerSecond` (bursts of as many): a queue flushed after
   * a reconnect must not get the session closed for sending too fast (4008).
   */
  private pumpPublishes(): void {
    if (this.currentState !== 'open' || this.pumpTimer !== null) return;
    const rate = this.options.maxPublishesPerSecond ?? 100;
    for (const entry of this.pending.values()) {
      if (entry.retryTimer !== null || entry.sentOn === this.generation) continue;
      if (rate > 0 && !this.takePublishToken(rate)) {
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = null;
          this.pumpPublishes();
        }, Math.ceil(1000 / rate));
        return;
      }
      if (!this.sendFrame(entry.frame)) return;
      entry.sentOn = this.generation;
    }
  }

  private takePublishToken(rate: number): boolean {
    const now = Date.now();
    this.publishBudget =
      this.publishBudgetAt < 0 ? rate : Math.min(rate, this.publishBudget + ((now - this.publishBudgetAt) * rate) / 1000);
    this.publishBudgetAt = now;
    if (this.publishBudget < 1) return false;
    this.publishBudget -= 1;
    return true;
  }

  private settlePublish(entry: PendingPublish, outcome: PublishAck | HubcastError): void {
    if (this.pending.get(entry.id) !== entry) return;
    this.pending.delete(entry.id);
    if (entry.retryTimer !== null) clearTimeout(entry.retryTimer);
    if (entry.timeoutTimer !== null) clearTimeout(entry.timeoutTimer);
    if (outcome instanceof HubcastError) entry.reject(outcome);
    else entry.resolve(outcome);
    this.rooms.get(entry.room)?.onPublishSettled(outcome instanceof HubcastError ? null : outcome.seq);
  }

  private rejectAllPublishes(error: HubcastError): void {
    for (const entry of [...this.pending.values()]) {
      const details: { room: string; id: string; closeCode?: number } = { room: entry.room, id: entry.id };
      if (error.closeCode !== undefined) details.closeCode = error.closeCode;
      this.settlePublish(entry, new HubcastError(error.code, error.message, details));
    }
  }

  // ------------------------------------------------------------------- rooms

  private removeRoom(room: Room<unknown>, onServer: boolean): void {
    if (this.rooms.get(room.name) !== room) return;
    this.rooms.delete(room.name);
    if (onServer && this.currentState === 'open') {
      // A resync may already have sent the unsubscribe; one more only earns a not_subscribed.
      if (!this.draining.has(room.name)) {
        this.draining.add(room.name);
        this.sendFrame({ type: 'unsubscribe', room: room.name });
      }
    }
  }

  private async fetchHistory(room: string, after: number, limit: number): Promise<HistoryPage> {
    try {
      return await this.fetchHistoryOnce(room, after, limit);
    } catch (err) {
      // Credentials that ran out: one more try with a fresh token.
      if (err instanceof HubcastError && err.status === 401 && this.options.getToken) {
        await this.refreshToken();
        return this.fetchHistoryOnce(room, after, limit);
      }
      throw err;
    }
  }

  private async fetchHistoryOnce(room: string, after: number, limit: number): Promise<HistoryPage> {
    const url = `${this.urls.http}/v1/rooms/${room}/events?after=${after}&limit=${limit}`;
    const timeoutMs = this.options.historyTimeoutMs ?? 10_000;
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = controller && timeoutMs > 0 ? setTimeout(() => controller.abort(), timeoutMs) : null;
    try {
      const init: { method: string; signal?: AbortSignal; headers?: Record<string, string> } = { method: 'GET' };
      if (controller) init.signal = controller.signal;
      if (this.token) init.headers = { authorization: `Bearer ${this.token}` };
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

  private startReconcile(): void {
    const every = this.options.reconcileMs ?? 0;
    if (every <= 0 || this.reconcileTimer !== null) return;
    this.reconcileTimer = setInterval(() => {
      for (const room of this.rooms.values()) room.reconcile();
    }, every);
  }

  private stopReconcile(): void {
    if (this.reconcileTimer !== null) {
      clearInterval(this.reconcileTimer);
      this.reconcileTimer = null;
    }
  }

  // --------------------------------------------------------------- heartbeat

  private startHeartbeat(): void {
    this.lastFrameAt = Date.now();
    this.ping = null;
    if (this.heartbeat) this.scheduleHeartbeat(this.heartbeat.intervalMs);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== null) {
      clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }
    this.ping = null;
  }

  private scheduleHeartbeat(ms: number): void {
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = null;
      this.heartbeatTick();
    }, Math.max(0, ms));
  }

  /**
   * Any frame counts as liveness. After `intervalMs` of silence a ping is sent;
   * if nothing at all arrives within `timeoutMs` after it, the socket is
   * abandoned and the client reconnects. So a dead connection is noticed at
   * most `intervalMs + timeoutMs` after the last frame.
   */
  private heartbeatTick(): void {
    const hb = this.heartbeat;
    if (!hb || !this.ws || this.currentState !== 'open') return;
    const now = Date.now();
    if (this.ping !== null) {
      if (this.framesReceived > this.ping.frames) {
        this.ping = null;
      } else {
        const waited = now - this.ping.sentAt;
        if (waited >= hb.timeoutMs) {
          this.teardownSocket(4000, 'heartbeat timeout');
          this.socketGone(LOCAL_HEARTBEAT_TIMEOUT, 'heartbeat timeout (no frame from the server)');
          return;
        }
        this.scheduleHeartbeat(hb.timeoutMs - waited);
        return;
      }
    }
    const idle = now - this.lastFrameAt;
    if (idle >= hb.intervalMs) {
      this.sendFrame({ type: 'ping' });
      this.ping = { sentAt: now, frames: this.framesReceived };
      this.scheduleHeartbeat(hb.timeoutMs);
    } else {
      this.scheduleHeartbeat(hb.intervalMs - idle);
    }
  }

  // ------------------------------------------------------------------ timers

  private clearReconnectTimer(): void {
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }

  private clearConnectTimer(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
  }

  private reportListenerError(err: unknown): void {
    this.emitter.emit(
      'error',
      new HubcastError('listener_error', `a listener threw: ${String(err)}`, { cause: err }),
    );
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

interface PresenceWaiter {
  resolve: (members: PresenceMember[]) => void;
  reject: (err: HubcastError) => void;
}

function parseMember(value: unknown): PresenceMember | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.id !== 'string') return null;
  const member: PresenceMember = { id: v.id };
  if ('info' in v && v.info !== undefined && v.info !== null) member.info = v.info;
  return member;
}

function parseMembers(value: unknown): PresenceMember[] | null {
  if (!Array.isArray(value)) return null;
  const members: PresenceMember[] = [];
  for (const item of value) {
    const member = parseMember(item);
    if (member === null) return null;
    members.push(member);
  }
  return members;
}
