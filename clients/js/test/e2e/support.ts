/**
 * End-to-end support: the real hubcast binary, a TCP proxy the tests can cut
 * or freeze (which also serves the test page, so the page and the server
 * share one origin), and waiting helpers. Every wait has a timeout.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '../../../..');

export function hubcastBinary(): string {
  const bin = process.env.HUBCAST_BIN ?? join(repoRoot, 'target/debug/hubcast');
  if (!existsSync(bin)) throw new Error(`hubcast binary not found at ${bin}: run \`cargo build\` or set HUBCAST_BIN`);
  return bin;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await sleep(everyMs);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolvePort(port));
    });
  });
}

/** The hubcast binary on a fixed port and data directory, so it can be killed and started again. */
export class HubcastServer {
  readonly dir: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  starts = 0;

  private readonly extraArgs: string[] = [];

  /** @param configToml written to the data directory and passed with `--config`. */
  constructor(
    readonly port: number,
    configToml?: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'hubcast-js-e2e-'));
    if (configToml !== undefined) {
      const path = join(this.dir, 'hubcast.toml');
      writeFileSync(path, configToml);
      this.extraArgs.push('--config', path);
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.child) throw new Error('already running');
    // HUBCAST_* variables are config: keep the caller's out of the server.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HUBCAST_')));
    env.RUST_LOG = env.RUST_LOG ?? 'warn';
    const log = createWriteStream(join(this.dir, `server-${++this.starts}.log`));
    const child = spawn(
      hubcastBinary(),
      ['serve', '--listen', `127.0.0.1:${this.port}`, '--store', `sqlite://${join(this.dir, 'hubcast.db')}`, ...this.extraArgs],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.child = child;
    this.exited = new Promise((r) => child.once('exit', () => r()));
    await waitFor(
      `hubcast to answer /healthz on ${this.port}`,
      async () => {
        if (child.exitCode !== null) throw new Error(`hubcast exited with ${child.exitCode}; see ${this.dir}`);
        const res = await fetch(`${this.url}/healthz`);
        return res.ok;
      },
      20_000,
    );
  }

  /** SIGTERM: graceful (sessions get 1012). SIGKILL: the process just dies. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    const exited = await Promise.race([this.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!exited) {
      child.kill('SIGKILL');
      await Promise.race([this.exited, sleep(5_000)]);
    }
    this.child = null;
  }

  async restart(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    await this.stop(signal);
    await this.start();
  }

  async dispose(): Promise<void> {
    await this.stop('SIGKILL');
    if (!process.env.KEEP_E2E_DATA) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy between the browser and hubcast. `GET /__test/…` requests are
 * answered by the proxy itself (the test page), everything else is piped to
 * the upstream port. `cut()` resets every piped connection (a dropped
 * network); `freeze()` stops forwarding on them but keeps them open (a dead
 * connection only a heartbeat can notice).
 */
export class CuttableProxy {
  private server: net.Server | null = null;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private readonly frozen: net.Socket[] = [];
  connections = 0;
  port = 0;

  constructor(
    private readonly upstreamPort: number,
    private readonly pages: Map<string, string>,
  ) {}

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async listen(): Promise<void> {
    this.server = net.createServer((client) => this.accept(client));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {});
    client.once('data', (first: Buffer) => {
      const line = first.subarray(0, Math.min(first.length, 200)).toString('latin1');
      const match = /^GET (\/__test\/[^ ?]*)/.exec(line);
      if (match) {
        const body = this.pages.get(match[1] as string);
        const status = body === undefined ? '404 Not Found' : '200 OK';
        const payload = Buffer.from(body ?? 'not found');
        client.end(
          Buffer.concat([
            Buffer.from(
              `HTTP/1.1 ${status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${payload.length}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n`,
            ),
            payload,
          ]),
        );
        return;
      }
      this.connections += 1;
      const upstream = net.connect(this.upstreamPort, '127.0.0.1');
      const pair = { client, upstream };
      this.pairs.add(pair);
      upstream.on('error', () => client.destroy());
      upstream.on('close', () => {
        client.destroy();
        this.pairs.delete(pair);
      });
      client.on('close', () => {
        upstream.destroy();
        this.pairs.delete(pair);
      });
      upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  /** Resets every open connection, as a network failure would. */
  cut(): number {
    const n = this.pairs.size;
    for (const { client, upstream } of this.pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    this.pairs.clear();
    return n;
  }

  /** Stops forwarding on every open connection without closing it. New connections work. */
  freeze(): number {
    const n = this.pairs.size;
    for (const pair of this.pairs) {
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
      pair.client.pause();
      pair.upstream.pause();
      this.frozen.push(pair.client, pair.upstream);
    }
    this.pairs.clear(); // they hang, silent, until close()
    return n;
  }

  async close(): Promise<void> {
    this.cut();
    for (const s of this.frozen) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** Publishes over HTTP with an idempotency key, retrying until acknowledged (the server may be down). */
export async function publishWithRetry(
  baseUrl: string,
  room: string,
  data: unknown,
  key: string,
  timeoutMs = 30_000,
  headers: Record<string, string> = {},
): Promise<number> {
  return waitFor(
    `publish ${key}`,
    async () => {
      const res = await fetch(`${baseUrl}/v1/rooms/${room}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
        body: JSON.stringify({ data }),
      });
      if (res.status !== 201 && res.status !== 200) throw new Error(`status ${res.status}`);
      const body = (await res.json()) as { seq: number };
      return body.seq;
    },
    timeoutMs,
    25,
  );
}

export async function history(baseUrl: string, room: string, after = 0, limit = 1000, headers: Record<string, string> = {}) {
  const res = await fetch(`${baseUrl}/v1/rooms/${room}/events?after=${after}&limit=${limit}`, { headers });
  if (!res.ok) throw new Error(`history: ${res.status}`);
  return (await res.json()) as { epoch: string | null; head: number; earliest: number; events: Array<{ seq: number; data: unknown }> };
}

/** An HS256 JWT signed with `secret`. */
export function signJwt(secret: string, claims: Record<string, unknown>): string {
  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
