/**
 * The kubernetes driver (docs/adr/0011-kubernetes.md): one Pod per sandbox in one sandbox namespace,
 * running the same supervisor image as the docker driver. Per instance a state PVC, a Service for the
 * gateway port and a default-deny NetworkPolicy; per start a Secret with the sandbox's own tokens and a
 * ConfigMap with its rendered configs. Everything is server-side applied with the field manager
 * `clawplane`, except the Pod, which is created (immutable per start, and a create that finds one is
 * how two replicas never both start a sandbox). Stop deletes the Pod and the start's Secret and
 * ConfigMap and keeps the PVC; destroy deletes everything of the instance. Logs and exec go through the
 * API server (pods/log, pods/exec); the pod is reached on its Service's name (or `gatewayAddress`).
 * Warm resume is not offered (`snapshots` is undefined): every wake is a cold boot from the PVC.
 */
import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import https from 'node:https';
import { PassThrough, Readable } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import type { SandboxBroker, SandboxRegistration } from '../../../broker/types.ts';
import type { KubernetesSettings } from '../../../config/schema.ts';
import { ClawplaneError, ConflictError } from '../../../errors.ts';
import { knowledgePluginFiles, SANDBOX_LAYOUT } from '../../host/dirs.ts';
import { liveBackupError, liveBackupScript } from '../../host/live-backup.ts';
import { rotateGatewayTokenWith } from '../../host/rotate.ts';
import { EXCLUDES } from '../../host/state-archive.ts';
import type { SupervisorConfig } from '../../supervisor/protocol.ts';
import { IMAGE_NODE } from '../docker/image.ts';
import { podExec } from './exec.ts';
import {
  SandboxUnavailableError,
  type ExecResult,
  type GatewayTransport,
  type InstanceKey,
  type LogLine,
  type SandboxDriver,
  type SandboxHealth,
  type SandboxRef,
  type SandboxSpec,
  type SandboxState,
} from '../../types.ts';
import { KubeApi, loadKubeConfig, type KubeObject } from './api.ts';
import { archivePodName, CONTROL_PORT, GATEWAY_PORT, LABEL, MANAGED_BY, podName, pvcName, startObjectName, STARTED_ANNOTATION } from './labels.ts';
import type { SupervisorHealth } from '../../supervisor/protocol.ts';
import {
  archivePodObject,
  configMapObject,
  KUBE_GATEWAY_TOKEN_FILE,
  KUBE_KNOWLEDGE_PLUGIN_DIR,
  TOKENS,
  UID_ANNOTATION,
  networkPolicyObject,
  parseSelector,
  podObject,
  pvcObject,
  secretObject,
  serviceObject,
  type SandboxObjectSettings,
} from './objects.ts';
import { sandboxState, viewPod, type PodView } from './status.ts';

export interface KubernetesDriverOptions {
  settings: KubernetesSettings;
  /** CLAWPLANE_SANDBOX_IMAGE: Node and the supervisor (the docker driver's image, pushed to a registry). */
  image: string;
  broker: SandboxBroker | undefined;
  log: Logger;
  memoryBytes: number;
  cpus: number;
  dataBytes: number;
  tmpBytes: number;
  /** Default: loaded from settings.kubeconfig (or KUBECONFIG, ~/.kube/config, the in-cluster account). */
  kubeConfig?: KubeConfig;
  /** How long a start waits for the supervisor's container to run (image pulls, volume attach). */
  startTimeoutMs?: number;
  /** Where a sandbox's gateway port is reached; default: its Service's cluster DNS name. */
  gatewayAddress?: (ref: SandboxRef) => { host: string; port: number };
  /** Retries of transient API answers (429, 5xx, connection errors). */
  api?: { attempts?: number; backoffMs?: number };
  /** How long an archive pod may live (its activeDeadlineSeconds) and an export or import may take. */
  archiveTimeoutMs?: number;
  /** The tenant's tier when the spec names none (the database's tenants.tier); null: the default tier. */
  tierOf?: (tenantId: string) => Promise<string | null>;
}

/** The kubernetes driver's part of a SandboxRef. */
interface KubeNative {
  pod: string;
  uid: string;
  /** The start's Secret and ConfigMap. */
  objects: string;
}

function nativeOf(ref: SandboxRef): KubeNative {
  const n = ref.native as Partial<KubeNative> | null;
  if (ref.driver !== 'kubernetes' || typeof n?.pod !== 'string' || typeof n.objects !== 'string')
    throw new Error(`sandbox ${ref.sandboxId} is not a kubernetes sandbox (driver ${ref.driver})`);
  return { pod: n.pod, uid: n.uid ?? '', objects: n.objects };
}

const POD = { apiVersion: 'v1', kind: 'Pod' } as const;
const SECRET = { apiVersion: 'v1', kind: 'Secret' } as const;
const CONFIG_MAP = { apiVersion: 'v1', kind: 'ConfigMap' } as const;
const SERVICE = { apiVersion: 'v1', kind: 'Service' } as const;
const PVC = { apiVersion: 'v1', kind: 'PersistentVolumeClaim' } as const;
const NETWORK_POLICY = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy' } as const;

export class KubernetesSandboxDriver implements SandboxDriver {
  readonly name = 'kubernetes' as const;
  readonly layout = { ...SANDBOX_LAYOUT, gatewayTokenFile: KUBE_GATEWAY_TOKEN_FILE, knowledgePluginDir: KUBE_KNOWLEDGE_PLUGIN_DIR };
  readonly api: KubeApi;
  readonly #o: KubernetesDriverOptions;
  readonly #registrations = new Map<string, SandboxRegistration>();
  /**
   * `timeout` makes Node's agent honour the supervisor's `Keep-Alive: timeout=N` hint and retire an idle
   * socket before the supervisor closes it (as in host/unix-transport.ts); without it a request can be
   * written to a connection the pod just closed and fail with EPIPE.
   */
  readonly #agent = new http.Agent({ keepAlive: true, maxSockets: 64, timeout: 60_000 });
  #preflight: Promise<void> | undefined;

  constructor(opts: KubernetesDriverOptions) {
    this.#o = opts;
    this.api = new KubeApi(opts.kubeConfig ?? loadKubeConfig(opts.settings.kubeconfig), opts.settings.namespace, opts.api);
  }

  get #namespace(): string {
    return this.#o.settings.namespace;
  }

  /** The object settings for a tier; an unknown tier is refused with the setting to change. */
  #objectSettings(tier: string | undefined, brokerUrl = this.#o.settings.brokerUrl): SandboxObjectSettings {
    const s = this.#o.settings;
    const t = tier ?? s.defaultTier;
    const runtimeClassName = s.runtimeClasses[t];
    if (runtimeClassName === undefined)
      throw new SandboxUnavailableError(
        `Tenant tier "${t}" has no RuntimeClass: add ${t}=<runtimeClassName> (or ${t}= for the cluster default) to CLAWPLANE_KUBE_RUNTIME_CLASSES (now: ${Object.keys(s.runtimeClasses).join(', ') || 'empty'}).`,
      );
    return {
      namespace: s.namespace,
      image: this.#o.image,
      runtimeImage: s.runtimeImage,
      storageClass: s.storageClass,
      runtimeClassName,
      brokerUrl,
      ingressSelector: parseSelector(s.ingressSelector),
      controlNamespace: s.controlNamespace,
      memoryBytes: this.#o.memoryBytes,
      cpus: this.#o.cpus,
      dataBytes: this.#o.dataBytes,
      tmpBytes: this.#o.tmpBytes,
    };
  }

  preflight(): Promise<void> {
    this.#preflight ??= this.#check().catch((err: unknown) => {
      this.#preflight = undefined;
      throw err;
    });
    return this.#preflight;
  }

  async #check(): Promise<void> {
    const s = this.#o.settings;
    let broker: URL | undefined;
    try {
      broker = new URL(s.brokerUrl);
    } catch {
      broker = undefined;
    }
    if (!broker || broker.protocol !== 'http:' || !broker.port || broker.pathname !== '/') {
      throw new SandboxUnavailableError(
        `CLAWPLANE_KUBE_BROKER_URL must be http://<broker Service name or ClusterIP>:<port>, e.g. http://clawplane-broker.clawplane.svc:8788, not "${s.brokerUrl}".`,
      );
    }
    try {
      parseSelector(s.ingressSelector);
    } catch (err) {
      throw new SandboxUnavailableError(`CLAWPLANE_KUBE_INGRESS_SELECTOR: ${(err as Error).message}.`);
    }
    this.#objectSettings(undefined);
    // Reachable, and allowed to list sandbox pods in the namespace (the Helm chart's Role).
    await this.api.list(POD.apiVersion, POD.kind, { labels: LABEL.cluster });
  }

  /**
   * The broker's address as an IP: sandboxes have no DNS (their NetworkPolicy allows only the broker), so
   * the control plane resolves the Service name (its ClusterIP, stable for the Service's life) per start.
   */
  async #brokerUrl(): Promise<string> {
    const u = new URL(this.#o.settings.brokerUrl);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (net.isIP(host)) return u.toString();
    try {
      const { address, family } = await lookup(host);
      return `http://${family === 6 ? `[${address}]` : address}:${u.port}`;
    } catch (err) {
      throw new SandboxUnavailableError(
        `The broker Service ${host} (CLAWPLANE_KUBE_BROKER_URL) does not resolve here (${(err as NodeJS.ErrnoException).code ?? String(err)}); check the Service exists, or give its ClusterIP.`,
        err,
      );
    }
  }

  /** The spec's tier, else the tenant's stored one, else undefined (the default tier). */
  async #tier(tenantId: string, tier: string | undefined): Promise<string | undefined> {
    return tier ?? (await this.#o.tierOf?.(tenantId)) ?? undefined;
  }

  async prepare(spec: SandboxSpec): Promise<void> {
    await this.preflight();
    const s = this.#objectSettings(await this.#tier(spec.tenantId, spec.tier), await this.#brokerUrl());
    // Ours by name and label: force takes back a field of ours another manager changed.
    for (const obj of [pvcObject(spec, s), serviceObject(spec, s), networkPolicyObject(spec, s)]) await this.api.apply(obj, { force: true });
  }

  async start(spec: SandboxSpec): Promise<SandboxRef> {
    await this.preflight();
    const s = this.#objectSettings(await this.#tier(spec.tenantId, spec.tier), await this.#brokerUrl());
    const name = podName(spec.instanceId);
    const old = await this.api.get({ ...POD, name });
    if (old) {
      const v = viewPod(old);
      if (!v.fatal)
        throw new ConflictError(
          `A sandbox for instance ${spec.instanceId} is already running (pod ${this.#namespace}/${name}); stop it first.`,
          'sandbox_running',
        );
      await this.#deletePod(name, old.metadata.uid ?? '', 0);
    }
    await this.prepare(spec);
    const sandboxId = randomUUID();
    const objects = startObjectName(spec.instanceId, sandboxId);
    const registration = this.#o.broker ? await this.#o.broker.registerSandbox({ tenantId: spec.tenantId, instanceId: spec.instanceId, sandboxId }) : undefined;
    const startedAt = new Date().toISOString();
    const cleanup = async () => {
      await this.#deleteStartObjects(objects);
      await registration?.close();
    };
    let pod: KubeObject | null;
    try {
      await this.api.apply(secretObject(spec, sandboxId, registration?.token ?? '', s), { force: false });
      const plugin = await knowledgePluginFiles();
      await this.api.apply(configMapObject(spec, sandboxId, s, plugin), { force: false });
      pod = await this.api.create(podObject(spec, sandboxId, startedAt, s, Object.keys(plugin)));
    } catch (err) {
      await cleanup().catch(() => undefined);
      throw err;
    }
    if (!pod) {
      // Another replica created the pod between our read and our create: its start stands, ours is undone.
      await cleanup();
      throw new ConflictError(
        `A sandbox for instance ${spec.instanceId} was started by another replica at the same time (pod ${this.#namespace}/${name}); this start was withdrawn.`,
        'sandbox_running',
      );
    }
    const uid = pod.metadata.uid ?? '';
    try {
      const timeoutMs = this.#o.startTimeoutMs ?? 300_000;
      let last: PodView | undefined;
      const v = await this.api
        .watchPod(
          name,
          (p) => {
            if (p && p.metadata.uid !== uid)
              return { running: false, ready: false, podIP: undefined, reason: 'the sandbox pod was replaced during its start', fatal: true, restarts: 0 };
            const view = (last = viewPod(p));
            return view.running || view.fatal ? view : undefined;
          },
          AbortSignal.timeout(timeoutMs),
        )
        .catch((err: unknown) => {
          if ((err as Error).name === 'TimeoutError')
            throw new SandboxUnavailableError(
              `The sandbox pod ${this.#namespace}/${name} did not start within ${Math.round(timeoutMs / 1000)} s (${last?.reason ?? 'no status yet'}); see \`kubectl -n ${this.#namespace} describe pod ${name}\`.`,
            );
          throw err;
        });
      if (!v.running) throw new SandboxUnavailableError(`The sandbox pod ${this.#namespace}/${name} did not start: ${v.reason ?? 'unknown'}.`);
    } catch (err) {
      await this.#deletePod(name, uid, 0).catch(() => undefined);
      await cleanup().catch(() => undefined);
      throw err;
    }
    if (registration) this.#registrations.set(spec.instanceId, registration);
    this.#o.log.info({ instance_id: spec.instanceId, sandbox: sandboxId, pod: `${this.#namespace}/${name}` }, 'sandbox pod started');
    return {
      driver: this.name,
      sandboxId,
      instanceId: spec.instanceId,
      tenantId: spec.tenantId,
      runtimeVersion: spec.runtime.version,
      startedAt,
      owner: { clusterId: spec.clusterId, nodeId: String((pod['spec'] as { nodeName?: string } | undefined)?.nodeName ?? '') },
      native: { pod: name, uid, objects } satisfies KubeNative,
    };
  }

  /** Deletes a pod (this uid only: a newer start's pod of the same name is left alone) and waits until it is gone. */
  async #deletePod(name: string, uid: string, graceSeconds: number, waitMs = 60_000): Promise<void> {
    const cur = await this.api.get({ ...POD, name });
    if (!cur || (uid && cur.metadata.uid !== uid)) return;
    await this.api.delete({ ...POD, name }, { gracePeriodSeconds: graceSeconds });
    await this.api
      .watchPod(name, (p) => (p === null || p.metadata.uid !== cur.metadata.uid ? true : undefined), AbortSignal.timeout(waitMs))
      .catch(async (err: unknown) => {
        if ((err as Error).name !== 'TimeoutError') throw err;
        // The supervisor did not drain in time (a stuck node): force it, as `kubectl delete --force` would.
        this.#o.log.warn({ pod: `${this.#namespace}/${name}` }, 'sandbox pod did not stop in time; deleting it with no grace period');
        await this.api.delete({ ...POD, name }, { gracePeriodSeconds: 0 });
      });
  }

  async #deleteStartObjects(objects: string): Promise<void> {
    await this.api.delete({ ...SECRET, name: objects });
    await this.api.delete({ ...CONFIG_MAP, name: objects });
  }

  async adopt(ref: SandboxRef): Promise<boolean> {
    const { pod } = nativeOf(ref);
    const p = await this.api.get({ ...POD, name: pod });
    if (!p || p.metadata.labels?.[LABEL.sandbox] !== ref.sandboxId) return false;
    // The pod keeps the broker token of its Secret (valid for the broker's token lifetime); nothing to re-open.
    return viewPod(p).running;
  }

  async stop(ref: SandboxRef, opts: { timeoutMs?: number } = {}): Promise<void> {
    const n = nativeOf(ref);
    // The kubelet sends SIGTERM to the supervisor, which drains its gateways within the grace period.
    await this.#deletePod(n.pod, n.uid, Math.ceil((opts.timeoutMs ?? 20_000) / 1000), (opts.timeoutMs ?? 20_000) + 30_000);
    await this.#deleteStartObjects(n.objects);
    const reg = this.#registrations.get(ref.instanceId);
    this.#registrations.delete(ref.instanceId);
    await reg?.close();
    // A sandbox adopted after a restart (or started by another replica) has its token registered elsewhere.
    if (!reg) await this.#o.broker?.revokeOtherTokens?.(null, ref.sandboxId);
  }

  async destroy(key: InstanceKey, opts: { deleteState: boolean }): Promise<void> {
    const sel = { labels: `${LABEL.instance}=${key.instanceId},app.kubernetes.io/managed-by=${MANAGED_BY['app.kubernetes.io/managed-by']}` };
    const pod = await this.api.get({ ...POD, name: podName(key.instanceId) });
    if (pod) await this.#deletePod(podName(key.instanceId), pod.metadata.uid ?? '', 10);
    await this.api.delete({ ...POD, name: archivePodName(key.instanceId) }, { gracePeriodSeconds: 0 });
    // Secrets are never listed (the Role has no list on them): each start's Secret shares its ConfigMap's name.
    for (const cm of (await this.api.list(CONFIG_MAP.apiVersion, CONFIG_MAP.kind, sel)).items) await this.#deleteStartObjects(cm.metadata.name);
    const podSandbox = pod?.metadata.labels?.[LABEL.sandbox];
    if (podSandbox) await this.#deleteStartObjects(startObjectName(key.instanceId, podSandbox));
    await this.api.delete({ ...SERVICE, name: podName(key.instanceId) });
    await this.api.delete({ ...NETWORK_POLICY, name: podName(key.instanceId) });
    if (opts.deleteState) await this.api.delete({ ...PVC, name: pvcName(key.instanceId) });
    const reg = this.#registrations.get(key.instanceId);
    this.#registrations.delete(key.instanceId);
    await reg?.close();
  }

  async status(ref: SandboxRef): Promise<SandboxState> {
    const n = nativeOf(ref);
    const pod = await this.api.get({ ...POD, name: n.pod });
    if (pod && pod.metadata.labels?.[LABEL.sandbox] !== ref.sandboxId) return { running: false, reason: 'the sandbox pod was replaced by another start' };
    return sandboxState(pod);
  }

  connect(ref: SandboxRef): Promise<GatewayTransport> {
    const { host, port } = this.#o.gatewayAddress?.(ref) ?? { host: `${podName(ref.instanceId)}.${this.#namespace}.svc`, port: GATEWAY_PORT };
    const agent = this.#agent;
    return Promise.resolve({
      request(opts) {
        const req = http.request({
          host,
          port,
          agent,
          method: opts.method ?? 'GET',
          path: opts.path,
          headers: { host: 'gateway', ...opts.headers },
          ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
        });
        if (opts.timeoutMs) req.on('timeout', () => req.destroy(new Error(`the gateway did not answer within ${opts.timeoutMs} ms`)));
        return req;
      },
      websocket(opts = {}) {
        return new WebSocket(`ws://${host.includes(':') ? `[${host}]` : host}:${port}/`, { perMessageDeflate: false, headers: opts.headers ?? {} });
      },
    });
  }

  async logs(key: InstanceKey, opts: { tail: number }): Promise<LogLine[]> {
    const text = await this.api.podLog(podName(key.instanceId), opts.tail);
    return text
      .split('\n')
      .filter((l) => l !== '')
      .slice(-opts.tail)
      .map((line) => ({ source: 'supervisor', line }));
  }

  /**
   * Follows the pod's log from now on (`sinceTime`: the kubelet filters by its line timestamps). The
   * request is made here with client-node's authentication rather than its `Log` helper: that one pipes
   * the response without an error handler, so aborting a follow raised an uncaught AbortError.
   */
  async followLogs(key: InstanceKey, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void> {
    const cluster = this.api.kc.getCurrentCluster();
    if (!cluster) throw new SandboxUnavailableError('The kubeconfig has no current cluster.');
    const url = new URL(`${cluster.server.replace(/\/$/, '')}/api/v1/namespaces/${this.#namespace}/pods/${podName(key.instanceId)}/log`);
    url.searchParams.set('container', 'supervisor');
    url.searchParams.set('follow', 'true');
    url.searchParams.set('sinceTime', new Date().toISOString().replace(/\.\d+Z$/, 'Z'));
    const opts: https.RequestOptions = { method: 'GET', headers: {} };
    await this.api.kc.applyToHTTPSOptions(opts);
    if (signal.aborted) return;
    await new Promise<void>((resolve) => {
      const req = (url.protocol === 'https:' ? https : http).request(url, opts, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          resolve();
          return;
        }
        let rest = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const lines = (rest + chunk).split('\n');
          rest = lines.pop() ?? '';
          for (const line of lines) if (line) onLine({ source: 'supervisor', line });
        });
        res.on('end', () => resolve());
        res.on('error', () => resolve());
      });
      req.on('error', () => resolve());
      signal.addEventListener(
        'abort',
        () => {
          req.destroy();
          resolve();
        },
        { once: true },
      );
      req.end();
    });
  }

  /** Runs argv in the supervisor's container through pods/exec (authorized by the API server, not the network). */
  async exec(ref: SandboxRef, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const { pod } = nativeOf(ref);
    const out: Buffer[] = [];
    const stdout = new PassThrough();
    stdout.on('data', (c: Buffer) => out.push(c));
    const r = await podExec(this.api.kc, { namespace: this.#namespace, pod, container: 'supervisor', argv, stdout, timeoutMs: opts.timeoutMs ?? 60_000 });
    return { code: r.code, signal: null, stdout: Buffer.concat(out).toString('utf8'), stderr: r.stderr };
  }

  /**
   * The supervisor's control port listens on the pod's loopback only: the request is made from inside the
   * pod (pods/exec, authorized by the API server), with the Node that runs the gateways (on the exec PATH).
   */
  async setExecutors(ref: SandboxRef, run: string[]): Promise<SandboxHealth | undefined> {
    const script = `fetch('http://127.0.0.1:${CONTROL_PORT}/executors',{method:'PUT',headers:{'content-type':'application/json'},body:process.argv[1]}).then(async(r)=>{process.stdout.write(await r.text());process.exitCode=r.ok?0:1})`;
    const r = await this.exec(ref, ['node', '-e', script, JSON.stringify({ run })], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new SandboxUnavailableError(`the sandbox supervisor refused the executors to run: ${(r.stdout || r.stderr).slice(0, 300)}`);
    const h = JSON.parse(r.stdout) as SupervisorHealth;
    return { ready: h.ready, executors: h.executors, supervisorRssBytes: h.rssBytes };
  }

  /**
   * A tar.gz of a STOPPED instance's work dir (the same layout and exclusions as the host drivers'),
   * read by an archive pod that mounts its state volume; the pod is deleted before the stream ends.
   */
  async exportState(key: InstanceKey): Promise<Readable> {
    const pod = await this.#archivePod(key);
    const out = new PassThrough();
    void this.#stream(
      pod,
      'archive',
      ['tar', '-C', '/tenant/work', ...EXCLUDES.map((e) => `--exclude=${e}`), '-czf', '-', '.'],
      out,
      'export the state of',
    ).then(async (err) => {
      await this.#deleteArchivePod(key.instanceId);
      if (err) out.destroy(err);
      else out.end();
    });
    return out;
  }

  /**
   * OpenClaw's own `backup create` per executor inside the running pod (the script of the host drivers),
   * then the stage packed inside the pod and streamed out through pods/exec; the stage is removed after.
   */
  async exportLiveState(ref: SandboxRef, opts: { timeoutMs?: number } = {}): Promise<Readable> {
    const conf = await this.#supervisorConfig(ref);
    const { script, stage } = liveBackupScript(conf, ref.instanceId);
    const cleanup = () =>
      this.exec(ref, ['/bin/sh', '-c', `rm -rf ${stage}`], { timeoutMs: 60_000 }).then(
        () => undefined,
        (err: unknown) => this.#o.log.warn({ instance_id: ref.instanceId, err: (err as Error).message }, 'could not remove the live-backup stage'),
      );
    let r: ExecResult;
    try {
      r = await this.exec(ref, ['/bin/sh', '-c', script], { timeoutMs: opts.timeoutMs ?? 300_000 });
    } catch (err) {
      await cleanup();
      throw err;
    }
    if (r.code !== 0) {
      await cleanup();
      throw liveBackupError(r);
    }
    const out = new PassThrough();
    void this.#stream(nativeOf(ref).pod, 'supervisor', ['tar', '-C', `${stage}/stage`, '-czf', '-', '.'], out, 'take a live backup of').then(async (err) => {
      await cleanup();
      if (err) out.destroy(err);
      else out.end();
    });
    return out;
  }

  /**
   * Replaces a STOPPED instance's work dir with an archive's contents, in an archive pod: unpacked into a
   * staging dir first and swapped in by two renames only once tar succeeded, so a corrupt archive, a
   * failed command or a dropped connection leaves the state as it was (a swap cut between its renames is
   * completed by the next import).
   */
  async importState(key: InstanceKey, archive: Readable): Promise<void> {
    const pod = await this.#archivePod(key);
    try {
      const r = await podExec(this.api.kc, {
        namespace: this.#namespace,
        pod,
        container: 'archive',
        argv: ['/bin/sh', '-c', IMPORT_SCRIPT],
        stdin: archive,
        stdout: new PassThrough().resume(),
        timeoutMs: this.#archiveTimeoutMs,
      });
      if (r.code !== 0)
        throw new ClawplaneError(
          'backup_corrupted',
          422,
          `The archive could not be unpacked into the state of instance ${key.instanceId} (${r.code === null ? r.message : `exit ${r.code}`}: ${r.stderr.trim().slice(-400) || 'no error output'}); its state is unchanged.`,
        );
    } finally {
      await this.#deleteArchivePod(key.instanceId);
    }
  }

  /**
   * The broker token first (a new registration written to the pod's token file, the old one revoked),
   * then the gateway token (written through pods/exec, reloaded and checked by each gateway; put back on
   * any failure). Tokens go to the pod on stdin, never in a command line.
   */
  async rotateCredentials(ref: SandboxRef, tokens: { current: string; next: string }): Promise<void> {
    const conf = await this.#supervisorConfig(ref);
    if (this.#o.broker) {
      const reg = await this.#o.broker.registerSandbox({ tenantId: ref.tenantId, instanceId: ref.instanceId, sandboxId: ref.sandboxId });
      try {
        await this.#writeToken(ref, 'broker-token', reg.token);
      } catch (err) {
        await reg.close();
        throw err;
      }
      const old = this.#registrations.get(ref.instanceId);
      this.#registrations.set(ref.instanceId, reg);
      await old?.close();
      // The token the pod held may have been registered by another replica (or before a restart).
      await this.#o.broker.revokeOtherTokens?.(reg, ref.sandboxId);
    }
    await rotateGatewayTokenWith({ conf, transport: await this.connect(ref), tokens, write: (t) => this.#writeToken(ref, 'gateway-token', t) });
  }

  /** Replaces one token file in the pod's memory-backed token dir (write then rename: a reader never sees half a token). */
  async #writeToken(ref: SandboxRef, file: 'broker-token' | 'gateway-token', token: string): Promise<void> {
    const script =
      "const fs = require('node:fs'); const p = process.argv[1]; fs.writeFileSync(p + '.next', fs.readFileSync(0), { mode: 0o600 }); fs.renameSync(p + '.next', p)";
    const r = await podExec(this.api.kc, {
      namespace: this.#namespace,
      pod: nativeOf(ref).pod,
      container: 'supervisor',
      argv: [IMAGE_NODE, '-e', script, `${TOKENS}/${file}`],
      stdin: Readable.from([Buffer.from(token + '\n')]),
      timeoutMs: 30_000,
    });
    if (r.code !== 0)
      throw new SandboxUnavailableError(
        `The ${file.replace('-', ' ')} of instance ${ref.instanceId} could not be written in its pod (${r.code === null ? r.message : `exit ${r.code}`}); the pod keeps the one it had.`,
      );
  }

  /** The supervisor's config of a running sandbox, from its start's ConfigMap. */
  async #supervisorConfig(ref: SandboxRef): Promise<SupervisorConfig> {
    const cm = await this.api.get({ ...CONFIG_MAP, name: nativeOf(ref).objects });
    const json = (cm?.['data'] as Record<string, string> | undefined)?.['sandbox.json'];
    if (!json)
      throw new SandboxUnavailableError(
        `The configuration of instance ${ref.instanceId}'s sandbox (ConfigMap ${this.#namespace}/${nativeOf(ref).objects}) is gone; restart the instance.`,
      );
    return JSON.parse(json) as SupervisorConfig;
  }

  get #archiveTimeoutMs(): number {
    return this.#o.archiveTimeoutMs ?? 3_600_000;
  }

  /**
   * Runs argv in a pod with stdout into `out` (not ended); resolves with the error to end `out` with, if
   * any: the exit status, a refused upgrade or a dropped connection (never a partial archive that looks whole).
   */
  async #stream(pod: string, container: string, argv: string[], out: PassThrough, what: string): Promise<Error | undefined> {
    try {
      const r = await podExec(this.api.kc, { namespace: this.#namespace, pod, container, argv, stdout: out, timeoutMs: this.#archiveTimeoutMs });
      if (r.code === 0) return undefined;
      return new ClawplaneError(
        'backup_failed',
        502,
        `Could not ${what} the instance: tar in pod ${this.#namespace}/${pod} failed (${r.code === null ? r.message : `exit ${r.code}`}: ${r.stderr.trim().slice(-400) || 'no error output'}).`,
      );
    } catch (err) {
      return err as Error;
    }
  }

  /**
   * An archive pod for a STOPPED instance, running: refused while its sandbox pod exists (the state is
   * in use); a leftover archive pod (a control plane that died mid-export) is deleted first.
   */
  async #archivePod(key: InstanceKey): Promise<string> {
    await this.preflight();
    const sandbox = await this.api.get({ ...POD, name: podName(key.instanceId) });
    if (sandbox)
      throw new ConflictError(
        `Instance ${key.instanceId} has a sandbox pod (${this.#namespace}/${podName(key.instanceId)}); its state is reached by an archive pod only while it is stopped.`,
        'sandbox_running',
      );
    const pvc = await this.api.get({ ...PVC, name: pvcName(key.instanceId) });
    if (!pvc)
      throw new SandboxUnavailableError(
        `Instance ${key.instanceId} has no state volume (PersistentVolumeClaim ${this.#namespace}/${pvcName(key.instanceId)}); start it once to make one.`,
      );
    const uid = Number(pvc.metadata.annotations?.[UID_ANNOTATION]);
    if (!Number.isInteger(uid) || uid <= 0)
      throw new SandboxUnavailableError(
        `The state volume of instance ${key.instanceId} does not say which uid owns it (annotation ${UID_ANNOTATION}, added when an instance is prepared since this release); start and stop the instance once, then retry.`,
      );
    const name = archivePodName(key.instanceId);
    const old = await this.api.get({ ...POD, name });
    if (old) await this.#deletePod(name, old.metadata.uid ?? '', 0);
    const deadlineSeconds = Math.ceil(this.#archiveTimeoutMs / 1000);
    const created = await this.api.create(archivePodObject({ ...key, uid, deadlineSeconds }, this.#objectSettings(await this.#tier(key.tenantId, undefined))));
    if (!created) throw new ConflictError(`Another archive operation on instance ${key.instanceId} started at the same time; retry.`, 'kubernetes_conflict');
    const podUid = created.metadata.uid;
    try {
      const phase = await this.api.watchPod(
        name,
        (p) => {
          if (!p || p.metadata.uid !== podUid) return 'gone';
          const v = viewPod(p);
          const ph = (p['status'] as { phase?: string } | undefined)?.phase;
          if (ph === 'Running') return 'Running';
          if (ph === 'Failed' || ph === 'Succeeded' || v.fatal) return `${ph ?? 'Pending'}${v.reason ? `: ${v.reason}` : ''}`;
          return undefined;
        },
        AbortSignal.timeout(this.#o.startTimeoutMs ?? 300_000),
      );
      if (phase !== 'Running')
        throw new SandboxUnavailableError(`The archive pod ${this.#namespace}/${name} of instance ${key.instanceId} did not run (${phase}).`);
    } catch (err) {
      await this.#deleteArchivePod(key.instanceId);
      if ((err as Error).name === 'TimeoutError')
        throw new SandboxUnavailableError(
          `The archive pod ${this.#namespace}/${name} did not start in time; see \`kubectl -n ${this.#namespace} describe pod ${name}\`.`,
        );
      throw err;
    }
    return name;
  }

  async #deleteArchivePod(instanceId: string): Promise<void> {
    await this.api.delete({ ...POD, name: archivePodName(instanceId) }, { gracePeriodSeconds: 0 }).catch((err: unknown) => {
      // activeDeadlineSeconds ends it anyway; the next archive operation deletes a leftover.
      this.#o.log.warn({ instance_id: instanceId, err: (err as Error).message }, 'could not delete the archive pod');
    });
  }

  /** The sandbox pods in the namespace (any control plane's: the caller matches the cluster). */
  async list(): Promise<SandboxRef[]> {
    const { items } = await this.api.list(POD.apiVersion, POD.kind, {
      labels: `${LABEL.cluster},app.kubernetes.io/managed-by=${MANAGED_BY['app.kubernetes.io/managed-by']}`,
    });
    const refs: SandboxRef[] = [];
    for (const p of items) {
      const l = p.metadata.labels ?? {};
      const instanceId = l[LABEL.instance];
      const sandboxId = l[LABEL.sandbox];
      const clusterId = l[LABEL.cluster];
      if (!instanceId || !sandboxId || !clusterId || p.metadata.deletionTimestamp) continue;
      const phase = (p['status'] as { phase?: string } | undefined)?.phase;
      if (phase === 'Failed' || phase === 'Succeeded') continue;
      refs.push({
        driver: this.name,
        sandboxId,
        instanceId,
        tenantId: l[LABEL.tenant] ?? '',
        runtimeVersion: l[LABEL.runtime] ?? '',
        startedAt: p.metadata.annotations?.[STARTED_ANNOTATION] ?? '',
        owner: { clusterId, nodeId: String((p['spec'] as { nodeName?: string } | undefined)?.nodeName ?? '') },
        native: { pod: p.metadata.name, uid: p.metadata.uid ?? '', objects: startObjectName(instanceId, sandboxId) } satisfies KubeNative,
      });
    }
    return refs;
  }

  /** Sandboxes survive us; their tokens stay valid (they are revoked when a start's sandbox stops). */
  close(): Promise<void> {
    this.#registrations.clear();
    this.#agent.destroy();
    return Promise.resolve();
  }
}

/**
 * Run by `sh` in an archive pod with the archive on stdin: unpack into a staging dir, then swap it in with
 * two renames (Node's: the sandbox image has no mv). A swap cut between the renames (work gone, the old
 * one kept) is finished first; a failure before the swap removes the stage and leaves work untouched.
 */
const IMPORT_SCRIPT = [
  'set -eu',
  'cd /tenant',
  `if [ -d .clawplane-restore-old ] && [ ! -d work ]; then ${IMAGE_NODE} -e "require('node:fs').renameSync('.clawplane-restore-old', 'work')"; fi`,
  'rm -rf .clawplane-restore-new .clawplane-restore-old',
  "trap 'rm -rf /tenant/.clawplane-restore-new' EXIT",
  'mkdir -m 0700 .clawplane-restore-new',
  'tar -C .clawplane-restore-new --no-same-owner -xzf -',
  `${IMAGE_NODE} -e "const fs = require('node:fs'); if (fs.existsSync('work')) fs.renameSync('work', '.clawplane-restore-old'); fs.renameSync('.clawplane-restore-new', 'work')"`,
  'rm -rf .clawplane-restore-old',
].join('\n');
