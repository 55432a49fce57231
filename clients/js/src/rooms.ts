/**
 * The client's room subscriptions by name, with what is per room name rather
 * than per `Room`: unsubscribes still in flight on the socket (a new
 * subscription of the same name waits for `unsubscribed`), and the
 * reconciliation poll over every room. Each `Room` (room.ts) keeps its own
 * cursor and delivery rules; this is only the registry around them.
 */
import type { HubcastError } from './errors.js';
import type { Room } from './room.js';
import type { HubcastClientOptions } from './types.js';

/** What the registry needs from the connection. */
export interface RoomsLink {
  isOpen(): boolean;
  send(frame: object): boolean;
}

export class RoomRegistry {
  private readonly rooms = new Map<string, Room<unknown>>();
  /** Room names whose `unsubscribe` is still in flight on the current socket. */
  private readonly draining = new Set<string>();
  private reconcileTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    /** Read on every use, like every option. */
    private readonly options: HubcastClientOptions,
    private readonly link: RoomsLink,
  ) {}

  get(name: string): Room<unknown> | undefined {
    return this.rooms.get(name);
  }

  add(room: Room<unknown>): void {
    this.rooms.set(room.name, room);
  }

  /** Whether an `unsubscribe` of `name` is still in flight on the socket. */
  isDraining(name: string): boolean {
    return this.draining.has(name);
  }

  /** A new socket, or none: no unsubscribe is in flight any more. */
  clearDraining(): void {
    this.draining.clear();
  }

  /** The room was unsubscribed by the application; `onServer`: the server has (or is getting) its subscription. */
  remove(room: Room<unknown>, onServer: boolean): void {
    if (this.rooms.get(room.name) !== room) return;
    this.rooms.delete(room.name);
    if (onServer && this.link.isOpen()) {
      // A resync may already have sent the unsubscribe; one more only earns a not_subscribed.
      if (!this.draining.has(room.name)) {
        this.draining.add(room.name);
        this.link.send({ type: 'unsubscribe', room: room.name });
      }
    }
  }

  /** `unsubscribed` (or the `not_subscribed` that ends a drain) for `name`. */
  onUnsubscribed(name: unknown): void {
    if (typeof name !== 'string') return;
    if (this.draining.delete(name)) {
      // An unsubscribe the app asked for finished; a new subscription of the name may be waiting.
      this.rooms.get(name)?.subscribeNow();
      return;
    }
    this.rooms.get(name)?.onUnsubscribed();
  }

  /** The socket opened: every room subscribes (from its cursor). */
  subscribeAll(): void {
    for (const room of this.rooms.values()) room.subscribeNow();
  }

  /** The socket is gone; the next one resubscribes every room. */
  socketClosed(): void {
    for (const room of this.rooms.values()) room.socketClosed();
  }

  /** The client stopped (`error`: a terminal close): iterators end. */
  clientClosed(error?: HubcastError): void {
    for (const room of this.rooms.values()) room.clientClosed(error);
  }

  /** Starts the `reconcileMs` poll of every room, if configured and not running. */
  startReconcile(): void {
    const every = this.options.reconcileMs ?? 0;
    if (every <= 0 || this.reconcileTimer !== null) return;
    this.reconcileTimer = setInterval(() => {
      for (const room of this.rooms.values()) room.reconcile();
    }, every);
  }

  stopReconcile(): void {
    if (this.reconcileTimer !== null) {
      clearInterval(this.reconcileTimer);
      this.reconcileTimer = null;
    }
  }
}
