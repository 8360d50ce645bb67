import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { EmbeddedDatabase, PACKAGED_PG_BIN } from '../src/db/embedded.ts';
import { createLogger } from '../src/observability/logger.ts';

const root = path.resolve(import.meta.dirname, '..');
const asRoot = process.getuid?.() === 0;
const skip = asRoot ? false : 'needs root: the postgres user only comes into play as root';

async function query(url: string, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A private folder as `mktemp -d` makes it (0700), like /root: the postgres user cannot pass it. */
async function privateDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(dir, 0o700);
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('embedded PostgreSQL as root from a 0700 folder', { skip }, async () => {
  const log = createLogger('silent');
  const priv = await privateDir('clawplane-priv-');
  const shared = await privateDir('clawplane-shared-');
  // The package's binaries as they sit in a checkout under a private folder.
  const native = path.join(priv, 'node_modules', 'native');
  await cp(path.dirname(PACKAGED_PG_BIN), native, { recursive: true, verbatimSymlinks: true });
  const dataDir = path.join(priv, '.clawplane');
  const open = () => new EmbeddedDatabase({ dataDir, port: 0, log, sharedDir: shared, binDir: path.join(native, 'bin') });

  test('starts with binaries and data dir below the closed folder, and keeps data across restarts', async () => {
    const a = open();
    const url = await a.start();
    await query(url, 'CREATE TABLE kept (v text); INSERT INTO kept VALUES ($$hello$$)');
    await a.stop();
    // The cluster sits where the postgres user can reach it, linked from the data directory.
    assert.ok(lstatSync(path.join(dataDir, 'pg')).isSymbolicLink());
    assert.ok(readlinkSync(path.join(dataDir, 'pg')).startsWith(shared));
    assert.equal(readdirSync(path.join(shared, 'postgresql')).length, 1, 'one copy of the binaries');
    const b = open();
    const again = await b.start();
    assert.equal((await query(again, 'SELECT v FROM kept')).rows[0]?.v, 'hello');
    await b.stop();
  });

  test('a data directory deleted to start over gets a fresh cluster, not the old one', async () => {
    const old = readlinkSync(path.join(dataDir, 'pg'));
    await rm(dataDir, { recursive: true, force: true });
    const c = open();
    const url = await c.start();
    const kept = await query(url, `SELECT to_regclass('public.kept') AS t`);
    assert.equal(kept.rows[0]?.t, null, 'the old cluster is gone');
    assert.equal(readlinkSync(path.join(dataDir, 'pg')), old);
    await c.stop();
  });

  test('a second process shares a server in use and leaves it running; the owner stops it', async () => {
    const owner = open();
    const url = await owner.start();
    const session = new pg.Client({ connectionString: url });
    await session.connect(); // the owner's pool, as a running server holds one
    const guest = open();
    const guestUrl = await guest.start();
    assert.equal(guestUrl, url);
    await guest.stop();
    assert.equal((await session.query('SELECT 1 AS one')).rows[0]?.one, 1, 'still served after the guest stopped');
    await session.end();
    await owner.stop();
    await assert.rejects(query(url, 'SELECT 1'), /ECONNREFUSED/);
  });
});

describe('a checkout in a 0700 folder: the CLI and the server start from it', { skip }, async () => {
  const priv = await privateDir('clawplane-clone-');
  const shared = await privateDir('clawplane-shared-');
  const clone = path.join(priv, 'clawplane');
  // Hard links: the same files at a path the postgres user cannot reach, without copying 500 MB.
  spawnSync('mkdir', [clone]);
  for (const entry of readdirSync(root)) {
    if (entry === '.git' || entry === '.clawplane') continue;
    const r = spawnSync('cp', ['-al', path.join(root, entry), clone], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, CLAWPLANE_SHARED_DIR: shared, CLAWPLANE_PORT: '0' };
  for (const k of ['DATABASE_URL', 'CLAWPLANE_SECRET_KEY', 'CLAWPLANE_DATA_DIR']) delete env[k];

  test('`clawplane serve` in the clone is ready, and a CLI command beside it works', async () => {
    const child = spawn(process.execPath, ['src/cli/main.ts', 'serve'], { cwd: clone, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*clawplane listening/.exec(out);
        if (m?.[1]) resolve(m[1]);
      });
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      void exited.then((code) => reject(new Error(`serve exited ${code}: ${out}`)));
    });
    try {
      assert.equal((await fetch(`${url}/readyz`)).status, 200);
      assert.ok(existsSync(path.join(clone, '.clawplane', 'setup-code')), 'the data directory stays in the checkout');
      const list = spawnSync(process.execPath, ['src/cli/main.ts', 'tenant', 'list'], { cwd: clone, env, encoding: 'utf8' });
      assert.equal(list.status, 0, list.stderr);
      assert.equal((await fetch(`${url}/readyz`)).status, 200);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, out);
  });
});
