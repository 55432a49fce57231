// Integration tests that drive the real `hubcast serve` binary with the npm
// `ws` client and Node's built-in fetch. Run with `node --test`.
//
// Every test starts its own server (own port, temp dir, hubcast.toml and
// SQLite file), and every wait has a timeout so a hang becomes a failure.
// The binary is $HUBCAST_BIN, else <repo>/target/debug/hubcast.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { FRAME_TIMEOUT, QUIET_MS, TEST_TIMEOUT, Hubcast, serverTest, sleep, withTimeout } from './server.mjs';

// ---------------------------------------------------------------------------
// client

class Client {
  constructor(url, name) {
    this.name = name;
    this.frames = [];
    this.waiters = [];
    this.closed = null;
    this.closeWaiters = [];
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });
    this.ws.on('message', (data, isBinary) => {
      this.frames.push(isBinary ? { type: '<binary>' } : JSON.parse(data.toString()));
      this.wake();
    });
    this.ws.on('error', (err) => { this.error = err; });
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
      for (const resolve of this.closeWaiters.splice(0)) resolve(this.closed);
    });
  }

  static async open(url, name = 'client') {
    const client = new Client(url, name);
    await withTimeout(new Promise((resolve, reject) => {
      client.ws.once('open', resolve);
      client.ws.once('error', reject);
    }), FRAME_TIMEOUT, `${name} to connect`);
    return client;
  }

  wake() {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  async recv(timeout = FRAME_TIMEOUT) {
    const deadline = Date.now() + timeout;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error(`${this.name}: closed (${this.closed.code}) while waiting for a frame`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no frame within ${timeout}ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.frames.shift();
  }

  async expect(fields) {
    const frame = await this.recv();
    for (const [k, v] of Object.entries(fields)) {
      assert.deepEqual(frame[k], v, `${this.name}: expected ${JSON.stringify(fields)}, got ${JSON.stringify(frame)}`);
    }
    return frame;
  }

  async welcome() {
    const frame = await this.expect({ type: 'welcome' });
    assert.equal(typeof frame.session, 'string');
    assert.equal(typeof frame.heartbeat_ms, 'number');
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj));
  }

  // Receives frames until event `seq` of `room`; returns all of them.
  async eventsThrough(room, seq) {
    const out = [];
    for (;;) {
      const frame = await this.recv();
      out.push(frame);
      if (frame.type === 'event' && frame.room === room && frame.seq >= seq) return out;
    }
  }

  async quiet(ms = QUIET_MS) {
    await sleep(ms);
    assert.deepEqual(this.frames, [], `${this.name}: unexpected frames`);
  }

  // Waits for the server's close; returns the close code.
  async closeCode(timeout = FRAME_TIMEOUT) {
    if (this.closed) return this.closed.code;
    const closed = await withTimeout(new Promise((resolve) => this.closeWaiters.push(resolve)), timeout,
      `${this.name}: server close`);
    return closed.code;
  }

  async close() {
    if (this.closed) return;
    this.ws.close();
    await this.closeCode().catch(() => this.ws.terminate());
  }
}

const seqs = (frames, room) => frames.filter((f) => f.type === 'event' && (room === undefined || f.room === room)).map((f) => f.seq);
const kinds = (frames) => frames.map((f) => f.type);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function roomSocket(server, room, name, query = '') {
  const client = await Client.open(`${server.ws}/v1/rooms/${room}/ws${query}`, name);
  await client.welcome();
  const subscribed = await client.expect({ type: 'subscribed', room });
  return { client, subscribed };
}

// ---------------------------------------------------------------------------
// tests

serverTest('live fan-out: three subscribers see every event in store order', {}, async (server) => {
  const room = 'node-fanout';
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const { client, subscribed } = await roomSocket(server, room, `sub${i}`);
    assert.equal(subscribed.head, 0);
    await client.expect({ type: 'caught_up', room, seq: 0 });
    clients.push(client);
  }
  // Two publishers race; every subscriber must see the store's order.
  const publisher = async (p) => {
    const receipts = [];
    for (let i = 0; i < 25; i++) receipts.push(await server.publishOk(room, { p, i }));
    return receipts;
  };
  const receipts = (await Promise.all([publisher(0), publisher(1)])).flat();
  const bySeq = new Map(receipts.map((r) => [r.seq, r]));
  assert.deepEqual([...bySeq.keys()].sort((a, b) => a - b), range(1, 50));
  for (const client of clients) {
    const frames = await client.eventsThrough(room, 50);
    assert.deepEqual(kinds(frames), Array(50).fill('event'));
    assert.deepEqual(seqs(frames), range(1, 50));
    assert.deepEqual(frames.map((f) => f.ts), range(1, 50).map((s) => bySeq.get(s).ts));
    for (const p of [0, 1]) {
      assert.deepEqual(frames.filter((f) => f.data.p === p).map((f) => f.data.i), range(0, 24));
    }
  }
  await Promise.all(clients.map((c) => c.quiet()));
  for (const client of clients) await client.close();
});

serverTest('replay from a cursor while publishes continue: exactly 1..N', { hub: { tail: 8 } }, async (server) => {
  const room = 'node-replay';
  const total = 300;
  const first = [];
  for (let n = 1; n <= 100; n++) first.push(await server.publishOk(room, { n }));
  const epoch = first[0].epoch;
  const publisher = async (p) => {
    const out = [];
    for (let k = 0; k < 100; k++) out.push(await server.publishOk(room, { p, k }));
    return out;
  };
  const publishing = Promise.all([publisher(0), publisher(1)]);
  const { client, subscribed } = await roomSocket(server, room, 'replayer', `?cursor=0&epoch=${epoch}`);
  assert.equal(subscribed.epoch, epoch);
  assert.ok(subscribed.head >= 100);
  const frames = await client.eventsThrough(room, total);
  const late = await publishing;
  const expected = new Map(first.map((r) => [r.seq, { n: r.seq }]));
  late.forEach((receipts, p) => receipts.forEach((r, k) => expected.set(r.seq, { p, k })));

  const ks = kinds(frames);
  assert.equal(ks.filter((k) => k === 'caught_up').length, 1, JSON.stringify(ks));
  assert.ok(!ks.includes('reset'));
  assert.deepEqual(seqs(frames), range(1, total));
  const cut = ks.indexOf('caught_up');
  assert.equal(frames[cut].seq, cut, 'caught_up names the last replayed seq');
  assert.ok(frames[cut].seq >= subscribed.head);
  assert.deepEqual(frames.filter((f) => f.type === 'event').map((f) => f.data), range(1, total).map((s) => expected.get(s)));
  await client.quiet();
  await client.close();
});

serverTest('multiplexed subscribe and unsubscribe on /v1/ws', {}, async (server) => {
  await server.publishOk('node-mux-b', { b: 1 });
  await server.publishOk('node-mux-b', { b: 2 });
  const client = await Client.open(`${server.ws}/v1/ws`, 'mux');
  await client.welcome();
  client.send({ type: 'subscribe', room: 'node-mux-a' });
  await client.expect({ type: 'subscribed', room: 'node-mux-a', head: 0 });
  await client.expect({ type: 'caught_up', room: 'node-mux-a', seq: 0 });
  client.send({ type: 'subscribe', room: 'node-mux-b', rewind: 1 });
  await client.expect({ type: 'subscribed', room: 'node-mux-b', head: 2 });
  await client.expect({ type: 'event', room: 'node-mux-b', seq: 2, data: { b: 2 } });
  await client.expect({ type: 'caught_up', room: 'node-mux-b', seq: 2 });

  for (let n = 1; n <= 10; n++) {
    await server.publishOk('node-mux-a', { a: n });
    await server.publishOk('node-mux-b', { b: n + 2 });
  }
  const frames = [];
  while (seqs(frames, 'node-mux-a').length < 10 || seqs(frames, 'node-mux-b').length < 10) frames.push(await client.recv());
  assert.deepEqual(kinds(frames), Array(20).fill('event'));
  assert.deepEqual(seqs(frames, 'node-mux-a'), range(1, 10));
  assert.deepEqual(seqs(frames, 'node-mux-b'), range(3, 12));

  client.send({ type: 'unsubscribe', room: 'node-mux-a' });
  await client.expect({ type: 'unsubscribed', room: 'node-mux-a' });
  client.send({ type: 'unsubscribe', room: 'node-mux-a' });
  await client.expect({ type: 'error', code: 'not_subscribed', room: 'node-mux-a' });
  client.send({ type: 'subscribe', room: 'node-mux-b' });
  await client.expect({ type: 'error', code: 'already_subscribed', room: 'node-mux-b' });

  await server.publishOk('node-mux-a', { a: 11 });
  await server.publishOk('node-mux-b', { b: 13 });
  await client.expect({ type: 'event', room: 'node-mux-b', seq: 13, data: { b: 13 } });
  client.send({ type: 'ping' });
  assert.deepEqual(await client.recv(), { type: 'pong' });
  await client.quiet();
  await client.close();
});

serverTest('publish over the socket: ack, and a retry with the same id gets the same seq', {}, async (server) => {
  const room = 'node-wspub';
  const { client: watcher } = await roomSocket(server, room, 'watcher');
  await watcher.expect({ type: 'caught_up', room, seq: 0 });

  const pub = await Client.open(`${server.ws}/v1/ws`, 'publisher');
  await pub.welcome();
  pub.send({ type: 'publish', id: 'order-1', room, data: { qty: 1 } });
  assert.deepEqual(await pub.recv(), { type: 'ack', id: 'order-1', room, seq: 1 });
  pub.send({ type: 'publish', id: 'order-2', room, data: { qty: 2 } });
  assert.deepEqual(await pub.recv(), { type: 'ack', id: 'order-2', room, seq: 2 });
  pub.send({ type: 'publish', id: 'order-1', room, data: { qty: 1 } });
  assert.deepEqual(await pub.recv(), { type: 'ack', id: 'order-1', room, seq: 1 });
  await pub.close();

  // A retry after reconnecting is deduplicated too.
  const again = await Client.open(`${server.ws}/v1/ws`, 'publisher-again');
  await again.welcome();
  again.send({ type: 'publish', id: 'order-2', room, data: { qty: 2 } });
  assert.deepEqual(await again.recv(), { type: 'ack', id: 'order-2', room, seq: 2 });
  again.send({ type: 'publish', id: 'order-3', room, data: { qty: 3 }, expected_seq: 1 });
  await again.expect({ type: 'error', code: 'conflict', id: 'order-3', room, head: 2 });
  again.send({ type: 'publish', id: 'order-3', room, data: { qty: 3 }, expected_seq: 2 });
  assert.deepEqual(await again.recv(), { type: 'ack', id: 'order-3', room, seq: 3 });
  await again.close();

  const frames = await watcher.eventsThrough(room, 3);
  assert.deepEqual(frames.map((f) => [f.seq, f.data]), [[1, { qty: 1 }], [2, { qty: 2 }], [3, { qty: 3 }]]);
  await watcher.quiet();
  const history = await server.get(`/v1/rooms/${room}/events`);
  assert.deepEqual(history.body.events.map((e) => e.seq), [1, 2, 3]);
  await watcher.close();
});

serverTest('bad input on one session; another session on the room keeps receiving', {}, async (server) => {
  const room = 'node-bad';
  const { client: watcher } = await roomSocket(server, room, 'watcher');
  await watcher.expect({ type: 'caught_up', room, seq: 0 });
  let published = 0;
  const publish = async () => {
    published += 1;
    const receipt = await server.publishOk(room, { n: published });
    assert.equal(receipt.seq, published);
  };

  const bad = await Client.open(`${server.ws}/v1/ws`, 'bad');
  await bad.welcome();
  await publish();
  bad.send('{"type": "subscribe", "room": ');
  const err = await bad.expect({ type: 'error', code: 'invalid_json' });
  assert.ok(err.message);
  await publish();
  bad.send('not json at all');
  await bad.expect({ type: 'error', code: 'invalid_json' });
  bad.send({ type: 'teleport', id: 't1' });
  await bad.expect({ type: 'error', code: 'unknown_type', id: 't1' });
  bad.send({ type: 'unsubscribe' });
  await bad.expect({ type: 'error', code: 'bad_request' });
  bad.send({ type: 'subscribe', room: 'no/slashes' });
  await bad.expect({ type: 'error', code: 'invalid_room' });
  await publish();
  bad.send({ type: 'ping' });
  assert.deepEqual(await bad.recv(), { type: 'pong' });
  bad.send(Buffer.from([1, 2, 3]));
  assert.equal(await bad.closeCode(), 1008);
  await publish();

  const frames = await watcher.eventsThrough(room, published);
  assert.deepEqual(kinds(frames), Array(published).fill('event'));
  assert.deepEqual(seqs(frames), range(1, published));
  assert.deepEqual(frames.map((f) => f.data), range(1, published).map((n) => ({ n })));
  await watcher.quiet();
  assert.equal((await server.get('/healthz')).status, 200);
  await watcher.close();
});

serverTest('slow consumer is cut with 4009 and resumes from its cursor with exactly the rest',
  { limits: { outbound_queue: 16 }, hub: { tail: 8 } }, async (server) => {
    const room = 'node-slow';
    const big = 'x'.repeat(100_000);
    const { client: slow, subscribed } = await roomSocket(server, room, 'slow');
    await slow.expect({ type: 'caught_up', room, seq: 0 });
    const { client: fast } = await roomSocket(server, room, 'fast');
    await fast.expect({ type: 'caught_up', room, seq: 0 });

    // Stop reading: the kernel buffers fill, then the server's queue, then the
    // hub cuts the session instead of waiting for it.
    slow.ws._socket.pause();
    let published = 0;
    let cut = false;
    while (!cut) {
      assert.ok(published < 1500, 'the server never cut the paused client');
      published += 1;
      await server.publishOk(room, { n: published, pad: big });
      const stats = await server.get(`/v1/rooms/${room}`);
      cut = stats.body.subscribers === 1;
    }
    // Events published after the cut are for the resume to fetch.
    for (let i = 0; i < 5; i++) {
      published += 1;
      await server.publishOk(room, { n: published, pad: big });
    }
    slow.ws._socket.resume();
    const code = await slow.closeCode(30_000);
    assert.equal(code, 4009, `close code ${code} (${slow.closed.reason})`);
    const before = slow.frames.splice(0);
    assert.ok(before.every((f) => f.type === 'event'), JSON.stringify(kinds(before)));
    const got = seqs(before);
    assert.ok(got.length < published, 'the slow client was cut before it got everything');
    assert.deepEqual(got, range(1, got.length), 'what arrived before the cut is a gapless prefix');
    const cursor = got.length;

    const { client: resumed, subscribed: again } = await roomSocket(server, room, 'resumed',
      `?cursor=${cursor}&epoch=${subscribed.epoch}`);
    assert.equal(again.head, published);
    const frames = [];
    while (frames.length === 0 || frames.at(-1).type !== 'caught_up') frames.push(await resumed.recv(30_000));
    assert.deepEqual(seqs(frames), range(cursor + 1, published));
    assert.equal(frames.at(-1).seq, published);
    assert.deepEqual(frames.filter((f) => f.type === 'event').map((f) => f.data.n), range(cursor + 1, published));
    assert.deepEqual([...got, ...seqs(frames)], range(1, published));

    // The subscriber that kept reading was never disturbed.
    const fastFrames = await fast.eventsThrough(room, published);
    assert.deepEqual(kinds(fastFrames), Array(published).fill('event'));
    assert.deepEqual(seqs(fastFrames), range(1, published));
    await resumed.close();
    await fast.close();
  });

// ---------------------------------------------------------------------------
// reliability findings: close codes must reach the client

serverTest('a close during replay is answered with 1000 and frees the session', { hub: { tail: 16 }, limits: { outbound_queue: 64 } }, async (server) => {
  const room = 'node-close-replay';
  const pad = 'x'.repeat(1000);
  for (let start = 1; start <= 3000; start += 50) {
    await Promise.all(range(start, start + 49).map((i) => server.publishOk(room, { i, pad })));
  }
  const { client } = await roomSocket(server, room, 'replayer', '?cursor=0');
  for (let i = 0; i < 100; i++) assert.equal((await client.recv()).type, 'event');
  client.ws.close(1000);
  assert.equal(await client.closeCode(), 1000, 'the server answered the close');
  const { client: again } = await roomSocket(server, room, 'again', '?cursor=2990');
  assert.deepEqual(seqs(await again.eventsThrough(room, 3000)), range(2991, 3000));
  await again.close();
});

serverTest('a 4008 close reaches a client that is still sending', { rate_limits: { messages_per_session_per_second: 5 } }, async (server) => {
  const client = await Client.open(`${server.ws}/v1/ws`, 'flooder');
  await client.welcome();
  for (let i = 0; i < 2000 && client.ws.readyState === WebSocket.OPEN; i++) client.send({ type: 'ping' });
  assert.equal(await client.closeCode(), 4008, 'the rate-limit close code, not 1006 from a reset');
});
