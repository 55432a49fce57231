/**
 * A simulated hubcast server for property tests: rooms with gapless logs,
 * idempotent publishes, subscribe with cursor/epoch (replay, caught_up,
 * reset), a history route, and a chaos monkey that drops, duplicates and
 * delays live frames, loses acks, refuses connections, fails history reads,
 * prunes logs and freezes sockets.
 */
import type { FetchLike, WebSocketLike } from '../../src/index.js';

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Chaos {
  /** Probability that a live event frame to one subscriber is lost. */
  dropLive: number;
  /** Probability that a live event frame is sent twice. */
  duplicateLive: number;
  /** Probability that a live event is held back and sent after the next one. */
  reorderLive: number;
  /** Probability that an ack is lost. */
  dropAck: number;
  /** Probability that a socket publish is refused with store_unavailable (nothing appended). */
  storeUnavailable: number;
  /** Probability that a connection attempt is refused. */
  refuse: number;
  /** Probability that a history request fails. */
  historyFailure: number;
  /** Probability that a history page is cut short. */
  shortPage: number;
}

export const NO_CHAOS: Chaos = {
  dropLive: 0,
  duplicateLive: 0,
  reorderLive: 0,
  dropAck: 0,
  storeUnavailable: 0,
  refuse: 0,
  historyFailure: 0,
  shortPage: 0,
};

interface LogEvent {
  seq: number;
  ts: number;
  data: unknown;
  id?: string;
}

interface SimRoom {
  epoch: string;
  events: LogEvent[]; // events[i].seq === earliest + i
  earliest: number;
  head: number;
  ids: Map<string, number>;
}

interface Subscription {
  /** Last seq sent to this subscriber, for the live stream. */
  position: number;
  /** A live event held back for reordering. */
  held: LogEvent | null;
}

export class SimSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  frozen = false;
  readonly subscriptions = new Map<string, Subscription>();

  constructor(
    readonly url: string,
    private readonly server: SimServer,
  ) {
    server.connect(this);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    if (this.frozen) return;
    queueMicrotask(() => this.server.onClientFrame(this, data));
  }

  close(): void {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    queueMicrotask(() => {
      this.readyState = 3;
      this.server.disconnected(this);
      this.onclose?.({ code: 1005, reason: '' });
    });
  }

  /** Server → client. */
  push(frame: object): void {
    if (this.readyState !== 1 || this.frozen) return;
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code: number): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.server.disconnected(this);
    this.onclose?.({ code, reason: 'sim' });
  }
}

export class SimServer {
  readonly rooms = new Map<string, SimRoom>();
  readonly sockets = new Set<SimSocket>();
  chaos: Chaos = NO_CHAOS;
  /** Connection attempts are accepted after this many ms of fake time. */
  acceptDelayMs = 1;
  private clock = 0;
  connections = 0;
  /** Called for every appended event. */
  onAppend: (room: string, seq: number, data: unknown) => void = () => {};

  constructor(private readonly random: () => number) {}

  get WebSocket(): new (url: string) => SimSocket {
    const server = this;
    return class extends SimSocket {
      constructor(url: string) {
        super(url, server);
      }
    };
  }

  room(name: string): SimRoom {
    let room = this.rooms.get(name);
    if (!room) {
      room = { epoch: `E-${name}`, events: [], earliest: 1, head: 0, ids: new Map() };
      this.rooms.set(name, room);
    }
    return room;
  }

  connect(socket: SimSocket): void {
    this.connections += 1;
    setTimeout(() => {
      if (socket.readyState !== 0) return;
      if (this.random() < this.chaos.refuse) {
        socket.readyState = 3;
        socket.onerror?.({});
        socket.onclose?.({ code: 1006, reason: '' });
        return;
      }
      socket.readyState = 1;
      this.sockets.add(socket);
      socket.onopen?.({});
      socket.push({ type: 'welcome', session: `s${this.connections}`, heartbeat_ms: 15000 });
    }, this.acceptDelayMs);
  }

  disconnected(socket: SimSocket): void {
    this.sockets.delete(socket);
    socket.subscriptions.clear();
  }

  /** Appends an event (as an HTTP publish would) and fans it out. */
  append(name: string, data: unknown, id?: string): { seq: number; duplicate: boolean } {
    const room = this.room(name);
    if (id !== undefined) {
      const seq = room.ids.get(id);
      if (seq !== undefined) return { seq, duplicate: true };
    }
    const event: LogEvent = { seq: room.head + 1, ts: ++this.clock, data };
    if (id !== undefined) {
      event.id = id;
      room.ids.set(id, event.seq);
    }
    room.events.push(event);
    room.head = event.seq;
    this.onAppend(name, event.seq, data);
    for (const socket of this.sockets) {
      const sub = socket.subscriptions.get(name);
      if (sub) this.sendLive(socket, name, sub, event);
    }
    return { seq: event.seq, duplicate: false };
  }

  /** Retention: forget everything before `earliest`. */
  prune(name: string, earliest: number): void {
    const room = this.room(name);
    const target = Math.min(earliest, room.head + 1);
    while (room.earliest < target) {
      const gone = room.events.shift();
      if (gone?.id !== undefined) room.ids.delete(gone.id);
      room.earliest += 1;
    }
  }

  private sendLive(socket: SimSocket, name: string, sub: Subscription, event: LogEvent): void {
    const frame = (e: LogEvent) => ({ type: 'event', room: name, seq: e.seq, ts: e.ts, data: e.data });
    if (this.random() < this.chaos.reorderLive && sub.held === null) {
      sub.held = event;
      return;
    }
    if (this.random() >= this.chaos.dropLive) socket.push(frame(event));
    if (this.random() < this.chaos.duplicateLive) socket.push(frame(event));
    if (sub.held !== null) {
      const held = sub.held;
      sub.held = null;
      socket.push(frame(held));
    }
    sub.position = event.seq;
  }

  onClientFrame(socket: SimSocket, text: string): void {
    if (socket.readyState !== 1 || socket.frozen) return;
    const msg = JSON.parse(text) as Record<string, unknown>;
    switch (msg.type) {
      case 'ping':
        socket.push({ type: 'pong' });
        return;
      case 'subscribe': {
        const name = msg.room as string;
        if (socket.subscriptions.has(name)) {
          socket.push({ type: 'error', code: 'already_subscribed', message: 'already', room: name });
          return;
        }
        const room = this.room(name);
        socket.push({ type: 'subscribed', room: name, epoch: room.epoch, head: room.head });
        let after = room.head;
        if (typeof msg.cursor === 'number') {
          const epochOk = msg.epoch === undefined || msg.epoch === room.epoch;
          const servable = msg.cursor <= room.head && msg.cursor + 1 >= room.earliest;
          if (epochOk && servable) after = msg.cursor;
          else socket.push({ type: 'reset', room: name, epoch: room.epoch, earliest: room.earliest });
        } else if (typeof msg.rewind === 'number') {
          after = Math.max(room.head - msg.rewind, room.earliest - 1);
        }
        for (const e of room.events) {
          if (e.seq > after) socket.push({ type: 'event', room: name, seq: e.seq, ts: e.ts, data: e.data });
        }
        socket.push({ type: 'caught_up', room: name, seq: room.head });
        socket.subscriptions.set(name, { position: room.head, held: null });
        return;
      }
      case 'unsubscribe': {
        const name = msg.room as string;
        if (socket.subscriptions.delete(name)) socket.push({ type: 'unsubscribed', room: name });
        else socket.push({ type: 'error', code: 'not_subscribed', message: 'not subscribed', room: name });
        return;
      }
      case 'publish': {
        const name = msg.room as string;
        const id = msg.id as string;
        if (this.random() < this.chaos.storeUnavailable) {
          socket.push({ type: 'error', code: 'store_unavailable', message: 'sim', id, room: name });
          return;
        }
        const room = this.room(name);
        const known = room.ids.get(id);
        if (known === undefined && typeof msg.expected_seq === 'number' && msg.expected_seq !== room.head) {
          socket.push({ type: 'error', code: 'conflict', message: 'sim', id, room: name, head: room.head });
          return;
        }
        const { seq } = this.append(name, msg.data, id);
        if (this.random() >= this.chaos.dropAck) socket.push({ type: 'ack', id, room: name, seq });
        return;
      }
      default:
        socket.push({ type: 'error', code: 'unknown_type', message: 'sim' });
    }
  }

  /** The history route, answering after a random delay. */
  get fetch(): FetchLike {
    return (url) =>
      new Promise((resolve, reject) => {
        setTimeout(
          () => {
            if (this.random() < this.chaos.historyFailure) {
              if (this.random() < 0.5) reject(new TypeError('Failed to fetch'));
              else resolve({ ok: false, status: 503, json: async () => ({ error: 'store_unavailable', message: 'sim' }) });
              return;
            }
            const u = new URL(url);
            const name = decodeURIComponent(u.pathname.split('/')[3] as string);
            const after = Number(u.searchParams.get('after') ?? 0);
            let limit = Number(u.searchParams.get('limit') ?? 100);
            if (this.random() < this.chaos.shortPage) limit = 1 + Math.floor(this.random() * limit);
            const room = this.rooms.get(name);
            const body = room
              ? {
                  room: name,
                  epoch: room.epoch,
                  head: room.head,
                  earliest: room.earliest,
                  events: room.events
                    .filter((e) => e.seq > after)
                    .slice(0, limit)
                    .map((e) => ({ seq: e.seq, ts: e.ts, data: e.data })),
                }
              : { room: name, epoch: null, head: 0, earliest: 1, events: [] };
            resolve({ ok: true, status: 200, json: async () => body });
          },
          Math.floor(this.random() * 30),
        );
      });
  }
}
