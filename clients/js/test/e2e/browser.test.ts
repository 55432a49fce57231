/**
 * End to end in real headless Chromium against the real hubcast binary: a
 * page with the bundled SDK, connected through a TCP proxy the test can cut
 * or freeze, while the server is killed (SIGKILL), stopped gracefully
 * (SIGTERM → close 1012) and started again on the same data. The proxy also
 * serves the page, so page, WebSocket and history route share one origin. The
 * connect-hook tests log the page in with a cookie the browser itself sends
 * with the upgrade, checked by a small application server in the test.
 */
import { build } from 'esbuild';
import { type Browser, chromium, type Page } from 'playwright-core';
import { existsSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CuttableProxy, freePort, history, HubcastServer, publishWithRetry, signJwt, waitFor } from './support.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

interface PageLog {
  events: Array<{ room: string; seq: number; data: { i?: number; id?: string } }>;
  iterated: Array<{ room: string; seq: number }>;
  resets: unknown[];
  states: Array<{ state: string; code?: number; reason?: string }>;
  errors: Array<{ code: string; message: string; room?: string; closeCode?: number }>;
  acks: Array<{ id: string; seq: number }>;
  publishErrors: Array<{ id: string; code: string; head?: number }>;
  authenticated: number;
  tokens: number;
}

interface Stack {
  server: HubcastServer;
  proxy: CuttableProxy;
}

type Hub = {
  log: PageLog;
  start(o: object): void;
  close(): void;
  state(): string;
  stats(room: string): { historyReads: number; historyFailures: number } | null;
  publishMany(room: string, count: number, prefix: string): Promise<void>;
  publishExpecting(room: string, data: unknown, expectedSeq: number): Promise<{ seq?: number; code?: string; head?: number }>;
};

let browser: Browser;
let html: string;
const stacks: Stack[] = [];

async function pageHtml(): Promise<string> {
  const bundle = await build({
    entryPoints: [join(here, 'page.ts')],
    bundle: true,
    format: 'iife',
    target: 'es2022',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
  });
  const js = bundle.outputFiles[0]!.text.replace(/<\/script/gi, '<\\/script');
  return `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>hubcast e2e</title></head><body><script>${js}</script></body></html>`;
}

async function startStack(configToml?: string): Promise<Stack> {
  const port = await freePort();
  const server = new HubcastServer(port, configToml);
  await server.start();
  const proxy = new CuttableProxy(port, new Map([['/__test/page.html', html]]));
  await proxy.listen();
  const stack = { server, proxy };
  stacks.push(stack);
  return stack;
}

async function openPage(stack: Stack, setup?: (page: Page) => Promise<void>): Promise<Page> {
  const page = await browser.newPage();
  page.on('pageerror', (err) => console.error('[page error]', err));
  if (setup) await setup(page);
  await page.goto(`${stack.proxy.origin}/__test/page.html`, { timeout: 15_000 });
  await waitFor('the page script', () => page.evaluate(() => document.title === 'hubcast e2e ready'), 10_000);
  return page;
}

const hubCall = <R, A = undefined>(page: Page, fn: (hub: Hub, arg: A) => R | Promise<R>, arg?: A): Promise<R> =>
  page.evaluate(
    ([source, a]) => {
      const f = new Function(`return (${source})`)() as (hub: unknown, arg: unknown) => unknown;
      return f((window as unknown as { hub: unknown }).hub, a);
    },
    [fn.toString(), arg] as const,
  ) as Promise<R>;

const pageLog = (page: Page) => hubCall(page, (hub) => hub.log);
const seqsOf = (log: PageLog, room: string) => log.events.filter((e) => e.room === room).map((e) => e.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function waitForSeq(page: Page, room: string, seq: number, timeoutMs = 45_000): Promise<void> {
  await waitFor(
    `the page to see ${room} seq ${seq}`,
    async () => (await pageLog(page)).events.some((e) => e.room === room && e.seq >= seq),
    timeoutMs,
  );
}

async function waitForOpen(page: Page): Promise<void> {
  await waitFor('the page to connect', async () => (await pageLog(page)).states.some((s) => s.state === 'open'), 15_000);
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  html = await pageHtml();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
});

afterAll(async () => {
  await browser?.close().catch(() => {});
  for (const { server, proxy } of stacks) {
    await proxy.close().catch(() => {});
    await server.dispose().catch(() => {});
  }
});

describe('browser SDK against the real server (protected mode: loopback, no credentials)', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });

  it('a page sees exactly events 1..N while the server is killed and restarted twice and the socket is cut once', async () => {
    const { server, proxy } = stack;
    const room = 'e2e:stream';
    const N = 300;
    const page = await openPage(stack);
    await hubCall(page, (hub, r) => hub.start({ rooms: [r], fromStart: true }), room);
    await waitForOpen(page);

    // A publisher that keeps going through everything (the same key on a retry: never appended twice).
    let published = 0;
    const publisher = (async () => {
      for (let i = 1; i <= N; i++) {
        const seq = await publishWithRetry(server.url, room, { i }, `stream-${i}`, 40_000);
        expect(seq).toBe(i);
        published = i;
        await new Promise((r) => setTimeout(r, 8));
      }
    })();

    await waitForSeq(page, room, 60);
    await server.restart('SIGKILL'); // killed: the page sees the connection drop (1006)
    await waitForSeq(page, room, 140);
    await server.restart('SIGTERM'); // stopped gracefully: the page gets 1012 and comes back at once
    await waitForSeq(page, room, 220);
    expect(proxy.cut()).toBeGreaterThan(0); // the network drops mid-stream
    await publisher;
    expect(published).toBe(N);
    // A sentinel after everything: anything doubled or misplaced would show before it.
    await publishWithRetry(server.url, room, { i: N + 1 }, `stream-${N + 1}`);
    await waitForSeq(page, room, N + 1);

    const log = await pageLog(page);
    expect(seqsOf(log, room)).toEqual(range(1, N + 1));
    expect(log.events.map((e) => e.data.i)).toEqual(range(1, N + 1));
    expect(log.iterated.map((e) => e.seq)).toEqual(range(1, N + 1));
    expect(log.resets).toEqual([]);
    const reconnectCodes = log.states.filter((s) => s.state === 'reconnecting').map((s) => s.code);
    expect(reconnectCodes).toContain(1012);
    expect(reconnectCodes).toContain(1006);
    expect(log.errors).toEqual([]);
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });

  it('a dead connection (the proxy stops forwarding) is noticed by the heartbeat and the page resumes without a gap', async () => {
    const { server, proxy } = stack;
    const room = 'e2e:frozen';
    const N = 120;
    const page = await openPage(stack);
    await hubCall(page, (hub, r) => hub.start({ rooms: [r], fromStart: true, heartbeat: { intervalMs: 500, timeoutMs: 500 } }), room);
    await waitForOpen(page);
    const publisher = (async () => {
      for (let i = 1; i <= N; i++) {
        await publishWithRetry(server.url, room, { i }, `frozen-${i}`, 30_000);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await waitForSeq(page, room, 30);
    expect(proxy.freeze()).toBeGreaterThan(0); // nothing closes: only the heartbeat can tell
    await waitFor(
      'the heartbeat to abandon the frozen socket',
      async () => (await pageLog(page)).states.some((s) => s.state === 'reconnecting' && s.code === 4010),
      20_000,
    );
    await publisher;
    await waitForSeq(page, room, N);
    const log = await pageLog(page);
    expect(seqsOf(log, room)).toEqual(range(1, N));
    expect(log.events.map((e) => e.data.i)).toEqual(range(1, N));
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });

  it('publishes from the page are acknowledged and appended exactly once across a cut and a restart', async () => {
    const { server, proxy } = stack;
    const room = 'e2e:publish';
    const M = 150;
    const page = await openPage(stack);
    await hubCall(page, (hub, r) => hub.start({ rooms: [r], fromStart: true }), room);
    await waitForOpen(page);

    const publishing = hubCall(page, (hub, a) => hub.publishMany(a.room, a.count, 'web'), { room, count: M });
    await waitFor('some acks', async () => (await pageLog(page)).acks.length >= 30, 20_000);
    proxy.cut();
    const acksAtRestart = await waitFor('more acks', async () => {
      const n = (await pageLog(page)).acks.length;
      return n >= 80 ? n : 0;
    }, 20_000);
    await server.restart('SIGTERM');
    await publishing;
    expect(acksAtRestart).toBeLessThan(M); // the restart landed mid-stream

    const log = await pageLog(page);
    expect(log.publishErrors).toEqual([]);
    expect(log.acks).toHaveLength(M);
    expect(log.acks.map((a) => a.seq).sort((a, b) => a - b)).toEqual(range(1, M)); // one seq each, none doubled
    const stored = await history(server.url, room);
    expect(stored.head).toBe(M);
    expect(new Set(stored.events.map((e) => (e.data as { id: string }).id)).size).toBe(M);
    for (const ack of log.acks) expect((stored.events[ack.seq - 1]!.data as { id: string }).id).toBe(ack.id);
    // The page's own subscription saw every one of them, once, in order.
    await waitForSeq(page, room, M);
    expect(seqsOf(await pageLog(page), room)).toEqual(range(1, M));

    // Optimistic concurrency from the browser: a stale expectedSeq is refused with the head.
    expect(await hubCall(page, (hub, r) => hub.publishExpecting(r, 'stale', 3), room)).toEqual({ code: 'conflict', head: M });
    expect(await hubCall(page, (hub, a) => hub.publishExpecting(a.room, 'fresh', a.head), { room, head: M })).toEqual({ seq: M + 1 });
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });
});

describe('browser SDK against the real server with JWT auth', () => {
  const secret = 'e2e-hs256-secret-0123456789abcdef0123456789abcdef';
  const apiKey = 'e2e-api-key-0123456789abcdef';
  const bearer = { authorization: `Bearer ${apiKey}` };
  let stack: Stack;
  let minted = 0;
  const mint = (ttlSecs: number) => {
    minted += 1;
    const now = Math.floor(Date.now() / 1000);
    return signJwt(secret, { sub: `page-${minted}`, exp: now + ttlSecs, subscribe: ['auth:*'], publish: ['auth:*'] });
  };

  beforeAll(async () => {
    stack = await startStack(
      [
        '[auth]',
        'leeway_secs = 0',
        'expiry_grace_ms = 5000',
        '[[auth.jwt]]',
        'alg = "HS256"',
        `secret = "${secret}"`,
        '[[auth.api_keys]]',
        `key = "${apiKey}"`,
        'name = "e2e-publisher"',
        '',
      ].join('\n'),
    );
  });

  it('a token that expires mid-stream is refreshed through getToken; the page misses nothing; history reads carry it', async () => {
    const { server } = stack;
    const room = 'auth:stream';
    const N = 80;
    // Short-lived tokens: the first one runs out while events flow.
    const page = await openPage(stack, (p) => p.exposeFunction('mintToken', () => mint(2)));
    await hubCall(page, (hub, r) => hub.start({ rooms: [r], fromStart: true, token: 'minted', reconcileMs: 300 }), room);
    await waitForOpen(page);
    for (let i = 1; i <= N; i++) {
      await publishWithRetry(server.url, room, { i }, `auth-${i}`, 20_000, bearer);
      await new Promise((r) => setTimeout(r, 50));
    }
    await waitForSeq(page, room, N);
    await waitFor('a token refresh', async () => (await pageLog(page)).authenticated >= 1, 15_000);
    const log = await pageLog(page);
    expect(seqsOf(log, room)).toEqual(range(1, N));
    expect(log.errors).toEqual([]);
    expect(log.tokens).toBeGreaterThanOrEqual(2);
    expect(log.states.filter((s) => s.code === 4001)).toEqual([]); // refreshed in place, never cut for it
    const stats = await hubCall(page, (hub, r) => hub.stats(r), room);
    expect(stats!.historyReads).toBeGreaterThan(0); // reconciliation polls, with the bearer token
    expect(stats!.historyFailures).toBe(0);
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });

  it('a room outside the token grant is refused as an error of that room; the others flow', async () => {
    const { server } = stack;
    const page = await openPage(stack, (p) => p.exposeFunction('mintToken', () => mint(60)));
    await hubCall(page, (hub) => hub.start({ rooms: ['auth:ok', 'secret:no'], fromStart: true, token: 'minted' }));
    await waitFor('the refusal', async () => (await pageLog(page)).errors.some((e) => e.room === 'secret:no'), 15_000);
    await publishWithRetry(server.url, 'auth:ok', { i: 1 }, 'ok-1', 20_000, bearer);
    await waitForSeq(page, 'auth:ok', 1);
    const log = await pageLog(page);
    expect(log.errors).toEqual([expect.objectContaining({ code: 'forbidden', room: 'secret:no' })]);
    expect(log.states.at(-1)?.state).toBe('open');
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });

  it('a bad token sent as an auth message ends in close 4001, surfaced as a final error', async () => {
    const page = await openPage(stack);
    await hubCall(page, (hub) => hub.start({ rooms: ['auth:x'], token: 'bad', sendTokenAs: 'message' }));
    await waitFor('the client to give up', async () => (await pageLog(page)).states.some((s) => s.state === 'closed'), 15_000);
    const atClose = await pageLog(page);
    expect(atClose.errors).toContainEqual(expect.objectContaining({ code: 'unauthenticated', closeCode: 4001 }));
    expect(atClose.states.at(-1), JSON.stringify(atClose.states)).toMatchObject({ state: 'closed', code: 4001 });
    // Never retried: well past the longest backoff (500 ms here), still closed, no new attempt.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await pageLog(page)).states).toEqual(atClose.states);
    await page.close();
  });
});

describe('browser SDK with the connect hook: the page is logged in by its cookie, no token', () => {
  const apiKey = 'e2e-api-key-0123456789abcdef';
  const bearer = { authorization: `Bearer ${apiKey}` };
  /** What the application's connect hook was sent. */
  const asked: Array<{ headers: Record<string, string>; origin: string | null; remote_addr: string }> = [];
  let failing = false;
  let app: HttpServer;
  let stack: Stack;

  beforeAll(async () => {
    // The application: a session cookie names the user; 503 while `failing`.
    app = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const request = JSON.parse(body) as (typeof asked)[number];
        asked.push(request);
        if (failing) {
          res.writeHead(503).end();
        } else if ((request.headers.cookie ?? '').includes('session=alice-secret')) {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ user: 'alice', grants: { subscribe: ['chat:*'], publish: ['chat:*'] } }));
        } else {
          res.writeHead(401).end();
        }
      });
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    const appPort = (app.address() as { port: number }).port;
    // The proxy first: its origin (the page's) is the one hubcast must allow.
    const port = await freePort();
    const proxy = new CuttableProxy(port, new Map([['/__test/page.html', html]]));
    await proxy.listen();
    const server = new HubcastServer(
      port,
      [
        '[auth]',
        `allowed_origins = ["${proxy.origin}"]`,
        '[auth.connect_hook]',
        `url = "http://127.0.0.1:${appPort}/hubcast/connect"`,
        'timeout_ms = 2000',
        '[[auth.api_keys]]',
        `key = "${apiKey}"`,
        'name = "e2e-backend"',
        '',
      ].join('\n'),
    );
    await server.start();
    stack = { server, proxy };
    stacks.push(stack);
  });

  afterAll(async () => {
    await new Promise((r) => app?.close(r));
  });

  it('the browser sends its cookie with the upgrade; the hook admits it with its grants', async () => {
    const page = await openPage(stack);
    await page.evaluate(() => {
      document.cookie = 'session=alice-secret; path=/';
    });
    await hubCall(page, (hub) => hub.start({ rooms: ['chat:lobby'], fromStart: true, token: 'none' }));
    await waitForOpen(page);
    const seq = await publishWithRetry(stack.server.url, 'chat:lobby', { hello: 'alice' }, 'hook-1', 20_000, bearer);
    await waitForSeq(page, 'chat:lobby', seq);
    const request = asked.at(-1)!;
    expect(request.headers.cookie).toBe('session=alice-secret');
    expect(request.origin).toBe(stack.proxy.origin);
    expect(request.remote_addr).toBe('127.0.0.1');
    // Her grants allow publishing in chat:*, over the socket.
    expect(await hubCall(page, (hub, head) => hub.publishExpecting('chat:lobby', { from: 'page' }, head), seq)).toEqual({ seq: seq + 1 });
    expect((await pageLog(page)).errors).toEqual([]);
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });

  it('without the cookie the hook answers 401: close 4001, surfaced, never retried', async () => {
    const context = await browser.newContext(); // no cookies
    const page = await context.newPage();
    await page.goto(`${stack.proxy.origin}/__test/page.html`, { timeout: 15_000 });
    await waitFor('the page script', () => page.evaluate(() => document.title === 'hubcast e2e ready'), 10_000);
    await hubCall(page, (hub) => hub.start({ rooms: ['chat:lobby'], token: 'none' }));
    await waitFor('the refusal', async () => (await pageLog(page)).errors.some((e) => e.closeCode === 4001), 15_000);
    const log = await pageLog(page);
    expect(log.errors.find((e) => e.closeCode === 4001)?.code).toBe('unauthenticated');
    expect(await hubCall(page, (hub) => hub.state())).toBe('closed');
    await context.close();
  });

  it('while the hook fails the page is refused with 4013 and keeps retrying; it gets in once the hook recovers', async () => {
    failing = true;
    const page = await openPage(stack);
    await page.evaluate(() => {
      document.cookie = 'session=alice-secret; path=/';
    });
    const before = asked.length;
    await hubCall(page, (hub) => hub.start({ rooms: ['chat:retry'], fromStart: true, token: 'none' }));
    await waitFor('two refused attempts', () => asked.length >= before + 2, 20_000);
    const refused = await pageLog(page);
    expect(refused.states.some((s) => s.code === 4013)).toBe(true);
    expect(refused.states.some((s) => s.state === 'closed')).toBe(false);
    failing = false;
    await waitForOpen(page);
    const seq = await publishWithRetry(stack.server.url, 'chat:retry', { after: 'recovery' }, 'hook-2', 20_000, bearer);
    await waitForSeq(page, 'chat:retry', seq);
    await hubCall(page, (hub) => hub.close());
    await page.close();
  });
});
