/**
 * Property: under random disconnects (every close code the client must
 * survive), refused connections, frozen sockets, lost/duplicated/reordered
 * live frames, lost acks, failing history reads and short pages, the client
 * never delivers a duplicate or an out-of-order event, never skips one
 * (except across an explicit reset), ends with every event of every room,
 * and every publish is appended exactly once and acknowledged with its seq.
 *
 * Many seeds; PROPERTY_SEEDS=N runs more (or fewer).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HubcastClient, type HubcastError } from '../../src/index.js';
import { type Chaos, mulberry32, NO_CHAOS, SimServer, type SimSocket } from './sim-server.js';

const SEEDS = Number(process.env.PROPERTY_SEEDS ?? 150);
const ROOMS = ['a', 'b', 'c'];
const CLOSE_CODES = [1006, 1012, 1001, 4009, 4010, 1011, 1000, 1013, 4008];

interface Violation {
  seed: number;
  what: string;
}

interface RunOptions {
  seed: number;
  /** Prune logs now and then, so some resumes get a reset. */
  retention: boolean;
  steps: number;
}

async function runSeed({ seed, retention, steps }: RunOptions): Promise<Violation[]> {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const server = new SimServer(mulberry32(seed ^ 0x9e3779b9));
  const chaos: Chaos = {
    dropLive: rnd() * 0.2,
    duplicateLive: rnd() * 0.2,
    reorderLive: rnd() * 0.2,
    dropAck: rnd() * 0.3,
    storeUnavailable: rnd() * 0.2,
    refuse: rnd() * 0.4,
    historyFailure: rnd() * 0.4,
    shortPage: rnd() * 0.5,
  };
  server.chaos = chaos;
  const useHeartbeat = rnd() < 0.6;
  const reconcileMs = rnd() < 0.5 ? 200 + Math.floor(rnd() * 800) : 0;
  const client = new HubcastClient({
    url: 'http://sim.test',
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    random: mulberry32(seed + 1),
    reconnect: { minDelayMs: 10, maxDelayMs: 400, tryAgainLaterMs: 300 },
    heartbeat: useHeartbeat ? { intervalMs: 300, timeoutMs: 200 } : false,
    connectTimeoutMs: 2000,
    reconcileMs,
    historyPageSize: 1 + Math.floor(rnd() * 20),
  });
  const violations: Violation[] = [];
  const fail = (what: string) => violations.push({ seed, what });

  // What the application sees, per room.
  const next = new Map<string, number>(); // the seq the next event must have
  const seen = new Map<string, number[]>();
  for (const name of ROOMS) {
    next.set(name, 1);
    seen.set(name, []);
    const room = client.room(name, { cursor: { epoch: `E-${name}`, seq: 0 } });
    room.on('event', (e) => {
      const want = next.get(name) as number;
      if (e.seq !== want) fail(`room ${name}: got seq ${e.seq}, expected ${want}`);
      next.set(name, e.seq + 1);
      seen.get(name)!.push(e.seq);
      if (JSON.stringify(e.data) !== JSON.stringify(expectedData.get(`${name}/${e.seq}`))) {
        fail(`room ${name}: seq ${e.seq} carries ${JSON.stringify(e.data)}`);
      }
    });
    room.on('reset', (r) => {
      if (!retention) fail(`room ${name}: unexpected reset ${JSON.stringify(r)}`);
      const had = (next.get(name) as number) - 1;
      if (r.previous && r.previous.seq !== had) fail(`room ${name}: reset previous ${r.previous.seq} but delivered through ${had}`);
      if (r.earliest !== null && had + 1 >= r.earliest) fail(`room ${name}: reset although ${had + 1} was retained (earliest ${r.earliest})`);
      next.set(name, r.head + 1);
    });
  }
  // The data every (room, seq) must carry.
  const expectedData = new Map<string, unknown>();
  server.onAppend = (name, seq, data) => expectedData.set(`${name}/${seq}`, data);
  const appendExternal = (name: string) => {
    server.append(name, { n: Math.floor(rnd() * 1e9) });
  };

  // Publishes through the SDK.
  const publishes: Array<{ id: string; room: string; data: unknown; result?: { seq: number } | { error: string } }> = [];
  const sdkPublish = (name: string) => {
    const data = { p: publishes.length };
    const entry: (typeof publishes)[number] = { id: `pub-${seed}-${publishes.length}`, room: name, data };
    publishes.push(entry);
    client.publish(name, data, { id: entry.id }).then(
      (ack) => {
        if (entry.result) fail(`publish ${entry.id} settled twice`);
        entry.result = { seq: ack.seq };
      },
      (err: HubcastError) => {
        if (entry.result) fail(`publish ${entry.id} settled twice`);
        entry.result = { error: err.code };
      },
    );
  };
  const liveSocket = (): SimSocket | undefined => [...server.sockets].find((s) => s.readyState === 1 && !s.frozen);

  for (let step = 0; step < steps; step++) {
    const action = rnd();
    if (action < 0.45) {
      appendExternal(pick(ROOMS));
    } else if (action < 0.6) {
      sdkPublish(pick(ROOMS));
    } else if (action < 0.68) {
      liveSocket()?.serverClose(pick(CLOSE_CODES));
    } else if (action < 0.7 && useHeartbeat) {
      const socket = liveSocket();
      if (socket) socket.frozen = true; // a dead connection: only the heartbeat can tell
    } else if (action < 0.72 && retention) {
      // Events the client misses while away, pruned before it comes back: its resume gets a reset.
      liveSocket()?.serverClose(1006);
      const name = pick(ROOMS);
      for (let i = 0, n = 1 + Math.floor(rnd() * 5); i < n; i++) appendExternal(name);
      server.prune(name, server.room(name).head + 1 - Math.floor(rnd() * 2));
    } else if (action < 0.75 && retention) {
      const name = pick(ROOMS);
      const room = server.room(name);
      server.prune(name, room.earliest + Math.floor(rnd() * (room.head - room.earliest + 2)));
    }
    await vi.advanceTimersByTimeAsync(Math.floor(rnd() * 60));
  }

  // Calm: no more chaos, one clean restart (1012), then let everything settle.
  server.chaos = NO_CHAOS;
  for (const socket of [...server.sockets]) socket.serverClose(1012);
  for (let i = 0; i < 200; i++) {
    await vi.advanceTimersByTimeAsync(100);
    const done =
      client.state === 'open' &&
      ROOMS.every((name) => next.get(name) === server.room(name).head + 1) &&
      publishes.every((p) => p.result !== undefined);
    if (done) break;
  }

  for (const name of ROOMS) {
    const head = server.room(name).head;
    if (next.get(name) !== head + 1) fail(`room ${name}: delivered through ${(next.get(name) as number) - 1}, head is ${head}`);
    const seqs = seen.get(name)!;
    if (new Set(seqs).size !== seqs.length && !retention) fail(`room ${name}: a seq was delivered twice`);
  }
  for (const p of publishes) {
    if (!p.result) {
      fail(`publish ${p.id} never settled`);
      continue;
    }
    if ('error' in p.result) {
      fail(`publish ${p.id} failed with ${p.result.error}`);
      continue;
    }
    const room = server.room(p.room);
    const copies = room.events.filter((e) => e.id === p.id);
    const retained = p.result.seq >= room.earliest;
    if (retained && (copies.length !== 1 || copies[0]!.seq !== p.result.seq)) {
      fail(`publish ${p.id}: acked seq ${p.result.seq}, in the log ${copies.length} time(s)`);
    }
  }
  // No publish id appended twice (while retained).
  for (const [name, room] of server.rooms) {
    const ids = room.events.filter((e) => e.id !== undefined).map((e) => e.id);
    if (new Set(ids).size !== ids.length) fail(`room ${name}: a publish id was appended twice`);
  }
  if (process.env.PROPERTY_DEBUG) {
    const stats = ROOMS.map((n) => client.room(n).stats);
    console.log(seed, JSON.stringify({ heads: ROOMS.map((n) => server.room(n).head), connections: server.connections, publishes: publishes.length, stats }));
  }
  client.close();
  return violations;
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'], now: 0 });
});

afterEach(() => {
  vi.useRealTimers();
});

describe('property: no duplicate, no out-of-order, no silent gap under random disconnects', () => {
  it(`${SEEDS} seeds without retention: every room delivers exactly 1..head`, async () => {
    const violations: Violation[] = [];
    for (let seed = 1; seed <= SEEDS; seed++) {
      violations.push(...(await runSeed({ seed, retention: false, steps: 250 })));
      if (violations.length > 0) break;
    }
    expect(violations).toEqual([]);
  }, 120_000);

  it(`${SEEDS} seeds with retention pruning: consecutive between explicit resets, and resets only when needed`, async () => {
    const violations: Violation[] = [];
    for (let seed = 10_001; seed <= 10_000 + SEEDS; seed++) {
      violations.push(...(await runSeed({ seed, retention: true, steps: 250 })));
      if (violations.length > 0) break;
    }
    expect(violations).toEqual([]);
  }, 120_000);
});
