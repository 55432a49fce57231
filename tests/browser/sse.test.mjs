// Chromium's own EventSource against the real binary: a page follows two
// rooms on one stream while events are published; the server is killed with
// SIGKILL mid-stream and restarted on the same port; the browser reconnects
// by itself with Last-Event-ID and the page ends with exactly 1..N in each
// room. Starts its own `hubcast serve` (HUBCAST_BIN) on a free port.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { freePort, Hubcast } from './hubcast.mjs';

const BIN = process.env.HUBCAST_BIN;
const STEP = 15_000;
const N = 40;
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser;
let hub;
let port;
let dir;

async function publish(room, i) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/rooms/${room}/events`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ data: { i } }),
  });
  assert.equal(res.status, 201, await res.text());
}

before(async () => {
  assert.ok(BIN, 'HUBCAST_BIN is not set: run tests/browser/run.sh');
  dir = mkdtempSync(join(tmpdir(), 'hubcast-sse-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'hubcast.toml'), '[sse]\nretry_ms = 250\n');
  port = await freePort();
  hub = new Hubcast(BIN, dir, port);
  await hub.start();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: STEP });
});

after(async () => {
  await browser?.close();
  await hub?.kill9();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('EventSource in Chromium resumes a two-room stream across kill -9 with exactly 1..N', async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  // Same origin as the stream, as a page served by the application would be.
  await page.goto(`http://127.0.0.1:${port}/healthz`);
  await page.evaluate(() => {
    window.seen = { 'br-a': [], 'br-b': [] };
    window.opens = 0;
    const es = new EventSource('/v1/sse?room=br-a&room=br-b&cursor=0');
    es.onopen = () => { window.opens += 1; };
    es.onmessage = (m) => { const e = JSON.parse(m.data); window.seen[e.room].push(e.seq); };
    window.es = es;
  });
  const count = () => page.evaluate(() => [window.seen['br-a'].length, window.seen['br-b'].length]);
  const waitFor = async (what, check) => {
    const deadline = Date.now() + 60_000;
    while (!(await check())) {
      assert.ok(Date.now() < deadline, `timed out waiting for ${what}: ${JSON.stringify(await count())}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  for (let i = 1; i <= N / 2; i++) {
    await publish('br-a', i);
    await publish('br-b', i);
  }
  await waitFor('some events before the kill', async () => (await count())[0] >= 5);
  await hub.kill9();
  await hub.start();
  for (let i = N / 2 + 1; i <= N; i++) {
    await publish('br-a', i);
    await publish('br-b', i);
  }
  await waitFor('1..N in both rooms', async () => {
    const [a, b] = await count();
    return a >= N && b >= N;
  });
  await new Promise((r) => setTimeout(r, 300)); // no duplicate trails in
  const { seen, opens } = await page.evaluate(() => ({ seen: window.seen, opens: window.opens }));
  assert.deepEqual(seen['br-a'], range(N));
  assert.deepEqual(seen['br-b'], range(N));
  assert.ok(opens >= 2, `the browser reconnected by itself (${opens} opens)`);
  assert.deepEqual(problems, []);
  await page.evaluate(() => window.es.close());
});
