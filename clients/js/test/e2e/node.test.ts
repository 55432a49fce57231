/**
 * The built package (dist/) on Node with the npm `ws` WebSocket (Node 20 has
 * no global WebSocket) against the real server: subscribe with rewind,
 * publish with acks, a graceful restart in the middle, gapless delivery.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort, HubcastServer, publishWithRetry, waitFor } from './support.js';

const dist = join(dirname(fileURLToPath(import.meta.url)), '../../dist/index.js');

let server: HubcastServer;
beforeAll(async () => {
  server = new HubcastServer(await freePort());
  await server.start();
});
afterAll(async () => {
  await server?.dispose();
});

it('the built package works on Node with `ws`: rewind, live, publish acks, across a graceful restart', async () => {
  if (!existsSync(dist)) throw new Error('dist/ is missing: run `npm run build` first');
  const sdk = (await import(pathToFileURL(dist).href)) as typeof import('../../src/index.js');
  const room = 'node:stream';
  for (let i = 1; i <= 5; i++) await publishWithRetry(server.url, room, { i }, `before-${i}`);

  const client = new sdk.HubcastClient({
    url: server.url,
    WebSocket,
    reconnect: { minDelayMs: 50, maxDelayMs: 500 },
    heartbeat: { intervalMs: 1000, timeoutMs: 1000 },
  });
  const seen: number[] = [];
  const states: string[] = [];
  client.on('state', (s) => states.push(`${s.state}${s.code ? `:${s.code}` : ''}`));
  const sub = client.room(room, { rewind: 3 });
  sub.on('event', (e) => seen.push(e.seq));

  await waitFor('the rewind', () => seen.length >= 3, 15_000);
  expect(seen).toEqual([3, 4, 5]);

  const acks: number[] = [];
  for (let i = 6; i <= 15; i++) acks.push((await client.publish(room, { i }, { id: `node-${i}` })).seq);
  expect(acks).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);

  const during = (async () => {
    for (let i = 16; i <= 40; i++) {
      await publishWithRetry(server.url, room, { i }, `during-${i}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await waitFor('seq 20', () => seen.includes(20), 15_000);
  await server.restart('SIGTERM');
  await during;
  // A publish made through the SDK after the restart is acknowledged too.
  expect((await client.publish(room, { i: 41 }, { id: 'node-41' })).seq).toBe(41);
  await waitFor('seq 41', () => seen.includes(41), 20_000);
  expect(seen).toEqual(Array.from({ length: 39 }, (_, k) => k + 3));
  expect(states).toContain('reconnecting:1012');
  expect(sub.cursor?.seq).toBe(41);

  // Resending a publish with expectedSeq after it was appended (an ack lost to a
  // reconnect) must get its first ack, not a conflict: the server checks the
  // idempotency key before expected_seq.
  expect((await client.publish(room, { i: 42 }, { id: 'node-42', expectedSeq: 41 })).seq).toBe(42);
  expect((await client.publish(room, { i: 42 }, { id: 'node-42', expectedSeq: 41 })).seq).toBe(42);
  await expect(client.publish(room, { i: 43 }, { id: 'node-43', expectedSeq: 41 })).rejects.toMatchObject({ code: 'conflict', head: 42 });
  client.close();
  expect(client.state).toBe('closed');
});
