// The connect storm of issue 22, from an independent client (npm `ws`).
//
// The main process forks WORKERS client processes (one process may hold at
// most ~20,000 files here); each opens its share of CONNECTIONS WebSockets
// at once, from its own 127.0.1.x source address, to
// `/v1/rooms/{room}/ws?cursor=0` of rooms nobody has written yet, spread so
// that every room has subscribers on every node. The clients do NOT retry a
// refused subscribe: a refusal is counted as a failure. Once every worker's
// storm is answered, each publishes its share of RATE durable publishes per
// second for SECONDS, spread over the nodes and the rooms, with its send time
// in the event. Every subscriber checks that it got its room's events 1..head
// with no gap and no duplicate; publish-to-receive latencies are merged into
// p50/p99/max per worker and overall.
//
//   node storm.mjs --nodes http://127.0.0.1:9001,... [--connections 102000]
//     [--workers 6] [--rooms 6000] [--rate 1200] [--seconds 15] [--json out.json]
//     [--sources 64]   (source addresses per worker, 127.1.W.1-64)
//
// bench/storm/run.sh starts the nodes (PostgreSQL + NATS) and runs this.
import { fork } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import WebSocket from 'ws';
import { monitorEventLoopDelay } from 'node:perf_hooks';

function args(argv) {
  const out = { connections: 102000, workers: 6, rooms: 6000, rate: 1200, seconds: 15, drain: 5 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    out[key] = key === 'nodes' || key === 'json' || key === 'prefix' ? argv[i + 1] : Number(argv[i + 1]);
  }
  out.nodes = String(out.nodes ?? '').split(',').filter(Boolean);
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ---------------------------------------------------------------- main
async function main() {
  const opt = args(process.argv.slice(2));
  if (opt.nodes.length === 0) throw new Error('--nodes URL,URL,… is required');
  const prefix = opt.prefix ?? `storm${Date.now().toString(36)}`;
  const workers = [];
  for (let w = 0; w < opt.workers; w++) {
    const child = fork(new URL(import.meta.url).pathname, ['--worker'], { stdio: 'inherit' });
    workers.push(child);
  }
  const replies = (type) =>
    Promise.all(workers.map((child) => new Promise((resolve) => {
      const on = (msg) => { if (msg.type === type) { child.off('message', on); resolve(msg); } };
      child.on('message', on);
    })));
  const started = Date.now();
  const stormDone = replies('stormed');
  workers.forEach((child, w) => child.send({ type: 'storm', w, opt: { ...opt, prefix } }));
  const stormed = await stormDone;
  const stormMs = Date.now() - started;
  const published = replies('published');
  workers.forEach((child) => child.send({ type: 'publish' }));
  const pubs = await published;
  // Every room's head, from the publish receipts of all workers.
  const heads = new Array(opt.rooms).fill(0);
  for (const p of pubs) p.heads.forEach((h, r) => { heads[r] = Math.max(heads[r], h); });
  await new Promise((r) => setTimeout(r, opt.drain * 1000));
  const checked = replies('checked');
  workers.forEach((child) => child.send({ type: 'check', heads }));
  const results = await checked;
  workers.forEach((child) => child.disconnect());

  const all = [];
  const perWorker = results.map((r) => {
    const sorted = Float64Array.from(r.latencies).sort();
    for (const x of r.latencies) all.push(x);
    return { p50_ms: percentile(sorted, 50), p99_ms: percentile(sorted, 99), max_ms: sorted[sorted.length - 1] ?? null, ...r.breakdown };
  });
  const sorted = Float64Array.from(all).sort();
  const sum = (f) => stormed.reduce((a, s) => a + s[f], 0) ;
  const report = {
    nodes: opt.nodes.length,
    connections: opt.connections,
    workers: opt.workers,
    rooms: opt.rooms,
    storm: {
      seconds: stormMs / 1000,
      opened: sum('opened'),
      subscribed: sum('subscribed'),
      refused: sum('refused'),
      failed_connects: sum('failedConnects'),
      connect_errors: stormed.reduce((a, s) => { for (const [k, v] of Object.entries(s.connectErrors)) a[k] = (a[k] ?? 0) + v; return a; }, {}),
      refusals_by_code: stormed.reduce((a, s) => { for (const [k, v] of Object.entries(s.codes)) a[k] = (a[k] ?? 0) + v; return a; }, {}),
    },
    publish: {
      rate: opt.rate,
      seconds: opt.seconds,
      acknowledged: pubs.reduce((a, p) => a + p.ok, 0),
      failed: pubs.reduce((a, p) => a + p.failed, 0),
      reasons: pubs.reduce((a, p) => { for (const [k, v] of Object.entries(p.reasons)) a[k] = (a[k] ?? 0) + v; return a; }, {}),
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
    },
  };
  console.log(JSON.stringify(report, null, 2));
  if (opt.json) writeFileSync(opt.json, JSON.stringify(report, null, 2));
  process.exit(0);
}

// ---------------------------------------------------------------- worker
function worker() {
  const agent = { keepAlive: true, maxSockets: 64 };
  let subs = [];
  // Per worker, not per subscriber: 17,000 growing arrays kept the client's
  // garbage collector busy enough to delay its own event loop.
  const latencies = [];
  const commitLag = [];
  const fanLag = [];
  const loop = monitorEventLoopDelay({ resolution: 10 });
  let opt;
  let w;
  process.on('message', async (msg) => {
    if (msg.type === 'storm') {
      ({ opt, w } = msg);
      const result = await storm();
      process.send({ type: 'stormed', ...result });
    } else if (msg.type === 'publish') {
      loop.enable();
      process.send({ type: 'published', ...(await publish()) });
    } else if (msg.type === 'check') {
      loop.disable();
      // Where a delivery's time went: from the publisher's clock to the
      // store's commit (`ts`), from the commit to this client, and how late
      // this client's own event loop ran (a busy client inflates both).
      const q = (a, p) => percentile(Float64Array.from(a).sort(), p);
      const breakdown = {
        publish_to_commit_ms: { p50: q(commitLag, 50), p99: q(commitLag, 99) },
        commit_to_receive_ms: { p50: q(fanLag, 50), p99: q(fanLag, 99) },
        client_loop_delay_ms: { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
      };
      process.send({ type: 'checked', ...check(msg.heads), breakdown });
      for (const s of subs) s.ws.terminate();
    }
  });

  function storm() {
    const share = Math.floor(opt.connections / opt.workers) + (w < opt.connections % opt.workers ? 1 : 0);
    const base = w * Math.floor(opt.connections / opt.workers) + Math.min(w, opt.connections % opt.workers);
    // Source addresses per worker. With all 17,000 sockets of a process on
    // one address, the storm took 152 s with the client processes at 170%
    // CPU, and 22% of the handshakes were reset (the server's header timeout
    // fired before the client wrote its request); over 64 addresses it took
    // 25 s with none reset. (Likely the kernel's search for a free port in
    // bind(), which walks the ports bound on that address.)
    const sources = opt.sources ?? 64;
    const codes = {};
    let answered = 0;
    let opened = 0;
    let subscribed = 0;
    let refused = 0;
    let failedConnects = 0;
    const connectErrors = {};
    // Handshakes in flight per worker: all at once overflows the nodes'
    // accept queues and the kernel's SYN backlog on one machine.
    const inFlight = opt.inflight ?? 1000;
    let started = 0;
    let handshaking = 0;
    return new Promise((resolve) => {
      const done = () => {
        answered += 1;
        if (answered === share) resolve({ opened, subscribed, refused, failedConnects, codes, connectErrors });
      };
      const more = () => {
        while (handshaking < inFlight && started < share) open(started++);
      };
      const open = (i) => {
        handshaking += 1;
        const g = base + i;
        const room = g % opt.rooms;
        // Subscribers of one room land on every node in turn.
        const node = opt.nodes[Math.floor(g / opt.rooms) % opt.nodes.length];
        const url = `${node.replace(/^http/, 'ws')}/v1/rooms/${opt.prefix}:${room}/ws?cursor=0`;
        const sub = { room, ws: null, next: 1, delivered: 0, disorder: 0, closed: false, state: 'connecting' };
        subs.push(sub);
        const localAddress = sources === 1 ? `127.0.1.${w + 1}` : `127.1.${w + 1}.${1 + (i % sources)}`;
        const ws = new WebSocket(url, { localAddress, perMessageDeflate: false, handshakeTimeout: 120000 });
        sub.ws = ws;
        let settled = false;
        const settle = () => { if (!settled) { settled = true; handshaking -= 1; more(); } };
        ws.on('open', () => { opened += 1; settle(); });
        ws.on('message', (data) => {
          const frame = JSON.parse(data.toString());
          switch (frame.type) {
            case 'caught_up':
              if (sub.state === 'connecting') { sub.state = 'live'; subscribed += 1; done(); }
              break;
            case 'error':
              if (sub.state === 'connecting') {
                sub.state = 'refused';
                refused += 1;
                codes[frame.code] = (codes[frame.code] ?? 0) + 1;
                done();
              }
              break;
            case 'event': {
              if (frame.seq === sub.next) sub.next += 1; else sub.disorder += 1;
              sub.delivered += 1;
              const now = Date.now();
              latencies.push(now - frame.data.t);
              commitLag.push(frame.ts - frame.data.t);
              fanLag.push(now - frame.ts);
              break;
            }
            default:
          }
        });
        ws.on('error', (err) => {
          if (sub.state === 'connecting') connectErrors[err.code ?? err.message] = (connectErrors[err.code ?? err.message] ?? 0) + 1;
        });
        ws.on('close', () => {
          settle();
          sub.closed = true;
          if (sub.state === 'connecting') {
            sub.state = 'failed';
            failedConnects += 1;
            done();
          }
        });
      };
      more();
    });
  }

  function post(node, room, body) {
    return new Promise((resolve) => {
      const url = new URL(`${node}/v1/rooms/${opt.prefix}:${room}/events`);
      const req = http.request(url, { method: 'POST', agent: publishAgent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => { if (res.statusCode !== 201) reasons[`http ${res.statusCode} ${text.slice(0, 80)}`] = (reasons[`http ${res.statusCode} ${text.slice(0, 80)}`] ?? 0) + 1; resolve(res.statusCode === 201 ? JSON.parse(text) : null); });
      });
      req.on('error', (e) => { reasons[e.code ?? e.message] = (reasons[e.code ?? e.message] ?? 0) + 1; resolve(null); });
      req.end(body);
    });
  }
  const publishAgent = new http.Agent(agent);
  const reasons = {};

  async function publish() {
    const rate = opt.rate / opt.workers;
    const total = Math.round(rate * opt.seconds);
    const heads = new Array(opt.rooms).fill(0);
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
      pending.push(post(node, room, JSON.stringify({ data: { t: Date.now(), w } })).then((receipt) => {
        if (receipt) { ok += 1; heads[room] = Math.max(heads[room], receipt.seq); } else failed += 1;
      }));
    }
    await Promise.all(pending);
    return { ok, failed, heads, reasons };
  }

  function check(heads) {
    let expected = 0;
    let delivered = 0;
    let missed = 0;
    let disorder = 0;
    let inexact = 0;
    let closed = 0;
    for (const s of subs) {
      const head = heads[s.room];
      if (s.state !== 'live') {
        // Refused (and not retried) or never connected: misses its room's events.
        expected += head;
        missed += head;
        inexact += 1;
        continue;
      }
      expected += head;
      delivered += s.delivered;
      missed += Math.max(0, head - (s.next - 1));
      disorder += s.disorder;
      if (s.next - 1 !== head || s.disorder > 0) inexact += 1;
      if (s.closed) closed += 1;
    }
    return { expected, delivered, missed, disorder, inexact, closed, latencies };
  }
}

if (process.argv.includes('--worker')) worker();
else main().catch((err) => { console.error(err); process.exit(1); });
