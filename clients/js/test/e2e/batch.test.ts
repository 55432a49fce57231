/**
 * `publishBatch` on Node (the built package, npm `ws`) against the real
 * server: one `publish_batch`, one ack per event in order, the id as the
 * batch's idempotency key, and a conflict that appends nothing.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort, history, HubcastServer, waitFor } from './support.js';

const dist = join(dirname(fileURLToPath(import.meta.url)), '../../dist/index.js');

let server: HubcastServer;
beforeAll(async () => {
  server = new HubcastServer(await freePort());
  await server.start();
});
afterAll(async () => {
  await server?.dispose();
});

it('publishBatch appends every event or none, and a subscriber sees them in order', async () => {
  if (!existsSync(dist)) throw new Error('dist/ is missing: run `npm run build` first');
  const sdk = (await import(pathToFileURL(dist).href)) as typeof import('../../src/index.js');
  const client = new sdk.HubcastClient({ url: server.url, WebSocket });
  const seen: number[] = [];
  // With a rewind, events appended before the subscription started count too.
  const sub = client.room('jsb:a', { rewind: 100 });
  sub.on('event', (e) => seen.push((e.data as { n: number }).n));

  const acks = await client.publishBatch(
    [
      { room: 'jsb:a', data: { n: 1 } },
      { room: 'jsb:b', data: { n: 2 }, expectedSeq: 0 },
      { room: 'jsb:a', data: { n: 3 } },
    ],
    { id: 'js-batch-1' },
  );
  expect(acks.map((a) => [a.room, a.seq])).toEqual([
    ['jsb:a', 1],
    ['jsb:b', 1],
    ['jsb:a', 2],
  ]);
  expect(acks.every((a) => a.id === 'js-batch-1')).toBe(true);
  // The same id again is a retry: the first receipts, nothing appended.
  const again = await client.publishBatch(
    [
      { room: 'jsb:a', data: { n: 1 } },
      { room: 'jsb:b', data: { n: 2 }, expectedSeq: 0 },
      { room: 'jsb:a', data: { n: 3 } },
    ],
    { id: 'js-batch-1' },
  );
  expect(again).toEqual(acks);
  await expect(
    client.publishBatch([
      { room: 'jsb:a', data: { n: 4 } },
      { room: 'jsb:b', data: { n: 5 }, expectedSeq: 0 },
    ]),
  ).rejects.toMatchObject({ code: 'conflict', room: 'jsb:b', head: 1 });
  await expect(client.publishBatch([])).rejects.toMatchObject({ code: 'bad_request' });
  await waitFor('both events of jsb:a', () => seen.length >= 2, 15_000);
  expect(seen).toEqual([1, 3]);
  const a = await history(server.url, 'jsb:a');
  expect(a.events.map((e: { seq: number }) => e.seq)).toEqual([1, 2]);
  client.close();
});
