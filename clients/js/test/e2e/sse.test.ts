/**
 * The SSE transport (src/sse.ts) on Node against the real server, with the
 * npm `eventsource` package as the EventSource: two rooms with rewind and
 * cursors, publishes over HTTP acknowledged, a `kill -9` and restart in the
 * middle, and exactly 1..N in each room; `transport: 'auto'` falling back to
 * SSE when WebSocket never opens.
 */
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HubcastClient } from '../../src/index.js';
import type { WebSocketLike } from '../../src/index.js';
import { freePort, HubcastServer, publishWithRetry, waitFor } from './support.js';

let server: HubcastServer;
beforeAll(async () => {
  server = new HubcastServer(await freePort());
  await server.start();
});
afterAll(async () => {
  await server?.dispose();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

it('transport sse: two rooms, HTTP publishes acknowledged, exactly 1..N across kill -9', async () => {
  for (let i = 1; i <= 5; i++) await publishWithRetry(server.url, 'sse:a', { i }, `a-${i}`);
  const client = new HubcastClient({
    url: server.url,
    transport: 'sse',
    EventSource,
    reconnect: { minDelayMs: 50, maxDelayMs: 300 },
  });
  const seen: Record<string, number[]> = { 'sse:a': [], 'sse:b': [] };
  const a = client.room('sse:a', { rewind: 5 });
  a.on('event', (e) => seen['sse:a']!.push(e.seq));
  await waitFor('the rewind of sse:a', () => seen['sse:a']!.length >= 5, 15_000);
  // A second room opens the stream again; the first resumes from its position.
  const b = client.room('sse:b');
  b.on('event', (e) => seen['sse:b']!.push(e.seq));
  await waitFor('sse:b subscribed', () => b.cursor !== null, 15_000);

  const acks: number[] = [];
  for (let i = 6; i <= 10; i++) acks.push((await client.publish('sse:a', { i }, { id: `sse-a-${i}` })).seq);
  for (let i = 1; i <= 5; i++) acks.push((await client.publish('sse:b', { i }, { id: `sse-b-${i}` })).seq);
  expect(acks).toEqual([6, 7, 8, 9, 10, 1, 2, 3, 4, 5]);
  await waitFor('10 and 5', () => seen['sse:a']!.length >= 10 && seen['sse:b']!.length >= 5, 15_000);

  await server.restart('SIGKILL');
  for (let i = 11; i <= 20; i++) await publishWithRetry(server.url, 'sse:a', { i }, `a-${i}`);
  for (let i = 6; i <= 10; i++) await publishWithRetry(server.url, 'sse:b', { i }, `b-${i}`);
  await waitFor('20 and 10', () => seen['sse:a']!.length >= 20 && seen['sse:b']!.length >= 10, 30_000);
  await new Promise((r) => setTimeout(r, 300));
  expect(seen['sse:a']).toEqual(range(1, 20));
  expect(seen['sse:b']).toEqual(range(1, 10));
  client.close();
});

it("transport auto: a WebSocket that never opens falls back to SSE", async () => {
  for (let i = 1; i <= 3; i++) await publishWithRetry(server.url, 'sse:auto', { i }, `auto-${i}`);
  let attempts = 0;
  /** A network that lets no WebSocket through. */
  class BlockedWebSocket implements WebSocketLike {
    readyState = 0;
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: unknown) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    constructor(_url: string) {
      attempts += 1;
      setTimeout(() => {
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason: 'blocked' });
      }, 5);
    }
    send(): void {}
    close(): void {}
  }
  const client = new HubcastClient({
    url: server.url,
    transport: 'auto',
    WebSocket: BlockedWebSocket,
    EventSource,
    reconnect: { minDelayMs: 10, maxDelayMs: 50 },
  });
  const seen: number[] = [];
  client.room('sse:auto', { cursor: { seq: 0 } }).on('event', (e) => seen.push(e.seq));
  await waitFor('the events over SSE', () => seen.length >= 3, 15_000);
  expect(seen).toEqual([1, 2, 3]);
  expect(attempts).toBe(2);
  expect((await client.publish('sse:auto', { i: 4 }, { id: 'auto-4' })).seq).toBe(4);
  await waitFor('the published event', () => seen.length >= 4, 15_000);
  expect(seen).toEqual([1, 2, 3, 4]);
  client.close();
});
