/**
 * Socket publishes from the call to their `ack` or `error`: local checks,
 * the id that is also the server's idempotency key, the queue kept while
 * offline and resent (same id) on every new socket, pacing under the server's
 * per-session message limit, retries after "nothing was appended" errors, and
 * timeouts (docs/clients.md, "Publish").
 */
import { HubcastError } from './errors.js';
import { type BackoffConfig, backoffDelay, isValidRoomName } from './policy.js';
import type { BatchEvent, BatchPublishOptions, EphemeralAck, HubcastClientOptions, PublishAck, PublishOptions } from './types.js';
import { isInteger } from './wire.js';

/** The longest publish id (it is also the server's idempotency key). */
const MAX_ID_BYTES = 128;
/** Publish errors that mean "nothing was appended, try again (same id) after a backoff". */
const RETRYABLE_PUBLISH_ERRORS = new Set(['store_unavailable', 'auth_unavailable', 'shutting_down', 'over_capacity', 'rate_limited', 'token_expired']);

/** What a publish resolves with: an event's seq, or an ephemeral message's receipt. */
export type Acknowledged = PublishAck | EphemeralAck;

interface PendingPublish {
  id: string;
  /** The room (a batch's first room), named in its errors. */
  room: string;
  /** Every room it appends to (one, or a batch's rooms). */
  rooms: string[];
  /** An atomic batch (`publish_batch`): settled with every receipt. */
  batch: boolean;
  frame: string;
  /** Answered by an `ack` without a seq (`ephemeral: true`). */
  ephemeral: boolean;
  resolve: (acks: Acknowledged[]) => void;
  reject: (err: HubcastError) => void;
  /** What the caller got (the ack, or a batch's acks): the same promise for a repeated id. */
  promise: Promise<Acknowledged> | Promise<PublishAck[]>;
  /** The socket generation it was last sent on (0: not sent on the current socket). */
  sentOn: number;
  attempts: number;
  retryTimer: ReturnType<typeof setTimeout> | null;
  timeoutTimer: ReturnType<typeof setTimeout> | null;
}

/** What the tracker needs from the connection and the rooms. */
export interface PublishLink {
  isOpen(): boolean;
  /** The current socket's generation (incremented for every connection attempt). */
  generation(): number;
  /** Sends a frame if the socket is open; returns whether it was sent. */
  send(frame: string): boolean;
  /** A publish to `room` was answered (`seq`: its ack's, `null`: it failed). */
  settled(room: string, seq: number | null): void;
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

export class PublishTracker {
  private readonly pending = new Map<string, PendingPublish>();
  /** Token bucket pacing socket publishes (`maxPublishesPerSecond`). */
  private budget = 0;
  private budgetAt = -1;
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    /** Read on every use, like every option. */
    private readonly options: HubcastClientOptions,
    /** `null`: reconnect is off, and so are publish retries. */
    private readonly backoff: BackoffConfig | null,
    private readonly random: () => number,
    private readonly link: PublishLink,
  ) {}

  /** Number of publishes waiting for an answer. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Checks a publish and queues it. `queued` is false when nothing new was
   * queued (refused locally, or the id is already pending: its promise).
   * The caller then connects or {@link pump}s.
   */
  add(
    room: string,
    data: unknown,
    options: PublishOptions,
    clientClosed: boolean,
    ephemeral = false,
  ): { promise: Promise<Acknowledged>; queued: boolean } {
    const refuse = (err: HubcastError) => ({ promise: Promise.reject(err) as Promise<Acknowledged>, queued: false });
    if (!isValidRoomName(room)) {
      return refuse(new HubcastError('invalid_room', `invalid room name ${JSON.stringify(room)}`, { room }));
    }
    const id = options.id ?? newId();
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > MAX_ID_BYTES) {
      return refuse(new HubcastError('bad_request', `publish id must be 1 to ${MAX_ID_BYTES} bytes`, { room }));
    }
    const existing = this.pending.get(id);
    if (existing) return { promise: existing.promise as Promise<Acknowledged>, queued: false };
    if (clientClosed) {
      return refuse(new HubcastError('closed', 'the client is closed', { room, id }));
    }
    if (options.expectedSeq !== undefined && !isInteger(options.expectedSeq)) {
      return refuse(new HubcastError('bad_request', 'expectedSeq must be a non-negative integer', { room, id }));
    }
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (err) {
      return refuse(new HubcastError('bad_request', `data is not JSON-serializable: ${String(err)}`, { room, id }));
    }
    if (json === undefined) {
      return refuse(new HubcastError('bad_request', 'data is not JSON-serializable', { room, id }));
    }
    const maxBytes = this.options.maxEventBytes ?? 1024 * 1024;
    if (utf8Length(json) > maxBytes) {
      return refuse(new HubcastError('too_large', `data is larger than ${maxBytes} bytes`, { room, id }));
    }
    if (this.pending.size >= (this.options.maxQueuedPublishes ?? 1000)) {
      return refuse(new HubcastError('queue_full', 'too many publishes waiting for an ack', { room, id }));
    }
    let frame = `{"type":"publish","id":${JSON.stringify(id)},"room":${JSON.stringify(room)},"data":${json}`;
    if (options.expectedSeq !== undefined) frame += `,"expected_seq":${options.expectedSeq}`;
    if (ephemeral) frame += ',"ephemeral":true';
    frame += '}';
    return { promise: this.queue(id, [room], false, ephemeral, frame, options.timeoutMs) as Promise<Acknowledged>, queued: true };
  }

  /**
   * Checks an atomic batch and queues it as one `publish_batch` message (one
   * id, which is the batch's idempotency key). As {@link add}.
   */
  addBatch(events: BatchEvent[], options: BatchPublishOptions, clientClosed: boolean): { promise: Promise<PublishAck[]>; queued: boolean } {
    const first = events[0]?.room;
    const refuse = (err: HubcastError) => ({ promise: Promise.reject(err), queued: false });
    if (!Array.isArray(events) || events.length === 0) {
      return refuse(new HubcastError('bad_request', 'a batch holds at least one event', {}));
    }
    for (const event of events) {
      if (!isValidRoomName(event.room)) {
        return refuse(new HubcastError('invalid_room', `invalid room name ${JSON.stringify(event.room)}`, { room: event.room }));
      }
    }
    const id = options.id ?? newId();
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > MAX_ID_BYTES) {
      return refuse(new HubcastError('bad_request', `publish id must be 1 to ${MAX_ID_BYTES} bytes`, { room: first }));
    }
    const existing = this.pending.get(id);
    if (existing) return { promise: existing.promise as Promise<PublishAck[]>, queued: false };
    if (clientClosed) return refuse(new HubcastError('closed', 'the client is closed', { room: first, id }));
    const maxBytes = this.options.maxEventBytes ?? 1024 * 1024;
    const items: string[] = [];
    for (const [index, event] of events.entries()) {
      if (event.expectedSeq !== undefined && !isInteger(event.expectedSeq)) {
        return refuse(new HubcastError('bad_request', `events[${index}].expectedSeq must be a non-negative integer`, { room: event.room, id }));
      }
      let json: string | undefined;
      try {
        json = JSON.stringify(event.data);
      } catch (err) {
        return refuse(new HubcastError('bad_request', `events[${index}].data is not JSON-serializable: ${String(err)}`, { room: event.room, id }));
      }
      if (json === undefined) {
        return refuse(new HubcastError('bad_request', `events[${index}].data is not JSON-serializable`, { room: event.room, id }));
      }
      if (utf8Length(json) > maxBytes) {
        return refuse(new HubcastError('too_large', `events[${index}].data is larger than ${maxBytes} bytes`, { room: event.room, id }));
      }
      let item = `{"room":${JSON.stringify(event.room)},"data":${json}`;
      if (event.expectedSeq !== undefined) item += `,"expected_seq":${event.expectedSeq}`;
      items.push(`${item}}`);
    }
    if (this.pending.size >= (this.options.maxQueuedPublishes ?? 1000)) {
      return refuse(new HubcastError('queue_full', 'too many publishes waiting for an ack', { room: first, id }));
    }
    const frame = `{"type":"publish_batch","id":${JSON.stringify(id)},"events":[${items.join(',')}]}`;
    const rooms = [...new Set(events.map((e) => e.room))];
    return { promise: this.queue(id, rooms, true, false, frame, options.timeoutMs) as Promise<PublishAck[]>, queued: true };
  }

  /** Queues a checked publish or batch: its promise settles with its ack (a batch: every ack). */
  private queue(
    id: string,
    rooms: string[],
    batch: boolean,
    ephemeral: boolean,
    frame: string,
    timeoutOption: number | undefined,
  ): Promise<Acknowledged> | Promise<PublishAck[]> {
    let resolve!: (acks: Acknowledged[]) => void;
    let reject!: (err: HubcastError) => void;
    const settled = new Promise<Acknowledged[]>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const promise = batch ? (settled as Promise<PublishAck[]>) : settled.then((acks) => acks[0]!);
    const room = rooms[0]!;
    const entry: PendingPublish = {
      id,
      room,
      rooms,
      batch,
      frame,
      ephemeral,
      resolve,
      reject,
      promise,
      sentOn: 0,
      attempts: 0,
      retryTimer: null,
      timeoutTimer: null,
    };
    this.pending.set(id, entry);
    const timeoutMs = timeoutOption ?? this.options.publishTimeoutMs ?? 0;
    if (timeoutMs > 0) {
      entry.timeoutTimer = setTimeout(() => {
        this.settle(
          entry,
          new HubcastError('timeout', `publish ${id} was not acknowledged within ${timeoutMs} ms; it may still be appended: retry with the same id to find out`, { room, id }),
        );
      }, timeoutMs);
    }
    return promise;
  }

  /**
   * Sends the pending publishes not yet sent on this socket, in call order,
   * at most `maxPublishesPerSecond` (bursts of as many): a queue flushed after
   * a reconnect must not get the session closed for sending too fast (4008).
   */
  pump(): void {
    if (!this.link.isOpen() || this.pumpTimer !== null) return;
    const rate = this.options.maxPublishesPerSecond ?? 100;
    for (const entry of this.pending.values()) {
      if (entry.retryTimer !== null || entry.sentOn === this.link.generation()) continue;
      if (rate > 0 && !this.takeToken(rate)) {
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = null;
          this.pump();
        }, Math.ceil(1000 / rate));
        return;
      }
      if (!this.link.send(entry.frame)) return;
      entry.sentOn = this.link.generation();
    }
  }

  /** The socket was detached: the paced sending stops (the next socket starts it again). */
  stopPump(): void {
    if (this.pumpTimer !== null) {
      clearTimeout(this.pumpTimer);
      this.pumpTimer = null;
    }
  }

  /** The socket is gone: everything pending is resent on the next one. */
  socketClosed(): void {
    for (const entry of this.pending.values()) entry.sentOn = 0;
  }

  /** Whether a publish to `room` was sent on this socket and is not answered yet. */
  inFlight(room: string): boolean {
    const generation = this.link.generation();
    for (const entry of this.pending.values()) if (entry.sentOn === generation && entry.rooms.includes(room)) return true;
    return false;
  }

  /** An `ack` frame. Returns `false` when it is malformed (the caller reports it). */
  onAck(frame: Record<string, unknown>): boolean {
    if (typeof frame.id !== 'string') return true;
    const entry = this.pending.get(frame.id);
    if (!entry) return true; // already settled (timeout), or a duplicate ack
    const room = typeof frame.room === 'string' ? frame.room : entry.room;
    if (entry.ephemeral) {
      if (frame.ephemeral !== true) return false;
      this.settle(entry, [{ id: entry.id, room, ephemeral: true }]);
      return true;
    }
    if (!isInteger(frame.seq)) return false;
    this.settle(entry, [{ id: entry.id, room, seq: frame.seq }]);
    return true;
  }

  /** A `batch_ack` frame: one receipt per event. Returns `false` when it is malformed. */
  onBatchAck(frame: Record<string, unknown>): boolean {
    if (typeof frame.id !== 'string') return true;
    const entry = this.pending.get(frame.id);
    if (!entry) return true; // already settled (timeout), or a duplicate ack
    if (!Array.isArray(frame.events)) return false;
    const acks: PublishAck[] = [];
    for (const receipt of frame.events as Array<Record<string, unknown>>) {
      if (typeof receipt?.room !== 'string' || !isInteger(receipt.seq)) return false;
      acks.push({ id: entry.id, room: receipt.room, seq: receipt.seq });
    }
    this.settle(entry, acks);
    return true;
  }

  /**
   * An `error` frame with an `id`: returns whether it answered a pending
   * publish. Errors after which nothing was appended are retried (same id)
   * after a backoff; any other fails the publish.
   */
  onError(id: string, code: string, message: string, head: unknown, room?: string): boolean {
    const entry = this.pending.get(id);
    if (!entry) return false;
    if (RETRYABLE_PUBLISH_ERRORS.has(code) && this.backoff) {
      // Nothing was appended: send again (same id) after a backoff.
      entry.sentOn = 0;
      const delay = backoffDelay(entry.attempts++, this.backoff, this.random);
      entry.retryTimer = setTimeout(() => {
        entry.retryTimer = null;
        this.pump();
      }, delay);
      return true;
    }
    const details: { room: string; id: string; head?: number } = { room: room ?? entry.room, id: entry.id };
    if (isInteger(head)) details.head = head;
    this.settle(entry, new HubcastError(code, message, details));
    return true;
  }

  /** Fails every pending publish with a copy of `error` (its close code kept). */
  rejectAll(error: HubcastError): void {
    for (const entry of [...this.pending.values()]) {
      const details: { room: string; id: string; closeCode?: number } = { room: entry.room, id: entry.id };
      if (error.closeCode !== undefined) details.closeCode = error.closeCode;
      this.settle(entry, new HubcastError(error.code, error.message, details));
    }
  }

  private takeToken(rate: number): boolean {
    const now = Date.now();
    this.budget = this.budgetAt < 0 ? rate : Math.min(rate, this.budget + ((now - this.budgetAt) * rate) / 1000);
    this.budgetAt = now;
    if (this.budget < 1) return false;
    this.budget -= 1;
    return true;
  }

  private settle(entry: PendingPublish, outcome: Acknowledged[] | HubcastError): void {
    if (this.pending.get(entry.id) !== entry) return;
    this.pending.delete(entry.id);
    if (entry.retryTimer !== null) clearTimeout(entry.retryTimer);
    if (entry.timeoutTimer !== null) clearTimeout(entry.timeoutTimer);
    if (outcome instanceof HubcastError) entry.reject(outcome);
    else entry.resolve(outcome);
    // Each room learns the seqs of its own events (no-echo rooms count them delivered).
    for (const room of entry.rooms) {
      const own = outcome instanceof HubcastError ? [] : outcome.filter((a) => a.room === room);
      let seqs = 0;
      for (const ack of own) {
        if ('seq' in ack) {
          this.link.settled(room, ack.seq);
          seqs += 1;
        }
      }
      if (seqs === 0) this.link.settled(room, null);
    }
  }
}
