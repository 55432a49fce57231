// The chat demo (`hubcast demo chat`, examples/chat) in a real browser (headless
// Debian Chromium): two pages name themselves, see each other in the presence
// list, see each other typing (ephemeral messages: the room's log holds only
// the chat messages), exchange messages in order; one reloads and gets the history, and the
// other sees it leave and join again. Keeps a screenshot.
//
// Run through run.sh, which starts `hubcast demo chat` and sets
// HUBCAST_DEMO_URL (and HUBCAST_URL, a plain `serve`, which has no demo). Every
// wait has a timeout that only turns "never" into a failure.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const DEMO = process.env.HUBCAST_DEMO_URL;
const SERVE = process.env.HUBCAST_URL;
const ARTIFACTS = process.env.HUBCAST_ARTIFACTS || resolve(here, '../../test-artifacts');
const STEP = 15_000;

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser;

before(async () => {
  assert.ok(DEMO, 'HUBCAST_DEMO_URL is not set: run tests/browser/run.sh, which starts `hubcast demo chat`');
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: STEP });
});

after(async () => {
  await browser?.close();
});

/** One person: its own browser context (own localStorage), on the chat page. */
async function person(url, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.setDefaultNavigationTimeout(STEP);
  const problems = [];
  const requests = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(url, { waitUntil: 'load' });
  return { context, page, problems, requests };
}

async function enter(page, name) {
  await page.locator('#join[open]').waitFor();
  await page.fill('#name', name);
  await page.click('#join-go');
  await live(page);
}

/** Connected, caught up, and the composer usable. */
async function live(page) {
  await page.locator('#status[data-state="live"]').waitFor();
  await page.locator('#text:enabled').waitFor();
}

/** This page's own presence member id (its session id). */
async function memberId(page) {
  const id = await page.locator('body[data-member]').getAttribute('data-member');
  assert.ok(id, 'the page knows its session id');
  return id;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

/** The confirmed messages (with a seq) as "name: text", in page order. */
async function messages(page) {
  return page.locator('#log li.msg[data-seq]').evaluateAll((lis) =>
    lis.map((li) => `${li.querySelector('.who').textContent}: ${li.querySelector('.text').textContent}`));
}

async function waitForMessages(page, expected) {
  const last = expected[expected.length - 1];
  const [name, ...rest] = last.split(': ');
  await page.locator('#log li.msg[data-seq]').filter({ hasText: rest.join(': ') }).filter({ hasText: name }).waitFor();
  const all = await messages(page);
  const tail = all.slice(-expected.length);
  assert.deepEqual(tail, expected, `messages in order (page shows ${JSON.stringify(all)})`);
}

test('a plain `hubcast serve` has no demo routes', { skip: !SERVE }, async () => {
  const response = await fetch(new URL('demo/chat/', SERVE));
  assert.equal(response.status, 404);
});

test('two pages chat, see each other, and a reload brings back the history', async () => {
  const room = `chat:t-${Math.random().toString(36).slice(2, 10)}`;
  const url = new URL(`demo/chat/?room=${encodeURIComponent(room)}`, DEMO).href;
  const a = await person(url);
  const b = await person(url);
  try {
    // Everything comes from the node itself (no CDN).
    const origin = new URL(DEMO).origin;
    const foreign = a.requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:'));
    assert.deepEqual(foreign, [], 'the page loads from its own origin only');
    assert.equal(await a.page.locator('#room').textContent(), room);

    await enter(a.page, 'Ada');
    await enter(b.page, 'Brian');
    const idA = await memberId(a.page);
    const idB = await memberId(b.page);
    assert.notEqual(idA, idB);

    // Presence: each sees both members (itself marked as "you").
    for (const { page } of [a, b]) {
      await page.locator(`#members li[data-member="${idA}"]`).waitFor();
      await page.locator(`#members li[data-member="${idB}"]`).waitFor();
      await page.locator('#count', { hasText: '2' }).waitFor();
    }
    assert.equal((await a.page.locator('#members li.self .who').textContent()), 'Ada');

    // Messages, both ways, in order on both pages.
    await say(a.page, 'Hello from Ada');
    await waitForMessages(b.page, ['Ada: Hello from Ada']);
    await say(b.page, 'Hi Ada, Brian here');
    await waitForMessages(a.page, ['Ada: Hello from Ada', 'Brian: Hi Ada, Brian here']);

    // Typing indicator: A types, B sees it (A does not see its own); A's
    // message ends it. B types and clears the box: A sees it start and stop.
    await a.page.fill('#text', 'How is the');
    await b.page.locator('#typing', { hasText: 'Ada is typing…' }).waitFor();
    assert.equal(await a.page.locator('#typing').textContent(), '', 'a page does not show its own typing');
    await say(a.page, 'How is the weather?');
    await waitForMessages(b.page, ['Ada: Hello from Ada', 'Brian: Hi Ada, Brian here', 'Ada: How is the weather?']);
    await b.page.locator('#typing[data-count="0"]').waitFor();
    await b.page.fill('#text', 'Let me look');
    await a.page.locator('#typing', { hasText: 'Brian is typing…' }).waitFor();
    await b.page.fill('#text', '');
    await a.page.locator('#typing[data-count="0"]').waitFor();
    // Typing cost no event: the log holds the three messages only.
    const history = await (await fetch(new URL(`v1/rooms/${encodeURIComponent(room)}/events`, DEMO))).json();
    assert.deepEqual(history.events.map((e) => e.data.text), ['Hello from Ada', 'Hi Ada, Brian here', 'How is the weather?']);
    assert.equal(history.head, 3);

    await say(a.page, 'Sunny here.');
    const conversation = ['Ada: Hello from Ada', 'Brian: Hi Ada, Brian here', 'Ada: How is the weather?', 'Ada: Sunny here.'];
    await waitForMessages(a.page, conversation);
    await waitForMessages(b.page, conversation);
    assert.equal(await a.page.locator('#log li.msg.pending').count(), 0, 'every message was confirmed');

    // Names are learned from messages: A's list now names B.
    await a.page.locator(`#members li[data-member="${idB}"] .who`, { hasText: 'Brian' }).waitFor();
    await b.page.locator(`#members li[data-member="${idA}"] .who`, { hasText: 'Ada' }).waitFor();

    // B reloads: it keeps its name, gets the history (rewind) and a new session.
    await b.page.reload({ waitUntil: 'load' });
    await live(b.page);
    assert.ok(await b.page.locator('#join').evaluate((d) => !d.open), 'the name is remembered');
    await waitForMessages(b.page, conversation);
    assert.equal(await b.page.locator('#log li.msg.mine[data-seq]').count(), 1, "B's own message is still B's");
    assert.equal(await b.page.locator('#log li.msg.replayed').count(), conversation.length, 'history came by replay');
    const idB2 = await memberId(b.page);
    assert.notEqual(idB2, idB, 'a reload is a new session');

    // A sees B's old session leave and the new one join.
    await a.page.locator(`#members li[data-member="${idB}"]`).waitFor({ state: 'detached' });
    await a.page.locator(`#members li[data-member="${idB2}"]`).waitFor();
    await a.page.locator('#log li.system.leave', { hasText: 'Brian left' }).waitFor();
    await a.page.locator('#log li.system.join', { hasText: `guest #${idB2.split('-').pop()} joined` }).waitFor();
    await b.page.locator(`#members li[data-member="${idA}"]`).waitFor();

    await say(b.page, 'Back after a reload.');
    const more = [...conversation, 'Brian: Back after a reload.'];
    await waitForMessages(a.page, more);
    await waitForMessages(b.page, more);
    await a.page.locator(`#members li[data-member="${idB2}"] .who`, { hasText: 'Brian' }).waitFor();
    await a.page.locator(`#log li.system.join[data-member="${idB2}"]`, { hasText: 'Brian joined' }).waitFor();
    await a.page.locator('#count', { hasText: '2' }).waitFor();

    await a.page.screenshot({ path: join(ARTIFACTS, 'chat.png') });
    assert.deepEqual(a.problems, []);
    assert.deepEqual(b.problems, []);
  } finally {
    await a.context.close();
    await b.context.close();
  }
});
