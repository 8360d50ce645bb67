/**
 * The operator role against a STAND-IN Kubernetes API server (test/helpers/kube-standin.ts): no Kubernetes
 * API server can be installed on these machines. The stand-in serves the chart's own Tenant CRD (rendered
 * by Helm here) and validates every Tenant against its openAPIV3Schema, as the real server would; the
 * database, the TenantService, its audit log and the work_claims lease are real.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { parseAllDocuments } from 'yaml';
import { TenantOperator } from '../src/operator/tenants.ts';
import { WorkClaims } from '../src/replicas/claims.ts';
import { kubeTools } from '../scripts/kube-tools.ts';
import { onboard } from './helpers/client.ts';
import { KubeStandIn, type StoredObject } from './helpers/kube-standin.ts';
import { startTestServer } from './helpers/server.ts';

const NS = 'clawplane';
const CHART = path.resolve(import.meta.dirname, '../deploy/helm/clawplane');

async function tenantCrdSchema(): Promise<object> {
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
  for (const d of parseAllDocuments(r.stdout)) {
    const o = d.toJS() as { kind?: string; metadata?: { name?: string }; spec?: { versions: { schema: { openAPIV3Schema: object } }[] } } | null;
    if (o?.kind === 'CustomResourceDefinition' && o.metadata?.name === 'tenants.clawplane.dev') return o.spec?.versions[0]?.schema.openAPIV3Schema ?? {};
  }
  throw new Error('no Tenant CRD in the chart');
}

describe('the operator role: Tenant resources into the database (stand-in API server: no Kubernetes here)', async () => {
  const kube = await KubeStandIn.start();
  after(() => kube.close());
  kube.addCustomResource({ group: 'clawplane.dev', version: 'v1alpha1', kind: 'Tenant', plural: 'tenants', schema: await tenantCrdSchema() });
  const server = await startTestServer();
  const admin = await onboard(server);
  const kc = new KubeConfig();
  kc.loadFromOptions(kube.kubeconfigOptions(NS));
  const claims = (owner: string) => new WorkClaims(server.db, { owner, node: 'n', ttlMs: 60_000 });
  const operator = new TenantOperator(kc, { namespace: NS, tenants: server.services.tenants, claims: claims('op-1'), log: pino({ level: 'silent' }) });
  /** What `kubectl apply --server-side` of a Tenant would send. */
  const applyTenant = async (name: string, spec: object, annotations?: Record<string, string>) =>
    fetch(`${kube.url}/apis/clawplane.dev/v1alpha1/namespaces/${NS}/tenants/${name}?fieldManager=kubectl`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${kube.token}`, 'content-type': 'application/apply-patch+yaml' },
      body: JSON.stringify({ apiVersion: 'clawplane.dev/v1alpha1', kind: 'Tenant', metadata: { name, ...(annotations ? { annotations } : {}) }, spec }),
    });
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
    assert.match(st?.conditions?.[0]?.message ?? '', /not enforced by this release: tier, quotas\.cpu/, 'fields not stored are said, not silently dropped');
    const audit = await server.db.query<{ actor: string; action: string }>(
      "SELECT actor, action FROM audit_events WHERE action = 'tenant.create' ORDER BY seq DESC LIMIT 1",
    );
    assert.equal(audit.rows[0]?.actor, 'operator');
    assert.deepEqual(kube.managers('Tenant', NS, 'acme'), ['kubectl'], "the spec stays the user's; the operator wrote only status");
  });

  test('a second pass with nothing changed writes nothing; a spec change is applied and observed', async () => {
    const before = kube.calls.filter((c) => c.method === 'PATCH').length;
    await operator.pass();
    assert.equal(kube.calls.filter((c) => c.method === 'PATCH').length, before, 'no status write when nothing changed');
    await applyTenant('acme', { slug: 'acme', displayName: 'Acme Corporation', quotas: { maxInstances: 5 } });
    const generation = Number(kube.get('Tenant', NS, 'acme')?.metadata['generation']);
    await operator.pass();
    const t = await server.services.tenants.find('acme');
    assert.equal(t?.name, 'Acme Corporation');
    assert.equal(t?.quotas.maxInstances, 5);
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
});
