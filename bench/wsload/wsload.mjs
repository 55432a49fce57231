// The WebSocket load clients shared by bench/storm (the connect storm of
// issue 22) and bench/cluster (the cluster at scale of issue 20): an
// independent client (npm `ws`), never hubcast's own SDKs.
//
// - Subscriber: one WebSocket on `/v1/rooms/{room}/ws`, which checks its
//   room's stream (every seq from where it joined, exactly once, in order)
//   and optionally resumes on another node with `?cursor=&epoch=` when its
//   socket is closed (a node killed).
// - Gate: bounds the handshakes in flight per process.
// - post(): one durable publish, with the reason of a failure (HTTP status and
//   error code, or the socket error).
// - Histogram: log-bucketed latencies (1% resolution) that merge across
//   processes and seconds.
// - Workers: forked client processes driven by messages.
// - procSample(), pidsByName(): CPU ticks and RSS from /proc.
import { fork, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import WebSocket from 'ws';

// ---------------------------------------------------------------- options

// `--key value` pairs into an object; keys in `strings` stay strings, flags
// in `flags` take no value, everything else is a number.
export function parseArgs(argv, defaults, { strings = [], flags = [] } = {}) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (flags.includes(key)) { out[key] = true; continue; }
    const value = argv[++i];
    if (value === undefined) throw new Error(`--${key} needs a value`);
    if (strings.includes(key)) out[key] = value;
    else {
      out[key] = Number(value);
      if (!Number.isFinite(out[key])) throw new Error(`--${key}: not a number: ${value}`);
    }
  }
  return out;
}

// Milliseconds since the Unix epoch with sub-millisecond resolution, on the
// same clock in every process of the machine (publisher and subscriber).
export function nowMs() {
  return performance.timeOrigin + performance.now();
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// The source address of a process's socket number `i`: `127.{block + w}.0.{1..sources}`.
// With all 17,000 sockets of a process on one address, the issue 22 storm
// took 152 s with the client processes at 170% CPU and 22% of handshakes
// reset (the server's header timeout fired before the client wrote its
// request); over 64 addresses, 25 s and none reset. (Likely the kernel's
// search for a free port in bind(), which walks the ports bound on that
// address.) Spreading also keeps each address far below a node's
// per-address session cap.
export function sourceAddress(block, w, i, sources = 64) {
  return `127.${block + w}.0.${1 + (i % sources)}`;
}

export function addCounts(into, from) {
  for (const [k, v] of Object.entries(from ?? {})) into[k] = (into[k] ?? 0) + v;
  return into;
}

// ---------------------------------------------------------------- histogram

const H_MIN = 0.01; // ms: everything below is one bucket
const H_STEP = Math.log(1.01);

// Latencies in milliseconds, in buckets 1% wide: a percentile is at most 1%
// above the true value. Serializes to a sparse object (bucket → count), so
// workers can send theirs per second and the main process merges them.
export class Histogram {
  constructor() {
    this.buckets = new Map();
    this.count = 0;
    this.max = 0;
    this.sum = 0;
  }

  add(ms) {
    const i = ms <= H_MIN ? 0 : Math.ceil(Math.log(ms / H_MIN) / H_STEP);
    this.buckets.set(i, (this.buckets.get(i) ?? 0) + 1);
    this.count += 1;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }

  toJSON() {
    return { b: Object.fromEntries(this.buckets), count: this.count, max: this.max, sum: this.sum };
  }

  merge(json) {
    if (!json) return this;
    for (const [k, v] of Object.entries(json.b)) {
      const i = Number(k);
      this.buckets.set(i, (this.buckets.get(i) ?? 0) + v);
    }
    this.count += json.count;
    this.sum += json.sum;
    if (json.max > this.max) this.max = json.max;
    return this;
  }

  percentile(p) {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    const keys = [...this.buckets.keys()].sort((a, b) => a - b);
    let seen = 0;
    for (const k of keys) {
      seen += this.buckets.get(k);
      if (seen >= rank) return Math.min(this.max, k === 0 ? H_MIN : H_MIN * Math.exp(k * H_STEP));
    }
    return this.max;
  }

  summary() {
    const r = (x) => (x === null ? null : Math.round(x * 100) / 100);
    return {
      count: this.count,
      p50_ms: r(this.percentile(50)),
      p99_ms: r(this.percentile(99)),
      p999_ms: r(this.percentile(99.9)),
      max_ms: this.count ? r(this.max) : null,
      mean_ms: this.count ? r(this.sum / this.count) : null,
    };
  }
}

// ---------------------------------------------------------------- gate

// At most `limit` handshakes in flight: all at once overflows the nodes'
// accept queues and the kernel's SYN backlog on one machine.
export class Gate {
  constructor(limit) {
    this.limit = limit;
    this.busy = 0;
    this.waiting = [];
  }

  acquire() {
    if (this.busy < this.limit) { this.busy += 1; return Promise.resolve(); }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release() {
    const next = this.waiting.shift();
    if (next) next(); else this.busy -= 1;
  }
}

// ---------------------------------------------------------------- subscriber

// One subscriber to one room on `/v1/rooms/{room}/ws?cursor=0`: the room's
// stream is checked from seq 1 (the bench's rooms are fresh). Options:
//   base({resumes, failures})  the node URL (http://…) to connect to, given
//                   the resumes so far and the failed connects in a row
//   localAddress    the source address of the socket
//   gate            a Gate for the handshakes
//   resume          after a close (or a failed connect), connect again with
//                   `?cursor=<last seq>&epoch=<epoch>` (bench/cluster); without
//                   it a refusal or a close is final (bench/storm)
//   record(ms, replayed, ts)  each in-order event's publish-to-receive latency;
//                   `replayed` when it came before `caught_up` of a resume;
//                   `ts` the event's commit time (the store's clock)
//   onSettled(sub)  once: the first subscribe is answered (live, refused or failed)
//   onResumed(sub, ms)  a resume is live again, `ms` after the close
export class Subscriber {
  constructor(room, opt) {
    this.room = room;
    this.opt = opt;
    this.state = 'idle'; // connecting | live | refused | failed | resuming | stopped
    this.ws = null;
    this.epoch = null;
    this.next = 1;
    this.delivered = 0;
    this.duplicates = 0;
    this.gapEvents = 0; // events that came after a hole
    this.holes = 0; // seqs skipped by those holes
    this.resets = 0;
    this.resumes = 0;
    this.failuresInRow = 0;
    this.opens = 0;
    this.closedAt = 0;
    this.everLive = false;
    this.settled = false;
    this.refusal = null;
    this.connectErrors = {};
    this.refusals = {};
    this.closeCodes = {};
  }

  start() {
    this.state = 'connecting';
    this.open();
  }

  stop() {
    this.state = 'stopped';
    if (this.ws) this.ws.terminate();
  }

  settle() {
    if (!this.settled) { this.settled = true; this.opt.onSettled?.(this); }
  }

  async open() {
    await this.opt.gate.acquire();
    if (this.state === 'stopped') { this.opt.gate.release(); return; }
    const base = this.opt.base({ resumes: this.resumes, failures: this.failuresInRow });
    let url = `${base.replace(/^http/, 'ws')}/v1/rooms/${this.room}/ws?cursor=${this.next - 1}`;
    if (this.epoch) url += `&epoch=${this.epoch}`;
    // skipUTF8Validation: hubcast's frames are JSON it wrote; validating them
    // in JavaScript (no native addon here) only costs the load generator.
    const ws = new WebSocket(url, { localAddress: this.opt.localAddress, perMessageDeflate: false, handshakeTimeout: 120000, skipUTF8Validation: true });
    this.ws = ws;
    let handshaking = true;
    const done = () => { if (handshaking) { handshaking = false; this.opt.gate.release(); } };
    let caughtUp = false;
    ws.on('open', () => { this.opens += 1; done(); });
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      switch (frame.type) {
        case 'subscribed':
          this.epoch = frame.epoch;
          break;
        case 'reset':
          // The cursor could not be served: a hole the bench must report.
          this.resets += 1;
          break;
        case 'caught_up':
          caughtUp = true;
          if (this.state === 'connecting') {
            this.state = 'live';
            this.everLive = true;
            this.settle();
          } else if (this.state === 'resuming') {
            this.state = 'live';
            this.opt.onResumed?.(this, nowMs() - this.closedAt);
          }
          break;
        case 'error':
          if ((this.state === 'connecting' || this.state === 'resuming') && !this.refusal) {
            this.refusal = frame.code;
            this.refusals[frame.code] = (this.refusals[frame.code] ?? 0) + 1;
            if (!this.opt.resume) { this.state = 'refused'; this.settle(); }
          }
          break;
        case 'event':
          this.accept(frame.seq, frame.data, !caughtUp && this.resumes > 0, frame.ts);
          break;
        case 'batch':
          for (const e of frame.events) this.accept(e.seq, e.data, !caughtUp && this.resumes > 0, e.ts);
          break;
        default:
      }
    });
    ws.on('error', (err) => {
      if (!caughtUp) {
        const key = err.code ?? err.message;
        this.connectErrors[key] = (this.connectErrors[key] ?? 0) + 1;
      }
    });
    ws.on('close', (code) => {
      done();
      if (this.ws !== ws || this.state === 'stopped') return;
      this.closed = true;
      if (!this.opt.resume) {
        if (this.state === 'connecting') { this.state = 'failed'; this.settle(); }
        return;
      }
      // Resume: on another node, from the last seq this stream holds. A
      // live socket that closed reconnects at once; a failed handshake (or a
      // refusal) waits a little, longer each time in a row, jittered.
      let delay = 0;
      if (caughtUp) {
        this.closeCodes[code] = (this.closeCodes[code] ?? 0) + 1;
        this.resumes += 1;
        this.closedAt = nowMs();
        this.state = 'resuming';
        this.failuresInRow = 0;
      } else {
        this.failuresInRow += 1;
        delay = Math.min(2000, 50 * 2 ** Math.min(6, this.failuresInRow)) * (0.5 + Math.random());
      }
      this.refusal = null;
      setTimeout(() => this.open(), delay);
    });
  }

  accept(seq, data, replayed, ts) {
    this.delivered += 1;
    if (seq === this.next) {
      this.next += 1;
      if (data && typeof data.t === 'number') this.opt.record?.(nowMs() - data.t, replayed, ts);
    } else if (seq < this.next) {
      this.duplicates += 1;
    } else {
      this.gapEvents += 1;
      this.holes += seq - this.next;
      this.next = seq + 1;
    }
  }

  // The stream against its room's head: exact when it holds 1..head, each
  // once, in order, and was never reset.
  check(head) {
    const got = this.next - 1;
    const missed = Math.max(0, head - got) + this.holes;
    const exact = this.state === 'live' && got === head && this.duplicates === 0 && this.holes === 0 && this.resets === 0;
    return { exact, missed, duplicates: this.duplicates, beyond: Math.max(0, got - head) };
  }
}

// ---------------------------------------------------------------- publish

// One durable publish: `{ok, receipt}` or `{ok: false, reason}` where the
// reason is `STATUS code` from the error body, or the socket error.
export function post(agent, base, room, data, timeoutMs = 30000) {
  const body = JSON.stringify({ data });
  return new Promise((resolve) => {
    const url = new URL(`${base}/v1/rooms/${room}/events`);
    const req = http.request(url, {
      method: 'POST',
      agent,
      timeout: timeoutMs,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON: the status says it */ }
        if (res.statusCode === 201) resolve({ ok: true, receipt: json });
        else resolve({ ok: false, reason: `${res.statusCode} ${json?.error ?? 'no-error-code'}` });
      });
      res.on('error', (err) => resolve({ ok: false, reason: err.code ?? err.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
    req.on('error', (err) => resolve({ ok: false, reason: err.code ?? err.message }));
    req.end(body);
  });
}

export function httpGetJson(url, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${url}: ${res.statusCode} ${text.slice(0, 200)}`));
        else resolve(JSON.parse(text));
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', reject);
  });
}

export function httpGetText(url, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve(text));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- workers

// Forks `n` copies of `script` with `--worker`. `ask(type, reply, payload)`
// sends `{type, ...payload(w)}` to every worker and resolves with their
// messages of type `reply`, in worker order.
export function forkWorkers(script, n) {
  const workers = [];
  for (let w = 0; w < n; w++) workers.push(fork(script, ['--worker'], { stdio: 'inherit' }));
  return drive(workers);
}

// The same for `n` processes of another program (`hubcast bench
// storm-client`) that read one JSON request per line on stdin and answer one
// per line on stdout; each looks to `drive` like a forked worker.
export function spawnWorkers(command, args, n) {
  const workers = [];
  for (let w = 0; w < n; w++) {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: child.stdout }).on('line', (line) => child.emit('message', JSON.parse(line)));
    child.connected = true;
    child.send = (msg) => child.stdin.write(`${JSON.stringify(msg)}\n`);
    child.disconnect = () => { child.connected = false; child.stdin.end(); };
    workers.push(child);
  }
  return drive(workers);
}

function drive(workers) {
  const replies = (type) => Promise.all(workers.map((child) => new Promise((resolve, reject) => {
    const on = (msg) => { if (msg.type === type) { child.off('message', on); child.off('exit', gone); resolve(msg); } };
    const gone = (code) => reject(new Error(`client process ${child.pid} exited (${code}) before answering ${type}`));
    child.on('message', on);
    child.once('exit', gone);
  })));
  return {
    workers,
    // Sends `type` to every worker (payload per worker) and waits for `reply`.
    ask(type, reply, payload = () => ({})) {
      const answered = replies(reply);
      workers.forEach((child, w) => child.send({ type, ...payload(w) }));
      return answered;
    },
    broadcast(msg) { workers.forEach((child) => { if (child.connected) child.send(msg); }); },
    close() { workers.forEach((child) => { if (child.connected) child.disconnect(); }); },
  };
}

// ---------------------------------------------------------------- /proc

// CPU time (clock ticks, user + system) and resident memory (bytes) of a
// process, or null when it is gone.
export function procSample(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // A killed process stays a zombie until its parent reaps it: gone too.
    if (rest[0] === 'Z' || rest[0] === 'X') return null;
    const ticks = Number(rest[11]) + Number(rest[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return { ticks, rss: m ? Number(m[1]) * 1024 : 0 };
  } catch {
    return null;
  }
}

// PIDs whose command name (/proc/PID/comm) is `name` (`postgres`, `nats-server`).
export function pidsByName(name) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === name) pids.push(Number(entry));
    } catch { /* gone */ }
  }
  return pids;
}

// The CPU a group of processes used between two samples (ticks summed over
// the processes present in both), and their RSS at the second.
export function sampleGroup(pids) {
  const out = new Map();
  for (const pid of pids) {
    const s = procSample(pid);
    if (s) out.set(pid, s);
  }
  return out;
}

export function groupDelta(before, after) {
  let ticks = 0;
  let rss = 0;
  for (const [pid, s] of after) {
    rss += s.rss;
    const b = before.get(pid);
    if (b) ticks += s.ticks - b.ticks;
  }
  return { ticks, rss };
}
