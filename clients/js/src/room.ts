import { Channel } from './channel.js';
import { Emitter, type Listener } from './emitter.js';
import { HubcastError } from './errors.js';
import type {
  Cursor,
  HubcastEvent,
  PresenceMember,
  PublishAck,
  PublishOptions,
  ResetInfo,
  RoomEvents,
  RoomOptions,
  RoomUpdate,
} from './types.js';

/** An event as it arrives, from the socket or from the history route. */
export interface WireEvent {
  seq: number;
  ts: number;
  data: unknown;
}

/** One page of `GET /v1/rooms/{room}/events`. */
export interface HistoryPage {
  epoch: string | null;
  head: number;
  earliest: number;
  events: WireEvent[];
}

/** What a room needs from its client. Internal. */
export interface RoomHost {
  /** Sends a frame if the socket is open; returns whether it was sent. */
  send(frame: object): boolean;
  isOpen(): boolean;
  /** Whether an `unsubscribe` of this room name is still in flight on the socket. */
  isDraining(room: string): boolean;
  fetchHistory(room: string, after: number, limit: number): Promise<HistoryPage>;
  readonly historyPageSize: number;
  /** A retry delay for a refused subscribe (store_unavailable). */
  retryDelay(attempt: number): number;
  /** Errors go to the client's `error` listeners too. */
  reportError(err: HubcastError): void;
  removeRoom(room: Room<unknown>, onServer: boolean): void;
  /** Whether a publish to `room` was sent on this socket and is not answered yet. */
  publishesInFlight(room: string): boolean;
  publish(room: string, data: unknown, options?: PublishOptions): Promise<PublishAck>;
  requestPresence(room: string): Promise<PresenceMember[]>;
}

/**
 * Where the room's subscription is on the current socket:
 * - `idle`: not subscribed on this socket (or there is no socket).
 * - `waiting`: an earlier unsubscribe of the same name is still in flight; subscribe when it is done.
 * - `subscribing`: `subscribe` sent, `subscribed` not yet received.
 * - `active`: `subscribed` received; replayed and live events flow.
 * - `resyncing`: `unsubscribe` sent to restart the subscription from the cursor; subscribe again on `unsubscribed`.
 * - `failed`: the server refused the subscription; tried again on the next connection.
 */
type WireState = 'idle' | 'waiting' | 'subscribing' | 'active' | 'resyncing' | 'failed';

function sortMembers(members: PresenceMember[]): PresenceMember[] {
  return [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Ahead-of-cursor events kept while a gap is healed. More are dropped (and fetched later). */
const MAX_BUFFERED = 10_000;

/**
 * One room subscription. Get it with `client.room(name)`.
 *
 * Events are delivered at most once and in seq order: anything at or below
 * the cursor is dropped, anything past `cursor + 1` waits until the gap is
 * healed from the history route (or by resubscribing from the cursor).
 */
export class Room<T = unknown> {
  readonly name: string;
  private readonly emitter: Emitter<RoomEvents<T>>;
  private readonly eventChannels = new Set<Channel<HubcastEvent<T>>>();
  private readonly updateChannels = new Set<Channel<RoomUpdate<T>>>();

  private epoch: string | null;
  /** Last delivered seq; `null` while unknown (a `rewind` start before its first event). */
  private seq: number | null;
  private readonly rewind: number | undefined;
  private readonly withPresence: boolean;
  private memberList: PresenceMember[] = [];

  private wire: WireState = 'idle';
  private closed = false;
  private subscribedHead = 0;
  private subscribedEpoch = '';
  /** `subscribed` named another epoch than our cursor's: a `reset` must come before anything else. */
  private awaitingReset = false;
  private subscribeAttempts = 0;
  /** Heals that failed in a row: the resubscribe after one waits a backoff, so
   * an event the client cannot take (or a history route that keeps failing)
   * never turns into a hot loop of resubscribes. */
  private healFailures = 0;
  /** Set while a resync after a failed heal waits its backoff. */
  private resyncDelayMs: number | null = null;
  private subscribeRetry: ReturnType<typeof setTimeout> | null = null;

  private readonly buffer = new Map<number, WireEvent>();
  /** `false` when `subscribed` said `"echo": false`: our own socket publishes are not sent to us. */
  private echo = true;
  /** Acked seqs of our own publishes past the cursor (no-echo rooms): the cursor steps across them. */
  private readonly own = new Set<number>();
  private healing = false;
  private healGen = 0;
  private healTarget = 0;

  /** Counters, for tests and diagnostics. */
  readonly stats = { delivered: 0, duplicatesDropped: 0, gapsHealed: 0, resyncs: 0, resets: 0, historyReads: 0, historyFailures: 0 };

  /** @internal Use `client.room(name)`. */
  constructor(
    private readonly host: RoomHost,
    name: string,
    options: RoomOptions,
    onListenerError: (err: unknown) => void,
  ) {
    this.name = name;
    this.emitter = new Emitter<RoomEvents<T>>((err) => onListenerError(err));
    if (options.cursor) {
      const { seq } = options.cursor;
      if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError('cursor.seq must be a non-negative integer');
      this.seq = seq;
      this.epoch = options.cursor.epoch ?? null;
    } else {
      this.seq = null;
      this.epoch = null;
    }
    if (options.rewind !== undefined && (!Number.isSafeInteger(options.rewind) || options.rewind < 0)) {
      throw new TypeError('rewind must be a non-negative integer');
    }
    this.rewind = options.rewind;
    this.withPresence = options.presence === true;
  }

  // ---------------------------------------------------------------- public API

  /** The cursor to persist and resume from: `null` until the start position is known. */
  get cursor(): Cursor | null {
    return this.seq === null ? null : { epoch: this.epoch, seq: this.seq };
  }

  /** `true` once `unsubscribe()` was called. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Whether the room is subscribed on the current socket (`subscribed` received). */
  get isSubscribed(): boolean {
    return this.wire === 'active';
  }

  on<K extends keyof RoomEvents<T>>(event: K, listener: Listener<RoomEvents<T>[K]>): () => void {
    return this.emitter.on(event, listener);
  }

  once<K extends keyof RoomEvents<T>>(event: K, listener: Listener<RoomEvents<T>[K]>): () => void {
    return this.emitter.once(event, listener);
  }

  off<K extends keyof RoomEvents<T>>(event: K, listener: Listener<RoomEvents<T>[K]>): void {
    this.emitter.off(event, listener);
  }

  /**
   * Iterates the room's events from now on. Each iterator has its own
   * unbounded queue; `break` out of the loop to release it. Ends when the
   * room is unsubscribed or the client closed, and throws the error of a
   * terminal close (4001, 4003, 1008, 1009).
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<HubcastEvent<T>> {
    const channel = new Channel<HubcastEvent<T>>((c) => this.eventChannels.delete(c));
    if (this.closed) channel.end();
    else this.eventChannels.add(channel);
    return channel;
  }

  /** Like iterating the room, but resets come through too, in order with the events. */
  updates(): AsyncIterableIterator<RoomUpdate<T>> {
    const channel = new Channel<RoomUpdate<T>>((c) => this.updateChannels.delete(c));
    if (this.closed) channel.end();
    else this.updateChannels.add(channel);
    return channel;
  }

  /** Whether this subscription is in the room's presence (`presence: true`). */
  get hasPresence(): boolean {
    return this.withPresence;
  }

  /**
   * The member list of a `presence: true` subscription as last received
   * (sorted by `id`; empty before the first `presence` frame and for other rooms).
   */
  get members(): PresenceMember[] {
    return this.memberList.map((m) => ({ ...m }));
  }

  /**
   * Asks the server for the room's members (`{"type":"presence","room"}`; needs
   * the `presence` grant, not `presence: true`). See `HubcastClient.presence`.
   */
  presence(): Promise<PresenceMember[]> {
    return this.host.requestPresence(this.name);
  }

  /** Publishes to this room; see `HubcastClient.publish`. */
  publish(data: unknown, options?: PublishOptions): Promise<PublishAck> {
    return this.host.publish(this.name, data, options);
  }

  /** Stops the subscription. Listeners get nothing more; iterators end. */
  unsubscribe(): void {
    if (this.closed) return;
    const onServer = this.wire === 'subscribing' || this.wire === 'active' || this.wire === 'resyncing';
    this.closed = true;
    this.cancelHeal();
    this.clearSubscribeRetry();
    this.wire = 'idle';
    this.endIterators();
    this.host.removeRoom(this as Room<unknown>, onServer);
  }

  // ---------------------------------------------------------- client → room

  /** @internal The socket opened (or an earlier unsubscribe of this name finished): subscribe. */
  subscribeNow(): void {
    if (this.closed || !this.host.isOpen()) return;
    if (this.wire === 'subscribing' || this.wire === 'active' || this.wire === 'resyncing') return;
    if (this.host.isDraining(this.name)) {
      this.wire = 'waiting';
      return;
    }
    const frame: Record<string, unknown> = { type: 'subscribe', room: this.name };
    if (this.seq !== null) {
      frame.cursor = this.seq;
      if (this.epoch !== null) frame.epoch = this.epoch;
    } else if (this.rewind !== undefined) {
      frame.rewind = this.rewind;
    }
    if (this.withPresence) frame.presence = true;
    if (this.host.send(frame)) this.wire = 'subscribing';
  }

  /** @internal The socket closed: the next connection resubscribes from the cursor. */
  socketClosed(): void {
    this.resyncDelayMs = null;
    this.wire = 'idle';
    this.awaitingReset = false;
    this.clearSubscribeRetry();
    this.cancelHeal();
  }

  /** @internal The client was closed (`error` set for a terminal close code). */
  clientClosed(error?: HubcastError): void {
    this.socketClosed();
    this.endIterators(error);
  }

  /** @internal */
  onSubscribed(epoch: string, head: number, echo = true): void {
    if (this.closed || this.wire !== 'subscribing') return;
    this.wire = 'active';
    this.echo = echo;
    this.subscribeAttempts = 0;
    this.subscribedHead = head;
    this.subscribedEpoch = epoch;
    this.awaitingReset = this.seq !== null && this.epoch !== null && epoch !== this.epoch;
    if (this.epoch === null) this.epoch = epoch;
    if (this.seq === null && this.rewind === undefined) this.seq = head; // live start
    this.emitter.emit('subscribed', { room: this.name, epoch, head });
  }

  /** @internal */
  /** `head`: a live reset's (the room's log was deleted); the cursor moves to it instead of the `subscribed` head. */
  onReset(epoch: string, earliest: number | null, head: number | null = null): void {
    if (this.closed || this.wire !== 'active') return;
    const previous = this.cursor;
    this.cancelHeal();
    this.awaitingReset = false;
    if (head !== null) {
      this.subscribedHead = head;
      this.subscribedEpoch = epoch;
    }
    this.epoch = epoch;
    this.seq = this.subscribedHead;
    this.own.clear(); // seqs of another log
    this.stats.resets += 1;
    const reset: ResetInfo = { room: this.name, epoch, earliest, head: this.subscribedHead, previous };
    this.emitter.emit('reset', reset);
    for (const channel of this.updateChannels) channel.push({ type: 'reset', reset });
  }

  /** @internal */
  onEvent(event: WireEvent): void {
    if (this.closed || this.wire !== 'active') return;
    if (this.awaitingReset) this.onReset(this.epochOfSubscription(), null);
    this.offer(event, 'socket');
  }

  /** @internal */
  onCaughtUp(seq: number): void {
    if (this.closed || this.wire !== 'active') return;
    if (this.awaitingReset) this.onReset(this.epochOfSubscription(), null);
    if (this.seq === null) this.seq = seq; // a rewind that found no events
    else if (seq > this.seq) this.requestHeal(seq);
    this.emitter.emit('caught_up', { room: this.name, seq });
  }

  /**
   * @internal A publish to this room was answered (`seq`: its ack's, `null`: it failed). In a
   * no-echo room the acked seq counts as delivered, and events held past a hole are
   * delivered, or the hole healed once no answer can explain it.
   */
  onPublishSettled(seq: number | null): void {
    if (this.closed || this.echo || this.wire !== 'active') return;
    if (seq !== null && this.seq !== null && seq > this.seq) this.own.add(seq);
    this.drain();
  }

  /** @internal An `ephemeral` frame: passed on while the subscription is live; the cursor does not move. */
  onEphemeral(ts: number, data: unknown): void {
    if (this.closed || this.wire !== 'active') return;
    this.emitter.emit('ephemeral', { room: this.name, ts, data });
  }

  /** @internal A `presence` frame: the full member list (for a presence subscription). */
  onPresence(members: PresenceMember[]): void {
    if (this.closed || !this.withPresence || this.wire !== 'active') return;
    this.memberList = sortMembers(members);
    this.emitter.emit('presence', { room: this.name, members: this.members });
  }

  /** @internal A `join` or `leave` frame. */
  onMembership(kind: 'join' | 'leave', member: PresenceMember): void {
    if (this.closed || !this.withPresence || this.wire !== 'active') return;
    const rest = this.memberList.filter((m) => m.id !== member.id);
    this.memberList = kind === 'join' ? sortMembers([...rest, member]) : rest;
    this.emitter.emit(kind, { room: this.name, member: { ...member }, members: this.members });
  }

  /** @internal `unsubscribed` (or `not_subscribed`) for this room. */
  onUnsubscribed(): void {
    if (this.closed) return;
    if (this.wire === 'resyncing') {
      this.wire = 'idle';
      const delay = this.resyncDelayMs;
      this.resyncDelayMs = null;
      if (delay === null) {
        this.subscribeNow();
      } else {
        this.clearSubscribeRetry();
        this.subscribeRetry = setTimeout(() => {
          this.subscribeRetry = null;
          this.subscribeNow();
        }, delay);
      }
    }
  }

  /** @internal An `error` frame about this room's subscription. */
  onSubscriptionError(code: string, message: string, retryAfterMs = 0): void {
    if (this.closed) return;
    const error = new HubcastError(code, message, { room: this.name });
    switch (code) {
      case 'already_subscribed':
        // The server still holds an older subscription of ours: restart it from the cursor.
        if (this.wire === 'subscribing') {
          this.wire = 'active';
          this.resync();
        }
        break;
      case 'not_subscribed':
        this.onUnsubscribed();
        return; // expected while resyncing; not worth an error
      case 'store_unavailable':
      case 'auth_unavailable':
      case 'over_capacity':
      case 'rate_limited':
        // Refused for now (nothing subscribed): ask again after a backoff.
        if (this.wire === 'subscribing' || this.wire === 'active') {
          this.wire = 'idle';
          this.cancelHeal();
          // The server's retry_after_ms first, then the usual jittered backoff,
          // so refused clients do not all come back at the same moment.
          const delay = retryAfterMs + this.host.retryDelay(this.subscribeAttempts++);
          this.clearSubscribeRetry();
          this.subscribeRetry = setTimeout(() => {
            this.subscribeRetry = null;
            this.subscribeNow();
          }, delay);
        }
        break;
      default:
        // Refused or ended by the server (unauthenticated, forbidden, token_expired,
        // too_many_subscriptions, invalid_room): nothing more comes for this room on
        // this socket. The next connection tries again (perhaps with another token).
        if (this.wire === 'subscribing' || this.wire === 'active' || this.wire === 'resyncing') {
          this.wire = 'failed';
          this.cancelHeal();
        }
    }
    this.emitError(error);
  }

  /** @internal Periodic reconciliation: read the history after the cursor and deliver what the socket missed. */
  reconcile(): void {
    if (this.closed || this.seq === null) return;
    if (this.wire === 'subscribing' || this.wire === 'resyncing' || this.wire === 'waiting') return;
    this.requestHeal('probe');
  }

  // ----------------------------------------------------------------- delivery

  /** The epoch of the current subscription, for a reset the server should have sent but did not. */
  private epochOfSubscription(): string {
    return this.subscribedEpoch;
  }

  /** Delivers `event` if it is the next one, drops it if already delivered, keeps it if it is ahead. */
  private offer(event: WireEvent, source: 'socket' | 'history'): void {
    if (this.seq === null) {
      // A rewind start: the first event of the subscription sets the base.
      if (source === 'socket') {
        this.deliver(event);
        this.drain();
      }
      return;
    }
    this.skipOwn();
    const cursor = this.seq as number;
    if (event.seq <= cursor) {
      this.stats.duplicatesDropped += 1; // or our own (no-echo rooms)
      return;
    }
    if (event.seq === cursor + 1) {
      this.deliver(event);
      this.drain();
      return;
    }
    // A gap: keep the event and fetch what is missing before delivering it (in a
    // no-echo room, once no ack of ours on its way can fill it).
    if (this.buffer.size < MAX_BUFFERED) this.buffer.set(event.seq, event);
    if (source === 'socket' && this.holding()) return;
    this.requestHeal(event.seq - 1);
  }

  /** Steps the cursor across our own acked seqs (no-echo rooms). */
  private skipOwn(): void {
    if (this.own.size === 0) return;
    while (this.seq !== null && this.own.delete(this.seq + 1)) this.seq += 1;
    for (const seq of this.own) if (this.seq !== null && seq <= this.seq) this.own.delete(seq);
  }

  /** A no-echo room with publishes sent and unanswered: a hole may be one of ours whose ack is on its way. */
  private holding(): boolean {
    return !this.echo && this.host.publishesInFlight(this.name);
  }

  private deliver(wire: WireEvent): void {
    this.seq = wire.seq;
    this.stats.delivered += 1;
    const event: HubcastEvent<T> = { room: this.name, seq: wire.seq, ts: wire.ts, data: wire.data as T, epoch: this.epoch };
    this.emitter.emit('event', event);
    for (const channel of this.eventChannels) channel.push(event);
    for (const channel of this.updateChannels) channel.push({ type: 'event', event });
  }

  /** Delivers buffered events that became contiguous; heals again if some are still ahead. */
  private drain(): void {
    this.skipOwn();
    while (!this.closed && this.seq !== null && this.buffer.size > 0) {
      const next = this.buffer.get(this.seq + 1);
      if (!next) break;
      this.buffer.delete(next.seq);
      this.deliver(next);
      this.skipOwn();
    }
    if (this.seq === null || this.buffer.size === 0) return;
    let lowest = Infinity;
    for (const seq of this.buffer.keys()) {
      if (seq <= this.seq) this.buffer.delete(seq);
      else lowest = Math.min(lowest, seq);
    }
    if (lowest === Infinity) return;
    if (this.holding() && !this.healing) return; // an ack still on its way may explain the hole
    this.requestHeal(lowest - 1);
  }

  /** Makes sure everything through `target` gets delivered (`'probe'`: through the head the history route reports). */
  private requestHeal(target: number | 'probe'): void {
    if (target !== 'probe') this.healTarget = Math.max(this.healTarget, target);
    if (this.healing || this.closed) return;
    if (this.wire === 'subscribing' || this.wire === 'resyncing' || this.wire === 'waiting') return;
    this.healing = true;
    const gen = ++this.healGen;
    void this.heal(gen, target === 'probe');
  }

  private cancelHeal(): void {
    this.healGen += 1;
    this.healing = false;
    this.healTarget = 0;
    this.buffer.clear();
  }

  /** Reads the history route after the cursor until `healTarget` is delivered. */
  private async heal(gen: number, probe: boolean): Promise<void> {
    let outcome: 'done' | 'resync' = 'done';
    let failure: unknown = null;
    const startSeq = this.seq;
    try {
      for (;;) {
        const after = this.seq;
        if (after === null || (!probe && after >= this.healTarget)) break;
        const limit = probe
          ? this.host.historyPageSize
          : Math.max(1, Math.min(this.host.historyPageSize, this.healTarget - after));
        const page = await this.host.fetchHistory(this.name, after, limit);
        this.stats.historyReads += 1;
        if (gen !== this.healGen) return; // cancelled: reset, reconnect, resync or closed
        const current = this.seq as number;
        if (this.epoch === null && page.epoch !== null) this.epoch = page.epoch; // a cursor given without its epoch
        if (page.epoch !== this.epoch && !(page.epoch === null && current === 0)) {
          outcome = 'resync'; // another epoch (or a log that is gone): the server decides with a reset
          break;
        }
        if (current + 1 < page.earliest) {
          outcome = 'resync'; // pruned by retention: the server answers the resubscribe with a reset
          break;
        }
        for (const event of page.events) {
          this.offer(event, 'history');
          if (gen !== this.healGen) return;
        }
        if (probe) {
          probe = false;
          this.healTarget = Math.max(this.healTarget, page.head);
        }
        const now = this.seq as number;
        if (now >= this.healTarget) break;
        if (now === current) {
          // No progress (the store has nothing usable past our cursor although the server
          // sent more): ask the server again.
          outcome = 'resync';
          break;
        }
      }
    } catch (err) {
      this.stats.historyFailures += 1;
      if (gen !== this.healGen) return;
      failure = err;
    }
    if (gen !== this.healGen) return;
    this.healing = false;
    if (failure !== null) {
      const needed = this.buffer.size > 0 || (this.seq !== null && this.healTarget > this.seq);
      if (!needed) {
        // A reconciliation poll that failed (server unreachable): best effort, try again next time.
        this.healTarget = 0;
        return;
      }
      this.emitError(
        failure instanceof HubcastError && failure.code === 'history_unavailable'
          ? failure
          : new HubcastError('history_unavailable', `history of ${this.name} could not be read: ${String(failure)}`, {
              room: this.name,
              cause: failure,
            }),
      );
      // Fall back to the socket: resubscribing from the cursor replays the
      // missing range, after a backoff that grows while heals keep failing.
      this.resyncDelayMs = this.host.retryDelay(this.healFailures++);
      this.resync();
      return;
    }
    if (outcome === 'resync') {
      this.resync();
      return;
    }
    if (this.seq !== startSeq) this.stats.gapsHealed += 1;
    this.healFailures = 0;
    this.healTarget = 0;
    this.drain();
  }

  /** Restarts the subscription from the cursor: `unsubscribe`, then `subscribe` with the cursor on `unsubscribed`. */
  private resync(): void {
    this.cancelHeal();
    this.stats.resyncs += 1;
    if (this.wire !== 'active' || !this.host.isOpen()) return; // the next (re)subscribe starts from the cursor anyway
    if (this.host.send({ type: 'unsubscribe', room: this.name })) this.wire = 'resyncing';
  }

  private clearSubscribeRetry(): void {
    if (this.subscribeRetry !== null) {
      clearTimeout(this.subscribeRetry);
      this.subscribeRetry = null;
    }
  }

  private emitError(error: HubcastError): void {
    this.emitter.emit('error', error);
    this.host.reportError(error);
  }

  private endIterators(error?: HubcastError): void {
    for (const channel of this.eventChannels) channel.end(error);
    for (const channel of this.updateChannels) channel.end(error);
    this.eventChannels.clear();
    this.updateChannels.clear();
  }
}
