/**
 * The SDK against the real server's admin actions: an operator's disconnect
 * (4011) and a token revocation (4012) are final. The client surfaces an
 * error with the close code, goes to `closed`, and does not reconnect.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HubcastClient, type HubcastError } from '../../src/index.js';
import { freePort, HubcastServer, publishWithRetry, signJwt, sleep, waitFor } from './support.js';

const secret = 'e2e-admin-secret-0123456789abcdef0123456789';
const adminKey = 'e2e-admin-key-0123456789abcdef';

let server: HubcastServer;
beforeAll(async () => {
  server = new HubcastServer(
    await freePort(),
    [
      '[[auth.jwt]]',
      'alg = "HS256"',
      `secret = "${secret}"`,
      '',
      '[[auth.api_keys]]',
      `key = "${adminKey}"`,
      'name = "ops"',
      'admin = true',
      '',
    ].join('\n'),
  );
  await server.start();
});
afterAll(async () => {
  await server?.dispose();
});

function token(sub: string, jti: string): string {
  const now = Math.floor(Date.now() / 1000);
  return signJwt(secret, { sub, jti, exp: now + 3600, subscribe: ['*'], publish: ['*'] });
}

async function admin(path: string, body: unknown): Promise<number> {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` },
    body: JSON.stringify(body),
  });
  return res.status;
}

/** A connected client of `sub`, its errors and its states, live in `room`. */
async function connected(sub: string, jti: string, room: string) {
  const client = new HubcastClient({
    url: server.url,
    WebSocket,
    getToken: () => token(sub, jti),
    reconnect: { minDelayMs: 20, maxDelayMs: 100 },
  });
  const errors: HubcastError[] = [];
  const states: string[] = [];
  client.on('error', (e) => errors.push(e));
  client.on('state', (s) => states.push(`${s.state}${s.code ? `:${s.code}` : ''}`));
  const seen: number[] = [];
  client.room(room, { rewind: 10 }).on('event', (e) => seen.push(e.seq));
  await waitFor(`${sub} to connect`, () => client.state === 'open', 15_000);
  // Live: an event published now reaches it, so its session is set up.
  await publishWithRetry(server.url, room, 'hello', `${sub}-hello`, 15_000, { authorization: `Bearer ${adminKey}` });
  await waitFor(`${sub}'s first event`, () => seen.length > 0, 15_000);
  return { client, errors, states };
}

for (const [what, code, errorCode, act] of [
  ['an operator disconnect', 4011, 'disconnected', () => admin('/v1/users/alice/disconnect', { reason: 'bye' })],
  ['a token revocation', 4012, 'token_revoked', () => admin('/v1/revocations', { jti: 'alice-1' })],
] as const) {
  it(`${what} (${code}) is final: an error with the close code, state closed, no reconnect`, async () => {
    const { client, errors, states } = await connected('alice', 'alice-1', `admin:${code}`);
    expect(await act()).toBeLessThan(300);
    await waitFor('the client to close', () => client.state === 'closed', 15_000);
    expect(errors.map((e) => [e.code, e.closeCode])).toContainEqual([errorCode, code]);
    expect(states).toContain(`closed:${code}`);
    // Many reconnect delays (20–100 ms) later it has not tried again.
    await sleep(500);
    expect(client.state).toBe('closed');
    expect(states.filter((s) => s.startsWith('connecting') || s.startsWith('reconnecting'))).toHaveLength(1);
    client.close();
  });
}
