import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../src/config/schema.ts';
import { resolveSecretKey } from '../src/config/secret-key.ts';
import { ConfigError } from '../src/errors.ts';
import { createLogger } from '../src/observability/logger.ts';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

describe('configuration', () => {
  test('defaults listen on loopback 8787 with the embedded database', () => {
    const c = parseConfig({});
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.port, 8787);
    assert.equal(c.databaseUrl, undefined);
    assert.equal(c.env, 'development');
  });

  test('a bad value names the variable, the value and the fix', () => {
    assert.throws(
      () => parseConfig({ CLAWPLANE_PORT: 'eighty' }),
      (err: unknown) => err instanceof ConfigError && /CLAWPLANE_PORT/.test(err.message) && /"eighty"/.test(err.message) && /Fix:/.test(err.message),
    );
    assert.throws(() => parseConfig({ CLAWPLANE_LOG_LEVEL: 'loud' }), /CLAWPLANE_LOG_LEVEL/);
    assert.throws(() => parseConfig({ DATABASE_URL: 'mysql://x' }), /DATABASE_URL must be a postgres/);
  });

  test('production requires DATABASE_URL and CLAWPLANE_SECRET_KEY', () => {
    assert.throws(
      () => parseConfig({ CLAWPLANE_ENV: 'production' }),
      (err: unknown) => err instanceof ConfigError && /DATABASE_URL is required/.test(err.message) && /CLAWPLANE_SECRET_KEY is required/.test(err.message),
    );
    const ok = parseConfig({
      CLAWPLANE_ENV: 'production',
      DATABASE_URL: 'postgres://u:p@db:5432/claw',
      CLAWPLANE_SECRET_KEY: 'a'.repeat(64),
    });
    assert.equal(ok.secretKey?.length, 32);
  });

  test('the injected lane clock is refused outside tests', () => {
    assert.throws(() => parseConfig({ CLAWPLANE_TEST_LANE_CLOCK_FILE: '/tmp/now' }), /CLAWPLANE_TEST_LANE_CLOCK_FILE is for tests only/);
    assert.equal(parseConfig({ CLAWPLANE_ENV: 'test', CLAWPLANE_TEST_LANE_CLOCK_FILE: '/tmp/now' }).lanes.clockFile, '/tmp/now');
    assert.deepEqual(parseConfig({}).lanes, { tickMs: 15_000, clockFile: undefined });
  });

  test('a short secret key is refused without echoing it', () => {
    const secret = 'c2hvcnQta2V5LWNhbmFyeQ';
    assert.throws(
      () => parseConfig({ CLAWPLANE_SECRET_KEY: secret }),
      (err: unknown) => err instanceof ConfigError && /at least 32 random bytes/.test(err.message) && !err.message.includes(secret),
    );
  });

  test('flags override the environment and are validated alike', () => {
    assert.equal(parseConfig({ CLAWPLANE_PORT: '1000' }, { CLAWPLANE_PORT: '2000' }).port, 2000);
    assert.throws(() => parseConfig({}, { CLAWPLANE_PORT: '70000' }), /CLAWPLANE_PORT/);
  });

  test('embedded mode generates a secret key once, mode 0600, and reuses it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-key-'));
    const log = createLogger('silent');
    const a = await resolveSecretKey(parseConfig({ CLAWPLANE_DATA_DIR: dir }), log);
    const b = await resolveSecretKey(parseConfig({ CLAWPLANE_DATA_DIR: dir }), log);
    assert.equal(a.length, 32);
    assert.deepEqual(a, b);
    const st = await stat(path.join(dir, 'secret.key'));
    assert.equal(st.mode & 0o777, 0o600);
    assert.ok((await readFile(path.join(dir, 'secret.key'), 'utf8')).trim().length >= 43);
  });

  test('an external database without a secret key is refused (processes must share it)', async () => {
    await assert.rejects(
      resolveSecretKey(parseConfig({ DATABASE_URL: 'postgres://u:p@h/db' }), createLogger('silent')),
      /CLAWPLANE_SECRET_KEY is required when DATABASE_URL is set/,
    );
  });

  test('the CLI exits 3 on bad configuration, 2 on bad usage, with a message', () => {
    const bad = spawnSync(process.execPath, [cli, 'serve'], { env: { ...process.env, CLAWPLANE_PORT: '-1' }, encoding: 'utf8' });
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, /CLAWPLANE_PORT/);
    const usage = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /unknown command "frobnicate"/);
    const flag = spawnSync(process.execPath, [cli, 'serve', '--no-such-flag'], { encoding: 'utf8' });
    assert.equal(flag.status, 2);
    const help = spawnSync(process.execPath, [cli, 'audit', '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0);
    assert.match(help.stdout, /clawplane audit verify/);
    const version = spawnSync(process.execPath, [cli, 'version'], { encoding: 'utf8' });
    assert.equal(version.status, 0);
    assert.match(version.stdout, /^clawplane \d+\.\d+\.\d+ \(node 24\./);
  });
});
