// The connect storm of issue 22, from an independent client (npm `ws`,
// through bench/wsload/wsload.mjs, which bench/cluster shares).
//
// The main process forks WORKERS client processes (one process may hold at
// most ~20,000 files here); each opens its share of CONNECTIONS WebSockets
// at once, spread over 64 source addresses of its own (127.{1+w}.0.1-64,
// `--sources`; see wsload's sourceAddress), to
// `/v1/rooms/{room}/ws?cursor=0` of rooms nobody has written yet, spread so
// that every room has subscribers on every node. The clients do NOT retry a
// refused subscribe: a refusal is counted as a failure. Once every worker's
// storm is answered, each publishes its share of RATE durable publishes per
// second for SECONDS, spread over the nodes and the rooms, with its send time
// in the event. Every subscriber checks that it got its room's events 1..head
// with no gap and no duplicate; publish-to-receive latencies are merged into
// p50/p99/max per worker and overall. Failed publishes are counted by reason
// (HTTP status and error code, or the socket error). Each worker also says
// where its latency went: publisher's clock to the store's commit (`ts`),
// commit to receipt, and how late its own event loop ran (a busy client
// inflates both).
//
//   node storm.mjs --nodes http://127.0.0.1:9001,... [--connections 102000]
//     [--workers 6] [--rooms 6000] [--rate 1200] [--seconds 15] [--json out.json]
//     [--sources 64] [--client node|rust --hubcast-bin target/release/hubcast]
//
// `--client rust` runs the client processes as `hubcast bench storm-client`
// (crates/hubcast-bench/src/storm.rs) instead of Node: the same requests,
// checks and report. At 102,000 sockets and 1,200 publishes/s the six Node
// processes took 100-125% of a core while publishing (and 48 s to connect),
// the Rust ones ~45% (13 s): on one machine the load generator must leave the
// cores to the nodes it measures.
//
// The report ends with a timeline: per second of sending, the p50/p99 of
// publish-to-receive and the p99 of its publish-to-commit part, which tells
// a steady queue from stalls.
//
// bench/storm/run.sh starts the nodes (PostgreSQL + NATS) and runs this.
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { addCounts, forkWorkers, spawnWorkers, Gate, Histogram, nowMs, parseArgs, percentile, post, sourceAddress, Subscriber } from '../wsload/wsload.mjs';

function args(argv) {
  const out = parseArgs(argv, { connections: 102000, workers: 6, rooms: 6000, rate: 1200, seconds: 15, drain: 5, inflight: 1000, sources: 64 },
    { strings: ['nodes', 'json', 'prefix', 'client', 'hubcast-bin'] });
  out.client = out.client ?? 'node';
  if (!['node', 'rust'].includes(out.client)) throw new Error(`--client: node or rust, not ${out.client}`);
  if (out.client === 'rust' && !out['hubcast-bin']) throw new Error('--client rust needs --hubcast-bin');
  out.nodes = String(out.nodes ?? '').split(',').filter(Boolean);
  return out;
}

// ---------------------------------------------------------------- main
async function main() {
  const opt = args(process.argv.slice(2));
  if (opt.nodes.length === 0) throw new Error('--nodes URL,URL,… is required');
  const prefix = opt.prefix ?? `storm${Date.now().toString(36)}`;
  // The client processes: this script's Node workers, or `hubcast bench
  // storm-client` (the same requests and answers, a fraction of the CPU).
  const pool = opt.client === 'rust'
    ? spawnWorkers(opt['hubcast-bin'], ['bench', 'storm-client'], opt.workers)
    : forkWorkers(new URL(import.meta.url).pathname, opt.workers);
  const started = Date.now();
  const stormed = await pool.ask('storm', 'stormed', (w) => ({ w, opt: { ...opt, prefix } }));
  const stormMs = Date.now() - started;
  const pubs = await pool.ask('publish', 'published');
  // Every room's head, from the publish receipts of all workers.
  const heads = new Array(opt.rooms).fill(0);
  for (const p of pubs) p.heads.forEach((h, r) => { heads[r] = Math.max(heads[r], h); });
  await new Promise((r) => setTimeout(r, opt.drain * 1000));
  const results = await pool.ask('check', 'checked', () => ({ heads }));
  pool.close();

  const all = [];
  const perWorker = results.map((r) => {
    const sorted = Float64Array.from(r.latencies).sort();
    for (const x of r.latencies) all.push(x);
    return { p50_ms: percentile(sorted, 50), p99_ms: percentile(sorted, 99), max_ms: sorted[sorted.length - 1] ?? null, ...r.breakdown };
  });
  const sorted = Float64Array.from(all).sort();
  const sum = (f) => stormed.reduce((a, s) => a + s[f], 0);
  // Per second of sending: where the p99 comes from (a steady queue, or stalls).
  const bySecond = new Map();
  for (const r of results) {
    r.latencies.forEach((ms, i) => {
      const sec = r.sentSeconds[i];
      let b = bySecond.get(sec);
      if (!b) bySecond.set(sec, (b = { all: [], commit: [] }));
      b.all.push(ms);
      if (r.toCommit[i] >= 0) b.commit.push(r.toCommit[i]);
    });
  }
  const first = Math.min(...bySecond.keys());
  const timeline = [...bySecond.entries()].sort((a, b) => a[0] - b[0]).map(([sec, b]) => {
    const a = Float64Array.from(b.all).sort();
    const c = Float64Array.from(b.commit).sort();
    return { t: sec - first, received: a.length, p50_ms: percentile(a, 50), p99_ms: percentile(a, 99), publish_to_commit_p99_ms: percentile(c, 99) };
  });
  const report = {
    nodes: opt.nodes.length,
    connections: opt.connections,
    workers: opt.workers,
    client: opt.client,
    rooms: opt.rooms,
    storm: {
      seconds: stormMs / 1000,
      opened: sum('opened'),
      subscribed: sum('subscribed'),
      refused: sum('refused'),
      failed_connects: sum('failedConnects'),
      connect_errors: stormed.reduce((a, s) => addCounts(a, s.connectErrors), {}),
      refusals_by_code: stormed.reduce((a, s) => addCounts(a, s.codes), {}),
    },
    publish: {
      rate: opt.rate,
      seconds: opt.seconds,
      acknowledged: pubs.reduce((a, p) => a + p.ok, 0),
      failed: pubs.reduce((a, p) => a + p.failed, 0),
      failures_by_reason: pubs.reduce((a, p) => addCounts(a, p.reasons), {}),
    },
    delivery: {
      expected: results.reduce((a, r) => a + r.expected, 0),
      delivered: results.reduce((a, r) => a + r.delivered, 0),
      missed: results.reduce((a, r) => a + r.missed, 0),
      out_of_order_or_duplicate: results.reduce((a, r) => a + r.disorder, 0),
      inexact_subscribers: results.reduce((a, r) => a + r.inexact, 0),
      closed_subscribers: results.reduce((a, r) => a + r.closed, 0),
      p50_ms: percentile(sorted, 50),
      p99_ms: percentile(sorted, 99),
      max_ms: sorted[sorted.length - 1] ?? null,
      per_worker: perWorker,
      timeline,
    },
  };
  console.log(JSON.stringify(report, null, 2));
  const r0 = (x) => (x === null ? '-' : Math.round(x));
  console.log(`p99 ms by second of sending (publish-to-commit part): ${timeline.map((x) => `${x.t}s ${r0(x.p99_ms)} (${r0(x.publish_to_commit_p99_ms)})`).join(', ')}`);
  if (opt.json) writeFileSync(opt.json, JSON.stringify(report, null, 2));
  process.exit(0);
}

// ---------------------------------------------------------------- worker
function worker() {
  process.on('disconnect', () => process.exit(0));
  const subs = [];
  const latencies = [];
  // Beside each latency: the second it was sent in, its publish-to-commit part.
  const sentSeconds = [];
  const toCommitMs = [];
  const toCommit = new Histogram();
  const fromCommit = new Histogram();
  const loop = monitorEventLoopDelay({ resolution: 10 });
  let opt;
  let w;
  const publishAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  process.on('message', async (msg) => {
    if (msg.type === 'storm') {
      ({ opt, w } = msg);
      process.send({ type: 'stormed', ...(await storm()) });
    } else if (msg.type === 'publish') {
      loop.enable();
      process.send({ type: 'published', ...(await publish()) });
    } else if (msg.type === 'check') {
      loop.disable();
      const breakdown = {
        publish_to_commit_ms: toCommit.summary(),
        commit_to_receive_ms: fromCommit.summary(),
        client_loop_delay_ms: { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
      };
      process.send({ type: 'checked', ...check(msg.heads), breakdown });
      for (const s of subs) s.stop();
    }
  });

  function storm() {
    const share = Math.floor(opt.connections / opt.workers) + (w < opt.connections % opt.workers ? 1 : 0);
    const base = w * Math.floor(opt.connections / opt.workers) + Math.min(w, opt.connections % opt.workers);
    const gate = new Gate(opt.inflight);
    let answered = 0;
    return new Promise((resolve) => {
      if (share === 0) resolve(tally());
      const onSettled = () => { answered += 1; if (answered === share) resolve(tally()); };
      for (let i = 0; i < share; i++) {
        const g = base + i;
        const room = g % opt.rooms;
        // Subscribers of one room land on every node in turn.
        const node = opt.nodes[Math.floor(g / opt.rooms) % opt.nodes.length];
        const sub = new Subscriber(`${opt.prefix}:${room}`, {
          base: () => node,
          localAddress: sourceAddress(1, w, i, opt.sources),
          gate,
          resume: false,
          record: (ms, _replayed, ts) => {
            const now = nowMs();
            latencies.push(ms);
            sentSeconds.push(Math.floor((now - ms) / 1000));
            toCommitMs.push(typeof ts === 'number' ? ts - (now - ms) : -1);
            if (typeof ts === 'number') {
              toCommit.add(Math.max(0, ts - (now - ms)));
              fromCommit.add(Math.max(0, now - ts));
            }
          },
          onSettled,
        });
        sub.index = room;
        subs.push(sub);
        sub.start();
      }
    });
  }

  function tally() {
    const codes = {};
    const connectErrors = {};
    let opened = 0;
    let subscribed = 0;
    let refused = 0;
    let failedConnects = 0;
    for (const s of subs) {
      if (s.opens > 0) opened += 1;
      if (s.state === 'live') subscribed += 1;
      else if (s.state === 'refused') { refused += 1; codes[s.refusal] = (codes[s.refusal] ?? 0) + 1; }
      else if (s.state === 'failed') failedConnects += 1;
      addCounts(connectErrors, s.connectErrors);
    }
    return { opened, subscribed, refused, failedConnects, codes, connectErrors };
  }

  async function publish() {
    const rate = opt.rate / opt.workers;
    const total = Math.round(rate * opt.seconds);
    const heads = new Array(opt.rooms).fill(0);
    const reasons = {};
    let ok = 0;
    let failed = 0;
    const start = Date.now();
    const pending = [];
    for (let n = 0; n < total; n++) {
      const due = start + (n * 1000) / rate;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const room = Math.floor(Math.random() * opt.rooms);
      const node = opt.nodes[(w + n) % opt.nodes.length];
      pending.push(post(publishAgent, node, `${opt.prefix}:${room}`, { t: nowMs(), w }).then((r) => {
        if (r.ok) { ok += 1; heads[room] = Math.max(heads[room], r.receipt.seq); } else { failed += 1; reasons[r.reason] = (reasons[r.reason] ?? 0) + 1; }
      }));
    }
    await Promise.all(pending);
    return { ok, failed, reasons, heads };
  }

  function check(heads) {
    let expected = 0;
    let delivered = 0;
    let missed = 0;
    let disorder = 0;
    let inexact = 0;
    let closed = 0;
    for (const s of subs) {
      const head = heads[s.index];
      expected += head;
      if (s.state !== 'live') {
        // Refused (and not retried) or never connected: misses its room's events.
        missed += head;
        inexact += 1;
        continue;
      }
      const c = s.check(head);
      delivered += s.delivered;
      missed += c.missed;
      disorder += s.duplicates + s.gapEvents;
      if (!c.exact) inexact += 1;
      if (s.closed) closed += 1;
    }
    return { expected, delivered, missed, disorder, inexact, closed, latencies, sentSeconds, toCommit: toCommitMs };
  }
}

if (process.argv.includes('--worker')) worker();
else main().catch((err) => { console.error(err); process.exit(1); });
