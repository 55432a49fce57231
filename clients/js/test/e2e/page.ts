/**
 * The test page's script, bundled with the SDK by esbuild. The e2e test
 * drives it through `window.hub` and reads what the page saw from `hub.log`.
 */
import { HubcastClient, type HubcastClientOptions, type HubcastError, type Room } from '../../src/index.js';

interface Log {
  events: Array<{ room: string; seq: number; data: unknown }>;
  iterated: Array<{ room: string; seq: number }>;
  resets: unknown[];
  states: Array<{ state: string; code?: number; reason?: string }>;
  errors: Array<{ code: string; message: string; room?: string; closeCode?: number }>;
  acks: Array<{ id: string; seq: number }>;
  publishErrors: Array<{ id: string; code: string; head?: number }>;
  authenticated: number;
  tokens: number;
}

interface StartOptions {
  rooms: string[];
  heartbeat?: HubcastClientOptions['heartbeat'];
  reconcileMs?: number;
  /** `minted`: getToken asks the test for a fresh JWT; `bad`: a token no key signed. */
  token?: 'none' | 'minted' | 'bad';
  sendTokenAs?: 'query' | 'message';
  /** Subscribe from cursor 0 (every event), not live from the head at subscription time. */
  fromStart?: boolean;
}

const log: Log = { events: [], iterated: [], resets: [], states: [], errors: [], acks: [], publishErrors: [], authenticated: 0, tokens: 0 };
let client: HubcastClient | null = null;
const rooms = new Map<string, Room>();
declare const mintToken: () => Promise<string>; // exposed by the test

const hub = {
  log,
  start(options: StartOptions) {
    const opts: HubcastClientOptions = {
      url: location.origin,
      reconnect: { minDelayMs: 50, maxDelayMs: 500, tryAgainLaterMs: 1000 },
      heartbeat: options.heartbeat ?? { intervalMs: 2000, timeoutMs: 2000 },
      connectTimeoutMs: 10_000,
      // Passed explicitly (as apps do): the client must not call it as a method.
      fetch: window.fetch,
    };
    if (options.reconcileMs !== undefined) opts.reconcileMs = options.reconcileMs;
    if (options.sendTokenAs !== undefined) opts.sendTokenAs = options.sendTokenAs;
    if (options.token === 'minted') {
      opts.getToken = async () => {
        log.tokens += 1;
        return mintToken();
      };
    } else if (options.token === 'bad') {
      opts.getToken = () => 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    }
    client = new HubcastClient(opts);
    client.on('state', (s) => {
      const entry: { state: string; code?: number; reason?: string } = { state: s.state };
      if (s.code !== undefined) entry.code = s.code;
      if (s.reason !== undefined) entry.reason = s.reason;
      log.states.push(entry);
    });
    client.on('error', (e) => {
      const entry: Log['errors'][number] = { code: e.code, message: e.message };
      if (e.room !== undefined) entry.room = e.room;
      if (e.closeCode !== undefined) entry.closeCode = e.closeCode;
      log.errors.push(entry);
    });
    client.on('authenticated', () => {
      log.authenticated += 1;
    });
    for (const name of options.rooms) {
      const room = client.room(name, options.fromStart ? { cursor: { seq: 0 } } : {});
      rooms.set(name, room as Room);
      room.on('event', (e) => log.events.push({ room: e.room, seq: e.seq, data: e.data }));
      room.on('reset', (r) => log.resets.push(r));
      // The async iterator, in a real browser, alongside the listener.
      void (async () => {
        for await (const e of room) log.iterated.push({ room: e.room, seq: e.seq });
      })().catch(() => {});
    }
  },
  state(): string {
    return client?.state ?? 'none';
  },
  stats(name: string) {
    return rooms.get(name)?.stats ?? null;
  },
  /** Publishes `count` events with ids `${prefix}-${i}`; resolves when all settled. */
  async publishMany(room: string, count: number, prefix: string): Promise<void> {
    const all: Array<Promise<void>> = [];
    for (let i = 1; i <= count; i++) {
      const id = `${prefix}-${i}`;
      all.push(
        client!.publish(room, { id, i }, { id }).then(
          (ack) => void log.acks.push({ id, seq: ack.seq }),
          (err: HubcastError) => {
            const entry: { id: string; code: string; head?: number } = { id, code: err.code };
            if (err.head !== undefined) entry.head = err.head;
            log.publishErrors.push(entry);
          },
        ),
      );
      // A steady trickle rather than one burst, so disconnects land mid-stream.
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(all);
  },
  async publishExpecting(room: string, data: unknown, expectedSeq: number): Promise<{ seq?: number; code?: string; head?: number }> {
    try {
      const ack = await client!.publish(room, data, { expectedSeq });
      return { seq: ack.seq };
    } catch (err) {
      const e = err as HubcastError;
      const out: { code: string; head?: number } = { code: e.code };
      if (e.head !== undefined) out.head = e.head;
      return out;
    }
  },
  close() {
    client?.close();
  },
};

(window as unknown as { hub: typeof hub }).hub = hub;
document.title = 'hubcast e2e ready';
