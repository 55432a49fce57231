// A `hubcast serve` process for the browser tests that start their own
// (SSE, pusher-js): on a port of the test's choosing, with the config and
// SQLite store in the test's directory, restartable on the same port after
// a kill -9.
import { spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

const STEP = 15_000;

// A port nothing listens on now.
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

export class Hubcast {
  // `dir` holds hubcast.toml, data/ and server.log.
  constructor(bin, dir, port) {
    Object.assign(this, { bin, dir, port, child: null });
  }

  // Starts the server (the environment's HUBCAST_* left out) and waits for /readyz.
  async start() {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HUBCAST_')));
    env.RUST_LOG = 'hubcast=info';
    const log = openSync(join(this.dir, 'server.log'), 'a');
    this.child = spawn(this.bin, ['serve', '--config', join(this.dir, 'hubcast.toml'), '--listen', `127.0.0.1:${this.port}`,
      '--store', `sqlite://${join(this.dir, 'data', 'hubcast.db')}`], { cwd: this.dir, env, stdio: ['ignore', log, log] });
    const deadline = Date.now() + STEP;
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        if (res.ok) return;
      } catch { /* not yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`hubcast did not become ready\n${readFileSync(join(this.dir, 'server.log'), 'utf8')}`);
  }

  async kill9() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}
