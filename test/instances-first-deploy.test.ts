import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ApiClient, onboard } from './helpers/client.ts';
import { OPENCLAW_VERSION, sandboxRoot } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

/**
 * A first deploy on a control plane that has never pulled a runtime: it used to answer 409
 * runtime_missing until someone ran `clawplane runtime pull`. Now the reconciler pulls the default
 * version itself, showing its progress in the instance's status, and `instance deploy --wait` prints
 * the phases and the time each took.
 */
describe('a first deploy pulls its runtime', { timeout: 1_800_000 }, async () => {
  const cache = await mkdtemp('/var/tmp/clawplane-empty-runtime-cache-');
  await chmod(cache, 0o755);
  const root = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: cache,
    CLAWPLANE_RUNTIME_DEFAULT_VERSION: OPENCLAW_VERSION,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: '233000',
    // A fresh runtime's first start has no V8 compile cache yet: on a loaded 2-core machine it took over 180 s.
    CLAWPLANE_INSTANCE_READY_TIMEOUT_MS: '900000',
    CLAWPLANE_LOG_LEVEL: 'info',
  });
  const admin = await onboard(server);
  const tenant = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'first', name: 'First' }, 201);
  const { token } = await server.services.tokens.create(tenant.id, { name: 'ops', role: 'tenant_admin', createdBy: null }, { actor: 'test' });
  const ops = new ApiClient(server.url, { bearer: token });
  // After the server's own hook (it stops sandboxes and the reconciler): nothing writes to the cache any more.
  after(() => rm(cache, { recursive: true, force: true }));

  test('another version that is not installed is still refused, naming the fix', async () => {
    const r = await ops.call('POST', '/api/v1/tenants/first/instances', { name: 'other', runtimeVersion: '2026.1.1' });
    assert.equal(r.status, 409);
    const body = (await r.json()) as { code: string; message: string };
    assert.equal(body.code, 'runtime_missing');
    assert.match(body.message, /clawplane runtime pull openclaw@2026\.1\.1/);
  });

  test('`clawplane instance deploy --wait` on an empty runtime cache reaches running, showing its phases', async () => {
    assert.equal(await server.services.runtimes.has(OPENCLAW_VERSION), false, 'the cache starts empty');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: server.database.url,
      CLAWPLANE_SECRET_KEY: server.config.secretKey?.toString('base64'),
      CLAWPLANE_DATA_DIR: server.config.dataDir,
      CLAWPLANE_RUNTIME_CACHE: cache,
      CLAWPLANE_RUNTIME_DEFAULT_VERSION: OPENCLAW_VERSION,
      CLAWPLANE_SANDBOX_ROOT: root,
    };
    const child = spawn(process.execPath, [cli, 'instance', 'deploy', '--tenant', 'first', '--name', 'main', '--wait'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    // While it runs, the API shows the pull as the instance's status reason (what the console polls).
    let seenPulling = '';
    const code = await new Promise<number | null>((resolve) => {
      const poll = setInterval(() => {
        void ops
          .json<{ items: { statusReason: string }[] }>('GET', '/api/v1/tenants/first/instances')
          .then((l) => {
            const reason = l.items.find((i) => /pulling runtime/.test(i.statusReason))?.statusReason;
            if (reason) seenPulling = reason;
          })
          .catch(() => undefined);
      }, 500);
      child.on('close', (c) => {
        clearInterval(poll);
        resolve(c);
      });
    });
    assert.equal(code, 0, stderr + stdout);
    assert.match(seenPulling, new RegExp(`pulling runtime openclaw@${OPENCLAW_VERSION.replace(/\./g, '\\.')}`));
    assert.match(stderr, /pulling runtime: done in [0-9.]+ s/);
    assert.match(stderr, /starting sandbox: done in [0-9.]+ s/);
    assert.match(stderr, /running after [0-9.]+ s/);
    assert.equal(await server.services.runtimes.has(OPENCLAW_VERSION), true);
    const list = await ops.json<{ items: { id: string; name: string; status: string }[] }>('GET', '/api/v1/tenants/first/instances');
    const main = list.items.find((i) => i.name === 'main');
    assert.equal(main?.status, 'running');
    const events = await ops.json<{ items: { reason: string }[] }>('GET', `/api/v1/tenants/first/instances/${main?.id ?? ''}/events`);
    assert.ok(
      events.items.some((e) => /runtime openclaw@.* pulled in [0-9.]+ s/.test(e.reason)),
      JSON.stringify(events.items),
    );
  });
});
