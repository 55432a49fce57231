/**
 * Socket publishes from the call to their `ack` or `error`: local checks,
 * the id that is also the server's idempotency key, the queue kept while
 * offline and resent (same id) on every new socket, pacing under the server's
 * per-session message limit, retries after "nothing was appended" errors, and
 * timeouts (docs/clients.md, "Publish").
 */
import { HubcastError } from './errors.js';
import { type BackoffConfig, backoffDelay, isValidRoomName } from './policy.js';
import type { HubcastClientOptions, PublishAck, PublishOptions } from './types.js';
import { isInteger } from './wire.js';

/** The longest publish id (it is also the server's idempotency key). */
const MAX_ID_BYTES = 128;
/** Publish errors that mean "nothing was appended, try again (same id) after a backoff". */
const RETRYABLE_PUBLISH_ERRORS = new Set(['store_unavailable', 'auth_unavailable', 'shutting_down', 'over_capacity', 'rate_limited', 'token_expired']);

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
  add(room: string, data: unknown, options: PublishOptions, clientClosed: boolean): { promise: Promise<PublishAck>; queued: boolean } {
    const refuse = (err: HubcastError) => ({ promise: Promise.reject(err), queued: false });
    if (!isValidRoomName(room)) {
      return refuse(new HubcastError('invalid_room', `invalid room name ${JSON.stringify(room)}`, { room }));
    }
    const id = options.id ?? newId();
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > MAX_ID_BYTES) {
      return refuse(new HubcastError('bad_request', `publish id must be 1 to ${MAX_ID_BYTES} bytes`, { room }));
    }
    const existing = this.pending.get(id);
    if (existing) return { promise: existing.promise, queued: false };
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
        this.settle(
          entry,
          new HubcastError('timeout', `publish ${id} was not acknowledged within ${timeoutMs} ms; it may still be appended: retry with the same id to find out`, { room, id }),
        );
      }, timeoutMs);
    }
    return { promise, queued: true };
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
    for (const entry of this.pending.values()) if (entry.room === room && entry.sentOn === generation) return true;
    return false;
  }

  /** An `ack` frame. Returns `false` when it is malformed (the caller reports it). */
  onAck(frame: Record<string, unknown>): boolean {
    if (typeof frame.id !== 'string') return true;
    const entry = this.pending.get(frame.id);
    if (!entry) return true; // already settled (timeout), or a duplicate ack
    if (!isInteger(frame.seq)) return false;
    this.settle(entry, { id: entry.id, room: typeof frame.room === 'string' ? frame.room : entry.room, seq: frame.seq });
    return true;
  }

  /**
   * An `error` frame with an `id`: returns whether it answered a pending
   * publish. Errors after which nothing was appended are retried (same id)
   * after a backoff; any other fails the publish.
   */
  onError(id: string, code: string, message: string, head: unknown): boolean {
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
    const details: { room: string; id: string; head?: number } = { room: entry.room, id: entry.id };
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

  private settle(entry: PendingPublish, outcome: PublishAck | HubcastError): void {
    if (this.pending.get(entry.id) !== entry) return;
    this.pending.delete(entry.id);
    if (entry.retryTimer !== null) clearTimeout(entry.retryTimer);
    if (entry.timeoutTimer !== null) clearTimeout(entry.timeoutTimer);
    if (outcome instanceof HubcastError) entry.reject(outcome);
    else entry.resolve(outcome);
    this.link.settled(entry.room, outcome instanceof HubcastError ? null : outcome.seq);
  }
}
