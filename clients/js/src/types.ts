import type { HubcastError } from './errors.js';

/** Where a room's stream is: the last event the client processed. */
export interface Cursor {
  /** The room's epoch (`null` until the server told it, when a cursor was given without one). */
  epoch: string | null;
  /** The seq of the last event delivered (or the head the subscription started live from). */
  seq: number;
}

/** One event, delivered at most once and in seq order. */
export interface HubcastEvent<T = unknown> {
  room: string;
  seq: number;
  /** Milliseconds since the Unix epoch, set by the store. */
  ts: number;
  data: T;
  /** The epoch of the room's log this event belongs to. */
  epoch: string | null;
}

/**
 * The room's cursor could not be served (pruned by retention, another epoch,
 * or ahead of the head). The application must reload its state; the stream
 * continues with the event after `head`.
 */
export interface ResetInfo {
  room: string;
  epoch: string;
  /** The oldest seq still retained (`head + 1` when everything was pruned); `null` when the server did not say. */
  earliest: number | null;
  /** The room's head when the subscription restarted: delivery continues from `head + 1`. */
  head: number;
  /** The cursor that could not be served. */
  previous: Cursor | null;
}

/**
 * A live-only message (typing indicators, cursors): delivered to the room's
 * current subscribers, never stored, no seq, never replayed; it moves no cursor.
 */
export interface EphemeralMessage<T = unknown> {
  room: string;
  /** Milliseconds since the Unix epoch, by the accepting node's clock. */
  ts: number;
  data: T;
}

/** Items of {@link Room.updates}: events and resets in the order they happened. */
export type RoomUpdate<T = unknown> = { type: 'event'; event: HubcastEvent<T> } | { type: 'reset'; reset: ResetInfo };

/** A member of a room's presence: keyed by the token's `sub` (or a session id); `info` is the token's `info` claim. */
export interface PresenceMember {
  id: string;
  info?: unknown;
}

/** A presence subscription's full member list (after every (re)subscribe), sorted by `id`. */
export interface PresenceList {
  room: string;
  members: PresenceMember[];
}

/** A member joined or left; `members` is the room's list after the change. */
export interface PresenceChange {
  room: string;
  member: PresenceMember;
  members: PresenceMember[];
}

export interface RoomEvents<T = unknown> {
  event: HubcastEvent<T>;
  /** An ephemeral message (outside the event order; no seq, no cursor move). */
  ephemeral: EphemeralMessage;
  reset: ResetInfo;
  /** (`presence: true` rooms) the full member list, after every (re)subscribe. */
  presence: PresenceList;
  /** (`presence: true` rooms) a member entered the room's presence. */
  join: PresenceChange;
  /** (`presence: true` rooms) a member left the room's presence. */
  leave: PresenceChange;
  /** The server accepted the subscription (on every (re)subscribe). */
  subscribed: { room: string; epoch: string; head: number };
  /** Replay is done: everything through `seq` was sent; what follows is live. */
  caught_up: { room: string; seq: number };
  error: HubcastError;
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** The close code that caused this change (`reconnecting`, `closed`). */
  code?: number;
  reason?: string;
  /** For `reconnecting`: how long until the next attempt. */
  delayMs?: number;
  /** For `reconnecting`: consecutive attempts since the last `welcome` that failed. */
  attempt?: number;
  /** For `closed` after a terminal close code (4001, 4003, 1008, 1009). */
  error?: HubcastError;
}

export interface ClientEvents {
  state: StateChange;
  connecting: StateChange;
  open: StateChange;
  reconnecting: StateChange;
  closed: StateChange;
  /** `welcome` from the server: the session id and its ping interval. */
  welcome: { session: string; heartbeatMs: number };
  /** The server accepted a token sent in an `auth` message (a refresh). */
  authenticated: { sub?: string; exp?: number };
  error: HubcastError;
}

export interface PublishOptions {
  /** Append only if the room's head is this seq (optimistic concurrency); else the publish fails with `conflict` and `head`. */
  expectedSeq?: number;
  /** The idempotency key (1–128 bytes). Generated when omitted. Reuse it to retry a publish safely. */
  id?: string;
  /** Overrides the client's `publishTimeoutMs` for this publish. */
  timeoutMs?: number;
}

/** One event of an atomic batch ({@link HubcastClient.publishBatch}). */
export interface BatchEvent {
  room: string;
  data: unknown;
  /** Append the batch only if this room's head is this seq when the event is appended (the batch's earlier events count). */
  expectedSeq?: number;
}

export interface BatchPublishOptions {
  /** The batch's idempotency key (1–128 bytes). Generated when omitted. */
  id?: string;
  /** Overrides the client's `publishTimeoutMs` for this batch. */
  timeoutMs?: number;
}

export interface PublishAck {
  id: string;
  room: string;
  seq: number;
}

/** The answer to {@link HubcastClient.publishEphemeral}: handed to the room's subscribers, not stored. */
export interface EphemeralAck {
  id: string;
  room: string;
  ephemeral: true;
}

export interface RoomOptions {
  /** Resume after this cursor (e.g. one the app persisted): the events after `seq`, or a `reset`. */
  cursor?: { epoch?: string | null; seq: number };
  /** Without a cursor: start with the last N retained events, then live. */
  rewind?: number;
  /**
   * Also enter the room's presence (needs the token's `presence` grant) and
   * receive its member list (`presence`), then `join` / `leave` events.
   */
  presence?: boolean;
}

/**
 * The subset of the WebSocket API the client uses (browser `WebSocket`, Node ≥ 22
 * `WebSocket`, npm `ws`). The handlers take `any` so that every implementation's
 * own event types fit; the client reads only `data` of a message event and
 * `code`/`reason` of a close event.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The subset of `fetch` the client uses for the history route. */
export type FetchLike = (
  url: string,
  init?: { method?: string; signal?: AbortSignal; headers?: Record<string, string> },
) => Promise<{ ok: boolean; status: number; json(): Promise<unknown> }>;

export interface ReconnectOptions {
  /** Backoff window of the first retry, in ms (default 250). The window doubles per failed attempt. */
  minDelayMs?: number;
  /** Largest backoff window, in ms (default 30 000). The delay is uniform in [0, window] (full jitter). */
  maxDelayMs?: number;
  /** Least delay after close 1013 (over capacity) or 4008 (rate limited), in ms (default 5 000). */
  tryAgainLaterMs?: number;
}

export interface HeartbeatOptions {
  /** Send `{"type":"ping"}` after this long without any frame from the server (default 10 000 ms). */
  intervalMs?: number;
  /** Declare the connection dead if nothing arrives this long after the ping (default 5 000 ms). */
  timeoutMs?: number;
}

export interface HubcastClientOptions {
  /** The server's base URL: `http(s)://host:port` or `ws(s)://host:port` (a path prefix is kept). */
  url: string;
  /**
   * WebSocket implementation; defaults to `globalThis.WebSocket`. Node 20 has none: pass `ws`
   * (`import WebSocket from 'ws'`). With neither, the `HubcastClient` constructor throws a `TypeError`.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * `websocket` (default); `sse`: Server-Sent Events for receiving and HTTP
   * for publishing (for networks where WebSocket does not pass; no presence);
   * `auto`: WebSocket, falling back to SSE for good when the first two
   * WebSocket attempts fail without ever opening.
   */
  transport?: 'websocket' | 'sse' | 'auto';
  /** EventSource implementation for the SSE transport; defaults to `globalThis.EventSource`. */
  EventSource?: import('./sse.js').EventSourceConstructor;
  /** fetch implementation for the history route; defaults to `globalThis.fetch`. */
  fetch?: FetchLike;
  /**
   * Called before every connection attempt, and again when the server says
   * the session's token expired (`token_expired`: the fresh one is sent in an
   * `auth` message) or the history route answers 401. The result is sent as
   * `?token=` (or see `sendTokenAs`) and as `Authorization: Bearer` on history
   * requests. Return `null` to connect without credentials.
   */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /**
   * How the connection presents the token: `query` (default) as `?token=` on
   * the WebSocket URL; `message` as an `auth` message right after the socket
   * opens. With `message` a refused token is a close 4001 the client can see
   * (a browser cannot read the 401 of a refused upgrade, which looks like a
   * network failure), and the token stays out of URLs and access logs.
   */
  sendTokenAs?: 'query' | 'message';
  /** Reconnect policy, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Application-level heartbeat, or `false` to disable it. */
  heartbeat?: HeartbeatOptions | false;
  /** A connection attempt that has not opened after this long is abandoned and retried (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** Poll the history route this often for every room, delivering anything the socket missed (default: off). */
  reconcileMs?: number;
  /** Events per history request (default 1000, the server's default `max_page`). */
  historyPageSize?: number;
  /** Abort a history request after this long (default 10 000 ms). */
  historyTimeoutMs?: number;
  /** Most publishes waiting for an ack (default 1000); more are refused with `queue_full`. */
  maxQueuedPublishes?: number;
  /** Publishes whose `data` is larger than this (UTF-8 JSON bytes) are refused locally with `too_large` (default 1 MiB). */
  maxEventBytes?: number;
  /**
   * Socket publishes sent per second at most, in bursts of as many (default 100; 0: no limit).
   * The server closes a session that sends more than `rate_limits.messages_per_session_per_second`
   * (default 200, bursts of 400) with 4008; this keeps a queue flushed after a reconnect under it.
   */
  maxPublishesPerSecond?: number;
  /** Fail a publish with `timeout` if it is not acknowledged in time (default 0: wait as long as the client lives). */
  publishTimeoutMs?: number;
  /** Connect on the first `room()` or `publish()` (default true). */
  autoConnect?: boolean;
  /** Random source in [0, 1) for the jitter (tests). */
  random?: () => number;
}
