// The `hubcast serve` process the external Node tests drive: its own port,
// temp dir, hubcast.toml and SQLite file, and bounded waits.
// The binary is $HUBCAST_BIN, else <repo>/target/debug/hubcast.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..', '..');
const HUBCAST_BIN = process.env.HUBCAST_BIN
  ? path.resolve(process.env.HUBCAST_BIN)
  : path.join(repoRoot, 'target', 'debug', 'hubcast');

export const TEST_TIMEOUT = 60_000;
export const FRAME_TIMEOUT = 10_000;
export const QUIET_MS = 300;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// server

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const BASE_CONFIG = {
  heartbeat: { interval_ms: 1000, stale_ms: 10000 },
  sqlite: { synchronous: 'normal' },
};

function toml(config) {
  const merged = structuredClone(BASE_CONFIG);
  for (const [section, values] of Object.entries(config)) {
    merged[section] = { ...(merged[section] ?? {}), ...values };
  }
  return Object.entries(merged)
    .map(([section, values]) =>
      [`[${section}]`, ...Object.entries(values).map(([k, v]) => `${k} = ${JSON.stringify(v)}`)].join('\n'))
    .join('\n\n') + '\n';
}

export class Hubcast {
  constructor(config) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'hubcast-node-'));
    mkdirSync(path.join(this.dir, 'db'));
    this.configPath = path.join(this.dir, 'hubcast.toml');
    writeFileSync(this.configPath, toml(config));
    this.logPath = path.join(this.dir, 'server.log');
    this.store = `sqlite://${path.join(this.dir, 'db', 'hubcast.db')}`;
  }

  /** Starts the process; `port` (a restart) keeps the port clients hold. */
  async start(port = undefined) {
    assert.ok(existsSync(HUBCAST_BIN), `hubcast binary not found at ${HUBCAST_BIN} (cargo build, or set HUBCAST_BIN)`);
    // The server reads HUBCAST_* variables as configuration: give it none.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HUBCAST_')));
    env.NO_COLOR = '1';
    env.RUST_LOG ??= 'hubcast=info';
    for (let attempt = 0; attempt < 5; attempt++) {
      const listenPort = port ?? await freePort();
      const offset = existsSync(this.logPath) ? readFileSync(this.logPath).length : 0;
      const fd = openSync(this.logPath, 'a');
      const proc = spawn(HUBCAST_BIN, ['serve', '--config', this.configPath, '--listen', `127.0.0.1:${listenPort}`, '--store', this.store], {
        cwd: this.dir, env, stdio: ['ignore', fd, fd],
      });
      closeSync(fd);
      let exited = null;
      proc.once('exit', (code, sig) => { exited = { code, sig }; });
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && exited === null) {
        const text = readFileSync(this.logPath).subarray(offset).toString();
        if (text.includes('hubcast serving') && text.includes(`127.0.0.1:${listenPort}`)) {
          this.proc = proc;
          this.port = listenPort;
          this.exited = () => exited;
          const health = await this.get('/healthz');
          assert.deepEqual(health, { status: 200, body: { status: 'ok' } });
          return this;
        }
        await sleep(20);
      }
      if (exited === null) {
        proc.kill('SIGKILL');
        throw new Error(`hubcast did not start within 15s\n${this.logTail()}`);
      }
      if (!readFileSync(this.logPath).subarray(offset).toString().includes('Address already in use')) {
        throw new Error(`hubcast exited (${JSON.stringify(exited)})\n${this.logTail()}`);
      }
    }
    throw new Error('no free port for hubcast');
  }

  /** SIGKILL, keeping the data dir (for a restart). */
  async kill9() {
    if (this.proc && this.exited() === null) {
      const gone = new Promise((resolve) => this.proc.once('exit', resolve));
      this.proc.kill('SIGKILL');
      await withTimeout(gone, 10_000, 'hubcast to exit');
    }
  }

  async stop() {
    if (this.proc && this.exited() === null) {
      const gone = new Promise((resolve) => this.proc.once('exit', resolve));
      this.proc.kill('SIGKILL');
      await withTimeout(gone, 10_000, 'hubcast to exit');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  logTail(n = 60) {
    if (!existsSync(this.logPath)) return '(no log)';
    return readFileSync(this.logPath).toString().split('\n').slice(-n).join('\n');
  }

  get http() { return `http://127.0.0.1:${this.port}`; }
  get ws() { return `ws://127.0.0.1:${this.port}`; }

  async request(method, urlPath, body, headers = {}) {
    const res = await fetch(this.http + urlPath, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(FRAME_TIMEOUT),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  get(urlPath) { return this.request('GET', urlPath); }

  async publish(room, data, { key, expectedSeq } = {}) {
    const body = { data };
    if (expectedSeq !== undefined) body.expected_seq = expectedSeq;
    return this.request('POST', `/v1/rooms/${room}/events`, body, key ? { 'Idempotency-Key': key } : {});
  }

  async publishOk(room, data, opts) {
    const res = await this.publish(room, data, opts);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body;
  }
}

// Declares a test with its own server; the server log is appended to failures.
export function serverTest(name, config, fn) {
  test(name, { timeout: TEST_TIMEOUT }, async () => {
    const server = await new Hubcast(config).start();
    try {
      await fn(server);
    } catch (err) {
      if (err && typeof err === 'object') {
        try { err.message += `\n--- server log ---\n${server.logTail()}`; } catch { /* read-only message */ }
      }
      throw err;
    } finally {
      await server.stop();
    }
  });
}

