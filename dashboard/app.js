// The hubcast dashboard. Every two seconds it reads the public API:
//   GET /v1/stats  → connections, rooms, totals and the per-second history
//   GET /metrics   → latency percentiles (histogram bucket deltas) and signals
//   GET /v1/rooms  → the active rooms table
//   GET /readyz    → the node's readiness
// The room inspector (inspector.js) and the playground (playground.js) use the
// room WebSocket and the publish route.

import { getJson, getText, hasToken, request, setToken } from './api.js';
import { lineChart, sparkline } from './charts.js';
import * as fmt from './format.js';
import { createInspector } from './inspector.js';
import * as prom from './metrics.js';
import { createPlayground } from './playground.js';

const POLL_MS = 2000;
const LATENCY_WINDOW_MS = 10000;
const ROOMS_PAGE = 12;

const $ = (id) => document.getElementById(id);

// ─── Theme: auto (follows the OS), light, dark ──────────────────────────────

const THEMES = ['auto', 'light', 'dark'];
function applyTheme(theme) {
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  const button = $('theme');
  button.title = `Theme: ${theme}`;
  button.dataset.mode = theme;
}
let theme = localStorage.getItem('hubcast.theme') || 'auto';
if (!THEMES.includes(theme)) theme = 'auto';
applyTheme(theme);
$('theme').addEventListener('click', () => {
  theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
  localStorage.setItem('hubcast.theme', theme);
  applyTheme(theme);
});

// ─── KPI cards ──────────────────────────────────────────────────────────────

function kpi(id, cls) {
  const card = $(id);
  const field = (name) => card.querySelector(`[data-field="${name}"]`);
  return { value: field('value'), sub: field('sub'), spark: sparkline(field('spark'), { cls }) };
}
const cards = {
  connections: kpi('kpi-connections', 's3'),
  rooms: kpi('kpi-rooms', 's4'),
  published: kpi('kpi-published', 's1'),
  delivered: kpi('kpi-delivered', 's2'),
};

/** Sets a sub line made of [text, strong] parts (DOM, never markup). */
function subline(node, parts) {
  node.replaceChildren(...parts.map(([text, strong, field]) => {
    if (!strong) return document.createTextNode(text);
    const b = document.createElement('b');
    b.textContent = text;
    if (field) b.dataset.field = field;
    return b;
  }));
}

// ─── Charts ─────────────────────────────────────────────────────────────────

const throughput = lineChart($('throughput-chart'), {
  series: [
    { key: 'pub', label: 'published/s', cls: 's1', area: true },
    { key: 'del', label: 'delivered/s', cls: 's2', area: true },
  ],
  format: fmt.rate,
  floor: 1,
  empty: 'waiting for samples…',
});

function latencyBlock(id, metric) {
  const block = $(id);
  const field = (name) => block.querySelector(`[data-field="${name}"]`);
  return {
    metric,
    fields: { p50: field('p50'), p90: field('p90'), p99: field('p99'), count: field('count') },
    chart: lineChart(field('chart'), {
      series: [
        { key: 'p50', label: 'p50', cls: 'p50' },
        { key: 'p90', label: 'p90', cls: 'p90' },
        { key: 'p99', label: 'p99', cls: 'p99' },
      ],
      format: fmt.seconds,
      floor: 0.001,
      empty: 'no observations yet',
    }),
    points: [],
  };
}
const latency = [
  latencyBlock('lat-delivery', 'hubcast_delivery_latency_seconds'),
  latencyBlock('lat-append', 'hubcast_store_append_seconds'),
];

// ─── Signals: counters worth a glance, with their change over a minute ──────

const SIGNALS = [
  { label: '409 conflicts', metric: 'hubcast_publish_conflicts_total', level: 'info' },
  { label: 'idempotent retries', metric: 'hubcast_publish_duplicates_total', level: 'info' },
  { label: 'replays from store', metric: 'hubcast_replays_total', level: 'info' },
  { label: 'sent', metric: 'hubcast_sent_bytes_total', level: 'info', format: fmt.bytes },
  { label: 'slow consumers · 4009', metric: 'hubcast_connections_closed_total', reason: 'slow_consumer', level: 'warn' },
  { label: 'heartbeat timeouts · 4010', metric: 'hubcast_connections_closed_total', reason: 'heartbeat_timeout', level: 'warn' },
  { label: 'client errors', metric: 'hubcast_client_errors_total', level: 'warn' },
  { label: 'slow broadcasts', metric: 'hubcast_slow_broadcasts_total', level: 'warn' },
  { label: 'gap fills', metric: 'hubcast_gap_fills_total', level: 'warn' },
  { label: 'reconciles', metric: 'hubcast_reconciles_total', level: 'warn' },
  { label: 'store errors', metric: 'hubcast_store_errors_total', level: 'bad' },
  { label: 'bus errors', metric: 'hubcast_bus_errors_total', level: 'bad' },
];

const signalNodes = SIGNALS.map((s) => {
  const li = document.createElement('li');
  li.className = `signal lvl-${s.level}`;
  li.title = s.reason ? `${s.metric}{reason="${s.reason}"}` : s.metric;
  const value = document.createElement('b');
  value.textContent = '–';
  const label = document.createElement('span');
  label.textContent = s.label;
  const change = document.createElement('small');
  li.append(value, label, change);
  $('signals').appendChild(li);
  return { value, change, li };
});

function signalValue(parsed, s) {
  if (!s.reason) return parsed.counters.get(s.metric);
  const rows = parsed.labelled.get(s.metric) || [];
  const row = rows.find((r) => r.labels.reason === s.reason);
  return row ? row.value : 0;
}

// ─── Scrapes of /metrics, kept for a minute ─────────────────────────────────

let scrapes = []; // [{t, parsed}]

function scrapeAgo(ms, now) {
  // The newest scrape at least `ms` old, or the oldest there is.
  let found = scrapes[0];
  for (const s of scrapes) if (now - s.t >= ms) found = s;
  return found;
}

function onMetrics(text) {
  const now = Date.now();
  const parsed = prom.parse(text);
  scrapes.push({ t: now, parsed });
  scrapes = scrapes.filter((s) => now - s.t <= 75000);
  const before = scrapes.length > 1 ? scrapeAgo(LATENCY_WINDOW_MS, now) : null;
  const windowSecs = before && before.t !== now ? (now - before.t) / 1000 : 0;

  for (const block of latency) {
    const current = parsed.histograms.get(block.metric);
    let values = { p50: null, p90: null, p99: null };
    let n = 0;
    if (before && before.t !== now && current) {
      const buckets = prom.delta(current, before.parsed.histograms.get(block.metric));
      n = prom.total(buckets);
      if (n > 0) values = { p50: prom.quantile(0.5, buckets), p90: prom.quantile(0.9, buckets), p99: prom.quantile(0.99, buckets) };
    }
    if (before) block.points.push({ t: now, values });
    block.points = block.points.filter((p) => now - p.t <= 62000);
    for (const q of ['p50', 'p90', 'p99']) {
      block.fields[q].textContent = Number.isFinite(values[q]) ? fmt.seconds(values[q]) : '–';
    }
    block.fields.count.textContent = before ? fmt.count(n) : '–';
    block.chart.update(block.points, now);
  }
  $('latency-window').textContent = windowSecs
    ? `from /metrics histograms · last ${Math.round(windowSecs)} s`
    : 'from /metrics histograms · collecting…';

  const minuteAgo = scrapeAgo(60000, now);
  SIGNALS.forEach((s, i) => {
    const v = signalValue(parsed, s) ?? NaN;
    const was = minuteAgo && minuteAgo !== scrapes[scrapes.length - 1] ? signalValue(minuteAgo.parsed, s) ?? 0 : v;
    const node = signalNodes[i];
    node.value.textContent = (s.format || fmt.count)(v);
    const grew = Number.isFinite(v) && v > was;
    node.li.classList.toggle('active', grew);
    node.li.classList.toggle('nonzero', v > 0);
    node.change.textContent = grew ? `+${(s.format || fmt.count)(v - was)} / min` : '';
  });
}

// ─── /v1/stats ──────────────────────────────────────────────────────────────

function rateOver(history, key, samples) {
  if (history.length < 2) return NaN;
  const last = history[history.length - 1];
  const first = history[Math.max(0, history.length - 1 - samples)];
  const secs = (last.t - first.t) / 1000;
  return secs > 0 ? (last[key] - first[key]) / secs : NaN;
}

function onStats(stats) {
  const history = stats.history || [];
  $('fact-version').textContent = stats.version;
  $('fact-store').textContent = stats.store;
  $('fact-bus').textContent = stats.bus;
  $('fact-uptime').textContent = fmt.uptime(stats.uptime_secs);
  // Webhooks: undelivered messages, and dead letters when there are any.
  $('fact-webhooks-row').hidden = !stats.webhooks;
  if (stats.webhooks) {
    const dead = stats.webhooks.dead_lettered;
    $('fact-webhooks').textContent = fmt.int(stats.webhooks.backlog) + (dead > 0 ? ` · ${fmt.int(dead)} dead` : '');
  }

  const peak = (key) => history.reduce((m, s) => Math.max(m, s[key]), 0);
  cards.connections.value.textContent = fmt.int(stats.connections);
  subline(cards.connections.sub, [['peak ', false], [fmt.int(Math.max(peak('connections'), stats.connections)), true], [' in the last minute', false]]);
  cards.connections.spark.update(history.map((s) => s.connections));

  cards.rooms.value.textContent = fmt.int(stats.rooms);
  subline(cards.rooms.sub, [['peak ', false], [fmt.int(Math.max(peak('rooms'), stats.rooms)), true], [' · with a hub on this node', false]]);
  cards.rooms.spark.update(history.map((s) => s.rooms));

  const perSecond = [];
  for (let i = 1; i < history.length; i += 1) {
    const a = history[i - 1];
    const b = history[i];
    const secs = (b.t - a.t) / 1000;
    if (secs <= 0) continue;
    perSecond.push({ t: b.t, values: { pub: (b.published - a.published) / secs, del: (b.delivered - a.delivered) / secs } });
  }
  const pubNow = rateOver(history, 'published', 5);
  const delNow = rateOver(history, 'delivered', 5);
  cards.published.value.textContent = fmt.rate(pubNow);
  subline(cards.published.sub, [[fmt.int(stats.totals.published), true, 'total'], [' published · 1-min avg ', false], [fmt.rate(stats.rates.published_per_sec), true], ['/s', false]]);
  cards.published.spark.update(perSecond.map((p) => p.values.pub));
  cards.delivered.value.textContent = fmt.rate(delNow);
  subline(cards.delivered.sub, [[fmt.int(stats.totals.delivered), true, 'total'], [' delivered · 1-min avg ', false], [fmt.rate(stats.rates.delivered_per_sec), true], ['/s', false]]);
  cards.delivered.spark.update(perSecond.map((p) => p.values.del));

  const legend = $('throughput-legend');
  legend.querySelector('[data-field="pub"]').textContent = `${fmt.rate(pubNow)}/s`;
  legend.querySelector('[data-field="del"]').textContent = `${fmt.rate(delNow)}/s`;
  const pubMin = stats.rates.published_per_sec;
  legend.querySelector('[data-field="fanout"]').textContent = pubMin > 0 ? `×${fmt.rate(stats.rates.delivered_per_sec / pubMin)}` : '–';
  const now = history.length ? history[history.length - 1].t : Date.now();
  throughput.update(perSecond, now);
}

// ─── /v1/rooms ──────────────────────────────────────────────────────────────

const roomPages = ['']; // the `after` of each page visited; the last is shown
let roomsNext = null;

function roomsQuery() {
  const after = roomPages[roomPages.length - 1];
  const q = new URLSearchParams({ limit: String(ROOMS_PAGE) });
  if (after) q.set('after', after);
  return `v1/rooms?${q}`;
}

function onRooms(page) {
  const body = $('rooms-table').tBodies[0];
  const tailing = inspector.room;
  const rows = page.rooms.map((r) => {
    const tr = document.createElement('tr');
    if (r.room === tailing) tr.className = 'current';
    const name = document.createElement('td');
    name.className = 'room-name';
    name.textContent = r.room;
    name.title = r.room;
    const subs = document.createElement('td');
    subs.className = 'num';
    subs.textContent = fmt.int(r.subscribers);
    const head = document.createElement('td');
    head.className = 'num';
    head.textContent = fmt.int(r.head);
    const action = document.createElement('td');
    action.className = 'act';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn ghost small';
    button.textContent = r.room === tailing ? 'tailing' : 'tail';
    button.disabled = r.room === tailing;
    button.addEventListener('click', () => inspector.tail(r.room));
    action.appendChild(button);
    tr.append(name, subs, head, action);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    const td = document.createElement('td');
    td.colSpan = 4;
    td.textContent = roomPages.length > 1 ? 'No more rooms.' : 'No active rooms. A room is active while it has a hub (subscribers, or recently had).';
    tr.appendChild(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  roomsNext = page.next;
  $('rooms-total').textContent = `${fmt.int(page.total)} with a hub on this node`;
  const from = roomPages.length > 1 ? `after “${roomPages[roomPages.length - 1]}”` : 'first page';
  $('rooms-page').textContent = page.total > ROOMS_PAGE || roomPages.length > 1 ? from : '';
  $('rooms-next').disabled = !roomsNext;
  $('rooms-first').disabled = roomPages.length === 1;
}

$('rooms-next').addEventListener('click', () => { if (roomsNext) { roomPages.push(roomsNext); refresh(); } });
$('rooms-first').addEventListener('click', () => { roomPages.length = 1; refresh(); });

// ─── Inspector and playground ───────────────────────────────────────────────

let playground = null;
const inspector = createInspector({
  onTail: (room) => {
    playground?.followRoom(room);
    refreshSoon();
  },
});
playground = createPlayground({
  onPublished: () => refreshSoon(),
  inspectorRoom: () => inspector.room,
  tail: (room) => inspector.tail(room),
});

// ─── The poll loop ──────────────────────────────────────────────────────────

let paused = false;
let timer = null;
let inFlight = null;

function setLive(state, label, title = '') {
  const pill = $('live-status');
  pill.dataset.state = state;
  pill.querySelector('.label').textContent = label;
  pill.title = title;
}

async function tick() {
  const [stats, metrics, rooms, ready] = await Promise.allSettled([
    getJson('v1/stats'),
    getText('metrics'),
    getJson(roomsQuery()),
    request('readyz'),
  ]);
  if (stats.status === 'fulfilled') onStats(stats.value);
  if (metrics.status === 'fulfilled') onMetrics(metrics.value);
  if (rooms.status === 'fulfilled') onRooms(rooms.value);
  checkCredential(stats);
  document.body.classList.toggle('stale', stats.status !== 'fulfilled');
  if (stats.status !== 'fulfilled') {
    const e = stats.reason;
    const refused = e && (e.status === 401 || e.status === 403);
    setLive('down', refused ? 'Locked' : 'Offline', String(e && e.message ? e.message : e));
  } else if (ready.status === 'fulfilled' && ready.value.status !== 200) {
    const b = ready.value.body || {};
    const why = b.stopping ? 'stopping' : [b.store !== 'ok' && `store: ${b.store}`, b.bus !== 'ok' && `bus: ${b.bus}`].filter(Boolean).join(' · ');
    setLive('warn', 'Not ready', why);
  } else if (paused) {
    setLive('paused', 'Paused');
  } else {
    setLive('live', 'Live', 'ready; updating every 2 s');
  }
  $('foot-updated').textContent = `updated ${fmt.clock(Date.now()).slice(0, 8)}`;
}

/** Polls now (unless a poll is running), then every POLL_MS. */
function refresh() {
  clearTimeout(timer);
  if (inFlight) return inFlight;
  inFlight = tick().finally(() => {
    inFlight = null;
    schedule();
  });
  return inFlight;
}

function schedule() {
  clearTimeout(timer);
  if (paused || document.hidden) return;
  timer = setTimeout(refresh, POLL_MS);
}

let soon = null;
function refreshSoon() {
  clearTimeout(soon);
  soon = setTimeout(() => { if (!paused) refresh(); }, 150);
}

function setPaused(value) {
  paused = value;
  const button = $('pause');
  button.setAttribute('aria-pressed', String(paused));
  button.title = paused ? 'Resume live updates (P)' : 'Pause live updates (P)';
  if (paused) { clearTimeout(timer); setLive('paused', 'Paused'); } else refresh();
}

$('pause').addEventListener('click', () => setPaused(!paused));
document.addEventListener('keydown', (e) => {
  const typing = e.target instanceof HTMLElement && e.target.closest('input, textarea, select, [contenteditable]');
  if (!typing && !e.ctrlKey && !e.metaKey && !e.altKey && (e.key === 'p' || e.key === 'P')) setPaused(!paused);
});
document.addEventListener('visibilitychange', () => { if (!document.hidden && !paused) refresh(); });

// ─── Login: only when the node asks for the admin credential ────────────────

const login = $('login');
const signin = $('signin');
let loginDismissed = false;

function askForCredential(status, body) {
  const why = $('login-why');
  if (status === 403) why.textContent = 'This credential is valid but may not read node-wide data: use an API key with admin = true.';
  else if (hasToken()) why.textContent = `The credential was refused${body && body.message ? ` (${body.message})` : ''}.`;
  else why.textContent = 'This node has auth configured: sign in with an admin API key.';
  if (!login.open) {
    $('login-token').value = '';
    login.showModal();
  }
}

function updateSignin(refusal) {
  signin.hidden = !refusal && !hasToken();
  signin.textContent = refusal ? 'Sign in' : 'Sign out';
  signin.onclick = refusal
    ? () => askForCredential(refusal.status, refusal.body)
    : () => { setToken(''); loginDismissed = false; inspector.stop(); refresh(); };
}

/** After a poll: the stats answer tells whether a credential is missing. */
function checkCredential(stats) {
  const e = stats.status === 'rejected' ? stats.reason : null;
  const refusal = e && (e.status === 401 || e.status === 403) ? e : null;
  updateSignin(refusal);
  if (refusal && !loginDismissed) askForCredential(refusal.status, refusal.body);
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (e.submitter && e.submitter.value === 'cancel') {
    loginDismissed = true;
  } else {
    setToken($('login-token').value);
    loginDismissed = false;
  }
  login.close();
  refresh();
});
login.addEventListener('cancel', () => { loginDismissed = true; });

refresh();
