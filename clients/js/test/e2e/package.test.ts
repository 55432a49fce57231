/**
 * The package as npm would publish it: `npm pack` (which builds through
 * `prepack`), the tarball's contents, then installed into an empty project
 * and loaded from Node with `import` (the ES modules) and `require` (the
 * CommonJS build), and type-checked from both kinds of consumer. Catches a
 * file missing from `files`, a broken `exports` map or a CommonJS build that
 * does not load: nothing else here uses the package by its name.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '../..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

let work: string;
let tarball: string;
let app: string;

/**
 * Runs `cmd` in `cwd`; resolves with stdout, rejects with stderr on failure.
 * Asynchronous: a synchronous child (npm, tsc) blocks the test worker's event
 * loop, and on a busy machine vitest's own messages to it then time out.
 */
function run(cmd: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, encoding: 'utf8', timeout: 180_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

const node = (args: string[]) => run(process.execPath, args, app);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'hubcast-js-pack-'));
  await run('npm', ['pack', '--pack-destination', work, '--loglevel=error'], pkgDir);
  const tarballs = readdirSync(work).filter((f) => f.endsWith('.tgz'));
  expect(tarballs).toHaveLength(1);
  tarball = join(work, tarballs[0]!);
  app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  // The package has no dependencies: nothing to fetch.
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--no-package-lock', '--loglevel=error', tarball], app);
}, 240_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

it('the tarball holds LICENSE, README.md and both builds, and nothing else', async () => {
  const files = (await run('tar', ['-tzf', tarball], work))
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));
  for (const f of [
    'package.json',
    'LICENSE',
    'README.md',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/client.js',
    'dist/cjs/package.json',
    'dist/cjs/index.js',
    'dist/cjs/index.d.ts',
    'dist/cjs/client.js',
  ]) {
    expect(files).toContain(f);
  }
  const stray = files.filter((f) => !['package.json', 'LICENSE', 'README.md'].includes(f) && !f.startsWith('dist/'));
  expect(stray).toEqual([]);
  const license = readFileSync(join(app, 'node_modules/@hubcast/client/LICENSE'), 'utf8');
  expect(license).toContain('Apache License');
  expect(license).toContain('TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION');
  expect(license).toContain('END OF TERMS AND CONDITIONS');
});

/** What a consumer's script prints: where the package resolved, its exports, and a client made with it. */
const probe = `
  const ws = class { readyState = 0; onopen = null; onmessage = null; onclose = null; onerror = null; send() {} close() {} };
  const client = new m.HubcastClient({ url: 'http://127.0.0.1:1', WebSocket: ws, autoConnect: false });
  let missing = 'global WebSocket present';
  if (globalThis.WebSocket === undefined) {
    try { new m.HubcastClient({ url: 'http://127.0.0.1:1' }); missing = 'no error'; } catch (e) { missing = e.constructor.name + ': ' + e.message; }
  }
  console.log(JSON.stringify({
    resolved,
    exports: Object.keys(m).sort(),
    state: client.state,
    error: new m.HubcastError('closed', 'x') instanceof Error,
    missing,
  }));
`;

interface Probe {
  resolved: string;
  exports: string[];
  state: string;
  error: boolean;
  missing: string;
}

function expectWorking(p: Probe): void {
  expect(p.exports).toEqual(expect.arrayContaining(['HubcastClient', 'HubcastError', 'Room', 'backoffDelay', 'isValidRoomName']));
  expect(p.state).toBe('idle');
  expect(p.error).toBe(true);
  if (p.missing !== 'global WebSocket present') expect(p.missing).toMatch(/^TypeError: no WebSocket implementation.*`WebSocket` option/);
}

it(`import works from Node ${process.version}: the ES modules`, async () => {
  const out = await node([
    '--input-type=module',
    '-e',
    `import * as m from '@hubcast/client'; const resolved = import.meta.resolve('@hubcast/client'); ${probe}`,
  ]);
  const p = JSON.parse(out) as Probe;
  expect(p.resolved).toMatch(/node_modules\/@hubcast\/client\/dist\/index\.js$/);
  expectWorking(p);
});

it(`require works from Node ${process.version}: the CommonJS build, same exports`, async () => {
  const out = await node(['-e', `const m = require('@hubcast/client'); const resolved = require.resolve('@hubcast/client'); ${probe}`]);
  const p = JSON.parse(out) as Probe;
  expect(p.resolved).toMatch(/node_modules\/@hubcast\/client\/dist\/cjs\/index\.js$/);
  expectWorking(p);
  const esm = JSON.parse(
    await node(['--input-type=module', '-e', `import * as m from '@hubcast/client'; console.log(JSON.stringify(Object.keys(m).sort()))`]),
  ) as string[];
  expect(p.exports).toEqual(esm);
});

it('the types resolve for ESM and CommonJS consumers (NodeNext; Node types, no DOM)', async () => {
  const use = `
declare const WebSocketImpl: WebSocketConstructor;
const client = new HubcastClient({ url: 'http://127.0.0.1:8787', WebSocket: WebSocketImpl, autoConnect: false });
export const state: ConnectionState = client.state;
client.room<{ yes: number }>('market:42', { rewind: 1 }).on('event', (e) => e.data.yes.toFixed(2));
export const failed = (err: unknown): string | null => (err instanceof HubcastError ? err.code : null);
`;
  writeFileSync(
    join(app, 'esm.mts'),
    `import { HubcastClient, HubcastError, type ConnectionState, type WebSocketConstructor } from '@hubcast/client';\n${use}`,
  );
  writeFileSync(
    join(app, 'cjs.cts'),
    `import sdk = require('@hubcast/client');
const { HubcastClient, HubcastError } = sdk;
type ConnectionState = sdk.ConnectionState;
type WebSocketConstructor = sdk.WebSocketConstructor;
${use}`,
  );
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        lib: ['ES2022'],
        typeRoots: [join(pkgDir, 'node_modules/@types')],
        types: ['node'],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
      },
      files: ['esm.mts', 'cjs.cts'],
    }),
  );
  // `--explainFiles` lists the declaration files each consumer got.
  const files = await node([tsc, '-p', 'tsconfig.json', '--explainFiles']);
  expect(files).toMatch(/node_modules\/@hubcast\/client\/dist\/index\.d\.ts\n\s+Imported via '@hubcast\/client' from file 'esm\.mts'/);
  expect(files).toMatch(/node_modules\/@hubcast\/client\/dist\/cjs\/index\.d\.ts\n\s+Imported via '@hubcast\/client' from file 'cjs\.cts'/);
});
