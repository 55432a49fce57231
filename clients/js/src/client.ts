/**
 * `HubcastClient`, the SDK's entry point: its public API, and the wiring of
 * the parts that do the work, one concept per file, so each rule of
 * docs/clients.md lives in one place: the socket and its reconnects
 * (connection.ts, heartbeat.ts, policy.ts), frame routing (inbound.ts),
 * rooms (rooms.ts, room.ts), publishes (publishes.ts), presence requests
 * (presence-requests.ts), history reads (history.ts) and the token
 * (credentials.ts).
 */
import { Connection } from './connection.js';
import { Credentials } from './credentials.js';
import { Emitter, type Listener } from './emitter.js';
import { HubcastError } from './errors.js';
import { heartbeatConfig } from './heartbeat.js';
import { HistoryReader } from './history.js';
import { type Recipients, routeFrame } from './inbound.js';
import { type BackoffConfig, backoffDelay, isValidRoomName } from './policy.js';
import { PresenceRequests } from './presence-requests.js';
import { type Acknowledged, PublishTracker } from './publishes.js';
import { Room, type RoomHost } from './room.js';
import { RoomRegistry } from './rooms.js';
import { type EventSourceConstructor, type PublishFetch, sseTransport } from './sse.js';
import type {
  ClientEvents,
  ConnectionState,
  EphemeralAck,
  HubcastClientOptions,
  PresenceMember,
  PublishAck,
  BatchEvent,
  BatchPublishOptions,
  PublishOptions,
  RoomOptions,
  WebSocketConstructor,
} from './types.js';
import { deriveUrls } from './urls.js';

/**
 * A hubcast client: one WebSocket, any number of room subscriptions, and
 * acknowledged publishes. See README.md and docs/clients.md.
 */
export class HubcastClient {
  private readonly options: HubcastClientOptions;
  private readonly emitter: Emitter<ClientEvents>;
  private readonly backoff: BackoffConfig | null;
  private readonly random: () => number;
  private readonly credentials: Credentials;
  private readonly connection: Connection;
  private readonly rooms: RoomRegistry;
  private readonly publishes: PublishTracker;
  private readonly presenceRequests: PresenceRequests;
  private readonly history: HistoryReader;
  /** Where the router hands each frame. */
  private readonly recipients: Recipients;
  private readonly host: RoomHost;

  /**
   * @throws TypeError when `options.url` is missing or not http(s)/ws(s), or when there is no
   * WebSocket implementation (no global `WebSocket`, as on Node 20, and no `WebSocket` option).
   */
  constructor(options: HubcastClientOptions) {
    if (!options || typeof options.url !== 'string') throw new TypeError('options.url is required');
    this.options = options;
    const urls = deriveUrls(options.url);
    const transport = options.transport ?? 'websocket';
    const ES = options.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    const publishFetch = (options.fetch ?? (globalThis as { fetch?: unknown }).fetch) as PublishFetch | undefined;
    const sse = ES && publishFetch ? sseTransport(ES, publishFetch) : undefined;
    if (transport !== 'websocket' && !sse) {
      throw new TypeError(`transport '${transport}' needs an EventSource (the \`EventSource\` option or a global one) and fetch`);
    }
    let WS = transport === 'sse' ? sse : options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS && transport === 'auto') WS = sse;
    if (!WS) {
      // Fail here, not later as a `closed` state whose cause shows only on an `error` event.
      throw new TypeError(
        'no WebSocket implementation: this runtime has no global WebSocket (Node 20 has none), so pass one ' +
          "in the `WebSocket` option, e.g. `import WebSocket from 'ws'` and `new HubcastClient({ url, WebSocket })`",
      );
    }
    this.random = options.random ?? Math.random;
    this.backoff =
      options.reconnect === false
        ? null
        : {
            minDelayMs: options.reconnect?.minDelayMs ?? 250,
            maxDelayMs: options.reconnect?.maxDelayMs ?? 30_000,
            tryAgainLaterMs: options.reconnect?.tryAgainLaterMs ?? 5_000,
          };
    this.emitter = new Emitter<ClientEvents>((err, event) => {
      if (event !== 'error') this.reportListenerError(err);
    });

    // The parts reach the socket through closures: they are built before the connection.
    const isOpen = () => this.connection.state === 'open';
    const send = (frame: object | string) => this.connection.send(frame);
    this.credentials = new Credentials(options, send, (err) => this.emitter.emit('error', err));
    this.history = new HistoryReader(urls.http, options, this.credentials);
    this.rooms = new RoomRegistry(options, { isOpen, send });
    this.presenceRequests = new PresenceRequests({ isOpen, send });
    this.publishes = new PublishTracker(options, this.backoff, this.random, {
      isOpen,
      generation: () => this.connection.generation,
      send,
      settled: (room, seq) => this.rooms.get(room)?.onPublishSettled(seq),
    });
    const config = {
      WebSocket: WS,
      fallback: transport === 'auto' && WS !== sse ? sse : undefined,
      url: urls.ws,
      options,
      backoff: this.backoff,
      heartbeat: heartbeatConfig(options.heartbeat),
      random: this.random,
    };
    this.connection = new Connection(config, this.credentials, this.emitter, {
      opening: () => this.rooms.clearDraining(),
      opened: () => {
        this.rooms.subscribeAll();
        this.presenceRequests.send();
        this.publishes.pump();
      },
      frame: (raw) => routeFrame(raw, this.recipients),
      detached: () => this.publishes.stopPump(),
      socketGone: () => {
        this.rooms.clearDraining();
        this.rooms.socketClosed();
        this.publishes.socketClosed();
        this.presenceRequests.socketClosed();
      },
      stopped: (roomError, error) => {
        this.rooms.clearDraining();
        this.rooms.stopReconcile();
        this.rooms.clientClosed(roomError);
        this.publishes.rejectAll(error);
        this.presenceRequests.reject(error);
      },
    });

    this.recipients = {
      emitter: this.emitter,
      connection: this.connection,
      credentials: this.credentials,
      rooms: this.rooms,
      publishes: this.publishes,
      presence: this.presenceRequests,
    };
    const client = this;
    this.host = {
      send,
      isOpen,
      isDraining: (room) => this.rooms.isDraining(room),
      fetchHistory: (room, after, limit) => this.history.read(room, after, limit),
      get historyPageSize() {
        return client.options.historyPageSize ?? 1000;
      },
      retryDelay: (attempt) =>
        backoffDelay(attempt, this.backoff ?? { minDelayMs: 250, maxDelayMs: 30_000, tryAgainLaterMs: 0 }, this.random),
      reportError: (err) => this.emitter.emit('error', err),
      removeRoom: (room, onServer) => this.rooms.remove(room, onServer),
      publishesInFlight: (room) => this.publishes.inFlight(room),
      publish: (room, data, opts) => this.publish(room, data, opts),
      requestPresence: (room) => this.presence(room),
    };
  }

  /** The connection state: `idle` → `connecting` → `open` ⇄ `reconnecting` … → `closed`. */
  get state(): ConnectionState {
    return this.connection.state;
  }

  /** The server's id of the current session, once `welcome` arrived. */
  get session(): string | null {
    return this.connection.session;
  }

  /** Number of publishes waiting for an ack. */
  get pendingPublishes(): number {
    return this.publishes.size;
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
    this.rooms.add(room as Room<unknown>);
    if (this.state === 'idle' && this.options.autoConnect !== false) this.connect();
    else if (this.state === 'open') room.subscribeNow();
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
      this.presenceRequests.add(room, { resolve, reject });
      if (this.state === 'idle' && this.options.autoConnect !== false) this.connect();
      else this.presenceRequests.send();
    });
  }

  /** Connects (or reconnects now, skipping a pending backoff). Also restarts a client that was closed. */
  connect(): void {
    if (this.connection.active) return;
    this.rooms.startReconcile();
    this.connection.open();
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
    return this.send(room, data, options, false) as Promise<PublishAck>;
  }

  /**
   * Publishes an ephemeral message (a typing indicator, a cursor) to `room`:
   * delivered to its current subscribers (their rooms' `ephemeral` listeners),
   * never stored, no seq. The room's namespace must allow it (else
   * `ephemeral_not_allowed`). Resolves once the server handed it on.
   */
  publishEphemeral(room: string, data: unknown, options: Pick<PublishOptions, 'id' | 'timeoutMs'> = {}): Promise<EphemeralAck> {
    return this.send(room, data, options, true) as Promise<EphemeralAck>;
  }

  private send(room: string, data: unknown, options: PublishOptions, ephemeral: boolean): Promise<Acknowledged> {
    const { promise, queued } = this.publishes.add(room, data, options, this.state === 'closed', ephemeral);
    if (queued) {
      if (this.state === 'idle' && this.options.autoConnect !== false) this.connect();
      else this.publishes.pump();
    }
    return promise;
  }

  /**
   * Publishes several events, to one or more rooms, atomically: one
   * `publish_batch` message, appended all in one transaction or not at all.
   * Resolves with one ack per event, in order. Queued and resent with the
   * same `id` (the batch's idempotency key) like {@link publish}. Rejects with
   * `conflict` (with the `room` and its `head`) when an event's `expectedSeq`
   * was not its room's head: then nothing was appended.
   */
  publishBatch(events: BatchEvent[], options: BatchPublishOptions = {}): Promise<PublishAck[]> {
    const { promise, queued } = this.publishes.addBatch(events, options, this.state === 'closed');
    if (queued) {
      if (this.state === 'idle' && this.options.autoConnect !== false) this.connect();
      else this.publishes.pump();
    }
    return promise;
  }

  /**
   * Gets a fresh token from `getToken` and hands it to the open session in
   * an `auth` message (the client does this by itself on `token_expired`).
   * Resolves with the new token, or `null` if there is none.
   */
  refreshToken(): Promise<string | null> {
    return this.credentials.refresh();
  }

  /** Closes the socket for good: pending publishes fail with `closed`, iterators end. `connect()` starts again. */
  close(): void {
    this.connection.close();
  }

  private reportListenerError(err: unknown): void {
    this.emitter.emit(
      'error',
      new HubcastError('listener_error', `a listener threw: ${String(err)}`, { cause: err }),
    );
  }
}
