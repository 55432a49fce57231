// Builds dist/ from src/ with tsc, twice: ES modules in dist/ (what `import`
// loads) and CommonJS in dist/cjs/ (what `require` loads, marked by
// dist/cjs/package.json {"type":"commonjs"}), each with its .d.ts. dist/ is
// removed first so a renamed or deleted source never leaves a stale file in
// the package. Run by `npm run build` and, before every pack or publish, by
// `prepack`.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const run = (project) => execFileSync(process.execPath, [tsc, '-p', project], { cwd: root, stdio: 'inherit' });

rmSync(join(root, 'dist'), { recursive: true, force: true });
run('tsconfig.build.json');
run('tsconfig.cjs.json');
writeFileSync(join(root, 'dist/cjs/package.json'), '{\n  "type": "commonjs"\n}\n');
