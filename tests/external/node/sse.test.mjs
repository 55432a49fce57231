// Server-Sent Events with the npm `eventsource` package (a WHATWG EventSource
// for Node): a two-room stream that survives a `kill -9` and restart of the
// server by reconnecting on its own with `Last-Event-ID`, and ends with
// exactly 1..N in each room; a refused stream fails without reconnecting.

import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { serverTest, sleep, withTimeout } from './server.mjs';

/** Collects an EventSource's `message` events by room, and its reconnects. */
function follow(url, init) {
  const es = new EventSource(url, init);
  const seen = new Map();
  const state = { opens: 0, errors: 0, es, seen, events: 0 };
  es.addEventListener('open', () => { state.opens += 1; });
  es.addEventListener('error', () => { state.errors += 1; });
  es.addEventListener('message', (message) => {
    const event = JSON.parse(message.data);
    assert.equal(event.type, 'event');
    if (!seen.has(event.room)) seen.set(event.room, []);
    seen.get(event.room).push(event.seq);
    state.lastId = message.lastEventId;
    state.events += 1;
  });
  return state;
}

async function until(what, check) {
  await withTimeout((async () => { while (!check()) await sleep(20); })(), 30_000, what);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

serverTest('eventsource: a two-room stream resumes across kill -9 with exactly 1..N', { sse: { retry_ms: 200 } }, async (server) => {
  for (let i = 1; i <= 10; i++) await server.publishOk('node-a', { i });
  for (let i = 1; i <= 5; i++) await server.publishOk('node-b', { i });
  const stream = follow(`${server.http}/v1/sse?room=node-a&room=node-b&cursor=0`);
  try {
    await until('the replay of both rooms', () => stream.seen.get('node-a')?.length === 10 && stream.seen.get('node-b')?.length === 5);
    await server.kill9();
    await server.start(server.port);
    for (let i = 11; i <= 20; i++) await server.publishOk('node-a', { i });
    for (let i = 6; i <= 15; i++) await server.publishOk('node-b', { i });
    await until('both rooms after the restart', () => stream.seen.get('node-a')?.length >= 20 && stream.seen.get('node-b')?.length >= 15);
    await sleep(300); // nothing more (no duplicate) arrives
    assert.deepEqual(stream.seen.get('node-a'), range(1, 20));
    assert.deepEqual(stream.seen.get('node-b'), range(1, 15));
    assert.ok(stream.opens >= 2, `reconnected by itself (${stream.opens} opens)`);
    assert.match(stream.lastId, /^[0-9a-f]+,[0-9a-f]+\/20,15\.1$/);
  } finally {
    stream.es.close();
  }
});

serverTest('eventsource: reset and caught_up are named events; Last-Event-ID set by the client wins', {}, async (server) => {
  for (let i = 1; i <= 3; i++) await server.publishOk('node-r', { i });
  const es = new EventSource(`${server.http}/v1/rooms/node-r/sse?cursor=1&epoch=gone`);
  const named = [];
  for (const name of ['subscribed', 'reset', 'caught_up']) {
    es.addEventListener(name, (message) => named.push([name, JSON.parse(message.data), message.lastEventId]));
  }
  try {
    await until('reset then caught_up', () => named.length === 3);
    assert.deepEqual(named.map(([name]) => name), ['subscribed', 'reset', 'caught_up']);
    assert.equal(named[2][2], `${named[0][1].epoch}/3`);
  } finally {
    es.close();
  }
  // A client-set Last-Event-ID (through the package's fetch hook) beats the URL's cursor.
  const { epoch } = (await server.get('/v1/rooms/node-r')).body;
  const resumed = follow(`${server.http}/v1/rooms/node-r/sse?cursor=0`, {
    fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, 'Last-Event-ID': `${epoch}/2` } }),
  });
  try {
    await until('the event after the id', () => resumed.events >= 1);
    await sleep(200);
    assert.deepEqual(resumed.seen.get('node-r'), [3]);
  } finally {
    resumed.es.close();
  }
});

serverTest('eventsource: a refused stream (403) fails and does not reconnect', {
  auth: { allowed_origins: ['https://app.example'] },
}, async (server) => {
  const es = new EventSource(`${server.http}/v1/rooms/node-x/sse`, {
    fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, Origin: 'https://evil.example' } }),
  });
  const failed = new Promise((resolve) => es.addEventListener('error', (err) => resolve(err)));
  const err = await withTimeout(failed, 10_000, 'the refusal');
  assert.equal(err.code, 403);
  assert.equal(es.readyState, EventSource.CLOSED);
});
