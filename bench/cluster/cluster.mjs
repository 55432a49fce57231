// The cluster at scale of issue 20, from an independent client (npm `ws`,
// through bench/wsload/wsload.mjs, shared with bench/storm).
//
// K `hubcast serve` nodes on one PostgreSQL + one NATS (bench/cluster/run.sh
// starts them and passes --urls and --pids). The main process starts P client
// processes, each spreading its sockets over 64 source addresses of its own
// (127.{20+w}.0.1-64, `--sources`), which subscribe
// with `/v1/rooms/{room}/ws?cursor=0` to a mix of fresh rooms (`--rooms
// 1000x90,10x1000`: 1,000 rooms of 90 subscribers and 10 of 1,000), each
// room's subscribers spread over the nodes (`--placement spread`) or all on
// the node its name hashes to (`--placement room-hash`: rendezvous hashing,
// what a load balancer routing by room would do). Then every client process
// publishes its share of `--rate` durable publishes/s for `--seconds`, over
// every node, to rooms drawn at random, with its send time in the event.
// With `--kill-node N --kill-at S` node N (1-based) is `kill -9`'d S seconds
// into the publish phase: its subscribers reconnect to the other nodes with
// `?cursor=<last seq>&epoch=<epoch>` and must end exact.
//
// At the end every subscriber checks its stream against its room's head as
// the store has it (GET /v1/rooms/{room}): every seq from 1, exactly once, in
// order. Reported (table on stdout; --json FILE): shortfalls per room,
// deliveries/s, publish-to-receive p50/p99/p99.9 (live, and replayed after a
// resume), publishes/s achieved and failed by reason, each node's RSS and CPU
// and NATS's and PostgreSQL's CPU over the publish phase (/proc), the
// reconcile's queries/s and rooms/s (the nodes' /metrics), the resumes, and a
// per-second timeline (bench/cluster/plot.py draws it). Progress lines on
// stderr while it runs.
//
// `--find-rate R0`: instead of one publish phase, steps of `--step-seconds`
// at R0, R0×`--rate-factor`, … until p99 ≥ `--target-p99` ms (or failures or
// a rate not achieved); reports the highest rate that held.
// `--assert-exact`: exit 1 unless every subscriber is live and exact, nothing
// lost or doubled, and (with a kill) every subscriber of the killed node
// resumed. Never asserts a time.
//
// `--client node` (the default) forks this script's `worker()` as the client
// processes; `--client rust --hubcast-bin PATH` runs `hubcast bench
// cluster-client` (crates/hubcast-bench/src/cluster_client.rs) instead: the
// same requests, subscriber semantics, checks and report, for a fraction of
// the CPU. At 100,000 sockets the Node clients ate ~95% of one of this
// machine's 2 cores, so the rate measured was the load generator's limit, not
// the nodes'. The report records which client ran (`client`).
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import {
  addCounts, forkWorkers, spawnWorkers, Gate, groupDelta, Histogram, httpGetJson, httpGetText, nowMs, parseArgs,
  pidsByName, post, procSample, sampleGroup, sourceAddress, Subscriber,
} from '../wsload/wsload.mjs';

const MAX_SOCKETS_PER_PROCESS = 19900;

const DEFAULTS = {
  rooms: '1000x90,10x1000',
  workers: 0,
  rate: 1000,
  seconds: 60,
  'kill-node': 0,
  'kill-at': 0,
  drain: 60,
  progress: 2,
  inflight: 500,
  'publish-inflight': 2000,
  placement: 'spread',
  'source-block': 20,
  sources: 64,
  'clk-tck': 100,
  'target-p99': 250,
  'find-rate': 0,
  'rate-factor': 1.5,
  'max-rate': 1000000,
  'step-seconds': 20,
  'connect-timeout': 600,
};

function options(argv) {
  const opt = parseArgs(argv, DEFAULTS, {
    strings: ['urls', 'pids', 'rooms', 'json', 'prefix', 'placement', 'label', 'client', 'hubcast-bin'],
    flags: ['assert-exact'],
  });
  opt.client = opt.client ?? 'node';
  if (!['node', 'rust'].includes(opt.client)) throw new Error(`--client: node or rust, not ${opt.client}`);
  if (opt.client === 'rust' && !opt['hubcast-bin']) throw new Error('--client rust needs --hubcast-bin');
  opt.urls = String(opt.urls ?? '').split(',').filter(Boolean);
  opt.pids = String(opt.pids ?? '').split(',').filter(Boolean).map(Number);
  if (opt.urls.length === 0) throw new Error('--urls URL,URL,… is required');
  if (opt.pids.length && opt.pids.length !== opt.urls.length) throw new Error('--pids must name one PID per URL');
  if (!['spread', 'room-hash'].includes(opt.placement)) throw new Error('--placement is spread or room-hash');
  if (opt['kill-node']) {
    if (!opt.pids.length) throw new Error('--kill-node needs --pids');
    if (opt['kill-node'] < 1 || opt['kill-node'] > opt.urls.length) throw new Error('--kill-node is 1..K');
    if (opt.urls.length < 2) throw new Error('--kill-node needs at least 2 nodes');
    if (opt['find-rate']) throw new Error('--kill-node and --find-rate do not go together');
    if (!(opt['kill-at'] >= 0 && opt['kill-at'] < opt.seconds)) throw new Error('--kill-at must be from 0 to less than --seconds');
  }
  return opt;
}

// "1000x90,10x1000" → [90, 90, …, 1000, …]: each room's subscriber count.
export function parseRooms(spec) {
  const sizes = [];
  for (const part of spec.split(',').filter(Boolean)) {
    const m = /^(\d+)x(\d+)$/.exec(part.trim());
    if (!m) throw new Error(`--rooms: "${part}" is not COUNTxSUBSCRIBERS`);
    for (let i = 0; i < Number(m[1]); i++) sizes.push(Number(m[2]));
  }
  if (sizes.length === 0) throw new Error('--rooms: no rooms');
  return sizes;
}

function fnv1a(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}

// The nodes a subscriber tries, best first: `spread` starts at (room + k) mod
// K, so a room's subscribers cover every node; `room-hash` ranks the nodes by
// rendezvous hash of (room, node), so they all start on one node and fail
// over together to the same next one.
function nodeOrder(opt, roomName, room, k) {
  const K = opt.urls.length;
  const order = [];
  if (opt.placement === 'spread') {
    for (let i = 0; i < K; i++) order.push((room + k + i) % K);
  } else {
    const ranked = [...Array(K).keys()].map((n) => [fnv1a(`${roomName}/${n}`), n]);
    ranked.sort((a, b) => b[0] - a[0]);
    for (const [, n] of ranked) order.push(n);
  }
  return order;
}

const fmt = (x, d = 0) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
const log = (line) => process.stderr.write(`${line}\n`);

// ---------------------------------------------------------------- main
async function main() {
  const opt = options(process.argv.slice(2));
  const sizes = parseRooms(opt.rooms);
  const total = sizes.reduce((a, b) => a + b, 0);
  const P = opt.workers || Math.max(2, Math.ceil(total / MAX_SOCKETS_PER_PROCESS));
  if (Math.ceil(total / P) > MAX_SOCKETS_PER_PROCESS) {
    throw new Error(`${total} subscribers over ${P} processes is more than ${MAX_SOCKETS_PER_PROCESS} sockets a process: use --workers ${Math.ceil(total / MAX_SOCKETS_PER_PROCESS)} or more`);
  }
  const prefix = opt.prefix ?? `cluster${Date.now().toString(36)}`;
  const K = opt.urls.length;
  const down = new Set();
  const t0 = Date.now();
  const marks = [];
  const mark = (what, extra = {}) => marks.push({ t: (Date.now() - t0) / 1000, what, ...extra });

  // ---- per-second timeline: client ticks + /proc samples
  const seconds = [];
  const second = (ms) => {
    const i = Math.max(0, Math.floor((ms - t0) / 1000));
    while (seconds.length <= i) {
      seconds.push({ t: seconds.length, deliveries: 0, replayed: 0, publishes_ok: 0, publishes_failed: 0, hist: new Histogram(), live: 0, resuming: 0, resumes: 0, sys: null });
    }
    return seconds[i];
  };
  const workerState = new Map();
  let recent = { deliveries: 0, ok: 0, failed: 0, hist: new Histogram(), since: Date.now() };
  // The client processes: this script's Node workers, or `hubcast bench
  // cluster-client` (the same requests and answers, a fraction of the CPU).
  const pool = opt.client === 'rust'
    ? spawnWorkers(opt['hubcast-bin'], ['bench', 'cluster-client'], P)
    : forkWorkers(new URL(import.meta.url).pathname, P);
  pool.workers.forEach((child) => child.on('message', (msg) => {
    if (msg.type !== 'tick') return;
    const s = second(msg.at);
    s.deliveries += msg.deliveries;
    s.replayed += msg.replayed;
    s.publishes_ok += msg.ok;
    s.publishes_failed += msg.failed;
    s.hist.merge(msg.hist);
    workerState.set(msg.w, msg);
    recent.deliveries += msg.deliveries;
    recent.ok += msg.ok;
    recent.failed += msg.failed;
    recent.hist.merge(msg.hist);
  }));
  const clientPids = pool.workers.map((c) => c.pid);

  // /proc, once a second: each node, NATS, PostgreSQL, the clients.
  let natsPids = pidsByName('nats-server');
  let pgPids = pidsByName('postgres');
  const sample = () => ({
    at: Date.now(),
    nodes: opt.pids.map((pid) => procSample(pid)),
    nats: sampleGroup(natsPids),
    pg: sampleGroup(pgPids),
    clients: sampleGroup(clientPids),
  });
  const lastNode = opt.pids.map(() => null); // each node's last sample while alive
  let prev = sample();
  let ticksSinceRefresh = 0;
  const clk = opt['clk-tck'];
  const cpuPct = (ticks, ms) => (ms > 0 ? (ticks / clk) / (ms / 1000) * 100 : null);
  const sampler = setInterval(() => {
    if (++ticksSinceRefresh >= 5) { natsPids = pidsByName('nats-server'); pgPids = pidsByName('postgres'); ticksSinceRefresh = 0; }
    const cur = sample();
    const ms = cur.at - prev.at;
    cur.nodes.forEach((s, n) => { if (s) lastNode[n] = { ...s, at: cur.at }; });
    const sec = second(cur.at);
    sec.live = 0; sec.resuming = 0; sec.resumes = 0;
    for (const st of workerState.values()) { sec.live += st.live; sec.resuming += st.resuming; sec.resumes += st.resumes; }
    sec.sys = {
      nodes_cpu: cur.nodes.map((s, n) => (s && prev.nodes[n] ? cpuPct(s.ticks - prev.nodes[n].ticks, ms) : null)),
      nodes_rss_mb: cur.nodes.map((s) => (s ? s.rss / 1048576 : null)),
      nats_cpu: cpuPct(groupDelta(prev.nats, cur.nats).ticks, ms),
      pg_cpu: cpuPct(groupDelta(prev.pg, cur.pg).ticks, ms),
      clients_cpu: cpuPct(groupDelta(prev.clients, cur.clients).ticks, ms),
    };
    prev = cur;
  }, 1000);

  // ---- progress lines
  let phase = 'connect';
  const progress = setInterval(() => {
    const secs = (Date.now() - recent.since) / 1000;
    let live = 0; let resuming = 0; let resumes = 0;
    for (const st of workerState.values()) { live += st.live; resuming += st.resuming; resumes += st.resumes; }
    const sys = seconds.length ? (seconds[seconds.length - 1].sys ?? seconds[seconds.length - 2]?.sys) : null;
    const cpu = sys ? sys.nodes_cpu.map((c, n) => `n${n + 1} ${down.has(n) ? 'dead' : `${fmt(c)}%`}`).join(' ') : '';
    const h = recent.hist;
    log(`[${fmt((Date.now() - t0) / 1000).padStart(4)}s] ${phase.padEnd(8)} live ${fmt(live)}/${fmt(total)} resuming ${fmt(resuming)} resumed ${fmt(resumes)}`
      + ` | publishes ${fmt(recent.ok / secs)}/s failed ${fmt(recent.failed)} | deliveries ${fmt(recent.deliveries / secs)}/s`
      + ` p50 ${fmt(h.percentile(50), 1)} p99 ${fmt(h.percentile(99), 1)} ms`
      + (sys ? ` | cpu ${cpu} nats ${fmt(sys.nats_cpu)}% pg ${fmt(sys.pg_cpu)}% clients ${fmt(sys.clients_cpu)}%` : ''));
    recent = { deliveries: 0, ok: 0, failed: 0, hist: new Histogram(), since: Date.now() };
  }, opt.progress * 1000);

  // ---- the nodes' reconcile counters
  const reconcileOf = async (n) => {
    try {
      const text = await httpGetText(`${opt.urls[n]}/metrics`);
      const value = (name) => {
        let v = 0;
        for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)$`, 'gm'))) v += Number(m[1]);
        return v;
      };
      return { at: Date.now(), queries: value('hubcast_reconcile_queries_total'), rooms: value('hubcast_reconcile_rooms_total'), connections: value('hubcast_connections') };
    } catch {
      return null;
    }
  };
  const lastMetrics = opt.urls.map(() => null);
  const metricsNow = async () => {
    const got = await Promise.all(opt.urls.map((_, n) => (down.has(n) ? null : reconcileOf(n))));
    got.forEach((m, n) => { if (m) lastMetrics[n] = m; });
    return opt.urls.map((_, n) => lastMetrics[n]);
  };
  const metricsPoll = setInterval(() => { metricsNow(); }, 5000);

  // ---- connect
  log(`== ${total.toLocaleString('en-US')} subscribers in ${sizes.length.toLocaleString('en-US')} rooms (${opt.rooms}), ${P} ${opt.client} client processes, ${K} nodes, placement ${opt.placement}, prefix ${prefix}`);
  mark('connect');
  const connectStart = Date.now();
  const connected = await pool.ask('connect', 'connected', (w) => ({ w, P, opt: { ...opt, prefix }, sizes }));
  const connectSeconds = (Date.now() - connectStart) / 1000;
  mark('connected');
  const notLiveAfterConnect = connected.reduce((a, c) => a + c.notLive, 0);
  log(`== connected in ${connectSeconds.toFixed(1)} s${notLiveAfterConnect ? `, ${notLiveAfterConnect} not live after --connect-timeout` : ''}`);

  // ---- publish steps
  const headsSoFar = new Array(sizes.length).fill(0);
  const storeHeads = async () => {
    const heads = new Array(sizes.length).fill(0);
    const live = opt.urls.filter((_, n) => !down.has(n));
    const gate = new Gate(16);
    await Promise.all(sizes.map(async (_, r) => {
      await gate.acquire();
      try {
        for (let attempt = 0; ; attempt++) {
          try {
            heads[r] = (await httpGetJson(`${live[(r + attempt) % live.length]}/v1/rooms/${prefix}:${r}`)).head;
            break;
          } catch (err) {
            if (attempt >= 5) throw err;
            await new Promise((res) => setTimeout(res, 200 * (attempt + 1)));
          }
        }
      } finally { gate.release(); }
    }));
    return heads;
  };

  const runStep = async (rate, secs, kill) => {
    phase = 'publish';
    const startMetrics = await metricsNow();
    const startSys = sample();
    const pubStart = Date.now();
    mark('publish', { rate });
    let killed = null;
    let killTimer = null;
    if (kill) {
      killTimer = setTimeout(() => {
        const n = opt['kill-node'] - 1;
        const before = procSample(opt.pids[n]);
        if (before) lastNode[n] = { ...before, at: Date.now() };
        process.kill(opt.pids[n], 'SIGKILL');
        down.add(n);
        killed = { node: n + 1, at_s: (Date.now() - pubStart) / 1000 };
        mark('kill', { node: n + 1 });
        log(`== kill -9 node ${n + 1} (pid ${opt.pids[n]}) ${killed.at_s.toFixed(1)} s into the publish phase`);
        pool.broadcast({ type: 'down', node: n });
      }, opt['kill-at'] * 1000);
    }
    const pubs = await pool.ask('publish', 'published', () => ({ rate, seconds: secs }));
    clearTimeout(killTimer);
    const pubEnd = Date.now();
    const endSys = sample();
    const endMetrics = await metricsNow();
    mark('published');
    phase = 'drain';
    const heads = await storeHeads();
    const drained = await pool.ask('drain', 'drained', () => ({ heads, deadline: Date.now() + opt.drain * 1000 }));
    const drainedAt = Math.max(...drained.map((d) => d.at));
    mark('drained', { all_at_head: drained.every((d) => d.lagging === 0) });
    phase = 'idle';

    // Publishes.
    const ok = pubs.reduce((a, p) => a + p.ok, 0);
    const failed = pubs.reduce((a, p) => a + p.failed, 0);
    const reasons = pubs.reduce((a, p) => addCounts(a, p.reasons), {});
    let committed = 0;
    let receiptsBeyondHead = 0;
    heads.forEach((h, r) => { committed += h - headsSoFar[r]; headsSoFar[r] = h; });
    for (const p of pubs) for (const [r, seq] of Object.entries(p.heads)) if (seq > heads[r]) receiptsBeyondHead += 1;
    const pubSeconds = (pubEnd - pubStart) / 1000;
    // Deliveries and latency.
    const live = new Histogram();
    const replay = new Histogram();
    for (const d of drained) { live.merge(d.live); replay.merge(d.replay); }
    const all = new Histogram().merge(live.toJSON()).merge(replay.toJSON());
    const deliveries = drained.reduce((a, d) => a + d.deliveries, 0);
    // Resources over the publish phase.
    const ms = endSys.at - startSys.at;
    const nodes = opt.urls.map((url, n) => {
      const a = startSys.nodes[n];
      const b = endSys.nodes[n] ?? lastNode[n];
      const until = endSys.nodes[n] ? endSys.at : lastNode[n]?.at ?? endSys.at;
      const m0 = startMetrics[n];
      const m1 = endMetrics[n];
      const mspan = m0 && m1 ? (m1.at - m0.at) / 1000 : null;
      return {
        node: n + 1,
        url,
        killed: killed?.node === n + 1,
        cpu_pct: a && b ? cpuPct(b.ticks - a.ticks, until - startSys.at) : null,
        rss_mb: b ? Math.round(b.rss / 1048576) : null,
        connections_at_end: down.has(n) ? null : m1?.connections ?? null,
        reconcile_queries_per_s: mspan ? (m1.queries - m0.queries) / mspan : null,
        reconcile_rooms_per_s: mspan ? (m1.rooms - m0.rooms) / mspan : null,
      };
    });
    const group = (key) => {
      const d = groupDelta(startSys[key], endSys[key]);
      return { cpu_pct: cpuPct(d.ticks, ms), rss_mb: Math.round(d.rss / 1048576) };
    };
    const sumOf = (f) => nodes.reduce((a, x) => a + (x[f] ?? 0), 0);
    return {
      rate,
      seconds: secs,
      publish: {
        acknowledged: ok,
        failed,
        failures_by_reason: reasons,
        achieved_per_s: ok / pubSeconds,
        attempted_per_s: (ok + failed) / pubSeconds,
        phase_seconds: pubSeconds,
        committed,
        committed_unacknowledged: committed - ok,
        receipts_beyond_store_head: receiptsBeyondHead,
      },
      delivery: {
        deliveries,
        per_s: deliveries / ((drainedAt - pubStart) / 1000),
        all_at_head: drained.every((d) => d.lagging === 0),
        lagging_subscribers: drained.reduce((a, d) => a + d.lagging, 0),
        drain_seconds: (drainedAt - pubEnd) / 1000,
        latency: all.summary(),
        latency_live: live.summary(),
        latency_replayed: replay.summary(),
      },
      kill: killed,
      resources: {
        nodes,
        nats: group('nats'),
        postgres: group('pg'),
        clients: group('clients'),
        reconcile_queries_per_s: sumOf('reconcile_queries_per_s'),
        reconcile_rooms_per_s: sumOf('reconcile_rooms_per_s'),
      },
    };
  };

  const steps = [];
  let best = null;
  if (opt['find-rate']) {
    for (let rate = opt['find-rate']; rate <= opt['max-rate']; rate = Math.round(rate * opt['rate-factor'])) {
      log(`== step: ${fmt(rate)} publishes/s for ${opt['step-seconds']} s`);
      const step = await runStep(rate, opt['step-seconds'], false);
      const p99 = step.delivery.latency.p99_ms;
      step.held = p99 !== null && p99 < opt['target-p99'] && step.delivery.all_at_head
        && step.publish.failed <= 0.01 * (step.publish.acknowledged + step.publish.failed)
        && step.publish.achieved_per_s >= 0.9 * rate;
      steps.push(step);
      log(`== step ${fmt(rate)}/s: achieved ${fmt(step.publish.achieved_per_s)}/s, p99 ${fmt(p99, 1)} ms, ${step.held ? 'held' : 'did not hold'}`);
      if (!step.held) break;
      best = step;
    }
  } else {
    steps.push(await runStep(opt.rate, opt.seconds, opt['kill-node'] > 0));
  }

  // ---- check every stream against the final heads
  const results = await pool.ask('check', 'checked', () => ({ heads: headsSoFar }));
  clearInterval(progress);
  clearInterval(sampler);
  clearInterval(metricsPoll);
  pool.close();

  const rooms = {};
  for (const r of results) {
    for (const [room, s] of Object.entries(r.rooms)) {
      const into = rooms[`${prefix}:${room}`] ??= { subscribers: sizes[room], head: headsSoFar[room], inexact: 0, missed: 0, duplicates: 0, not_live: 0 };
      into.inexact += s.inexact; into.missed += s.missed; into.duplicates += s.duplicates; into.not_live += s.notLive;
    }
  }
  const resumeHist = new Histogram();
  for (const r of results) resumeHist.merge(r.resumeHist);
  const s = (f) => results.reduce((a, r) => a + r[f], 0);
  const report = {
    label: opt.label ?? null,
    date: new Date(t0).toISOString(),
    nodes: K,
    urls: opt.urls,
    client_processes: P,
    client: opt.client,
    rooms: opt.rooms,
    room_count: sizes.length,
    subscribers: total,
    placement: opt.placement,
    connect: {
      seconds: connectSeconds,
      not_live_after_timeout: notLiveAfterConnect,
      connect_errors: results.reduce((a, r) => addCounts(a, r.connectErrors), {}),
      refusals_by_code: results.reduce((a, r) => addCounts(a, r.refusals), {}),
    },
    steps,
    find_rate: opt['find-rate'] ? { target_p99_ms: opt['target-p99'], highest_rate_held: best?.rate ?? null } : null,
    resumes: {
      total: s('resumes'),
      subscribers_on_killed_node: s('onKilled'),
      of_them_resumed: s('onKilledResumed'),
      close_codes: results.reduce((a, r) => addCounts(a, r.closeCodes), {}),
      time_to_live_again: resumeHist.summary(),
    },
    exactness: {
      subscribers: s('subscribers'),
      live_at_end: s('live'),
      exact: s('exact'),
      inexact: s('inexact'),
      missed: s('missed'),
      duplicates: s('duplicates'),
      resets: s('resets'),
      beyond_head: s('beyond'),
      rooms_with_shortfall: Object.keys(rooms).length,
      shortfall_by_room: rooms,
    },
    marks,
    timeline: seconds.map((x) => ({
      t: x.t,
      deliveries: x.deliveries,
      replayed: x.replayed,
      publishes_ok: x.publishes_ok,
      publishes_failed: x.publishes_failed,
      live: x.live,
      resuming: x.resuming,
      resumes: x.resumes,
      ...x.hist.summary(),
      ...(x.sys ?? {}),
    })),
  };
  printTable(report);
  if (opt.json) writeFileSync(opt.json, `${JSON.stringify(report, null, 2)}\n`);

  const violations = [];
  const e = report.exactness;
  if (e.live_at_end !== e.subscribers) violations.push(`${e.subscribers - e.live_at_end} subscribers not live at the end`);
  if (e.inexact) violations.push(`${e.inexact} inexact subscribers`);
  if (e.missed) violations.push(`${e.missed} events missed`);
  if (e.duplicates) violations.push(`${e.duplicates} events doubled`);
  if (e.resets) violations.push(`${e.resets} resets`);
  if (e.beyond_head) violations.push(`${e.beyond_head} subscribers past the store's head`);
  for (const st of steps) {
    if (st.publish.committed < st.publish.acknowledged) violations.push(`${st.publish.acknowledged - st.publish.committed} acknowledged publishes not in the log`);
    if (st.publish.receipts_beyond_store_head) violations.push(`${st.publish.receipts_beyond_store_head} receipts beyond the store's head`);
  }
  if (opt['kill-node'] && report.resumes.of_them_resumed < report.resumes.subscribers_on_killed_node) {
    violations.push(`${report.resumes.subscribers_on_killed_node - report.resumes.of_them_resumed} subscribers of the killed node did not resume`);
  }
  if (opt['kill-node'] && !steps[0].kill) violations.push('the node was not killed (the publish phase ended first: --kill-at must be less than --seconds)');
  else if (opt['kill-node'] && report.resumes.subscribers_on_killed_node === 0) violations.push('no subscriber was on the killed node');
  if (violations.length) {
    console.log(`\nVIOLATIONS: ${violations.join('; ')}`);
    if (opt['assert-exact']) process.exit(1);
  } else {
    console.log(`\nexact: all ${e.subscribers.toLocaleString('en-US')} subscribers hold every seq of their room once, in order`);
  }
  process.exit(0);
}

function printTable(r) {
  const out = [];
  const row = (k, v) => out.push(`${k.padEnd(38)} ${v}`);
  out.push('');
  out.push(`cluster at scale: ${r.nodes} nodes, ${fmt(r.subscribers)} subscribers in ${fmt(r.room_count)} rooms (${r.rooms}), ${r.client_processes} ${r.client} client processes, placement ${r.placement}`);
  row('connect', `${fmt(r.connect.seconds, 1)} s; connect errors ${JSON.stringify(r.connect.connect_errors)}; refusals ${JSON.stringify(r.connect.refusals_by_code)}`);
  for (const st of r.steps) {
    out.push('');
    out.push(`-- ${fmt(st.rate)} publishes/s for ${st.seconds} s${st.kill ? `, node ${st.kill.node} killed at ${fmt(st.kill.at_s, 1)} s` : ''}${st.held === undefined ? '' : st.held ? ' (held)' : ' (did not hold)'}`);
    const p = st.publish;
    row('publishes acknowledged / failed', `${fmt(p.acknowledged)} / ${fmt(p.failed)} ${Object.keys(p.failures_by_reason).length ? JSON.stringify(p.failures_by_reason) : ''}`);
    row('publishes/s achieved', `${fmt(p.achieved_per_s)} (of ${fmt(st.rate)} asked; phase ${fmt(p.phase_seconds, 1)} s)`);
    row('committed, not acknowledged', fmt(p.committed_unacknowledged));
    const d = st.delivery;
    row('deliveries, deliveries/s', `${fmt(d.deliveries)}, ${fmt(d.per_s)}/s (drain ${fmt(d.drain_seconds, 1)} s${d.all_at_head ? '' : `, ${fmt(d.lagging_subscribers)} subscribers short of the head`})`);
    const l = (h) => `p50 ${fmt(h.p50_ms, 1)}  p99 ${fmt(h.p99_ms, 1)}  p99.9 ${fmt(h.p999_ms, 1)}  max ${fmt(h.max_ms, 1)} ms (${fmt(h.count)})`;
    row('publish→receive, all', l(d.latency));
    row('  live', l(d.latency_live));
    row('  replayed after a resume', l(d.latency_replayed));
    out.push(`${'node'.padEnd(6)} ${'CPU %'.padStart(7)} ${'RSS MB'.padStart(8)} ${'sockets'.padStart(9)} ${'reconcile q/s'.padStart(14)} ${'rooms/s'.padStart(10)}`);
    for (const n of st.resources.nodes) {
      out.push(`${String(n.node).padEnd(6)} ${fmt(n.cpu_pct).padStart(7)} ${fmt(n.rss_mb).padStart(8)} ${(n.killed ? 'killed' : fmt(n.connections_at_end)).padStart(9)} ${fmt(n.reconcile_queries_per_s, 1).padStart(14)} ${fmt(n.reconcile_rooms_per_s).padStart(10)}`);
    }
    const g = st.resources;
    row('NATS / PostgreSQL / clients CPU %', `${fmt(g.nats.cpu_pct)} / ${fmt(g.postgres.cpu_pct)} / ${fmt(g.clients.cpu_pct)}`);
    row('reconcile, cluster', `${fmt(g.reconcile_queries_per_s, 1)} queries/s, ${fmt(g.reconcile_rooms_per_s)} rooms/s`);
  }
  out.push('');
  if (r.find_rate) row(`highest rate with p99 < ${r.find_rate.target_p99_ms} ms`, r.find_rate.highest_rate_held === null ? 'none' : `${fmt(r.find_rate.highest_rate_held)}/s`);
  const rs = r.resumes;
  row('resumes', `${fmt(rs.total)}; ${fmt(rs.of_them_resumed)} of the killed node's ${fmt(rs.subscribers_on_killed_node)} subscribers (close codes ${JSON.stringify(rs.close_codes)}); live again after p50 ${fmt(rs.time_to_live_again.p50_ms)} p99 ${fmt(rs.time_to_live_again.p99_ms)} max ${fmt(rs.time_to_live_again.max_ms)} ms`);
  const e = r.exactness;
  row('subscribers exact / live at the end', `${fmt(e.exact)} / ${fmt(e.live_at_end)} of ${fmt(e.subscribers)}`);
  row('missed / doubled / resets', `${fmt(e.missed)} / ${fmt(e.duplicates)} / ${fmt(e.resets)}`);
  if (e.rooms_with_shortfall) {
    row('rooms with a shortfall', fmt(e.rooms_with_shortfall));
    for (const [room, x] of Object.entries(e.shortfall_by_room).slice(0, 20)) {
      out.push(`  ${room}: head ${x.head}, ${x.inexact} of ${x.subscribers} subscribers inexact, ${x.missed} missed, ${x.duplicates} doubled, ${x.not_live} not live`);
    }
  }
  console.log(out.join('\n'));
}

// ---------------------------------------------------------------- worker
function worker() {
  process.on('disconnect', () => process.exit(0));
  const subs = [];
  let opt; let w; let P; let sizes;
  const down = new Set();
  let live = new Histogram();
  let replay = new Histogram();
  const resumeHist = new Histogram();
  let tick = { deliveries: 0, replayed: 0, ok: 0, failed: 0, hist: new Histogram() };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

  const record = (ms, replayed) => {
    tick.deliveries += 1;
    tick.hist.add(ms);
    if (replayed) { tick.replayed += 1; replay.add(ms); } else live.add(ms);
  };
  const counts = () => {
    let l = 0; let resuming = 0; let resumes = 0;
    for (const s of subs) { if (s.state === 'live') l += 1; else if (s.state === 'resuming') resuming += 1; resumes += s.resumes; }
    return { live: l, resuming, resumes };
  };
  setInterval(() => {
    if (!opt || !process.connected) return;
    // The main process may be gone by now (it exits once it has the checks):
    // a failed send is dropped, not an error.
    process.send({ type: 'tick', w, at: Date.now(), ...counts(), deliveries: tick.deliveries, replayed: tick.replayed, ok: tick.ok, failed: tick.failed, hist: tick.hist.toJSON() }, () => {});
    tick = { deliveries: 0, replayed: 0, ok: 0, failed: 0, hist: new Histogram() };
  }, 1000).unref();

  process.on('message', async (msg) => {
    switch (msg.type) {
      case 'connect':
        ({ opt, w, P, sizes } = msg);
        process.send({ type: 'connected', ...(await connect()) });
        break;
      case 'down':
        down.add(msg.node);
        break;
      case 'publish':
        // Where each subscriber is as the phase starts: those on a node
        // killed in it must resume.
        for (const s of subs) s.nodeAtPublish = s.node;
        live = new Histogram();
        replay = new Histogram();
        process.send({ type: 'published', ...(await publish(msg.rate, msg.seconds)) });
        break;
      case 'drain':
        process.send({ type: 'drained', ...(await drain(msg.heads, msg.deadline)) });
        break;
      case 'check':
        process.send({ type: 'checked', ...check(msg.heads) });
        for (const s of subs) s.stop();
        break;
      default:
    }
  });

  function connect() {
    const gate = new Gate(opt.inflight);
    // Source addresses 127.{20 + w}.0.1-64 (see wsload's sourceAddress).
    let socket = 0;
    let start = 0;
    return new Promise((resolve) => {
      let expected = 0;
      let settled = 0;
      const finish = () => resolve({ notLive: subs.filter((s) => s.state !== 'live').length });
      const timer = setTimeout(finish, opt['connect-timeout'] * 1000);
      const onSettled = () => { settled += 1; if (settled === expected) { clearTimeout(timer); finish(); } };
      sizes.forEach((size, room) => {
        const name = `${opt.prefix}:${room}`;
        for (let k = 0; k < size; k++) {
          // Subscriber g = start + k belongs to process g mod P.
          if ((start + k) % P !== w) continue;
          expected += 1;
          const order = nodeOrder(opt, name, room, k);
          const salt = Math.floor(Math.random() * 1024);
          const sub = new Subscriber(name, {
            localAddress: sourceAddress(opt['source-block'], w, socket++, opt.sources),
            gate,
            resume: true,
            record,
            onSettled,
            onResumed: (_, ms) => resumeHist.add(ms),
            base: ({ resumes, failures }) => {
              sub.node = pick(order, salt, resumes, failures);
              return opt.urls[sub.node];
            },
          });
          sub.roomIndex = room;
          subs.push(sub);
        }
        start += size;
      });
      if (expected === 0) { clearTimeout(timer); finish(); return; }
      for (const s of subs) s.start();
    });
  }

  // The node a subscriber connects to: its first in `order` at first; after
  // a close or a failed connect, `spread` goes to another live node at random
  // (per subscriber), so a dead node's subscribers spread over the others;
  // `room-hash` to the best live node of the room's rendezvous order, then
  // the next ones, so a room moves whole.
  function pick(order, salt, resumes, failures) {
    if (resumes + failures === 0) return order[0];
    const alive = order.filter((n) => !down.has(n));
    if (opt.placement === 'room-hash') return alive[failures % alive.length];
    return alive[(salt + resumes + failures) % alive.length];
  }

  async function publish(rate, seconds) {
    const share = rate / P;
    const total = Math.round(share * seconds);
    const heads = {};
    const reasons = {};
    let ok = 0;
    let failed = 0;
    let inflight = 0;
    let wake = null;
    const start = Date.now();
    const cap = opt['publish-inflight'];
    const pending = [];
    for (let n = 0; n < total; n++) {
      const due = start + (n * 1000) / share;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      // Open loop up to `cap` in flight per process; beyond, the achieved
      // rate falls short of the asked one (and the report says so).
      while (inflight >= cap) await new Promise((r) => { wake = r; });
      const room = Math.floor(Math.random() * sizes.length);
      const alive = opt.urls.map((_, i) => i).filter((i) => !down.has(i));
      const node = opt.urls[alive[(w + n) % alive.length]];
      inflight += 1;
      pending.push(post(agent, node, `${opt.prefix}:${room}`, { t: nowMs(), w }).then((r) => {
        inflight -= 1;
        if (wake) { const f = wake; wake = null; f(); }
        if (r.ok) {
          ok += 1; tick.ok += 1;
          if (!(heads[room] >= r.receipt.seq)) heads[room] = r.receipt.seq;
        } else {
          failed += 1; tick.failed += 1;
          reasons[r.reason] = (reasons[r.reason] ?? 0) + 1;
        }
      }));
    }
    await Promise.all(pending);
    return { ok, failed, reasons, heads };
  }

  async function drain(heads, deadline) {
    const lagging = () => subs.reduce((a, s) => a + (s.next - 1 < heads[s.roomIndex] ? 1 : 0), 0);
    let n = lagging();
    while (n > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      n = lagging();
    }
    const deliveries = live.count + replay.count;
    return { at: Date.now(), lagging: n, deliveries, live: live.toJSON(), replay: replay.toJSON() };
  }

  function check(heads) {
    const out = { subscribers: subs.length, live: 0, exact: 0, inexact: 0, missed: 0, duplicates: 0, resets: 0, beyond: 0, resumes: 0, onKilled: 0, onKilledResumed: 0, rooms: {}, connectErrors: {}, refusals: {}, closeCodes: {} };
    for (const s of subs) {
      const c = s.check(heads[s.roomIndex]);
      if (down.has(s.nodeAtPublish)) {
        out.onKilled += 1;
        if (s.resumes > 0) out.onKilledResumed += 1;
      }
      if (s.state === 'live') out.live += 1;
      out.resumes += s.resumes;
      out.resets += s.resets;
      out.beyond += c.beyond > 0 ? 1 : 0;
      addCounts(out.connectErrors, s.connectErrors);
      addCounts(out.refusals, s.refusals);
      addCounts(out.closeCodes, s.closeCodes);
      if (c.exact) { out.exact += 1; continue; }
      out.inexact += 1;
      out.missed += c.missed;
      out.duplicates += c.duplicates;
      const r = out.rooms[s.roomIndex] ??= { inexact: 0, missed: 0, duplicates: 0, notLive: 0 };
      r.inexact += 1; r.missed += c.missed; r.duplicates += c.duplicates; if (s.state !== 'live') r.notLive += 1;
    }
    out.resumeHist = resumeHist.toJSON();
    return out;
  }
}

if (process.argv.includes('--worker')) worker();
else main().catch((err) => { console.error(err); process.exit(2); });
