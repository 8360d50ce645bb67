/**
 * The objects of one sandbox (docs/adr/0011-kubernetes.md), built with kubernetes-models and validated
 * against the Kubernetes OpenAPI schemas before anything is sent. Only the fields Clawplane owns are
 * set: whatever the API server defaults (dnsPolicy, schedulerName, terminationMessagePath, a PVC's
 * volumeName, a Service's clusterIP) is never in an apply, so it is never fought over.
 *
 * Per instance: the state PVC, a Service for the gateway port, and a NetworkPolicy (default deny; in only
 * from the control plane's ingress pods on the gateway port, out only to the broker pods on the broker
 * port; no DNS: the broker is passed as an address). Per start: a Secret with the sandbox's own tokens
 * (broker, gateway, hooks: never a provider key) and a ConfigMap with the rendered configs (no secret).
 */
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Pod } from 'kubernetes-models/v1/Pod';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import type { IIoK8sApimachineryPkgApisMetaV1LabelSelector as LabelSelector } from '@kubernetes-models/apimachinery/apis/meta/v1/LabelSelector';
import type { SupervisorConfig } from '../../supervisor/protocol.ts';
import { KNOWLEDGE_PLUGIN_ID } from '../../gateway-plugin/knowledge.ts';
import { GATEWAY_NODE_OPTIONS, SANDBOX_LAYOUT } from '../../host/dirs.ts';
import type { SandboxSpec } from '../../types.ts';
import { IMAGE_NODE, IMAGE_SUPERVISOR } from '../docker/image.ts';
import type { KubeObject } from './api.ts';
import { archivePodName, CONTROL_PORT, GATEWAY_PORT, LABEL, MANAGED_BY, podName, pvcName, startObjectName, STARTED_ANNOTATION } from './labels.ts';

export interface SandboxObjectSettings {
  namespace: string;
  /** The sandbox image (Node and the supervisor; the same image as the docker driver's). */
  image: string;
  /** Repository of OpenClaw runtime images, tagged by version, mounted as an image volume. */
  runtimeImage: string;
  storageClass: string;
  /** '' = the cluster default runtime. */
  runtimeClassName: string;
  brokerUrl: string;
  /** Pods in the control plane's namespace admitted on the gateway port. */
  ingressSelector: LabelSelector;
  controlNamespace: string;
  memoryBytes: number;
  cpus: number;
  dataBytes: number;
  tmpBytes: number;
}

/** Where things are inside the pod (the layout the reconciler renders configs with). */
const CONF = '/conf';
const TENANT = '/tenant';
const RUNTIME = '/opt/runtime';
/**
 * The sandbox's tokens, as regular private files in a memory-backed emptyDir: the init container copies
 * them there from the start's Secret (never mounted in the supervisor's container). A Secret volume's
 * files are symlinks into `..data/` with a fixed mode, and an immutable Secret cannot change in place;
 * these can be rewritten through pods/exec when the credentials are rotated, and survive a container
 * restart (the emptyDir lives as long as the pod).
 */
export const TOKENS = '/run/clawplane/tokens';
/** Where the start's Secret is mounted in the init container only. */
const START_SECRET = '/run/clawplane/start';
/** The gateway token file the rendered config points at (the driver's layout). */
export const KUBE_GATEWAY_TOKEN_FILE = `${TOKENS}/gateway-token`;
/** Annotation on the state PVC: the tenant uid its files belong to (a pod that reads it when no sandbox runs runs as it). */
export const UID_ANNOTATION = 'io.clawplane.uid';

function labelsOf(spec: SandboxSpec, sandboxId?: string): Record<string, string> {
  return {
    ...MANAGED_BY,
    [LABEL.cluster]: spec.clusterId,
    [LABEL.instance]: spec.instanceId,
    [LABEL.tenant]: spec.tenantId,
    ...(sandboxId ? { [LABEL.sandbox]: sandboxId, [LABEL.runtime]: spec.runtime.version } : {}),
  };
}

function plain(model: { validate(): void; toJSON(): unknown }): KubeObject {
  model.validate();
  return model.toJSON() as KubeObject;
}

/** The supervisor's config for a pod: listens on TCP, reaches the broker over TCP, reads tokens from /conf. */
export function supervisorConfig(spec: SandboxSpec, brokerUrl: string): SupervisorConfig {
  const executors = Object.keys(spec.configs).map((id, i) => ({
    id,
    port: SANDBOX_LAYOUT.executorPort(i),
    stateDir: SANDBOX_LAYOUT.stateDir(id),
    configPath: `${CONF}/${id}.openclaw.json`,
    logFile: `${TENANT}/log/${id}.log`,
  }));
  const nodeBin = `${RUNTIME}/${spec.runtime.nodeRel}`;
  return {
    executors,
    ...(spec.run ? { run: spec.run } : {}),
    command: [nodeBin, `${RUNTIME}/${spec.runtime.entryRel}`, 'gateway', 'run', '--bind', 'loopback'],
    env: {
      PATH: `${nodeBin.slice(0, nodeBin.lastIndexOf('/'))}:/usr/bin:/bin`,
      TMPDIR: '/tmp',
      // Headless, offline, quiet: ../shared/notes/openclaw-runtime.md §1 (as on the host drivers).
      OPENCLAW_DISABLE_BONJOUR: '1',
      OPENCLAW_SKIP_CHANNELS: '1',
      OPENCLAW_NO_RESPAWN: '1',
      OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
      OPENCLAW_NO_AUTO_UPDATE: '1',
      OPENCLAW_OFFLINE: '1',
      NODE_OPTIONS: GATEWAY_NODE_OPTIONS,
    },
    gatewayTokenFile: KUBE_GATEWAY_TOKEN_FILE,
    hooksTokenFile: `${TOKENS}/hooks-token`,
    egressPort: SANDBOX_LAYOUT.egressPort,
    brokerSocket: '',
    brokerUrl,
    brokerTokenFile: `${TOKENS}/broker-token`,
    ingress: { port: GATEWAY_PORT, host: '0.0.0.0' },
    control: { port: CONTROL_PORT, host: '127.0.0.1' },
    logFile: `${TENANT}/log/supervisor.log`,
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
  };
}

/** The state volume; kept while the instance exists (idle stop deletes only the pod). */
export function pvcObject(spec: SandboxSpec, s: SandboxObjectSettings): KubeObject {
  return plain(
    new PersistentVolumeClaim({
      metadata: {
        name: pvcName(spec.instanceId),
        namespace: s.namespace,
        labels: labelsOf(spec),
        annotations: { [UID_ANNOTATION]: String(spec.tenantUid) },
      },
      spec: {
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: String(s.dataBytes) } },
        ...(s.storageClass ? { storageClassName: s.storageClass } : {}),
      },
    }),
  );
}

/** A stable name for the gateway port (the pod's IP changes on every start). */
export function serviceObject(spec: SandboxSpec, s: SandboxObjectSettings): KubeObject {
  return plain(
    new Service({
      metadata: { name: podName(spec.instanceId), namespace: s.namespace, labels: labelsOf(spec) },
      spec: {
        selector: { [LABEL.instance]: spec.instanceId, ...MANAGED_BY },
        ports: [{ name: 'gateway', protocol: 'TCP', port: GATEWAY_PORT, targetPort: GATEWAY_PORT }],
      },
    }),
  );
}

/**
 * Default deny for this sandbox's pod, with exactly two holes. It does not rely on the Helm chart's
 * namespace-wide policies being present: a sandbox is fenced by objects its own driver applied.
 */
export function networkPolicyObject(spec: SandboxSpec, s: SandboxObjectSettings): KubeObject {
  const broker = new URL(s.brokerUrl);
  const controlNs = { matchLabels: { 'kubernetes.io/metadata.name': s.controlNamespace } };
  return plain(
    new NetworkPolicy({
      metadata: { name: podName(spec.instanceId), namespace: s.namespace, labels: labelsOf(spec) },
      spec: {
        podSelector: { matchLabels: { [LABEL.instance]: spec.instanceId, ...MANAGED_BY } },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ from: [{ namespaceSelector: controlNs, podSelector: s.ingressSelector }], ports: [{ protocol: 'TCP', port: GATEWAY_PORT }] }],
        // The broker Service's port is assumed to be its pods' port (the chart maps them 1:1): policies
        // see pod addresses after the Service is resolved.
        egress: [
          {
            to: [{ namespaceSelector: controlNs, podSelector: { matchLabels: { 'app.kubernetes.io/component': 'broker' } } }],
            ports: [{ protocol: 'TCP', port: Number(broker.port || 80) }],
          },
        ],
      },
    }),
  );
}

/** The sandbox's own credentials, for this start only; the broker token is short-lived and revoked on stop. */
export function secretObject(spec: SandboxSpec, sandboxId: string, brokerToken: string, s: SandboxObjectSettings): KubeObject {
  return plain(
    new Secret({
      metadata: { name: startObjectName(spec.instanceId, sandboxId), namespace: s.namespace, labels: labelsOf(spec, sandboxId) },
      type: 'Opaque',
      immutable: true,
      stringData: { 'broker-token': brokerToken, 'gateway-token': spec.gatewayToken, 'hooks-token': spec.hooksToken },
    }),
  );
}

/** The knowledge plugin's folder under /conf (docs/adr/0007, decision 6), as the local driver writes it. */
export const KUBE_KNOWLEDGE_PLUGIN_DIR = `${CONF}/plugins/${KNOWLEDGE_PLUGIN_ID}`;
/** ConfigMap keys cannot hold a '/': the plugin's files are stored under this prefix and projected into its folder. */
const PLUGIN_KEY = 'knowledge-plugin.';

/**
 * The rendered gateway configs, the supervisor's config (no secret: runtime/config.ts renders none) and the
 * knowledge plugin's files (`plugin`: file name → content, from knowledgePluginFiles()).
 */
export function configMapObject(spec: SandboxSpec, sandboxId: string, s: SandboxObjectSettings, plugin: Record<string, string> = {}): KubeObject {
  const data: Record<string, string> = { 'sandbox.json': JSON.stringify(supervisorConfig(spec, s.brokerUrl), null, 2) };
  for (const [id, json] of Object.entries(spec.configs)) data[`${id}.openclaw.json`] = json;
  for (const [file, text] of Object.entries(plugin)) data[`${PLUGIN_KEY}${file}`] = text;
  return plain(
    new ConfigMap({
      metadata: { name: startObjectName(spec.instanceId, sandboxId), namespace: s.namespace, labels: labelsOf(spec, sandboxId) },
      immutable: true,
      data,
    }),
  );
}

/**
 * The sandbox pod under Pod Security `restricted`: the tenant's own non-root uid, RuntimeDefault seccomp,
 * no capabilities, no privilege escalation, a read-only root, no service-account token, no service links
 * in the environment. The OpenClaw runtime is a read-only image volume of its version (Kubernetes ≥ 1.33).
 */
export function podObject(spec: SandboxSpec, sandboxId: string, startedAt: string, s: SandboxObjectSettings, pluginFiles: string[] = []): KubeObject {
  const name = startObjectName(spec.instanceId, sandboxId);
  const uid = spec.tenantUid;
  const container = {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' as const },
  };
  const memoryBytes = spec.limits?.memoryBytes ?? s.memoryBytes;
  const cpus = spec.limits?.cpus ?? s.cpus;
  const limits: Record<string, string> = { memory: String(memoryBytes), 'ephemeral-storage': String(s.tmpBytes + 64 * 2 ** 20) };
  if (cpus > 0) limits['cpu'] = `${Math.round(cpus * 1000)}m`;
  const tenantMounts = [{ name: 'state', mountPath: TENANT }];
  const tokenMounts = [{ name: 'tokens', mountPath: TOKENS }];
  return plain(
    new Pod({
      metadata: { name: podName(spec.instanceId), namespace: s.namespace, labels: labelsOf(spec, sandboxId), annotations: { [STARTED_ANNOTATION]: startedAt } },
      spec: {
        ...(s.runtimeClassName ? { runtimeClassName: s.runtimeClassName } : {}),
        restartPolicy: 'Always',
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        hostname: 'sandbox',
        terminationGracePeriodSeconds: 30,
        securityContext: {
          runAsNonRoot: true,
          runAsUser: uid,
          runAsGroup: uid,
          fsGroup: uid,
          fsGroupChangePolicy: 'OnRootMismatch',
          seccompProfile: { type: 'RuntimeDefault' },
        },
        // The tenant's directories on the state volume, as the supervisor expects them (it makes each
        // executor's own), and the start's tokens copied to private files the supervisor's container reads.
        initContainers: [
          {
            name: 'prepare',
            image: s.image,
            imagePullPolicy: 'IfNotPresent',
            command: [
              IMAGE_NODE,
              '-e',
              `const fs = require('node:fs'); for (const d of ['work', 'log', 'shared-rw']) fs.mkdirSync('/tenant/' + d, { recursive: true, mode: 0o700 }); for (const f of ['broker-token', 'gateway-token', 'hooks-token']) { fs.copyFileSync('${START_SECRET}/' + f, '${TOKENS}/' + f); fs.chmodSync('${TOKENS}/' + f, 0o600); }`,
            ],
            securityContext: container,
            resources: { limits: { memory: String(64 * 2 ** 20) } },
            volumeMounts: [...tenantMounts, ...tokenMounts, { name: 'start-secret', mountPath: START_SECRET, readOnly: true }],
          },
        ],
        containers: [
          {
            name: 'supervisor',
            image: s.image,
            imagePullPolicy: 'IfNotPresent',
            // The same V8 flags as the other drivers' supervisor.
            command: [IMAGE_NODE, '--max-semi-space-size=1', '--max-old-space-size=64', '--jitless', IMAGE_SUPERVISOR, `${CONF}/sandbox.json`],
            env: [{ name: 'PATH', value: '/usr/bin:/bin' }],
            workingDir: TENANT,
            ports: [{ name: 'gateway', containerPort: GATEWAY_PORT, protocol: 'TCP' }],
            // Ready = the first executor answers /readyz through the supervisor (the kubelet's probe is
            // not subject to NetworkPolicy).
            readinessProbe: { httpGet: { path: '/readyz', port: GATEWAY_PORT }, periodSeconds: 2, failureThreshold: 3, timeoutSeconds: 2 },
            resources: { limits, requests: { memory: String(Math.min(memoryBytes, 1024 * 2 ** 20)) } },
            securityContext: container,
            volumeMounts: [
              { name: 'runtime', mountPath: RUNTIME, readOnly: true },
              { name: 'conf', mountPath: CONF, readOnly: true },
              ...tokenMounts,
              ...tenantMounts,
              { name: 'tmp', mountPath: '/tmp' },
            ],
          },
        ],
        volumes: [
          { name: 'runtime', image: { reference: `${s.runtimeImage}:${spec.runtime.version}`, pullPolicy: 'IfNotPresent' } },
          {
            name: 'conf',
            projected: {
              defaultMode: 0o440,
              sources: [
                // Listed, because a ConfigMap source with items projects only those: the plugin's files go to
                // its folder, read-only and root's (OpenClaw loads a plugin owned by its own uid or root).
                {
                  configMap: {
                    name,
                    items: [
                      { key: 'sandbox.json', path: 'sandbox.json' },
                      ...Object.keys(spec.configs).map((id) => ({ key: `${id}.openclaw.json`, path: `${id}.openclaw.json` })),
                      ...pluginFiles.map((f) => ({ key: `${PLUGIN_KEY}${f}`, path: `plugins/${KNOWLEDGE_PLUGIN_ID}/${f}`, mode: 0o444 })),
                    ],
                  },
                },
              ],
            },
          },
          // Read by the init container only, which copies the tokens to `tokens`.
          {
            name: 'start-secret',
            secret: {
              secretName: name,
              defaultMode: 0o400,
              items: [
                { key: 'broker-token', path: 'broker-token' },
                { key: 'gateway-token', path: 'gateway-token' },
                { key: 'hooks-token', path: 'hooks-token' },
              ],
            },
          },
          // The gateway token file must be private to the uid, a regular file (OpenClaw's file SecretRef): 0600.
          { name: 'tokens', emptyDir: { medium: 'Memory', sizeLimit: String(2 ** 20) } },
          { name: 'state', persistentVolumeClaim: { claimName: pvcName(spec.instanceId) } },
          { name: 'tmp', emptyDir: { sizeLimit: String(s.tmpBytes) } },
        ],
      },
    }),
  );
}

/** The labels of an instance's archive pod: not `component: sandbox`, so no Service or sandbox policy selects it. */
export function archiveLabels(instanceId: string, tenantId: string): Record<string, string> {
  return {
    'app.kubernetes.io/managed-by': 'clawplane',
    'app.kubernetes.io/component': 'sandbox-archive',
    [LABEL.instance]: instanceId,
    [LABEL.tenant]: tenantId,
  };
}

/**
 * A short-lived pod that mounts a STOPPED instance's state volume, so its state can be archived or
 * replaced through pods/exec (docs/adr/0011-kubernetes.md, "State of a stopped instance"): the sandbox
 * image (sh, tar, Node), the tenant's uid, Pod Security `restricted`, no network (the sandbox
 * namespace's default deny selects it; nothing allows it anything), no service-account token. It only
 * sleeps; `activeDeadlineSeconds` ends it if the control plane that made it died before deleting it.
 */
export function archivePodObject(o: { instanceId: string; tenantId: string; uid: number; deadlineSeconds: number }, s: SandboxObjectSettings): KubeObject {
  const container = {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' as const },
  };
  return plain(
    new Pod({
      metadata: { name: archivePodName(o.instanceId), namespace: s.namespace, labels: archiveLabels(o.instanceId, o.tenantId) },
      spec: {
        ...(s.runtimeClassName ? { runtimeClassName: s.runtimeClassName } : {}),
        restartPolicy: 'Never',
        activeDeadlineSeconds: o.deadlineSeconds,
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        terminationGracePeriodSeconds: 1,
        securityContext: {
          runAsNonRoot: true,
          runAsUser: o.uid,
          runAsGroup: o.uid,
          fsGroup: o.uid,
          fsGroupChangePolicy: 'OnRootMismatch',
          seccompProfile: { type: 'RuntimeDefault' },
        },
        containers: [
          {
            name: 'archive',
            image: s.image,
            imagePullPolicy: 'IfNotPresent',
            command: ['sleep', String(o.deadlineSeconds)],
            env: [{ name: 'PATH', value: '/usr/bin:/bin' }],
            workingDir: TENANT,
            resources: { limits: { memory: String(256 * 2 ** 20), cpu: '500m', 'ephemeral-storage': String(s.tmpBytes + 64 * 2 ** 20) } },
            securityContext: container,
            volumeMounts: [
              { name: 'state', mountPath: TENANT },
              { name: 'tmp', mountPath: '/tmp' },
            ],
          },
        ],
        volumes: [
          { name: 'state', persistentVolumeClaim: { claimName: pvcName(o.instanceId) } },
          { name: 'tmp', emptyDir: { sizeLimit: String(s.tmpBytes) } },
        ],
      },
    }),
  );
}

/**
 * A label selector from `k=v,k in (a,b)` (CLAWPLANE_KUBE_INGRESS_SELECTOR), as a NetworkPolicy podSelector.
 * Throws with the offending part on anything else.
 */
export function parseSelector(text: string): LabelSelector {
  const matchLabels: Record<string, string> = {};
  const matchExpressions: { key: string; operator: string; values: string[] }[] = [];
  for (const part of text.match(/[^,(]+(\([^)]*\))?/g) ?? []) {
    const p = part.trim();
    if (!p) continue;
    const eq = /^([\w./-]+)\s*=\s*([\w.-]*)$/.exec(p);
    const inn = /^([\w./-]+)\s+in\s+\(([^)]*)\)$/.exec(p);
    if (eq) matchLabels[eq[1] ?? ''] = eq[2] ?? '';
    else if (inn)
      matchExpressions.push({
        key: inn[1] ?? '',
        operator: 'In',
        values: (inn[2] ?? '')
          .split(',')
          .map((v) => v.trim())
          .filter(Boolean),
      });
    else throw new Error(`"${p}" is not a label=value or label in (a,b) term`);
  }
  return { ...(Object.keys(matchLabels).length ? { matchLabels } : {}), ...(matchExpressions.length ? { matchExpressions } : {}) };
}
