/**
 * `client.presence(room)` requests waiting for their answer. One request in
 * flight per room, shared by every caller until it is answered; each carries
 * an id (`presence:N`) the server echoes in the answer and in a refusal, so
 * neither is taken for a presence subscription's member list or error, which
 * carry no id (docs/clients.md, "Presence"). Queued while offline and asked
 * again on every new socket until answered.
 */
import type { HubcastError } from './errors.js';
import type { PresenceMember } from './types.js';

export interface PresenceWaiter {
  resolve: (members: PresenceMember[]) => void;
  reject: (err: HubcastError) => void;
}

/** What the requests need from the connection. */
export interface PresenceLink {
  isOpen(): boolean;
  send(frame: object): boolean;
}

export class PresenceRequests {
  /**
   * Presence requests waiting for a `presence` frame, per room; `sent`: asked on the current
   * socket; `id` (`presence:N`) is echoed by the server in the answer and in a refusal, so
   * neither is taken for a subscription's.
   */
  private readonly requests = new Map<string, { id: string; sent: boolean; waiters: Array<PresenceWaiter> }>();
  private nextId = 0;

  constructor(private readonly link: PresenceLink) {}

  /** Adds a waiter for `room`'s members; the caller then connects or calls {@link send}. */
  add(room: string, waiter: PresenceWaiter): void {
    let entry = this.requests.get(room);
    if (!entry) {
      entry = { id: `presence:${++this.nextId}`, sent: false, waiters: [] };
      this.requests.set(room, entry);
    }
    entry.waiters.push(waiter);
  }

  /** Sends one `presence` request per room with waiters not yet asked on this socket. */
  send(): void {
    if (!this.link.isOpen()) return;
    for (const [room, entry] of this.requests) {
      if (!entry.sent && this.link.send({ type: 'presence', room, id: entry.id })) entry.sent = true;
    }
  }

  /** Whether a frame of `room` with this `id` answers the request asked on this socket. */
  isAnswer(room: string | undefined, id: string): boolean {
    if (room === undefined) return false;
    const entry = this.requests.get(room);
    return entry !== undefined && entry.sent && entry.id === id;
  }

  /** The answer to `room`'s request: every waiter gets its own copy of the list. */
  resolve(room: string, members: PresenceMember[]): void {
    const entry = this.requests.get(room);
    if (!entry) return;
    this.requests.delete(room);
    for (const waiter of entry.waiters) waiter.resolve(members.map((m) => ({ ...m })));
  }

  /** Fails the requests of `room` (of every room without one). */
  reject(error: HubcastError, room?: string): void {
    for (const [name, entry] of [...this.requests]) {
      if (room !== undefined && name !== room) continue;
      this.requests.delete(name);
      for (const waiter of entry.waiters) waiter.reject(error);
    }
  }

  /** The socket is gone: every request is asked again on the next one. */
  socketClosed(): void {
    for (const entry of this.requests.values()) entry.sent = false;
  }
}
