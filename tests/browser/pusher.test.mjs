// pusher-js in Chromium against the real binary, as a Pusher app runs it:
// a small app (an HTTP server in this test, on its own origin) serves a page
// that loads pusher-js's browser build and answers pusher-js's auth requests
// with the official `pusher` library's `authorizeChannel`. The page
// subscribes to a public and a private channel and gets what the `pusher`
// library triggers through hubcast's Pusher HTTP API; the server is killed
// with SIGKILL and restarted on the same port, pusher-js reconnects and
// subscribes again by itself (authorized again), and gets what is triggered
// after. Starts its own `hubcast serve` (HUBCAST_BIN) on a free port.
//
// pusher-js and `pusher` are the Pusher suites' packages
// (tests/pusher/node_modules, installed by run.sh from their lock).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { freePort, Hubcast } from './hubcast.mjs';

const requirePusher = createRequire(new URL('../pusher/package.json', import.meta.url));
const PusherServer = requirePusher('pusher');
const PUSHER_JS = readFileSync(requirePusher.resolve('pusher-js/dist/web/pusher.min.js'));

const BIN = process.env.HUBCAST_BIN;
const STEP = 15_000;
const APP = { id: '123', key: 'key1', secret: 'secret1' };
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser;
let hub;
let port;
let dir;
let appServer;
let appPort;
let library;
const authorized = []; // [socket_id, channel_name] of each auth request the app answered

// The app: its page, pusher-js's browser build, and its auth endpoint
// (`channelAuthorization.endpoint`, form-encoded socket_id and channel_name).
function handle(req, res) {
  if (req.method === 'GET' && req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>pusher-js on hubcast</title><script src="/pusher.min.js"></script>');
  } else if (req.method === 'GET' && req.url === '/pusher.min.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(PUSHER_JS);
  } else if (req.method === 'POST' && req.url === '/pusher/auth') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const socketId = form.get('socket_id');
      const channel = form.get('channel_name');
      authorized.push([socketId, channel]);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(library.authorizeChannel(socketId, channel)));
    });
  } else {
    res.writeHead(404);
    res.end();
  }
}

before(async () => {
  assert.ok(BIN, 'HUBCAST_BIN is not set: run tests/browser/run.sh');
  dir = mkdtempSync(join(tmpdir(), 'hubcast-pusher-browser-'));
  mkdirSync(join(dir, 'data'));
  [port, appPort] = [await freePort(), await freePort()];
  hub = new Hubcast(BIN, dir, port);
  appServer = createHttpServer(handle);
  await new Promise((r) => appServer.listen(appPort, '127.0.0.1', r));
  // The page is on the app's origin, hubcast on another, as in production:
  // the app allows exactly that origin.
  writeFileSync(join(dir, 'hubcast.toml'), `
[[pusher.apps]]
id = "${APP.id}"
key = "${APP.key}"
secret = "${APP.secret}"
allowed_origins = ["http://127.0.0.1:${appPort}"]
`);
  await hub.start();
  library = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(port), useTLS: false });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: STEP });
});

after(async () => {
  await browser?.close();
  await hub?.kill9();
  await new Promise((r) => (appServer ? appServer.close(r) : r()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('pusher-js in Chromium: public and private channels, triggers, reconnect after kill -9', async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.goto(`http://127.0.0.1:${appPort}/`);
  await page.evaluate(({ key, port }) => {
    const pusher = new window.Pusher(key, {
      cluster: 'mt1',
      wsHost: '127.0.0.1',
      wsPort: port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: { endpoint: '/pusher/auth' },
    });
    window.pusher = pusher;
    window.got = { news: [], 'private-orders': [] };
    window.subscriptions = { news: 0, 'private-orders': 0 };
    window.socketIds = [];
    window.states = [];
    pusher.connection.bind('connected', () => window.socketIds.push(pusher.connection.socket_id));
    pusher.connection.bind('state_change', ({ current }) => window.states.push(current));
    for (const name of ['news', 'private-orders']) {
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => { window.subscriptions[name] += 1; });
      channel.bind('pusher:subscription_error', (e) => { window.got[name].push({ error: e }); });
      channel.bind('update', (data) => window.got[name].push(data));
    }
  }, { key: APP.key, port });
  const state = () => page.evaluate(() => ({
    got: window.got, subscriptions: window.subscriptions, socketIds: window.socketIds,
    states: window.states, connection: window.pusher.connection.state,
  }));
  const waitFor = async (what, check, ms = 30_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await state();
      if (check(s)) return s;
      assert.ok(Date.now() < deadline, `timed out waiting for ${what}: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const first = await waitFor('both subscriptions', (s) => s.subscriptions.news === 1 && s.subscriptions['private-orders'] === 1);
  assert.deepEqual(authorized, [[first.socketIds[0], 'private-orders']], 'the private channel was authorized by the app');
  await library.trigger(['news', 'private-orders'], 'update', { n: 1 });
  await waitFor('the first event on both channels', (s) => s.got.news.length === 1 && s.got['private-orders'].length === 1);

  await hub.kill9();
  await hub.start();
  const again = await waitFor('pusher-js to reconnect and subscribe again',
    (s) => s.connection === 'connected' && s.subscriptions.news === 2 && s.subscriptions['private-orders'] === 2, 60_000);
  assert.equal(again.socketIds.length, 2);
  assert.notEqual(again.socketIds[1], again.socketIds[0], 'a new connection after the restart');
  assert.deepEqual(authorized.at(-1), [again.socketIds[1], 'private-orders'], 'authorized again for the new socket');
  assert.ok(again.states.includes('connecting') || again.states.includes('unavailable'), `lost the connection: ${again.states}`);

  await library.trigger(['news', 'private-orders'], 'update', { n: 2 });
  const done = await waitFor('the event after the restart', (s) => s.got.news.length === 2 && s.got['private-orders'].length === 2);
  assert.deepEqual(done.got.news, [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(done.got['private-orders'], [{ n: 1 }, { n: 2 }]);
  // What was triggered is durable: both events are in the channel's room.
  const history = await (await fetch(`http://127.0.0.1:${port}/v1/rooms/pusher:${APP.id}:private-orders/events?after=0`)).json();
  assert.deepEqual(history.events.map((e) => e.seq), [1, 2]);
  assert.deepEqual(problems, []);
  await page.evaluate(() => window.pusher.disconnect());
});
