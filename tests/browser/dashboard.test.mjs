// The dashboard in a real browser (headless Debian Chromium) against a real
// hubcast: publish from the playground, watch the event arrive in the room
// inspector, watch the counters move, and keep a screenshot.
//
// Run through run.sh, which starts the server and sets HUBCAST_URL. Every wait
// has a timeout that only turns "never" into a failure; nothing asserts how
// long anything took.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const BASE = process.env.HUBCAST_URL;
/** A second server with auth configured, and its keys (set by run.sh). */
const AUTH_BASE = process.env.HUBCAST_AUTH_URL;
const ADMIN_KEY = process.env.HUBCAST_ADMIN_KEY;
const PUBLISHER_KEY = process.env.HUBCAST_PUBLISHER_KEY;
const ARTIFACTS = process.env.HUBCAST_ARTIFACTS || resolve(here, '../../test-artifacts');
/** The limit for one step: a page load, a frame, a poll of the dashboard. */
const STEP = 15_000;
/** The limit for something that needs a few of the dashboard's 2 s polls. */
const POLLS = 30_000;

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser;

// The dashboard's pure helpers, straight from its sources (no browser needed).
const dashboard = (name) => import(new URL(`../../dashboard/${name}`, import.meta.url));

before(async () => {
  assert.ok(BASE, 'HUBCAST_URL is not set: run tests/browser/run.sh, which starts the server');
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: STEP });
});

after(async () => {
  await browser?.close();
});

/** A page that records page errors, console errors and every request's URL. */
async function openDashboard({ base = BASE, colorScheme = 'dark', viewport = { width: 1440, height: 900 }, firstPoll = true } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.setDefaultNavigationTimeout(STEP);
  const problems = [];
  const requests = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(base, { waitUntil: 'load' });
  // The first poll has landed once the version is filled in.
  if (firstPoll) await page.locator('#fact-version').filter({ hasNotText: '–' }).waitFor();
  return { context, page, problems, requests };
}

/** The number in an element, grouping separators removed. */
async function numberIn(locator) {
  const text = await locator.textContent({ timeout: STEP });
  const digits = (text || '').replace(/[^\d]/g, '');
  assert.ok(digits, `no number in ${JSON.stringify(text)}`);
  return Number(digits);
}

/** Polls `check` until it is true, failing after `limit` ms. */
async function eventually(what, check, limit = POLLS) {
  const deadline = Date.now() + limit;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last === true) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out after ${limit} ms waiting for ${what} (last: ${last})`);
}

async function publishFromPlayground(page, { room, data, expectedSeq = '', key = '' }) {
  await page.fill('#pub-room', room);
  await page.fill('#pub-data', data);
  await page.fill('#pub-expected', expectedSeq);
  await page.fill('#pub-key', key);
  // #pub-result counts the answers shown, whatever they are.
  const answers = Number((await page.getAttribute('#pub-result', 'data-answers')) || 0);
  await page.click('#pub-send');
  await page.locator(`#pub-result[data-answers="${answers + 1}"]`).waitFor();
  return (await page.locator('#pub-status').textContent()).trim();
}

test('latency percentiles follow Prometheus histogram_quantile', async () => {
  const prom = await dashboard('metrics.js');
  const text = (counts) => [
    '# HELP x_seconds latency', '# TYPE x_seconds histogram',
    ...Object.entries(counts).map(([le, n]) => `x_seconds_bucket{le="${le}"} ${n}`),
    'x_seconds_sum 0.1', `x_seconds_count ${counts['+Inf']}`,
    'plain_total 7', 'by_reason_total{reason="a"} 2', 'by_reason_total{reason="b"} 3',
  ].join('\n');
  const before = prom.parse(text({ '0.001': 1, '0.0025': 1, '0.005': 1, '+Inf': 1 }));
  const now = prom.parse(text({ '0.001': 1, '0.0025': 6, '0.005': 11, '+Inf': 11 }));
  assert.equal(now.counters.get('plain_total'), 7);
  assert.equal(now.counters.get('by_reason_total'), 5, 'summed over labels');
  assert.equal(now.labelled.get('by_reason_total').find((r) => r.labels.reason === 'b').value, 3);

  // Ten observations between the scrapes: 5 in (1 ms, 2.5 ms], 5 in (2.5 ms, 5 ms].
  const buckets = prom.delta(now.histograms.get('x_seconds'), before.histograms.get('x_seconds'));
  assert.equal(prom.total(buckets), 10);
  const close = (a, b) => assert.ok(Math.abs(a - b) < 1e-12, `${a} ≈ ${b}`);
  close(prom.quantile(0.5, buckets), 0.0025);
  close(prom.quantile(0.9, buckets), 0.0045);
  close(prom.quantile(0.99, buckets), 0.00495);
  // A rank in the +Inf bucket is the highest finite bound; no observations, NaN.
  const tail = prom.delta(prom.parse(text({ '0.001': 5, '0.0025': 5, '0.005': 5, '+Inf': 10 })).histograms.get('x_seconds'));
  assert.equal(prom.quantile(0.9, tail), 0.005);
  assert.ok(Number.isNaN(prom.quantile(0.5, prom.delta(now.histograms.get('x_seconds'), now.histograms.get('x_seconds')))));
  // A counter that went down means a restart: the new counts are the delta.
  assert.equal(prom.total(prom.delta(before.histograms.get('x_seconds'), now.histograms.get('x_seconds'))), 1);
});

test('event data is shown exactly as it was sent', async () => {
  const { rawFields } = await dashboard('json.js');
  const frame = '{"type":"event","room":"r","seq":3,"ts":1,"data":{"a":[1,2,{"b":"}\\"]"}],"big":12345678901234567890,"p":1.50}}';
  const fields = rawFields(frame);
  assert.equal(fields.data, '{"a":[1,2,{"b":"}\\"]"}],"big":12345678901234567890,"p":1.50}');
  assert.equal(fields.seq, '3');
  assert.equal(fields.type, '"event"');
  assert.equal(rawFields('[1]'), null);
});

test('the dashboard loads from this origin only, with no errors', async () => {
  const { context, page, problems, requests } = await openDashboard();
  try {
    const origin = new URL(BASE).origin;
    const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:'));
    assert.deepEqual(foreign, [], 'everything comes from the node itself (works offline, no CDN)');
    for (const asset of ['dashboard/style.css', 'dashboard/app.js', 'dashboard/charts.js']) {
      assert.ok(requests.some((u) => u.endsWith(asset)), `${asset} was loaded`);
    }
    await page.locator('#live-status[data-state="live"]').waitFor();
    assert.equal(await page.locator('#fact-store').textContent(), 'sqlite');
    assert.ok(await page.locator('#signin').isHidden(), 'protected mode on loopback: no credential asked for');
    assert.ok(!(await page.locator('#login').isVisible()));
    // The theme toggle cycles auto → light → dark.
    await page.click('#theme');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
    await page.click('#theme');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test('publish from the playground, see it in the inspector and in the counters', async () => {
  const { context, page, problems } = await openDashboard();
  try {
    const room = `dash-${Math.random().toString(36).slice(2, 10)}`;
    const token = `token-${Date.now().toString(36)}`;
    const published = page.locator('#kpi-published [data-field="total"]');
    const delivered = page.locator('#kpi-delivered [data-field="total"]');
    const published0 = await numberIn(published);
    const delivered0 = await numberIn(delivered);

    // Point the inspector at the room: subscribed, caught_up, then live.
    await page.fill('#insp-room', room);
    await page.click('#insp-toggle');
    await page.locator('#insp-state[data-state="live"]').waitFor();
    await page.locator('#frames .f-subscribed').waitFor();
    await page.locator('#frames .f-caught_up').waitFor();
    assert.equal(await page.inputValue('#pub-room'), room, 'the playground follows the inspector room');

    // Publish: 201, and the event arrives live in the inspector.
    const status = await publishFromPlayground(page, { room, data: `{"hello": "browser", "token": "${token}", "big": 12345678901234567890}` });
    assert.match(status, /^201/);
    const event = page.locator('#frames .f-event[data-seq="1"]');
    await event.waitFor();
    const eventText = await event.textContent();
    assert.ok(eventText.includes(token), `the inspector shows the data: ${eventText}`);
    assert.ok(eventText.includes('12345678901234567890'), 'data is shown exactly as published (no float rounding)');
    assert.ok(!(await event.getAttribute('class')).includes('replayed'), 'it arrived live, after caught_up');

    // The counters move: published (the publish) and delivered (the inspector's copy).
    await eventually('the published total to move', async () => (await numberIn(published)) > published0);
    await eventually('the delivered total to move', async () => (await numberIn(delivered)) > delivered0);

    // Idempotency-Key: the retry is answered 200 with the first receipt.
    const key = `key-${token}`;
    assert.match(await publishFromPlayground(page, { room, data: '{"n": 2}', key }), /^201/);
    assert.match(await publishFromPlayground(page, { room, data: '{"n": 2}', key }), /^200/);
    assert.match(await page.locator('#pub-meta').textContent(), /seq 2\b/);

    // expected_seq: a stale head is a 409 with the head; "use head" takes it.
    assert.match(await publishFromPlayground(page, { room, data: '{"n": 3}', expectedSeq: '0' }), /^409/);
    await page.locator('#pub-take-head').filter({ hasText: 'use head 2' }).click();
    assert.equal(await page.inputValue('#pub-expected'), '2');
    await page.click('#pub-send');
    await page.locator('#pub-status').filter({ hasText: /^201/ }).waitFor();

    // A 4xx from the server is shown as it came: a bad room name.
    assert.match(await publishFromPlayground(page, { room: 'no spaces allowed', data: '{}' }), /^400/);
    assert.match(await page.locator('#pub-body').textContent(), /invalid_room/);

    // The inspector saw 1, 2, 3 in order, once each.
    await page.locator('#frames .f-event[data-seq="3"]').waitFor();
    assert.equal(await page.locator('#frames .f-event').count(), 3);
    assert.equal(await page.locator('#insp-order').textContent(), 'gapless ✓');

    // The room is in the active rooms table, marked as the one being tailed.
    await page.locator('#rooms-table tr.current .room-name', { hasText: room }).waitFor({ timeout: POLLS });
    // Latency percentiles come from the /metrics histograms.
    await eventually('delivery latency percentiles', async () => (await page.locator('#lat-delivery [data-field="p99"]').textContent()) !== '–');
    await eventually('store append percentiles', async () => (await page.locator('#lat-append [data-field="p50"]').textContent()) !== '–');

    // Some traffic, so the screenshot shows what an operator would see: a few
    // more subscribers and a stream of publishes to a handful of rooms.
    await page.evaluate(async (target) => {
      const url = (r) => new URL(`v1/rooms/${r}/ws?rewind=5`, document.baseURI).href.replace(/^http/, 'ws');
      window.__extra = ['orders', 'prices', target, 'chat:lobby'].flatMap((r) => [new WebSocket(url(r)), new WebSocket(url(r))]);
      const rooms = ['orders', 'prices', 'chat:lobby', target];
      for (let i = 0; i < 48; i += 1) {
        const r = rooms[i % rooms.length];
        const data = r === target ? { tick: i, price: 100 + (i % 7) * 0.25, side: i % 2 ? 'buy' : 'sell' } : { tick: i };
        await fetch(`v1/rooms/${r}/events`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ data }) });
        await new Promise((res) => setTimeout(res, 60));
      }
    }, room);
    await eventually('the rooms table to list the traffic rooms', async () => (await page.locator('#rooms-table tbody tr').count()) >= 4);
    await eventually('the inspector to receive the traffic', async () => (await page.locator('#frames .f-event').count()) >= 15);
    await eventually('the latency charts to have points', async () => (await page.locator('#lat-delivery .series path.line').count()) >= 3);
    assert.equal(await page.locator('#insp-order').textContent(), 'gapless ✓');

    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    await page.emulateMedia({ colorScheme: 'light' });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-light.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-mobile.png'), fullPage: true });

    // The browser logs the deliberate 409 and 400 answers; nothing else.
    const deliberate = /Failed to load resource: the server responded with a status of (409|400)\b/;
    assert.deepEqual(problems.filter((p) => !deliberate.test(p)), []);
  } finally {
    await context.close();
  }
});

test('with auth configured, the dashboard asks for the admin key and then works', { skip: !AUTH_BASE && 'HUBCAST_AUTH_URL is not set' }, async () => {
  const { context, page, problems } = await openDashboard({ base: AUTH_BASE, firstPoll: false });
  try {
    const dialog = page.locator('#login');
    const why = page.locator('#login-why');
    // No credential: /v1/stats answers 401 and the login dialog opens.
    await dialog.waitFor({ state: 'visible' });
    await page.locator('#live-status[data-state="down"]').waitFor();
    assert.match(await why.textContent(), /admin API key/);

    // A key that is valid but not admin: 403, and the dialog says so.
    await page.fill('#login-token', PUBLISHER_KEY);
    await page.click('#login-form button[value="ok"]');
    await why.filter({ hasText: 'admin = true' }).waitFor();
    await dialog.waitFor({ state: 'visible' });

    // A wrong key: 401 again.
    await page.fill('#login-token', 'not-a-key-of-this-node');
    await page.click('#login-form button[value="ok"]');
    await why.filter({ hasText: 'refused' }).waitFor();

    // The admin key: data flows, and the WebSocket and publish carry it too.
    await page.fill('#login-token', ADMIN_KEY);
    await page.click('#login-form button[value="ok"]');
    await dialog.waitFor({ state: 'hidden' });
    await page.locator('#live-status[data-state="live"]').waitFor();
    await page.locator('#fact-version').filter({ hasNotText: '–' }).waitFor();
    assert.equal((await page.locator('#signin').textContent()).trim(), 'Sign out');

    const room = `auth-${Math.random().toString(36).slice(2, 10)}`;
    await page.fill('#insp-room', room);
    await page.click('#insp-toggle');
    await page.locator('#insp-state[data-state="live"]').waitFor();
    assert.match(await publishFromPlayground(page, { room, data: '{"signed": "in"}' }), /^201/);
    await page.locator('#frames .f-event[data-seq="1"]').waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-auth.png') });

    // Sign out: the key is forgotten and the dialog comes back.
    await page.click('#signin');
    await dialog.waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('hubcast.admin-token')), null);

    // The browser logs the refused polls (401/403) while signed out; nothing else.
    const refusals = /Failed to load resource: the server responded with a status of (401|403)\b/;
    assert.deepEqual(problems.filter((p) => !refusals.test(p)), []);
  } finally {
    await context.close();
  }
});
