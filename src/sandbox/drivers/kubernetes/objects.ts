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
import { CONTROL_PORT, GATEWAY_PORT, LABEL, MANAGED_BY, podName, pvcName, startObjectName, STARTED_ANNOTATION } from './labels.ts';

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
    gatewayTokenFile: SANDBOX_LAYOUT.gatewayTokenFile,
    hooksTokenFile: `${CONF}/hooks-token`,
    egressPort: SANDBOX_LAYOUT.egressPort,
    brokerSocket: '',
    brokerUrl,
    brokerTokenFile: `${CONF}/broker-token`,
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
      metadata: { name: pvcName(spec.instanceId), namespace: s.namespace, labels: labelsOf(spec) },
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
        // The tenant's directories on the state volume, as the supervisor expects them (it makes each executor's own).
        initContainers: [
          {
            name: 'prepare',
            image: s.image,
            imagePullPolicy: 'IfNotPresent',
            command: [
              IMAGE_NODE,
              '-e',
              "for (const d of ['work', 'log', 'shared-rw']) require('node:fs').mkdirSync('/tenant/' + d, { recursive: true, mode: 0o700 })",
            ],
            securityContext: container,
            resources: { limits: { memory: String(64 * 2 ** 20) } },
            volumeMounts: tenantMounts,
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
                // The gateway token file must be private to the uid (OpenClaw's file SecretRef): 0400.
                {
                  secret: {
                    name,
                    items: [
                      { key: 'broker-token', path: 'broker-token', mode: 0o400 },
                      { key: 'gateway-token', path: 'gateway-token', mode: 0o400 },
                      { key: 'hooks-token', path: 'hooks-token', mode: 0o400 },
                    ],
                  },
                },
              ],
            },
          },
          { name: 'state', persistentVolumeClaim: { claimName: pvcName(spec.instanceId) } },
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
