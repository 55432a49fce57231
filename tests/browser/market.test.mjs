// The prediction-market demo (`hubcast demo`, examples/market) in a real
// browser (headless Debian Chromium), two pages: A buys and B sees the new
// price; B confirms a quote taken before A's next trade and gets the
// stale-quote rejection; the server restarts and both pages resume and agree
// with the database (GET /demo/api/markets/{id}). Keeps a screenshot.
//
// Starts its own `hubcast demo` (HUBCAST_BIN, exported by run.sh) on a free
// port with a temp data dir, so it can restart it. Every wait has a timeout
// that only turns "never" into a failure.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.HUBCAST_BIN;
const ARTIFACTS = process.env.HUBCAST_ARTIFACTS || resolve(here, '../../test-artifacts');
const STEP = 15_000;
const MARKET = 'mars-2030';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser;
let server;
let port;
let dir;

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

async function startServer() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HUBCAST_')));
  env.RUST_LOG = 'hubcast=info';
  const log = openSync(join(dir, 'server.log'), 'a');
  server = spawn(BIN, ['demo', '--traders', '0', '--config', join(dir, 'hubcast.toml'), '--listen', `127.0.0.1:${port}`,
    '--store', `sqlite://${join(dir, 'data', 'hubcast.db')}`], { cwd: dir, env, stdio: ['ignore', log, log] });
  const deadline = Date.now() + STEP;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (res.ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('hubcast demo did not become ready');
}

async function stopServer() {
  if (!server || server.exitCode !== null) return;
  const exited = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  await exited;
}

before(async () => {
  assert.ok(BIN, 'HUBCAST_BIN is not set: run tests/browser/run.sh');
  mkdirSync(ARTIFACTS, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), 'hubcast-market-'));
  openSync(join(dir, 'hubcast.toml'), 'w');
  port = await freePort();
  await startServer();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: STEP });
});

after(async () => {
  await browser?.close();
  await stopServer();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function trader() {
  const context = await browser.newContext({ viewport: { width: 1200, height: 760 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  const problems = [];
  const requests = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource|WebSocket/.test(m.text())) problems.push(`console: ${m.text()}`); });
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(`http://127.0.0.1:${port}/demo/`, { waitUntil: 'load' });
  await page.locator('#status[data-state="live"]').waitFor();
  await page.locator(`.market[data-id="${MARKET}"][data-version]`).waitFor();
  return { context, page, problems, requests };
}

const card = (page) => page.locator(`.market[data-id="${MARKET}"]`);

/** What the page shows for the market: version and prices. */
async function shown(page) {
  return card(page).evaluate((el) => ({
    version: Number(el.dataset.version),
    prices: [...el.querySelectorAll('.outcome .price')].map((p) => Number(p.dataset.price)),
  }));
}

async function database() {
  const res = await fetch(`http://127.0.0.1:${port}/demo/api/markets/${MARKET}`);
  assert.equal(res.status, 200);
  const market = await res.json();
  return { version: market.version, prices: market.prices };
}

async function buy(page, outcome, shares, slippageCents) {
  await card(page).locator(`.outcome[data-index="${outcome}"] button.buy`).click();
  await page.fill('#shares', String(shares));
  await page.fill('#slippage', String(slippageCents));
  await page.click('#confirm');
}

test('two pages trade live; a stale quote is rejected; both resume after a restart', async () => {
  const a = await trader();
  const b = await trader();
  const start = await shown(b.page);
  assert.deepEqual(start, await database());

  // A buys; B sees the new price.
  const sent = Date.now();
  await buy(a.page, 0, 20, 1);
  await a.page.locator('#feedback[data-kind="ok"]').waitFor();
  await b.page.waitForFunction(([id, v]) => document.querySelector(`.market[data-id="${id}"]`)?.dataset.version === String(v),
    [MARKET, start.version + 1]);
  console.log(`# page B showed A's trade ${Date.now() - sent} ms after A clicked confirm`);
  const afterA = await shown(b.page);
  assert.ok(afterA.prices[0] > start.prices[0], 'buying Yes raised its price on page B');
  assert.deepEqual(afterA, await database());

  // B takes a quote (1¢ tolerance), then A trades again before B confirms.
  await card(b.page).locator('.outcome[data-index="0"] button.buy').click();
  await b.page.fill('#shares', '5');
  await b.page.fill('#slippage', '1');
  const quoted = Number(await b.page.locator('#quote-price').getAttribute('data-price'));
  assert.equal(quoted, afterA.prices[0], 'the quote is the price B shows');
  await buy(a.page, 0, 40, 5);
  await a.page.locator('#feedback[data-kind="ok"]').waitFor();
  await b.page.waitForFunction(([id, v]) => document.querySelector(`.market[data-id="${id}"]`)?.dataset.version === String(v),
    [MARKET, start.version + 2]);
  assert.equal(Number(await b.page.locator('#quote-price').getAttribute('data-price')), quoted, 'the quote stays fixed');
  await b.page.click('#confirm');
  const rejection = b.page.locator('#feedback[data-kind="rejected"]');
  await rejection.waitFor();
  assert.match(await rejection.textContent(), /stale quote/i);
  const afterReject = await database();
  assert.equal(afterReject.version, start.version + 2, 'the rejected buy changed nothing');
  assert.deepEqual(await shown(b.page), afterReject);

  // Restart the server: both pages lose the connection, resume, and agree with the database.
  await stopServer();
  await Promise.all([a, b].map(({ page }) => page.locator('#status:not([data-state="live"])').waitFor()));
  await startServer();
  await Promise.all([a, b].map(({ page }) => page.locator('#status[data-state="live"]').waitFor()));
  // A trade after the restart reaches both pages too.
  await buy(a.page, 1, 10, 5);
  await a.page.locator('#feedback[data-kind="ok"]').waitFor();
  const final = await database();
  assert.equal(final.version, start.version + 3);
  for (const { page } of [a, b]) {
    await page.waitForFunction(([id, v]) => document.querySelector(`.market[data-id="${id}"]`)?.dataset.version === String(v),
      [MARKET, final.version]);
    assert.deepEqual(await shown(page), final);
  }
  const points = Number(await card(b.page).locator('svg.spark').getAttribute('data-points'));
  assert.ok(points >= 3, `the sparkline has the trades (${points} points)`);

  await a.page.screenshot({ path: join(ARTIFACTS, 'market.png') });
  for (const p of [a, b]) {
    assert.deepEqual(p.problems, []);
    const external = p.requests.filter((u) => !u.startsWith(`http://127.0.0.1:${port}/`) && !u.startsWith(`ws://127.0.0.1:${port}/`) && !u.startsWith('data:'));
    assert.deepEqual(external, [], 'no request leaves the server (no CDN)');
  }
  await a.context.close();
  await b.context.close();
});
