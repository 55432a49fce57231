/**
 * Ephemeral messages against the real server, with the built package on Node
 * and `ws`: `publishEphemeral` resolves with `{ephemeral: true}` (no seq), the
 * other client's room gets it on its `ephemeral` listener, its cursor does not
 * move, and the room's log stays empty; a room without the namespace option
 * refuses with `ephemeral_not_allowed`.
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
  server = new HubcastServer(await freePort(), '[[namespaces]]\nprefix = "typing:"\nephemeral = "allowed"\n');
  await server.start();
});
afterAll(async () => {
  await server?.dispose();
});

it('ephemeral messages reach the other subscribers, take no seq and are refused where not allowed', async () => {
  if (!existsSync(dist)) throw new Error('dist/ is missing: run `npm run build` first');
  const { HubcastClient, HubcastError } = (await import(pathToFileURL(dist).href)) as typeof import('../../src/index.js');
  const room = 'typing:js';
  const alice = new HubcastClient({ url: server.url, WebSocket });
  const bob = new HubcastClient({ url: server.url, WebSocket });
  const watching = bob.room(room);
  const heard: Array<{ room: string; ts: number; data: unknown }> = [];
  const events: number[] = [];
  watching.on('ephemeral', (m) => heard.push(m));
  watching.on('event', (e) => events.push(e.seq));
  await waitFor('bob to be live in the room', async () => {
    const stats = (await (await fetch(`${server.url}/v1/rooms/${room}`)).json()) as { subscribers: number };
    if (stats.subscribers !== 1) throw new Error(`subscribers ${stats.subscribers}`);
    return true;
  });

  const ack = await alice.publishEphemeral(room, { typing: 'alice' });
  expect(ack).toMatchObject({ room, ephemeral: true });
  expect('seq' in ack).toBe(false);
  await waitFor('bob to hear alice typing', () => heard.length === 1, 15_000);
  expect(heard[0]).toMatchObject({ room, data: { typing: 'alice' } });
  expect(typeof heard[0]?.ts).toBe('number');
  expect(watching.cursor?.seq ?? 0).toBe(0);

  // The log is untouched: the next event is seq 1.
  expect(await publishWithRetry(server.url, room, { text: 'hi' }, 'first')).toBe(1);
  await waitFor('event 1', () => events.length === 1, 15_000);
  expect(events).toEqual([1]);
  const history = (await (await fetch(`${server.url}/v1/rooms/${room}/events`)).json()) as { head: number; events: unknown[] };
  expect(history.head).toBe(1);
  expect(history.events).toHaveLength(1);

  const refused = await alice.publishEphemeral('plain', { typing: 'alice' }).catch((err: unknown) => err);
  expect(refused).toBeInstanceOf(HubcastError);
  expect((refused as InstanceType<typeof HubcastError>).code).toBe('ephemeral_not_allowed');
  alice.close();
  bob.close();
});
