/**
 * An `echo = false` namespace against the real server, with the built package
 * on Node and `ws`:
 * the client's own socket publishes never come back; it counts their acked
 * seqs as delivered, so the others' events arriving around them (before or
 * after each ack) are delivered in order without any history read, and a
 * resume from its cursor has no duplicate and no gap.
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
  server = new HubcastServer(await freePort(), '[[namespaces]]\nprefix = "quiet:"\necho = false\n');
  await server.start();
});
afterAll(async () => {
  await server?.dispose();
});

it('own publishes in a no-echo room are skipped without gap heals; the cursor resumes after them', async () => {
  if (!existsSync(dist)) throw new Error('dist/ is missing: run `npm run build` first');
  const { HubcastClient } = (await import(pathToFileURL(dist).href)) as typeof import('../../src/index.js');
  const room = 'quiet:js';
  const client = new HubcastClient({ url: server.url, WebSocket });
  const sub = client.room<{ from: string; i: number | string }>(room, { cursor: { epoch: null, seq: 0 } });
  const seen: Array<{ seq: number; from: string }> = [];
  sub.on('event', (e) => seen.push({ seq: e.seq, from: e.data.from }));

  // Live first (the hub counts the subscriber): a replay reads the log, which
  // knows no senders, and would include our own events.
  await waitFor('the subscription to go live', async () => {
    const stats = (await (await fetch(`${server.url}/v1/rooms/${room}`)).json()) as { subscribers: number };
    if (stats.subscribers !== 1) throw new Error(`subscribers ${stats.subscribers}`);
    return true;
  });

  const others = (async () => {
    const seqs: number[] = [];
    for (let i = 0; i < 30; i++) seqs.push(await publishWithRetry(server.url, room, { from: 'http', i }, `http-${i}`));
    return seqs;
  })();
  const own: number[] = [];
  for (let i = 0; i < 30; i++) own.push((await client.publish(room, { from: 'socket', i }, { id: `own-${i}` })).seq);
  const otherSeqs = await others;

  await waitFor('the others’ events', () => seen.length >= otherSeqs.length, 15_000);
  expect(seen.map((e) => e.seq)).toEqual(otherSeqs);
  expect(seen.every((e) => e.from === 'http')).toBe(true);
  await waitFor('the cursor to count our own seqs', () => sub.cursor?.seq === 60, 15_000);
  expect(sub.stats.historyReads).toBe(0);
  expect(sub.stats.gapsHealed).toBe(0);
  const cursor = sub.cursor;
  client.close();

  const resumed = new HubcastClient({ url: server.url, WebSocket });
  const again = resumed.room(room, cursor ? { cursor } : {});
  const after: number[] = [];
  again.on('event', (e) => after.push(e.seq));
  await waitFor('the resumed subscription to go live', async () => {
    const stats = (await (await fetch(`${server.url}/v1/rooms/${room}`)).json()) as { subscribers: number };
    if (stats.subscribers !== 1) throw new Error(`subscribers ${stats.subscribers}`);
    return true;
  });
  expect(await publishWithRetry(server.url, room, { from: 'http', i: 'after' }, 'http-after')).toBe(61);
  await waitFor('event 61', () => after.length >= 1, 15_000);
  expect(after).toEqual([61]);
  resumed.close();
});
