/**
 * The client's one WebSocket and its life: the connection states the
 * application sees (`idle` → `connecting` → `open` ⇄ `reconnecting` … →
 * `closed`), each attempt (token, URL, connect timeout), the heartbeat that
 * watches the open socket, and what a close leads to: a reconnect after the
 * backoff the close code calls for, or the end (docs/clients.md, "Reconnect
 * policy"). What lives on the socket (rooms, publishes, presence requests)
 * is told through {@link ConnectionHooks}; frames go to the router.
 */
import type { Credentials } from './credentials.js';
import type { Emitter } from './emitter.js';
import { HubcastError } from './errors.js';
import { Heartbeat, type HeartbeatConfig } from './heartbeat.js';
import {
  type BackoffConfig,
  decideReconnect,
  LOCAL_ABNORMAL,
  LOCAL_HEARTBEAT_TIMEOUT,
  terminalErrorCode,
  TERMINAL_CLOSE_CODES,
} from './policy.js';
import type {
  ClientEvents,
  ConnectionState,
  HubcastClientOptions,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';

const OPEN = 1;

/** What the connection tells the parts that live on the socket, in this order of a socket's life. */
export interface ConnectionHooks {
  /** The socket opened, before the state turns `open`: what was per-socket is stale. */
  opening(): void;
  /** The state is `open` (and the token sent, with `sendTokenAs: 'message'`): subscribe, send what is queued. */
  opened(): void;
  /** A text or binary frame from the server (liveness is recorded already). */
  frame(raw: unknown): void;
  /** The socket was detached: stop what paces sending on it. */
  detached(): void;
  /** The socket is gone and the client goes on: what was sent on it is sent again on the next. */
  socketGone(): void;
  /**
   * The client stops (a terminal close code, a close with reconnect off, or `close()`):
   * rooms end (`roomError`: the terminal close's), publishes and presence requests fail with `error`.
   */
  stopped(roomError: HubcastError | undefined, error: HubcastError): void;
}

/** What a connection is made with, fixed at construction. */
export interface ConnectionConfig {
  WebSocket: WebSocketConstructor;
  /** The SSE transport to switch to for good when WebSocket never opens (`transport: 'auto'`). */
  fallback?: WebSocketConstructor | undefined;
  /** The `ws(s)://…/v1/ws` endpoint. */
  url: string;
  /** Read on every use, like every option. */
  options: HubcastClientOptions;
  /** `null`: reconnect is off. */
  backoff: BackoffConfig | null;
  /** `null`: heartbeat is off. */
  heartbeat: HeartbeatConfig | null;
  random: () => number;
}

export class Connection {
  private currentState: ConnectionState = 'idle';
  private ws: WebSocketLike | null = null;
  /** Incremented for every connection attempt; callbacks of older attempts are ignored. */
  private gen = 0;
  private welcomed = false;
  private failedAttempts = 0;
  private sessionId: string | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private WS: WebSocketConstructor;
  private readonly fallback: WebSocketConstructor | undefined;
  /** A session was ever established on this client (then WebSocket works here). */
  private everWelcomed = false;
  private readonly wsUrl: string;
  private readonly options: HubcastClientOptions;
  private readonly backoff: BackoffConfig | null;
  private readonly random: () => number;
  private readonly heartbeat: Heartbeat;

  constructor(
    config: ConnectionConfig,
    private readonly credentials: Credentials,
    private readonly emitter: Emitter<ClientEvents>,
    private readonly hooks: ConnectionHooks,
  ) {
    this.WS = config.WebSocket;
    this.fallback = config.fallback;
    this.wsUrl = config.url;
    this.options = config.options;
    this.backoff = config.backoff;
    this.random = config.random;
    this.heartbeat = new Heartbeat(config.heartbeat, {
      isOpen: () => this.ws !== null && this.currentState === 'open',
      sendPing: () => {
        this.send({ type: 'ping' });
      },
      dead: () => {
        this.teardown(4000, 'heartbeat timeout');
        this.socketGone(LOCAL_HEARTBEAT_TIMEOUT, 'heartbeat timeout (no frame from the server)');
      },
    });
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The server's id of the current session, once `welcome` arrived. */
  get session(): string | null {
    return this.sessionId;
  }

  /** The current attempt's number; a publish records the one it was sent on. */
  get generation(): number {
    return this.gen;
  }

  /** Whether a connection attempt is under way or the socket is open. */
  get active(): boolean {
    return this.currentState === 'connecting' || this.currentState === 'open';
  }

  /** Opens a socket now, skipping a pending backoff. */
  open(): void {
    this.clearReconnectTimer();
    void this.openSocket();
  }

  /** `welcome`: the session is established, and the backoff starts over. */
  onWelcome(session: string | null): void {
    this.welcomed = true;
    this.everWelcomed = true;
    this.failedAttempts = 0;
    this.sessionId = session;
  }

  /** Sends a frame if the socket is open; returns whether it was sent. */
  send(frame: object | string): boolean {
    const ws = this.ws;
    if (!ws || this.currentState !== 'open' || ws.readyState !== OPEN) return false;
    try {
      ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
      return true;
    } catch {
      return false; // the close event follows
    }
  }

  /** Closes the socket for good (`close()`); `connect()` may start again. */
  close(): void {
    if (this.currentState === 'closed' && this.ws === null) return;
    this.teardown(1000, 'client closed');
    this.welcomed = false;
    this.sessionId = null;
    this.clearReconnectTimer();
    this.hooks.stopped(undefined, new HubcastError('closed', 'the client was closed'));
    this.setState('closed', { code: 1000, reason: 'client closed' });
  }

  private async openSocket(): Promise<void> {
    const gen = ++this.gen;
    this.setState('connecting');
    let token: string | null | undefined;
    if (this.options.getToken) {
      try {
        token = await this.options.getToken();
        this.credentials.token = token ?? null;
      } catch (err) {
        if (gen !== this.gen || this.currentState !== 'connecting') return;
        this.emitter.emit('error', new HubcastError('token_error', `getToken failed: ${String(err)}`, { cause: err }));
        this.afterDisconnect(LOCAL_ABNORMAL, 'getToken failed', false);
        return;
      }
      if (gen !== this.gen || this.currentState !== 'connecting') return;
    }
    const url = token && this.options.sendTokenAs !== 'message' ? `${this.wsUrl}?token=${encodeURIComponent(token)}` : this.wsUrl;
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
      if (this.ws === ws) {
        this.heartbeat.frameReceived();
        this.hooks.frame(ev.data);
      }
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
          this.teardown(4000, 'connect timeout');
          this.socketGone(LOCAL_ABNORMAL, 'connect timeout');
        }
      }, connectTimeoutMs);
    }
  }

  private onOpen(): void {
    this.clearConnectTimer();
    this.hooks.opening();
    this.setState('open');
    this.heartbeat.start();
    // Messages are handled in order: the credentials come before anything that needs them.
    if (this.options.sendTokenAs === 'message' && this.credentials.token) this.send({ type: 'auth', token: this.credentials.token });
    this.hooks.opened();
  }

  private onSocketClose(code: number, reason: string): void {
    this.teardown();
    this.socketGone(code, reason);
  }

  /** Detaches the current socket (closing it with `code` if given). */
  private teardown(code?: number, reason?: string): void {
    this.clearConnectTimer();
    this.heartbeat.stop();
    this.hooks.detached();
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
    this.hooks.socketGone();
    this.afterDisconnect(code, reason, welcomed);
  }

  private afterDisconnect(code: number, reason: string, welcomed: boolean): void {
    if (this.currentState === 'closed') return;
    this.failedAttempts = welcomed ? 0 : this.failedAttempts + 1;
    if (this.fallback && !this.everWelcomed && this.failedAttempts >= 2 && this.WS !== this.fallback) {
      // WebSocket does not get through from here: Server-Sent Events from now on.
      this.WS = this.fallback;
    }
    if (TERMINAL_CLOSE_CODES.has(code)) {
      const error = new HubcastError(terminalErrorCode(code), `connection closed with ${code}${reason ? `: ${reason}` : ''}; not retrying`, {
        closeCode: code,
      });
      this.hooks.stopped(error, error);
      this.emitter.emit('error', error);
      this.setState('closed', { code, reason, error });
      return;
    }
    if (!this.backoff) {
      this.hooks.stopped(undefined, new HubcastError('closed', 'connection closed and reconnect is disabled', { closeCode: code }));
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
}
