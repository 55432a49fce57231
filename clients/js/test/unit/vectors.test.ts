/**
 * Runs every case of clients/test-vectors/*.json (format: clients/test-vectors/README.md)
 * against the client with a fake socket, a fake history route and fake timers.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HubcastClient, HubcastError, type HubcastClientOptions, type Room } from '../../src/index.js';
import { type FakeSocket, fakeFetch, fakeWebSocket } from './fakes.js';

const vectorsDir = join(dirname(fileURLToPath(import.meta.url)), '../../../test-vectors');

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Step = Record<string, Json>;

interface Case {
  name: string;
  description?: string;
  config?: Record<string, Json>;
  steps: Step[];
}

interface VectorFile {
  format: string;
  description: string;
  cases: Case[];
}

const files = readdirSync(vectorsDir)
  .filter((f) => f.endsWith('.json'))
  .sort();

/** `actual` has every member of `expected` with an equal value; `null` expected members must be absent or null. */
function assertSubset(actual: unknown, expected: Json, where: string): void {
  if (expected !== null && typeof expected === 'object' && !Array.isArray(expected)) {
    expect(actual, where).toBeTypeOf('object');
    expect(actual, where).not.toBeNull();
    const a = actual as Record<string, unknown>;
    for (const [key, value] of Object.entries(expected)) {
      if (value === null) expect(a[key] ?? null, `${where}.${key}`).toBeNull();
      else expect(a[key], `${where}.${key}`).toEqual(value);
    }
  } else {
    expect(actual, where).toEqual(expected);
  }
}

function buildOptions(config: Record<string, Json> | undefined, ws: unknown, fetch: unknown): HubcastClientOptions {
  const c = config ?? {};
  const reconnect = (c.reconnect ?? { min_delay_ms: 100, max_delay_ms: 1000, try_again_later_ms: 5000 }) as Record<string, number> | null;
  const heartbeat = (c.heartbeat ?? null) as Record<string, number> | null;
  const jitter = (c.jitter ?? 0.5) as number;
  const tokens = c.token === undefined || c.token === null ? null : Array.isArray(c.token) ? (c.token as string[]) : [c.token as string];
  const options: HubcastClientOptions = {
    url: 'http://hubcast.test:8787',
    WebSocket: ws as HubcastClientOptions['WebSocket'] & object,
    fetch: fetch as HubcastClientOptions['fetch'] & object,
    random: () => jitter,
    reconnect:
      reconnect === null
        ? false
        : {
            minDelayMs: reconnect.min_delay_ms ?? 100,
            maxDelayMs: reconnect.max_delay_ms ?? 1000,
            tryAgainLaterMs: reconnect.try_again_later_ms ?? 5000,
          },
    heartbeat: heartbeat === null ? false : { intervalMs: heartbeat.interval_ms, timeoutMs: heartbeat.timeout_ms },
    connectTimeoutMs: (c.connect_timeout_ms ?? 0) as number,
    reconcileMs: (c.reconcile_ms ?? 0) as number,
    historyPageSize: (c.history_page_size ?? 1000) as number,
    historyTimeoutMs: 0,
  };
  if (tokens !== null) {
    // Each call returns the next token of the list; the last one repeats.
    let calls = 0;
    options.getToken = async () => tokens[Math.min(calls++, tokens.length - 1)] as string;
  }
  if (c.send_token_as === 'message') options.sendTokenAs = 'message';
  return options;
}

async function runCase(testCase: Case): Promise<void> {
  const { WebSocket, sockets, sent } = fakeWebSocket();
  const { fetch, requests } = fakeFetch();
  const client = new HubcastClient(buildOptions(testCase.config, WebSocket, fetch));
  const outcomes: Array<Record<string, unknown>> = [];
  const rooms = new Map<string, Room>();
  let sentRead = 0;
  let requestsRead = 0;
  let attemptsSeen = 0;
  let pending: FakeSocket | null = null;

  client.on('error', (err) => {
    const e: Record<string, unknown> = { code: err.code };
    if (err.closeCode !== undefined) e.close_code = err.closeCode;
    if (err.room !== undefined) e.room = err.room;
    outcomes.push({ error: e });
  });

  const flush = () => vi.advanceTimersByTimeAsync(0);
  const newAttempts = () => sockets.length - attemptsSeen;
  const takeAttempt = (where: string, query: Json | undefined) => {
    expect(newAttempts(), `${where}: one new connection attempt`).toBe(1);
    const socket = sockets[attemptsSeen++] as FakeSocket;
    const url = new URL(socket.url);
    expect(url.pathname, `${where}: path`).toBe('/v1/ws');
    if (query && typeof query === 'object' && !Array.isArray(query)) {
      for (const [key, value] of Object.entries(query)) {
        expect(url.searchParams.get(key), `${where}: query ${key}`).toBe(value === null ? null : String(value));
      }
    }
    pending = socket;
  };
  const current = (where: string): FakeSocket => {
    if (!pending) throw new Error(`${where}: there is no connection`);
    return pending;
  };

  for (const [index, step] of testCase.steps.entries()) {
    const key = Object.keys(step).find((k) => k !== 'respond') as string;
    const arg = step[key] as Json;
    const where = `step ${index} (${key})`;
    switch (key) {
      case 'subscribe': {
        const a = arg as { room: string; cursor?: { epoch?: string; seq: number }; rewind?: number; presence?: boolean };
        const options: { cursor?: { epoch?: string | null; seq: number }; rewind?: number; presence?: boolean } = {};
        if (a.presence) options.presence = true;
        if (a.cursor) options.cursor = { epoch: a.cursor.epoch ?? null, seq: a.cursor.seq };
        if (a.rewind !== undefined) options.rewind = a.rewind;
        const room = client.room(a.room, options);
        rooms.set(a.room, room);
        room.on('event', (e) => outcomes.push({ event: { room: e.room, seq: e.seq, ts: e.ts, data: e.data } }));
        room.on('reset', (r) => outcomes.push({ reset: { room: r.room, epoch: r.epoch, earliest: r.earliest, head: r.head } }));
        room.on('presence', (p) => outcomes.push({ presence: { room: p.room, members: p.members } }));
        room.on('join', (c) => outcomes.push({ join: { room: c.room, member: c.member, members: c.members } }));
        room.on('leave', (c) => outcomes.push({ leave: { room: c.room, member: c.member, members: c.members } }));
        break;
      }
      case 'request_presence': {
        const name = (arg as { room: string }).room;
        client.presence(name).then(
          (members) => outcomes.push({ presence_result: { room: name, members } }),
          (err: HubcastError) => outcomes.push({ presence_error: { room: err.room, code: err.code } }),
        );
        break;
      }
      case 'unsubscribe':
        rooms.get((arg as { room: string }).room)?.unsubscribe();
        break;
      case 'publish': {
        const a = arg as { id: string; room: string; data: Json; expected_seq?: number };
        const options: { id: string; expectedSeq?: number } = { id: a.id };
        if (a.expected_seq !== undefined) options.expectedSeq = a.expected_seq;
        client.publish(a.room, a.data, options).then(
          (ack) => outcomes.push({ ack: { id: ack.id, room: ack.room, seq: ack.seq } }),
          (err: HubcastError) => {
            const e: Record<string, unknown> = { id: err.id, code: err.code };
            if (err.head !== undefined) e.head = err.head;
            outcomes.push({ publish_error: e });
          },
        );
        break;
      }
      case 'close_client':
        client.close();
        break;
      case 'advance_ms':
        await vi.advanceTimersByTimeAsync(arg as number);
        break;
      case 'accept':
        current(where).accept();
        break;
      case 'refuse':
        current(where).refuse();
        break;
      case 'server':
        current(where).deliver(arg);
        break;
      case 'server_raw':
        current(where).deliver(arg as string);
        break;
      case 'server_close': {
        const a = arg as { code: number; reason?: string };
        current(where).serverClose(a.code, a.reason ?? '');
        break;
      }
      case 'expect_connect':
        await flush();
        takeAttempt(where, (arg as { query?: Json }).query);
        break;
      case 'expect_reconnect': {
        const a = arg as { delay_ms: number; query?: Json };
        await flush();
        if (a.delay_ms > 0) {
          await vi.advanceTimersByTimeAsync(a.delay_ms - 1);
          expect(newAttempts(), `${where}: no attempt before ${a.delay_ms} ms`).toBe(0);
          await vi.advanceTimersByTimeAsync(1);
        }
        takeAttempt(where, a.query);
        break;
      }
      case 'expect_no_reconnect':
        await vi.advanceTimersByTimeAsync(60_000);
        expect(newAttempts(), `${where}: no new attempt`).toBe(0);
        expect(client.state, `${where}: state`).toBe('closed');
        break;
      case 'expect_sent': {
        await flush();
        const frame = sent[sentRead++];
        expect(frame, `${where}: a frame was sent`).toBeDefined();
        assertSubset(JSON.parse((frame as { text: string }).text), arg, where);
        break;
      }
      case 'expect_nothing_sent':
        await flush();
        expect(sent.slice(sentRead).map((f) => f.text), where).toEqual([]);
        break;
      case 'expect_http': {
        await flush();
        const a = arg as { room: string; after: number; authorization?: string | null };
        const request = requests[requestsRead++];
        expect(request, `${where}: a history request was made`).toBeDefined();
        const url = (request as { url: URL }).url;
        expect(url.pathname, `${where}: path`).toBe(`/v1/rooms/${a.room}/events`);
        expect(url.searchParams.get('after'), `${where}: after`).toBe(String(a.after));
        const limit = Number(url.searchParams.get('limit'));
        expect(Number.isInteger(limit) && limit >= 1, `${where}: limit ${limit} >= 1`).toBe(true);
        if ('authorization' in a) {
          const headers = (request as { headers: Record<string, string> }).headers;
          const auth = Object.entries(headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1] ?? null;
          expect(auth, `${where}: Authorization header`).toBe(a.authorization);
        }
        const respond = step.respond as { status?: number; body?: Json; network_error?: boolean };
        if (respond.network_error) request!.fail();
        else request!.respond(respond.status ?? 200, respond.body ?? null);
        break;
      }
      case 'expect': {
        await flush();
        const expected = arg as Array<Record<string, Json>>;
        const seen = outcomes.splice(0) as Array<Record<string, unknown>>;
        const what = `${where}: outcomes ${JSON.stringify(seen)}`;
        expect(seen.length, what).toBe(expected.length);
        // Events and resets: in exactly this order. Errors, acks and publish errors: all of
        // them, in any order (their order relative to each other is not part of the contract).
        const ordered = (o: Record<string, unknown>) =>
          'event' in o || 'reset' in o || 'presence' in o || 'join' in o || 'leave' in o;
        const seenOrdered = seen.filter(ordered);
        const wantOrdered = expected.filter(ordered);
        expect(seenOrdered.length, what).toBe(wantOrdered.length);
        wantOrdered.forEach((want, i) => {
          const kind = Object.keys(want)[0] as string;
          const got = seenOrdered[i] as Record<string, unknown>;
          expect(Object.keys(got)[0], `${what}: #${i} kind`).toBe(kind);
          assertSubset(got[kind], want[kind] as Json, `${what}: #${i}`);
        });
        const rest = seen.filter((o) => !ordered(o));
        for (const want of expected.filter((o) => !ordered(o))) {
          const kind = Object.keys(want)[0] as string;
          const at = rest.findIndex((got) => {
            if (!(kind in got)) return false;
            try {
              assertSubset(got[kind], want[kind] as Json, where);
              return true;
            } catch {
              return false;
            }
          });
          expect(at, `${what}: no outcome matches ${JSON.stringify(want)}`).toBeGreaterThanOrEqual(0);
          rest.splice(at, 1);
        }
        break;
      }
      case 'expect_cursor': {
        await flush();
        const a = arg as { room: string; epoch?: string; seq?: number; cursor?: null };
        const room = rooms.get(a.room);
        expect(room, `${where}: room ${a.room}`).toBeDefined();
        if ('cursor' in a) expect(room!.cursor, where).toBeNull();
        else expect(room!.cursor, where).toEqual({ epoch: a.epoch, seq: a.seq });
        break;
      }
      case 'expect_members': {
        await flush();
        const a = arg as { room: string; members: Json };
        const room = rooms.get(a.room);
        expect(room, `${where}: room ${a.room}`).toBeDefined();
        expect(room!.members, where).toEqual(a.members);
        break;
      }
      case 'expect_state':
        await flush();
        expect(client.state, where).toBe(arg);
        break;
      default:
        throw new Error(`${where}: unknown step`);
    }
    await flush();
  }
  await flush();
  expect(outcomes, 'outcomes nobody expected').toEqual([]);
  expect(sent.slice(sentRead).map((f) => f.text), 'frames sent that no step expected').toEqual([]);
  expect(requests.length - requestsRead, 'history requests no step expected').toBe(0);
  client.close();
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'], now: 0 });
});

afterEach(() => {
  vi.useRealTimers();
});

it('finds the shared vectors', () => {
  expect(files.length).toBeGreaterThan(0);
});

for (const file of files) {
  const vectors = JSON.parse(readFileSync(join(vectorsDir, file), 'utf8')) as VectorFile;
  describe(`${file}: ${vectors.description}`, () => {
    it('has the right format', () => {
      expect(vectors.format).toBe('hubcast-client-vectors/1');
      expect(vectors.cases.length).toBeGreaterThan(0);
      const names = vectors.cases.map((c) => c.name);
      expect(new Set(names).size, 'case names are unique').toBe(names.length);
    });
    for (const testCase of vectors.cases) {
      it(testCase.name, () => runCase(testCase));
    }
  });
}
