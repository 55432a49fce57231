/**
 * The README's examples, exactly as written: every ```ts block is
 * type-checked and compiled as an application would (`@hubcast/client` and
 * `ws` by name, NodeNext, strict), then run on this Node against the real
 * server, so the first thing a user copies cannot rot. The only change is the
 * server URL (the examples use the default, http://127.0.0.1:8787; the test's
 * server is on a free port). The world the examples assume: room `market:42`
 * holds 41 events (the example publishes with `expectedSeq: 41`).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort, history, HubcastServer, publishWithRetry } from './support.js';

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '../..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const EXAMPLE_URL = 'http://127.0.0.1:8787';
const RUN_TIMEOUT_MS = 30_000;

/** The ```ts / ```typescript blocks of the README, in order. */
function readmeExamples(): string[] {
  const readme = readFileSync(join(pkgDir, 'README.md'), 'utf8');
  return [...readme.matchAll(/^```(?:ts|typescript)\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

/** Runs `args` with this Node in `cwd`; resolves with the exit code and output, never rejects. */
function runNode(args: string[], cwd: string, timeoutMs: number): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: string | null }) | null;
      resolve({
        code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
        signal: e?.signal ?? null,
        out: `${stdout}${stderr ? `\n[stderr]\n${stderr}` : ''}`,
      });
    });
  });
}

const examples = readmeExamples();
let server: HubcastServer;
let work: string;

beforeAll(async () => {
  if (!existsSync(join(pkgDir, 'dist/index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  server = new HubcastServer(await freePort());
  await server.start();
  for (let i = 1; i <= 41; i++) await publishWithRetry(server.url, 'market:42', { yes: i / 100 }, `readme-${i}`);

  // An application directory: the package and `ws` by name, as installed.
  work = mkdtempSync(join(tmpdir(), 'hubcast-js-readme-'));
  mkdirSync(join(work, 'node_modules/@hubcast'), { recursive: true });
  symlinkSync(pkgDir, join(work, 'node_modules/@hubcast/client'), 'dir');
  symlinkSync(join(pkgDir, 'node_modules/ws'), join(work, 'node_modules/ws'), 'dir');
  symlinkSync(join(pkgDir, 'node_modules/@types'), join(work, 'node_modules/@types'), 'dir');
  writeFileSync(join(work, 'package.json'), JSON.stringify({ name: 'readme-examples', private: true, type: 'module' }));
  const files = examples.map((_, i) => `example-${i + 1}.ts`);
  examples.forEach((code, i) => writeFileSync(join(work, files[i]!), code.replaceAll(EXAMPLE_URL, server.url)));
  writeFileSync(
    join(work, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        lib: ['ES2022'],
        types: ['node'],
        strict: true,
        skipLibCheck: true,
        outDir: 'out',
        rootDir: '.',
      },
      files,
    }),
  );
}, 120_000);

afterAll(async () => {
  await server?.dispose();
  if (work) rmSync(work, { recursive: true, force: true });
});

it('the README has TypeScript examples, all on the default server URL', () => {
  expect(examples.length).toBeGreaterThan(0);
  for (const [i, code] of examples.entries()) {
    expect(code, `README example ${i + 1} must connect to ${EXAMPLE_URL} (the test points that at its server)`).toContain(EXAMPLE_URL);
  }
});

it('the README examples type-check and compile (strict, NodeNext, Node types)', async () => {
  const { code, out } = await runNode([tsc, '-p', 'tsconfig.json'], work, 120_000);
  expect(code, `tsc on the README examples (example-N.ts is the Nth ts block):\n${out}`).toBe(0);
});

it(`the README examples run on Node ${process.version} against the real server and exit`, async () => {
  for (const [i] of examples.entries()) {
    const script = join(work, 'out', `example-${i + 1}.js`);
    expect(existsSync(script), `${script} was not compiled`).toBe(true);
    const { code, signal, out } = await runNode([script], work, RUN_TIMEOUT_MS);
    const what = signal ? `was killed (${signal}) after ${RUN_TIMEOUT_MS} ms: does it close the client?` : `exited with ${code}`;
    expect({ code, signal }, `README example ${i + 1} ${what}; its output:\n${out}`).toEqual({ code: 0, signal: null });
  }
  // The first example's publish (expectedSeq 41) reached the server.
  expect((await history(server.url, 'market:42', 41)).head).toBe(42);
}, 120_000);
