import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort } from '../src/db/embedded.ts';
import type { DoctorReport } from '../src/doctor/types.ts';
import { ApiClient, onboard } from './helpers/client.ts';
import { RUNTIME_CACHE, sandboxRoot } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { uidBase } from './helpers/gateway.ts';

const root = path.resolve(import.meta.dirname, '..');
const cli = path.join(root, 'src', 'cli', 'main.ts');

const check = (r: DoctorReport, id: string) => {
  const c = r.checks.find((x) => x.id === id);
  assert.ok(c, `check ${id} is in the report`);
  return c;
};

/**
 * `clawplane doctor` and GET /api/v1/platform/doctor on a healthy installation, then with one fault
 * planted at a time: each fault gives its own ✗, with the fix, and exit code 1.
 */
describe('clawplane doctor', async () => {
  const sandboxes = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_SANDBOX_ROOT: sandboxes,
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
  });
  const admin = await onboard(server);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: server.database.url,
    CLAWPLANE_SECRET_KEY: server.config.secretKey?.toString('base64'),
    CLAWPLANE_DATA_DIR: server.config.dataDir,
    CLAWPLANE_SANDBOX_ROOT: sandboxes,
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
  };
  const doctor = (extra: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(process.execPath, [cli, 'doctor', '--json'], { env: { ...env, ...extra }, encoding: 'utf8' });
    assert.ok(r.stdout, r.stderr);
    return { status: r.status, report: JSON.parse(r.stdout) as DoctorReport };
  };
  // A new connection each time: a CLI run in between outlasts the server's keep-alive, and a reused
  // socket the server just closed would fail for a reason that is not the one tested.
  const api = () =>
    new Promise<DoctorReport>((resolve, reject) => {
      const cookie = [...admin.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
      http
        .get(`${server.url}/api/v1/platform/doctor`, { agent: false, headers: { cookie } }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body) as DoctorReport) : reject(new Error(`${res.statusCode}: ${body}`))));
        })
        .on('error', reject);
    });

  test('a healthy installation: nothing fails, from the CLI (exit 0) and the API; the text report marks each check', async () => {
    const { status, report } = doctor();
    assert.equal(status, 0, JSON.stringify(report.checks.filter((c) => c.status === 'fail')));
    assert.ok(report.ok);
    for (const id of [
      'sandbox.bubblewrap',
      'sandbox.userns',
      'database.reachable',
      'database.migrations',
      'secret.key',
      'runtimes',
      'sandboxes',
      'broker',
      'network.listeners',
      'disk',
      'clock.skew',
    ]) {
      assert.equal(check(report, id).status, 'ok', `${id}: ${check(report, id).detail}`);
    }
    const viaApi = await api();
    assert.ok(viaApi.ok, JSON.stringify(viaApi.checks.filter((c) => c.status === 'fail')));
    const text = spawnSync(process.execPath, [cli, 'doctor'], { env, encoding: 'utf8' });
    assert.equal(text.status, 0);
    assert.match(text.stdout, /^✓ database reachable: PostgreSQL \d+/m);
    assert.match(text.stdout, /all checks passed/);
  });

  test('only platform admins get the report', async () => {
    const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'doc', name: 'Doc' }, 201);
    const { token } = await server.services.tokens.create(t.id, { name: 'x', role: 'tenant_admin', createdBy: null }, { actor: 'test' });
    const r = await new ApiClient(server.url, { bearer: token }).call('GET', '/api/v1/platform/doctor');
    assert.equal(r.status, 403);
  });

  test('database down: ✗ database reachable with the fix, exit 1', async () => {
    const dead = `postgres://nobody:x@127.0.0.1:${await freePort()}/clawplane`;
    const { status, report } = doctor({ DATABASE_URL: dead });
    assert.equal(status, 1);
    const c = check(report, 'database.reachable');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /ECONNREFUSED/);
    assert.match(c.fix ?? '', /DATABASE_URL/);
    assert.equal(check(report, 'database.migrations').status, 'skip');
    assert.doesNotMatch(JSON.stringify(report), /nobody:x@/, 'the URL password is never echoed');
  });

  test('bubblewrap missing (a PATH without bwrap): ✗ bubblewrap with the apt-get command, exit 1', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-nobwrap-'));
    after(() => rm(dir, { recursive: true, force: true }));
    for (const from of ['/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
      for (const name of await readdir(from)) if (name !== 'bwrap') await symlink(path.join(from, name), path.join(dir, name)).catch(() => undefined);
    }
    const { status, report } = doctor({ PATH: dir });
    assert.equal(status, 1);
    const c = check(report, 'sandbox.bubblewrap');
    assert.equal(c.status, 'fail');
    assert.match(c.fix ?? '', /apt-get install -y --no-install-recommends bubblewrap/);
  });

  test('a stale migration (changed after it was applied): ✗ migrations, exit 1', async () => {
    const was = (await server.db.query<{ checksum: string }>('SELECT checksum FROM clawplane_migrations WHERE version = 1')).rows[0]?.checksum;
    await server.db.query(`UPDATE clawplane_migrations SET checksum = 'edited' WHERE version = 1`);
    try {
      const { status, report } = doctor();
      assert.equal(status, 1);
      const c = check(report, 'database.migrations');
      assert.equal(c.status, 'fail');
      assert.match(c.detail, /stale: .*0001_audit/);
      assert.match(c.fix ?? '', /append-only/);
    } finally {
      await server.db.query('UPDATE clawplane_migrations SET checksum = $1 WHERE version = 1', [was]);
    }
    assert.equal(check(doctor().report, 'database.migrations').status, 'ok');
  });

  test('an orphan sandbox (a live sandbox record no instance wants): ✗ sandboxes with its pid, in the API report', async () => {
    const orphan = spawn('sleep', ['600'], { stdio: 'ignore' });
    after(() => orphan.kill('SIGKILL'));
    const pid = orphan.pid ?? 0;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const pidStartTime = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const instanceId = randomUUID();
    const host = path.join(sandboxes, instanceId, 'host');
    await mkdir(host, { recursive: true });
    await chmod(path.join(sandboxes, instanceId), 0o711);
    const handle = {
      driver: 'local',
      sandboxId: randomUUID(),
      instanceId,
      tenantId: randomUUID(),
      runtimeVersion: '2026.9.6',
      startedAt: new Date().toISOString(),
      owner: { clusterId: 'test', nodeId: os.hostname() },
      native: { pid, pidStartTime },
    };
    await writeFile(path.join(host, 'sandbox.json'), JSON.stringify(handle));
    try {
      const report = await api();
      assert.equal(report.ok, false);
      const c = check(report, 'sandboxes');
      assert.equal(c.status, 'fail');
      assert.match(c.detail, new RegExp(`orphan sandbox ${handle.sandboxId} \\(instance ${instanceId}, pid ${pid}\\)`));
      assert.match(c.fix ?? '', /reconciler stops orphans/);
      assert.equal(doctor().status, 1);
    } finally {
      await rm(path.join(sandboxes, instanceId), { recursive: true, force: true });
    }
  });

  test('a server bound to 0.0.0.0 without being asked: ✗ public listeners (in a network namespace of its own)', () => {
    // The listener lives in a fresh network namespace (only a downed loopback there), so nothing outside can reach it.
    const script = `
      import net from 'node:net';
      import { checkListeners } from ${JSON.stringify(path.join(root, 'src/doctor/listeners.ts'))};
      const srv = net.createServer().listen(0, '0.0.0.0', async () => {
        const port = srv.address().port;
        const own = new Set([process.pid]);
        const unasked = await checkListeners({ asked: [{ host: '127.0.0.1', port: 8787 }], ownPids: own });
        const asked = await checkListeners({ asked: [{ host: '0.0.0.0', port }], ownPids: own });
        console.log(JSON.stringify({ port, unasked, asked }));
        srv.close();
      });`;
    const r = spawnSync('unshare', ['--net', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { port: number; unasked: { status: string; detail: string; fix: string }; asked: { status: string; detail: string } };
    assert.equal(out.unasked.status, 'fail');
    assert.match(out.unasked.detail, new RegExp(`0\\.0\\.0\\.0:${out.port} \\(pid \\d+\\)`));
    assert.match(out.unasked.fix, /127\.0\.0\.1.*CLAWPLANE_HOST/);
    assert.equal(out.asked.status, 'ok', 'a public address the configuration asked for is fine');
  });
});
