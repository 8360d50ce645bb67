/**
 * Builds the web console (web/ → web/dist) with Vite, after type-checking it (issue 9).
 * `--if-stale` builds only when web/dist is missing or older than a source file: `npm start` and
 * `npm test` call it so a fresh checkout serves the console without a separate step.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const web = path.join(root, 'web');
const stamp = path.join(web, 'dist', 'index.html');
const bin = (name: string) => path.join(root, 'node_modules', '.bin', name);

/** Newest modification time of the console's sources (everything under web/ but dist and node_modules). */
function newestSource(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'dist' || e.name === 'node_modules') continue;
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function builtAt(): number {
  try {
    return statSync(stamp).mtimeMs;
  } catch {
    return 0;
  }
}

function run(what: string, cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    process.stderr.write(`build:web: ${what} failed\n`);
    process.exit(r.status ?? 1);
  }
}

// package-lock.json counts as a source: a new React or Vite version must rebuild.
const lock = statSync(path.join(root, 'package-lock.json'), { throwIfNoEntry: false })?.mtimeMs ?? 0;
if (process.argv.includes('--if-stale') && builtAt() >= Math.max(newestSource(web), lock)) {
  process.stdout.write('# web console is up to date (web/dist)\n');
  process.exit(0);
}
run('type check (tsc -p web)', bin('tsc'), ['--noEmit', '-p', web]);
run('vite build', bin('vite'), ['build', web, '--logLevel', 'warn']);
process.stdout.write('# web console built into web/dist\n');
