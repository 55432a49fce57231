/**
 * Unit tests of the client's API surface with a fake socket and fake timers:
 * iterators, state events, listener errors, publish validation and timeouts,
 * URLs, tokens, close/reconnect, and heals overtaken by a reconnect.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  decideReconnect,
  HubcastClient,
  HubcastError,
  type HubcastClientOptions,
  type HubcastEvent,
  isValidRoomName,
  type RoomUpdate,
  type StateChange,
} from '../../src/index.js';
import { type FakeSocket, fakeFetch, fakeWebSocket } from './fakes.js';

function setup(overrides: Partial<HubcastClientOptions> = {}) {
  const ws = fakeWebSocket();
  const http = fakeFetch();
  const client = new HubcastClient({
    url: 'http://127.0.0.1:8787',
    WebSocket: ws.WebSocket,
    fetch: http.fetch,
    random: () => 0.5,
    reconnect: { minDelayMs: 100, maxDelayMs: 1000, tryAgainLaterMs: 5000 },
    heartbeat: false,
    connectTimeoutMs: 0,
    ...overrides,
  });
  const flush = () => vi.advanceTimersByTimeAsync(0);
  const last = (): FakeSocket => ws.sockets[ws.sockets.length - 1] as FakeSocket;
  const sentFrames = () => ws.sent.map((f) => JSON.parse(f.text) as Record<string, unknown>);
  /** Accepts the latest socket, says welcome and answers every subscribe with `subscribed` at `head`. */
  const open = async (head = 0, epoch = 'E1') => {
    await flush();
    const socket = last();
    const already = ws.sent.length;
    socket.accept();
    socket.deliver({ type: 'welcome', session: 's', heartbeat_ms: 15000 });
    for (const f of ws.sent.slice(already)) {
      const frame = JSON.parse(f.text) as { type: string; room: string };
      if (frame.type === 'subscribe') socket.deliver({ type: 'subscribed', room: frame.room, epoch, head });
    }
    await flush();
    return socket;
  };
  return { client, ws, http, flush, last, open, sentFrames };
}

const event = (room: string, seq: number, data: unknown = seq) => ({ type: 'event', room, seq, ts: seq, data });

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'], now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('URLs', () => {
  it.each([
    ['http://127.0.0.1:8787', 'ws://127.0.0.1:8787/v1/ws', 'http://127.0.0.1:8787/v1/rooms/r/events'],
    ['https://example.test/', 'wss://example.test/v1/ws', 'https://example.test/v1/rooms/r/events'],
    ['ws://h:1/prefix/', 'ws://h:1/prefix/v1/ws', 'http://h:1/prefix/v1/rooms/r/events'],
    ['wss://h/v1/ws', 'wss://h/v1/ws', 'https://h/v1/rooms/r/events'],
  ])('%s', async (url, wsUrl, historyPath) => {
    const { client, ws, http, flush, open } = setup({ url });
    const room = client.room('r', { cursor: { epoch: 'E1', seq: 0 } });
    await flush();
    expect(ws.sockets[0]!.url).toBe(wsUrl);
    const socket = await open(0);
    socket.deliver(event('r', 2));
    await flush();
    expect(http.requests[0]!.url.href.split('?')[0]).toBe(historyPath);
    expect(http.requests[0]!.url.searchParams.get('after')).toBe('0');
    expect(room.cursor).toEqual({ epoch: 'E1', seq: 0 });
    client.close();
  });

  it('keeps room names with : @ = . unescaped in the history path', async () => {
    const { client, http, flush, open } = setup();
    client.room('market:42@eu=1.x', { cursor: { epoch: 'E1', seq: 0 } });
    const socket = await open(0);
    socket.deliver(event('market:42@eu=1.x', 3));
    await flush();
    expect(http.requests[0]!.url.pathname).toBe('/v1/rooms/market:42@eu=1.x/events');
    client.close();
  });

  it('rejects unsupported schemes', () => {
    expect(() => new HubcastClient({ url: 'ftp://x' })).toThrow(/unsupported URL scheme/);
  });
});

describe('rooms', () => {
  it('validates names and returns one Room per name', () => {
    const { client } = setup({ autoConnect: false });
    expect(() => client.room('bad room')).toThrow(HubcastError);
    expect(() => client.room('x'.repeat(129))).toThrow(HubcastError);
    expect(isValidRoomName('A-z_0:9.@=')).toBe(true);
    expect(client.room('r')).toBe(client.room('r'));
  });

  it('async iterator: yields events in order, ends on unsubscribe', async () => {
    const { client, flush, open } = setup();
    const room = client.room('r');
    const socket = await open(0);
    const got: number[] = [];
    const done = (async () => {
      for await (const e of room) got.push(e.seq);
    })();
    for (let seq = 1; seq <= 3; seq++) socket.deliver(event('r', seq));
    await flush();
    room.unsubscribe();
    await done;
    expect(got).toEqual([1, 2, 3]);
    client.close();
  });

  it('async iterator: break releases it; updates() yields resets too', async () => {
    const { client, flush, open } = setup();
    const room = client.room('r', { cursor: { epoch: 'E1', seq: 5 } });
    const updates: RoomUpdate[] = [];
    const iterating = (async () => {
      for await (const u of room.updates()) {
        updates.push(u);
        if (updates.length === 2) break;
      }
    })();
    const socket = await open(50);
    socket.deliver({ type: 'reset', room: 'r', epoch: 'E1', earliest: 20 });
    socket.deliver(event('r', 51));
    await flush();
    await iterating;
    expect(updates).toEqual([
      { type: 'reset', reset: { room: 'r', epoch: 'E1', earliest: 20, head: 50, previous: { epoch: 'E1', seq: 5 } } },
      { type: 'event', event: { room: 'r', seq: 51, ts: 51, data: 51, epoch: 'E1' } },
    ]);
    client.close();
  });

  it('async iterator: throws the error of a terminal close', async () => {
    const { client, flush, open } = setup();
    const room = client.room('r');
    const socket = await open(0);
    const iterator = room[Symbol.asyncIterator]();
    const pending = expect(iterator.next()).rejects.toMatchObject({ code: 'unauthenticated', closeCode: 4001 });
    socket.serverClose(4001, 'who are you');
    await flush();
    await pending;
    await expect(iterator.next()).resolves.toEqual({ value: undefined, done: true });
    expect(client.state).toBe('closed');
  });

  it('a listener that throws does not stop delivery and is reported', async () => {
    const { client, flush, open } = setup();
    const errors: HubcastError[] = [];
    client.on('error', (e) => errors.push(e));
    const room = client.room('r');
    const got: number[] = [];
    room.on('event', () => {
      throw new Error('app bug');
    });
    room.on('event', (e) => got.push(e.seq));
    const socket = await open(0);
    socket.deliver(event('r', 1));
    socket.deliver(event('r', 2));
    await flush();
    expect(got).toEqual([1, 2]);
    expect(errors.map((e) => e.code)).toEqual(['listener_error', 'listener_error']);
    client.close();
  });

  it('a listener may unsubscribe while events are being drained', async () => {
    const { client, flush, open, http } = setup();
    const room = client.room('r', { cursor: { epoch: 'E1', seq: 0 } });
    const got: number[] = [];
    room.on('event', (e) => {
      got.push(e.seq);
      if (e.seq === 2) room.unsubscribe();
    });
    const socket = await open(0);
    socket.deliver(event('r', 3));
    socket.deliver(event('r', 4));
    await flush();
    http.requests[0]!.respond(200, { epoch: 'E1', head: 4, earliest: 1, events: [1, 2].map((s) => ({ seq: s, ts: s, data: s })) });
    await flush();
    expect(got).toEqual([1, 2]);
    client.close();
  });

  it('a heal overtaken by a reconnect is dropped: its late answer delivers nothing twice', async () => {
    const { client, flush, open, http } = setup();
    const room = client.room('r', { cursor: { epoch: 'E1', seq: 0 } });
    const got: number[] = [];
    room.on('event', (e) => got.push(e.seq));
    let socket = await open(0);
    socket.deliver(event('r', 3));
    await flush();
    expect(http.requests).toHaveLength(1);
    socket.serverClose(1012);
    await flush();
    socket = await open(3);
    for (let seq = 1; seq <= 3; seq++) socket.deliver(event('r', seq));
    await flush();
    http.requests[0]!.respond(200, { epoch: 'E1', head: 3, earliest: 1, events: [1, 2].map((s) => ({ seq: s, ts: s, data: s })) });
    await flush();
    expect(got).toEqual([1, 2, 3]);
    client.close();
  });
});

describe('connection state', () => {
  it('emits connecting, open, reconnecting, closed in order, with details', async () => {
    const { client, flush, open, last } = setup();
    const states: StateChange[] = [];
    client.on('state', (s) => states.push(s));
    const opened: StateChange[] = [];
    client.on('open', (s) => opened.push(s));
    client.room('r');
    await open(0);
    last().serverClose(1006);
    await flush();
    await vi.advanceTimersByTimeAsync(50);
    await open(0);
    client.close();
    expect(states.map((s) => s.state)).toEqual(['connecting', 'open', 'reconnecting', 'connecting', 'open', 'closed']);
    expect(states[2]).toMatchObject({ code: 1006, delayMs: 50, attempt: 0, previous: 'open' });
    expect(opened).toHaveLength(2);
    expect(client.session).toBeNull();
  });

  it('close() then connect() resumes every room from its cursor', async () => {
    const { client, flush, open, sentFrames } = setup();
    client.room('r');
    const socket = await open(7);
    socket.deliver(event('r', 8));
    await flush();
    client.close();
    expect(client.state).toBe('closed');
    client.connect();
    await open(8);
    expect(sentFrames().filter((f) => f.type === 'subscribe').at(-1)).toEqual({ type: 'subscribe', room: 'r', cursor: 8, epoch: 'E1' });
    client.close();
  });

  it('getToken is awaited before each attempt; a failing getToken is a failed attempt', async () => {
    let calls = 0;
    const { client, ws, flush } = setup({
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw new Error('token service down');
        return `tok ${calls}`;
      },
    });
    const errors: string[] = [];
    client.on('error', (e) => errors.push(e.code));
    client.connect();
    await flush();
    expect(ws.sockets).toHaveLength(0);
    expect(errors).toEqual(['token_error']);
    expect(client.state).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(100);
    expect(ws.sockets).toHaveLength(1);
    expect(new URL(ws.sockets[0]!.url).searchParams.get('token')).toBe('tok 2');
    client.close();
  });

  it('without a WebSocket implementation the constructor throws, naming the option', () => {
    // Node 20 has no global WebSocket; make sure of it on a Node that has one.
    vi.stubGlobal('WebSocket', undefined);
    try {
      expect(() => new HubcastClient({ url: 'http://x' })).toThrow(/no WebSocket implementation.*`WebSocket` option.*'ws'/);
      expect(() => new HubcastClient({ url: 'http://x', WebSocket: undefined as never })).toThrow(TypeError);
      // An implementation passed in, or a global one, is enough.
      const ws = fakeWebSocket();
      expect(new HubcastClient({ url: 'http://x', WebSocket: ws.WebSocket, autoConnect: false }).state).toBe('idle');
      vi.stubGlobal('WebSocket', ws.WebSocket);
      expect(new HubcastClient({ url: 'http://x', autoConnect: false }).state).toBe('idle');
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('reconnect: false closes on the first drop', async () => {
    const { client, flush, open, last } = setup({ reconnect: false });
    client.room('r');
    await open(0);
    last().serverClose(1012);
    await flush();
    expect(client.state).toBe('closed');
    await vi.advanceTimersByTimeAsync(60_000);
    client.close();
  });
});

describe('publish', () => {
  it('refuses what it cannot send, locally', async () => {
    const { client } = setup({ autoConnect: false, maxEventBytes: 10, maxQueuedPublishes: 2 });
    await expect(client.publish('bad room', 1)).rejects.toMatchObject({ code: 'invalid_room' });
    await expect(client.publish('r', 'x'.repeat(20))).rejects.toMatchObject({ code: 'too_large' });
    await expect(client.publish('r', 1n as unknown)).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.publish('r', undefined)).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.publish('r', 1, { id: '' })).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.publish('r', 1, { id: 'x'.repeat(129) })).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.publish('r', 1, { expectedSeq: -1 })).rejects.toMatchObject({ code: 'bad_request' });
    const a = client.publish('r', 1);
    const b = client.publish('r', 2);
    await expect(client.publish('r', 3)).rejects.toMatchObject({ code: 'queue_full' });
    client.close();
    await expect(a).rejects.toMatchObject({ code: 'closed' });
    await expect(b).rejects.toMatchObject({ code: 'closed' });
    await expect(client.publish('r', 4)).rejects.toMatchObject({ code: 'closed' });
  });

  it('the same id twice is one publish', async () => {
    const { client, open, flush, sentFrames, last } = setup();
    const a = client.publish('r', 1, { id: 'k' });
    const b = client.publish('r', 1, { id: 'k' });
    expect(a).toBe(b);
    await open();
    expect(sentFrames().filter((f) => f.type === 'publish')).toHaveLength(1);
    last().deliver({ type: 'ack', id: 'k', room: 'r', seq: 1 });
    await flush();
    await expect(a).resolves.toEqual({ id: 'k', room: 'r', seq: 1 });
    client.close();
  });

  it('generated ids are distinct hex strings', async () => {
    const { client, open, sentFrames } = setup();
    void client.publish('r', 1).catch(() => {});
    void client.publish('r', 2).catch(() => {});
    await open();
    const ids = sentFrames().filter((f) => f.type === 'publish').map((f) => f.id as string);
    expect(ids).toHaveLength(2);
    expect(ids[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(ids[0]).not.toBe(ids[1]);
    client.close();
  });

  it('times out when asked to, and a late ack is ignored', async () => {
    const { client, open, flush, last } = setup({ publishTimeoutMs: 1000 });
    const p = client.publish('r', 1, { id: 'slow' });
    const outcome = p.catch((e: HubcastError) => e);
    await open();
    await vi.advanceTimersByTimeAsync(1000);
    expect(await outcome).toMatchObject({ code: 'timeout', id: 'slow' });
    last().deliver({ type: 'ack', id: 'slow', room: 'r', seq: 1 });
    await flush();
    expect(client.pendingPublishes).toBe(0);
    client.close();
  });

  it('publishes are paced at maxPublishesPerSecond, so a flushed offline queue stays under the server limit', async () => {
    const { client, open, flush, sentFrames, last } = setup({ maxPublishesPerSecond: 100 });
    const all = Array.from({ length: 250 }, (_, i) => client.publish('r', i, { id: `q${i}` }));
    await open();
    const published = () => sentFrames().filter((f) => f.type === 'publish').map((f) => f.id);
    expect(published()).toHaveLength(100); // one burst
    await vi.advanceTimersByTimeAsync(500);
    expect(published().length).toBeGreaterThanOrEqual(145);
    expect(published().length).toBeLessThanOrEqual(151);
    await vi.advanceTimersByTimeAsync(1100);
    expect(published()).toEqual(Array.from({ length: 250 }, (_, i) => `q${i}`)); // all, in call order
    for (let i = 0; i < 250; i++) last().deliver({ type: 'ack', id: `q${i}`, room: 'r', seq: i + 1 });
    await flush();
    expect((await Promise.all(all)).map((a) => a.seq)).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    client.close();
  });

  it('room.publish publishes to that room', async () => {
    const { client, open, flush, sentFrames, last } = setup();
    const room = client.room('r');
    const p = room.publish({ a: 1 }, { id: 'x', expectedSeq: 0 });
    await open();
    expect(sentFrames().find((f) => f.type === 'publish')).toEqual({ type: 'publish', id: 'x', room: 'r', data: { a: 1 }, expected_seq: 0 });
    last().deliver({ type: 'ack', id: 'x', room: 'r', seq: 1 });
    await flush();
    await expect(p).resolves.toMatchObject({ seq: 1 });
    client.close();
  });
});

describe('reconnect policy', () => {
  const config = { minDelayMs: 100, maxDelayMs: 1000, tryAgainLaterMs: 5000 };
  const half = () => 0.5;
  it.each([
    [1012, 0, true, 0],
    [1001, 0, true, 0],
    [1012, 1, false, 100],
    [1006, 0, true, 50],
    [1006, 3, false, 400],
    [1006, 40, false, 500],
    [4009, 0, true, 50],
    [4010, 0, true, 50],
    [1013, 0, true, 5000],
    [4008, 2, false, 5000],
  ])('close %i, attempt %i, welcomed %s: %i ms', (code, attempt, welcomed, delay) => {
    expect(decideReconnect(code, attempt, welcomed, config, half)).toEqual({ retry: true, delayMs: delay });
  });
  it.each([4001, 4003, 1008, 1009])('close %i: never', (code) => {
    expect(decideReconnect(code, 0, true, config, half)).toEqual({ retry: false });
  });
  it('full jitter stays within [0, window)', () => {
    for (const r of [0, 0.25, 0.999999]) {
      const d = decideReconnect(1006, 2, false, config, () => r);
      expect(d).toEqual({ retry: true, delayMs: Math.floor(r * 400) });
    }
  });
});

describe('types', () => {
  it('events carry the epoch and typed data', async () => {
    const { client, open, flush } = setup();
    const room = client.room<{ yes: number }>('r');
    const got: Array<HubcastEvent<{ yes: number }>> = [];
    room.on('event', (e) => got.push(e));
    const socket = await open(0, 'EP');
    socket.deliver(event('r', 1, { yes: 0.5 }));
    await flush();
    expect(got[0]!.data.yes).toBe(0.5);
    expect(got[0]!.epoch).toBe('EP');
    client.close();
  });
});
