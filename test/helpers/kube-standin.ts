/**
 * A STAND-IN for a Kubernetes API server. No Kubernetes API server can be installed on these machines
 * (no kind, k3s or envtest binaries; no container images to pull), so the kubernetes driver and the
 * operator are tested against this small, honest HTTP server on 127.0.0.1. It is not Kubernetes.
 *
 * What it does as the real server does (https://kubernetes.io/docs/reference/using-api/api-concepts/):
 * - discovery (`/api/v1`, `/apis/<group>/<version>`) for the kinds it knows;
 * - objects stored in memory by apiVersion/kind/namespace/name, with one resourceVersion counter, a uid,
 *   creationTimestamp and generation;
 * - GET, LIST (labelSelector with =, !=, exists, `in (...)`; fieldSelector metadata.name), POST (409
 *   AlreadyExists), DELETE (404 when absent), and WATCH streams (newline-delimited JSON events) that
 *   resume from a resourceVersion and can be dropped by the test;
 * - server-side apply (PATCH application/apply-patch+yaml, fieldManager required, `force`) with field
 *   ownership per manager: applying a field another manager owns with a different value is a 409
 *   Conflict unless forced (then ownership moves); a manager's field it stops applying is removed;
 *   a stale metadata.resourceVersion in a body is a 409;
 * - every object written is validated against the Kubernetes OpenAPI schemas (kubernetes-models; CRDs
 *   against their own openAPIV3Schema when registered, with the uniqueness of `x-kubernetes-list-type`
 *   map keys and sets) and refused with 422 Invalid like the real server (CEL rules are not evaluated);
 * - a Bearer token is required (401 without it).
 *
 * What is SIMULATED or simplified (say so in tests that rely on it):
 * - there is no scheduler and no kubelet: a created Pod gets `status.phase: Pending` (as the real API
 *   server's pod strategy sets) and nothing more until the test calls `setPodStatus` (the kubelet's part);
 * - deletion is immediate (no graceful termination) unless the object has finalizers: then, as the real
 *   server does, DELETE only sets metadata.deletionTimestamp (a MODIFIED event), no finalizer can be
 *   added from then on, and the object goes (DELETED) when an apply leaves its finalizers empty; the
 *   grace period asked is recorded;
 * - field ownership is by leaf path with lists as atomic values (the real server merges list-map keys);
 * - pod logs are whatever the test sets;
 * - pods/exec is a real WebSocket endpoint speaking v5.channel.k8s.io (stdin 0, stdout 1, stderr 2, the
 *   exit Status on 3, 255 to close a stream: https://kubernetes.io/docs/reference/using-api/websockets/),
 *   and the command really runs: under bubblewrap, with the host's /usr standing for the image (plus the
 *   host's Node at the image's /usr/local/bin/node) and each of the container's volumeMounts bound where
 *   the pod spec says: a PersistentVolumeClaim is a directory the stand-in keeps per claim (deleted with
 *   the claim: the Delete reclaim policy), an emptyDir one per pod, an image volume the directory the test
 *   maps its reference to (`imageVolumes`). It runs as the test's user, not the pod's runAsUser, and the
 *   container's own command never runs (no kubelet): only what is exec'd. Only v5 is offered (the real
 *   server also speaks v4 and older; client-node asks for v5 first, served since Kubernetes 1.30);
 * - fault injection: `failNext` answers chosen requests with a status (404, 409, 500, ...), also the
 *   exec upgrade; `dropWatches` cuts every open watch stream; `expireWatches` ends them with 410 Gone; `dropNextExec` cuts an exec's connection
 *   after some bytes (the command is killed, as a container runtime ends a session whose stream is gone).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { Ajv } from 'ajv';
import { WebSocketServer, type WebSocket } from 'ws';

/**
 * What the API server's structural-schema validation adds to the openAPIV3Schema: a list with
 * `x-kubernetes-list-type: map` must not hold two items with the same `x-kubernetes-list-map-keys`, nor a
 * `set` the same value twice ("Duplicate value", 422).
 */
function duplicateListKeys(schema: unknown, value: unknown, at: string): string | undefined {
  const sch = schema as {
    properties?: Record<string, unknown>;
    items?: unknown;
    'x-kubernetes-list-type'?: string;
    'x-kubernetes-list-map-keys'?: string[];
  } | null;
  if (!sch || value === null || typeof value !== 'object') return undefined;
  if (Array.isArray(value)) {
    const type = sch['x-kubernetes-list-type'];
    if (type === 'map' || type === 'set') {
      const seen = new Set<string>();
      for (const [i, item] of value.entries()) {
        const key = JSON.stringify(
          type === 'map' ? Object.fromEntries((sch['x-kubernetes-list-map-keys'] ?? []).map((k) => [k, (item as Record<string, unknown>)[k]])) : item,
        );
        if (seen.has(key)) return `${at}/${i} Duplicate value: ${key}`;
        seen.add(key);
      }
    }
    for (const [i, item] of value.entries()) {
      const e = duplicateListKeys(sch.items, item, `${at}/${i}`);
      if (e) return e;
    }
    return undefined;
  }
  for (const [k, v] of Object.entries(value)) {
    const e = duplicateListKeys(sch.properties?.[k], v, `${at}/${k}`);
    if (e) return e;
  }
  return undefined;
}

export interface StoredObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

interface Resource {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** kubernetes-models module, or a CRD's schema. */
  model?: string;
  schema?: object;
}

const BUILTIN: Resource[] = [
  { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true, model: 'kubernetes-models/v1/Pod' },
  { group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true, model: 'kubernetes-models/v1/Secret' },
  { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true, model: 'kubernetes-models/v1/ConfigMap' },
  { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true, model: 'kubernetes-models/v1/Service' },
  {
    group: '',
    version: 'v1',
    kind: 'PersistentVolumeClaim',
    plural: 'persistentvolumeclaims',
    namespaced: true,
    model: 'kubernetes-models/v1/PersistentVolumeClaim',
  },
  { group: '', version: 'v1', kind: 'Event', plural: 'events', namespaced: true, model: 'kubernetes-models/v1/Event' },
  {
    group: 'networking.k8s.io',
    version: 'v1',
    kind: 'NetworkPolicy',
    plural: 'networkpolicies',
    namespaced: true,
    model: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
  },
];

export interface Call {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType: string;
  body: string;
  status: number;
}

interface Fault {
  method?: string;
  path?: RegExp;
  status: number;
  times: number;
  message: string;
}

interface Watcher {
  res: http.ServerResponse;
  r: Resource;
  namespace: string | undefined;
  labels: string;
  fields: string;
}

interface Event {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  rv: number;
  r: Resource;
  obj: StoredObject;
}

/** The stand-in API server; start with `KubeStandIn.start()`. */
export class KubeStandIn {
  readonly token = `standin-${randomUUID()}`;
  /** Every request, in order (bodies included: tests grep them for secrets that must never be sent). */
  readonly calls: Call[] = [];
  readonly #server: http.Server;
  readonly #resources: Resource[] = [...BUILTIN];
  readonly #objects = new Map<string, StoredObject>();
  /** key → manager → owned leaf paths. */
  readonly #owners = new Map<string, Map<string, Map<string, string>>>();
  readonly #events: Event[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #faults: Fault[] = [];
  /** Lines with the time the (simulated) kubelet stamped them, for `sinceTime`. */
  readonly #logs = new Map<string, { at: number; line: string }[]>();
  readonly #followers = new Map<string, Set<http.ServerResponse>>();
  readonly #models = new Map<string, new (d: unknown) => { validate(): void }>();
  readonly #ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  #rv = 1000;
  #compactedRv = 0;
  /** Where volumes' contents live: pvc/<namespace>/<claim>, pod/<uid>/<volume>. */
  readonly #root = mkdtempSync(path.join(os.tmpdir(), 'clawplane-kube-standin-'));
  readonly #wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => (p.has('v5.channel.k8s.io') ? 'v5.channel.k8s.io' : false) });
  readonly #execDrops: { afterBytes: number }[] = [];
  readonly #execs = new Set<WebSocket>();
  /** An image volume's reference (e.g. registry/openclaw-runtime:2026.9.6) → the host directory standing for its contents. */
  readonly imageVolumes = new Map<string, string>();

  private constructor() {
    this.#server = http.createServer((req, res) => {
      void this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.#status(res, 500, 'InternalError', `stand-in failure: ${(err as Error).message}`);
        else res.destroy();
      });
    });
    this.#server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.#upgrade(req, socket as Socket, head).catch(() => socket.destroy());
    });
  }

  /** SIMULATED kubelet for benchmarks: every created Pod runs and is Ready on the next tick. */
  autoRun = false;

  static async start(opts: { autoRun?: boolean } = {}): Promise<KubeStandIn> {
    const s = new KubeStandIn();
    s.autoRun = opts.autoRun ?? false;
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', resolve));
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** A kubeconfig (as client-node's loadFromOptions takes it) for this server. */
  kubeconfigOptions(namespace = 'default'): object {
    return {
      clusters: [{ name: 'standin', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'clawplane', token: this.token }],
      contexts: [{ name: 'standin', cluster: 'standin', user: 'clawplane', namespace }],
      currentContext: 'standin',
    };
  }

  async close(): Promise<void> {
    this.dropWatches();
    for (const ws of this.#execs) ws.terminate();
    rmSync(this.#root, { recursive: true, force: true });
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Registers a custom resource (a CRD) with its openAPIV3Schema. */
  addCustomResource(r: { group: string; version: string; kind: string; plural: string; schema: object }): void {
    this.#resources.push({ ...r, namespaced: true });
  }

  /** The next `times` requests matching method/path are answered with `status` (and nothing is stored). */
  failNext(f: { method?: string; path?: RegExp; status: number; times?: number; message?: string }): void {
    this.#faults.push({ ...f, times: f.times ?? 1, message: f.message ?? `injected ${f.status}` });
  }

  /** Forgets faults not yet used up. */
  clearFaults(): void {
    this.#faults.length = 0;
  }

  /** Cuts every open watch stream, as a restarted API server or a load balancer's idle timeout would. */
  dropWatches(): number {
    for (const set of this.#followers.values()) for (const r of set) r.destroy();
    const n = this.#watchers.size;
    for (const w of this.#watchers) w.res.destroy();
    this.#watchers.clear();
    return n;
  }

  /** The next exec's connection is cut (TCP, no close frame, no status) once `afterBytes` of stdin or stdout went through it. */
  dropNextExec(o: { afterBytes: number }): void {
    this.#execDrops.push(o);
  }

  /** The directory standing for a PersistentVolumeClaim's volume (what its pods see at their mount path). */
  volumeDir(namespace: string, claim: string): string {
    const d = path.join(this.#root, 'pvc', namespace, claim);
    mkdirSync(d, { recursive: true });
    return d;
  }

  /** The directory standing for a pod's emptyDir volume (the test plays an init container by writing into it). */
  emptyDirOf(namespace: string, pod: string, volume: string): string {
    const uid = this.get('Pod', namespace, pod)?.metadata.uid;
    if (!uid) throw new Error(`no pod ${namespace}/${pod}`);
    const d = path.join(this.#root, 'pod', uid, volume);
    mkdirSync(d, { recursive: true });
    return d;
  }

  /**
   * Compacts the watch history (as etcd does): every open watch gets an ERROR event with a 410 Gone Status
   * and ends, and a watch asked from a resourceVersion before now is answered the same way.
   */
  expireWatches(): number {
    this.#compactedRv = this.#rv;
    const n = this.#watchers.size;
    for (const w of this.#watchers) w.res.end(JSON.stringify({ type: 'ERROR', object: GONE }) + '\n');
    this.#watchers.clear();
    return n;
  }

  get openWatches(): number {
    return this.#watchers.size;
  }

  /** Objects now stored, optionally of one kind. */
  objects(kind?: string): StoredObject[] {
    return [...this.#objects.values()].filter((o) => !kind || o.kind === kind).map((o) => structuredClone(o));
  }

  get(kind: string, namespace: string, name: string): StoredObject | undefined {
    const r = this.#resources.find((x) => x.kind === kind);
    const o = r && this.#objects.get(keyOf(r, namespace, name));
    return o ? structuredClone(o) : undefined;
  }

  /** The managers that own fields of an object (as metadata.managedFields would list them). */
  managers(kind: string, namespace: string, name: string): string[] {
    const r = this.#resources.find((x) => x.kind === kind);
    return r ? [...(this.#owners.get(keyOf(r, namespace, name))?.keys() ?? [])] : [];
  }

  /** The field paths one manager owns on an object (its applied leaves). */
  ownedBy(kind: string, namespace: string, name: string, manager: string): string[] {
    const r = this.#resources.find((x) => x.kind === kind);
    return r
      ? [
          ...(this.#owners
            .get(keyOf(r, namespace, name))
            ?.get(manager)
            ?.keys() ?? []),
        ]
      : [];
  }

  /** SIMULATED kubelet/scheduler: replaces a Pod's status (bumps resourceVersion, notifies watchers). */
  setPodStatus(namespace: string, name: string, status: object): void {
    const r = this.#resource('v1', 'Pod');
    const key = keyOf(r, namespace, name);
    const cur = this.#objects.get(key);
    if (!cur) throw new Error(`no pod ${namespace}/${name}`);
    const next = { ...cur, status: structuredClone(status), metadata: { ...cur.metadata, resourceVersion: String(++this.#rv) } };
    this.#objects.set(key, next);
    this.#emit('MODIFIED', r, next);
  }

  /** A Running pod whose supervisor container runs; Ready as asked (the readiness probe's verdict). */
  markRunning(namespace: string, name: string, opts: { ready: boolean; podIP?: string } = { ready: true }): void {
    this.setPodStatus(namespace, name, {
      phase: 'Running',
      podIP: opts.podIP ?? '10.244.0.17',
      conditions: [
        { type: 'PodScheduled', status: 'True' },
        { type: 'Initialized', status: 'True' },
        { type: 'ContainersReady', status: opts.ready ? 'True' : 'False' },
        { type: 'Ready', status: opts.ready ? 'True' : 'False', ...(opts.ready ? {} : { reason: 'ContainersNotReady' }) },
      ],
      containerStatuses: [
        { name: 'supervisor', ready: opts.ready, restartCount: 0, image: 'x', imageID: 'x', state: { running: { startedAt: new Date().toISOString() } } },
      ],
    });
  }

  /** The log text pods/log returns for a pod. */
  setLog(namespace: string, pod: string, text: string, at = Date.now()): void {
    this.#logs.set(
      `${namespace}/${pod}`,
      text
        .split('\n')
        .filter(Boolean)
        .map((line) => ({ at, line })),
    );
  }

  /** SIMULATED container output: appends lines to a pod's log (followers receive them). */
  appendLog(namespace: string, pod: string, text: string): void {
    const key = `${namespace}/${pod}`;
    const at = Date.now();
    this.#logs.set(key, [
      ...(this.#logs.get(key) ?? []),
      ...text
        .split('\n')
        .filter(Boolean)
        .map((line) => ({ at, line })),
    ]);
    for (const res of this.#followers.get(key) ?? []) res.write(text);
  }

  /** Open follow=true log streams of a pod. */
  logFollowers(namespace: string, pod: string): number {
    return this.#followers.get(`${namespace}/${pod}`)?.size ?? 0;
  }

  #resource(apiVersion: string, kind: string): Resource {
    const r = this.#resources.find((x) => apiVersionOf(x) === apiVersion && x.kind === kind);
    if (!r) throw new Error(`unknown kind ${apiVersion}/${kind}`);
    return r;
  }

  async #validate(r: Resource, obj: StoredObject): Promise<string | undefined> {
    if (r.schema) {
      const v = this.#ajv.compile(r.schema);
      const { metadata: _m, apiVersion: _a, kind: _k, ...rest } = obj;
      if (!v(rest)) return (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`).join('; ');
      return duplicateListKeys(r.schema, rest, '');
    }
    let Model = this.#models.get(r.kind);
    if (!Model) {
      const mod = (await import(r.model ?? '')) as Record<string, new (d: unknown) => { validate(): void }>;
      Model = mod[r.kind];
      if (!Model) throw new Error(`no model for ${r.kind}`);
      this.#models.set(r.kind, Model);
    }
    try {
      new Model(obj).validate();
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }

  #status(res: http.ServerResponse, code: number, reason: string, message: string, details?: object): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) }));
  }

  #json(res: http.ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const call: Call = {
      method: req.method ?? 'GET',
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      contentType: String(req.headers['content-type'] ?? ''),
      body,
      status: 0,
    };
    this.calls.push(call);
    const end = res.end.bind(res);
    res.end = ((...a: Parameters<typeof res.end>) => {
      call.status = res.statusCode;
      return end(...a);
    }) as typeof res.end;
    if (req.headers.authorization !== `Bearer ${this.token}`) return this.#status(res, 401, 'Unauthorized', 'Unauthorized');
    const fault = this.#faults.find((f) => (!f.method || f.method === req.method) && (!f.path || f.path.test(u.pathname)));
    if (fault) {
      if (--fault.times <= 0) this.#faults.splice(this.#faults.indexOf(fault), 1);
      return this.#status(res, fault.status, fault.status === 404 ? 'NotFound' : fault.status === 409 ? 'Conflict' : 'InternalError', fault.message);
    }
    // Discovery.
    const disc = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))$/.exec(u.pathname);
    if (disc && req.method === 'GET') {
      const group = disc[2] ?? '';
      const version = disc[1] ?? disc[3] ?? '';
      const rs = this.#resources.filter((r) => r.group === group && r.version === version);
      if (!rs.length) return this.#status(res, 404, 'NotFound', 'the server could not find the requested resource');
      return this.#json(res, 200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: group ? `${group}/${version}` : version,
        resources: rs.map((r) => ({
          name: r.plural,
          singularName: r.kind.toLowerCase(),
          namespaced: r.namespaced,
          kind: r.kind,
          verbs: ['create', 'delete', 'get', 'list', 'patch', 'watch'],
        })),
      });
    }
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?$/.exec(u.pathname);
    if (!m) return this.#status(res, 404, 'NotFound', `the stand-in does not serve ${u.pathname}`);
    const group = m[2] ?? '';
    const version = m[1] ?? m[3] ?? '';
    const namespace = m[4] ?? '';
    const r = this.#resources.find((x) => x.group === group && x.version === version && x.plural === m[5]);
    if (!r) return this.#status(res, 404, 'NotFound', `the server could not find the requested resource (${m[5]})`);
    const name = m[6];
    const sub = m[7];
    if (sub === 'log' && r.kind === 'Pod' && req.method === 'GET' && name) {
      if (!this.#objects.has(keyOf(r, namespace, name))) return this.#status(res, 404, 'NotFound', `pods "${name}" not found`);
      const since = u.searchParams.has('sinceTime') ? Date.parse(u.searchParams.get('sinceTime') ?? '') : -Infinity;
      const tail = u.searchParams.has('tailLines') ? Number(u.searchParams.get('tailLines')) : -1;
      const lines = (this.#logs.get(`${namespace}/${name}`) ?? []).filter((l) => l.at >= since).map((l) => l.line);
      res.writeHead(200, { 'content-type': 'text/plain' });
      const out = (tail >= 0 ? lines.slice(lines.length - tail) : lines).map((l) => l + '\n').join('');
      if (u.searchParams.get('follow') !== 'true') {
        res.end(out);
        return;
      }
      // follow: what is there now, then every appended line until the client goes.
      res.write(out);
      const key = `${namespace}/${name}`;
      const set = this.#followers.get(key) ?? new Set<http.ServerResponse>();
      set.add(res);
      this.#followers.set(key, set);
      res.on('close', () => set.delete(res));
      return;
    }
    if (sub === 'status' && name && req.method === 'PATCH' && r.schema) return this.#applyStatus(res, r, namespace, name, body, u.searchParams);
    if (sub) return this.#status(res, 404, 'NotFound', `the stand-in does not serve ${sub}`);
    if (!name) {
      if (req.method === 'GET' && u.searchParams.get('watch') === 'true') return this.#watch(res, r, namespace, u.searchParams);
      if (req.method === 'GET') return this.#list(res, r, namespace, u.searchParams);
      if (req.method === 'POST') return this.#create(res, r, namespace, body, u.searchParams);
      return this.#status(res, 405, 'MethodNotAllowed', `${req.method} is not served on a collection`);
    }
    const key = keyOf(r, namespace, name);
    if (req.method === 'GET') {
      const o = this.#objects.get(key);
      return o ? this.#json(res, 200, o) : this.#status(res, 404, 'NotFound', `${r.plural} "${name}" not found`, { name, kind: r.plural });
    }
    if (req.method === 'DELETE') {
      const o = this.#objects.get(key);
      if (!o) return this.#status(res, 404, 'NotFound', `${r.plural} "${name}" not found`, { name, kind: r.plural });
      if (((o.metadata['finalizers'] as string[] | undefined) ?? []).length > 0) {
        // Finalizers pending: marked for deletion, removed once they are gone (an apply that empties them).
        if (!o.metadata.deletionTimestamp) {
          const marked = {
            ...o,
            metadata: { ...o.metadata, deletionTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), resourceVersion: String(++this.#rv) },
          };
          this.#objects.set(key, marked);
          this.#emit('MODIFIED', r, marked);
          return this.#json(res, 200, marked);
        }
        return this.#json(res, 200, o);
      }
      this.#objects.delete(key);
      this.#owners.delete(key);
      if (r.kind === 'PersistentVolumeClaim') rmSync(path.join(this.#root, 'pvc', namespace, name), { recursive: true, force: true });
      if (r.kind === 'Pod' && o.metadata.uid) rmSync(path.join(this.#root, 'pod', o.metadata.uid), { recursive: true, force: true });
      const gone = { ...o, metadata: { ...o.metadata, resourceVersion: String(++this.#rv) } };
      this.#emit('DELETED', r, gone);
      return this.#json(res, 200, {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: { name, kind: r.plural, uid: o.metadata.uid },
      });
    }
    if (req.method === 'PATCH') {
      if (!String(req.headers['content-type']).startsWith('application/apply-patch'))
        return this.#status(res, 415, 'UnsupportedMediaType', 'the stand-in serves only server-side apply patches');
      return this.#apply(res, r, namespace, name, body, u.searchParams);
    }
    return this.#status(res, 405, 'MethodNotAllowed', `${req.method} is not served`);
  }

  /** pods/{name}/exec: the WebSocket upgrade, after the same checks as any request (recorded, authenticated, faults). */
  async #upgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const query: Record<string, string> = Object.fromEntries(u.searchParams);
    query['command'] = u.searchParams.getAll('command').join(' ');
    const call: Call = { method: 'GET', path: u.pathname, query, contentType: '', body: '', status: 0 };
    this.calls.push(call);
    const refuse = (code: number, reason: string, message: string) => {
      call.status = code;
      const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
      socket.end(
        `HTTP/1.1 ${code} ${http.STATUS_CODES[code] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) return refuse(401, 'Unauthorized', 'Unauthorized');
    const fault = this.#faults.find((f) => (!f.method || f.method === 'GET') && (!f.path || f.path.test(u.pathname)));
    if (fault) {
      if (--fault.times <= 0) this.#faults.splice(this.#faults.indexOf(fault), 1);
      return refuse(fault.status, 'InternalError', fault.message);
    }
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(u.pathname);
    if (!m) return refuse(404, 'NotFound', `the stand-in upgrades only pods/exec, not ${u.pathname}`);
    const [namespace, name] = [m[1] ?? '', m[2] ?? ''];
    const pod = this.#objects.get(keyOf(this.#resource('v1', 'Pod'), namespace, name));
    if (!pod) return refuse(404, 'NotFound', `pods "${name}" not found`);
    const spec = pod['spec'] as PodSpecLite;
    const container = spec.containers.find((c) => c.name === (u.searchParams.get('container') ?? spec.containers[0]?.name));
    if (!container) return refuse(400, 'BadRequest', `container ${u.searchParams.get('container') ?? ''} is not valid for pod ${name}`);
    if ((pod['status'] as { phase?: string } | undefined)?.phase !== 'Running')
      return refuse(400, 'BadRequest', `unable to upgrade connection: container not found ("${container.name}")`);
    const argv = u.searchParams.getAll('command');
    if (!argv.length) return refuse(400, 'BadRequest', 'you must specify at least 1 command');
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      call.status = 101;
      this.#runExec(ws, pod, spec, container, argv, u.searchParams.get('stdin') === 'true');
    });
  }

  /** Runs an exec'd command with the container's mounts and relays its streams in v5.channel.k8s.io frames. */
  #runExec(ws: WebSocket, pod: StoredObject, spec: PodSpecLite, c: PodSpecLite['containers'][number], argv: string[], stdin: boolean): void {
    this.#execs.add(ws);
    const binds: string[] = [];
    for (const vm of c.volumeMounts ?? []) {
      const v = spec.volumes?.find((x) => x.name === vm.name);
      let dir: string | undefined;
      if (v?.persistentVolumeClaim) dir = this.volumeDir(pod.metadata.namespace ?? '', v.persistentVolumeClaim.claimName);
      else if (v?.emptyDir) dir = this.emptyDirOf(pod.metadata.namespace ?? '', pod.metadata.name, v.name);
      else if (v?.image) dir = this.imageVolumes.get(v.image.reference);
      else if (v?.projected || v?.configMap || v?.secret) dir = this.#projected(pod, v);
      if (!dir) {
        dir = path.join(this.#root, 'pod', pod.metadata.uid ?? '', `unmapped-${vm.name}`);
        mkdirSync(dir, { recursive: true });
      }
      binds.push(vm.readOnly ? '--ro-bind' : '--bind', dir, vm.mountPath);
    }
    const env = (c.env ?? []).flatMap((e) => ['--setenv', e.name, e.value ?? '']);
    const child = spawn(
      'bwrap',
      [
        '--unshare-pid',
        '--die-with-parent',
        '--ro-bind',
        '/usr',
        '/usr',
        ...['lib', 'lib64', 'bin', 'sbin'].flatMap((d) => ['--symlink', `usr/${d}`, `/${d}`]),
        // The sandbox image's Node (docker/sandbox/Dockerfile puts it at /usr/local/bin/node).
        '--tmpfs',
        '/usr/local',
        '--ro-bind',
        process.execPath,
        '/usr/local/bin/node',
        '--proc',
        '/proc',
        '--dev',
        '/dev',
        '--tmpfs',
        '/tmp',
        ...binds,
        '--clearenv',
        ...env,
        '--chdir',
        c.workingDir ?? '/',
        '--remount-ro',
        '/',
        '--',
        ...argv,
      ],
      { stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] },
    );
    const drop = this.#execDrops.shift();
    let moved = 0;
    const count = (n: number) => {
      moved += n;
      if (drop && moved >= drop.afterBytes) {
        child.kill('SIGKILL');
        ws.terminate();
      }
    };
    const frame = (channel: number, data: Buffer) => {
      if (ws.readyState !== ws.OPEN) return;
      ws.send(Buffer.concat([Buffer.from([channel]), data]));
      if (channel === 1) count(data.length);
    };
    child.stdout?.on('data', (d: Buffer) => frame(1, d));
    child.stderr?.on('data', (d: Buffer) => frame(2, d));
    child.stdin?.on('error', () => undefined);
    ws.on('message', (data: Buffer) => {
      if (data[0] === 0 && child.stdin) {
        child.stdin.write(data.subarray(1));
        count(data.length - 1);
      } else if (data[0] === 255 && data[1] === 0) child.stdin?.end();
    });
    ws.on('close', () => {
      this.#execs.delete(ws);
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    child.on('close', (code, signal) => {
      const exit = code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0);
      const status =
        exit === 0
          ? { metadata: {}, status: 'Success' }
          : {
              metadata: {},
              status: 'Failure',
              message: `command terminated with non-zero exit code: error executing command [${argv.join(' ')}], exit code ${exit}`,
              reason: 'NonZeroExitCode',
              details: { causes: [{ reason: 'ExitCode', message: String(exit) }] },
            };
      frame(3, Buffer.from(JSON.stringify(status)));
      if (ws.readyState === ws.OPEN) ws.close(1000);
    });
  }

  /** A configMap/secret/projected volume's files, written once per pod from the stored objects (the kubelet's part). */
  #projected(pod: StoredObject, v: VolumeLite): string {
    const dir = path.join(this.#root, 'pod', pod.metadata.uid ?? '', v.name);
    mkdirSync(dir, { recursive: true });
    const sources = v.projected?.sources ?? [{ configMap: v.configMap, secret: v.secret }];
    for (const src of sources) {
      for (const [kind, ref] of [
        ['ConfigMap', src.configMap],
        ['Secret', src.secret],
      ] as const) {
        if (!ref) continue;
        const o = this.get(kind, pod.metadata.namespace ?? '', ref.name ?? ref.secretName ?? '');
        const raw = (o?.['data'] as Record<string, string> | undefined) ?? {};
        const data: Record<string, string> = { ...((o?.['stringData'] as Record<string, string>) ?? {}) };
        for (const [k, val] of Object.entries(raw)) data[k] = kind === 'Secret' ? Buffer.from(val, 'base64').toString('utf8') : val;
        const items = ref.items ?? Object.keys(data).map((k) => ({ key: k, path: k }));
        for (const it of items) {
          if (data[it.key] === undefined) continue;
          mkdirSync(path.dirname(path.join(dir, it.path)), { recursive: true });
          writeFileSync(path.join(dir, it.path), data[it.key] ?? '', { mode: 0o600 });
        }
      }
    }
    return dir;
  }

  #list(res: http.ServerResponse, r: Resource, namespace: string, q: URLSearchParams): void {
    const items = this.#select(r, namespace, q.get('labelSelector') ?? '', q.get('fieldSelector') ?? '');
    this.#json(res, 200, { kind: `${r.kind}List`, apiVersion: apiVersionOf(r), metadata: { resourceVersion: String(this.#rv) }, items });
  }

  #select(r: Resource, namespace: string | undefined, labels: string, fields: string): StoredObject[] {
    return [...this.#objects.values()].filter(
      (o) =>
        o.kind === r.kind &&
        apiVersionOf(r) === o.apiVersion &&
        (!namespace || o.metadata.namespace === namespace) &&
        matchLabels(o.metadata.labels ?? {}, labels) &&
        matchFields(o, fields),
    );
  }

  #watch(res: http.ServerResponse, r: Resource, namespace: string, q: URLSearchParams): void {
    const from = Number(q.get('resourceVersion') ?? 0);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The real server answers a watch's headers at once, before any event.
    res.flushHeaders();
    if (from && from < this.#compactedRv) {
      res.end(JSON.stringify({ type: 'ERROR', object: GONE }) + '\n');
      return;
    }
    const w: Watcher = { res, r, namespace, labels: q.get('labelSelector') ?? '', fields: q.get('fieldSelector') ?? '' };
    this.#watchers.add(w);
    res.on('close', () => this.#watchers.delete(w));
    if (!from) {
      // No resourceVersion: the current objects as ADDED (what a real watch without one sends).
      for (const o of this.#select(r, namespace, w.labels, w.fields)) res.write(JSON.stringify({ type: 'ADDED', object: o }) + '\n');
      return;
    }
    for (const e of this.#events) if (e.rv > from && this.#matches(w, e.r, e.obj)) res.write(JSON.stringify({ type: e.type, object: e.obj }) + '\n');
  }

  #matches(w: Watcher, r: Resource, o: StoredObject): boolean {
    return w.r === r && (!w.namespace || o.metadata.namespace === w.namespace) && matchLabels(o.metadata.labels ?? {}, w.labels) && matchFields(o, w.fields);
  }

  #emit(type: Event['type'], r: Resource, obj: StoredObject): void {
    const e: Event = { type, rv: Number(obj.metadata.resourceVersion), r, obj: structuredClone(obj) };
    this.#events.push(e);
    for (const w of this.#watchers) if (this.#matches(w, r, obj)) w.res.write(JSON.stringify({ type, object: e.obj }) + '\n');
  }

  #parse(res: http.ServerResponse, body: string): StoredObject | undefined {
    try {
      const o = JSON.parse(body) as StoredObject;
      if (!o || typeof o !== 'object' || !o.metadata || typeof o.metadata.name !== 'string') throw new Error('metadata.name is required');
      return o;
    } catch (err) {
      this.#status(res, 400, 'BadRequest', `the body is not a Kubernetes object: ${(err as Error).message}`);
      return undefined;
    }
  }

  async #create(res: http.ServerResponse, r: Resource, namespace: string, body: string, q: URLSearchParams): Promise<void> {
    const o = this.#parse(res, body);
    if (!o) return;
    if (o.kind !== r.kind || o.apiVersion !== apiVersionOf(r))
      return this.#status(res, 400, 'BadRequest', `the body is a ${o.apiVersion}/${o.kind}, not a ${apiVersionOf(r)}/${r.kind}`);
    const key = keyOf(r, namespace, o.metadata.name);
    if (this.#objects.has(key))
      return this.#status(res, 409, 'AlreadyExists', `${r.plural} "${o.metadata.name}" already exists`, { name: o.metadata.name, kind: r.plural });
    const invalid = await this.#validate(r, o);
    if (invalid) return this.#status(res, 422, 'Invalid', `${r.kind} "${o.metadata.name}" is invalid: ${invalid}`);
    const stored = this.#fresh(r, namespace, o);
    const manager = q.get('fieldManager') ?? 'unknown';
    this.#owners.set(key, new Map([[manager, leaves(o)]]));
    this.#objects.set(key, stored);
    this.#emit('ADDED', r, stored);
    this.#json(res, 201, stored);
    if (this.autoRun && r.kind === 'Pod') setImmediate(() => this.#objects.has(key) && this.markRunning(namespace, o.metadata.name));
  }

  /**
   * The status subresource of a custom resource (server-side apply): only `status` changes, the spec
   * and its generation stay (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#status-subresource).
   */
  async #applyStatus(res: http.ServerResponse, r: Resource, namespace: string, name: string, body: string, q: URLSearchParams): Promise<void> {
    if (!q.get('fieldManager')) return this.#status(res, 400, 'BadRequest', 'fieldManager is required for apply requests');
    if (!String(res.req.headers['content-type']).startsWith('application/apply-patch'))
      return this.#status(res, 415, 'UnsupportedMediaType', 'the stand-in serves only server-side apply patches');
    const o = this.#parse(res, body);
    if (!o) return;
    const key = keyOf(r, namespace, name);
    const live = this.#objects.get(key);
    if (!live) return this.#status(res, 404, 'NotFound', `${r.plural} "${name}" not found`, { name, kind: r.plural });
    const next: StoredObject = {
      ...structuredClone(live),
      status: structuredClone(o['status']),
      metadata: { ...live.metadata, resourceVersion: String(++this.#rv) },
    };
    const invalid = await this.#validate(r, next);
    if (invalid) return this.#status(res, 422, 'Invalid', `${r.kind} "${name}" is invalid: ${invalid}`);
    this.#objects.set(key, next);
    this.#emit('MODIFIED', r, next);
    this.#json(res, 200, next);
  }

  #fresh(r: Resource, namespace: string, o: StoredObject): StoredObject {
    const { status: _s, ...spec } = o;
    return {
      ...structuredClone(spec),
      metadata: {
        ...structuredClone(o.metadata),
        namespace,
        uid: randomUUID(),
        resourceVersion: String(++this.#rv),
        creationTimestamp: new Date().toISOString(),
        generation: 1,
      },
      // The real API server's pod strategy (PrepareForCreate) sets the phase; nothing else runs here.
      ...(r.kind === 'Pod' ? { status: { phase: 'Pending' } } : {}),
    };
  }

  async #apply(res: http.ServerResponse, r: Resource, namespace: string, name: string, body: string, q: URLSearchParams): Promise<void> {
    const manager = q.get('fieldManager');
    if (!manager) return this.#status(res, 400, 'BadRequest', 'PATCH, application/apply-patch+yaml: fieldManager is required for apply requests');
    const force = q.get('force') === 'true';
    const o = this.#parse(res, body);
    if (!o) return;
    if (o.metadata.name !== name)
      return this.#status(res, 400, 'BadRequest', `the name of the object (${o.metadata.name}) does not match the name on the URL (${name})`);
    if (o.kind !== r.kind || o.apiVersion !== apiVersionOf(r))
      return this.#status(res, 400, 'BadRequest', `the body is a ${o.apiVersion}/${o.kind}, not a ${apiVersionOf(r)}/${r.kind}`);
    const key = keyOf(r, namespace, name);
    const live = this.#objects.get(key);
    if (o.metadata.resourceVersion && live && o.metadata.resourceVersion !== live.metadata.resourceVersion) {
      return this.#status(
        res,
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${r.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    const applied = leaves(o);
    const owners = this.#owners.get(key) ?? new Map<string, Map<string, string>>();
    const conflicts: { manager: string; path: string }[] = [];
    for (const [p, v] of applied) {
      for (const [other, paths] of owners) {
        if (other === manager || !paths.has(p)) continue;
        if (live && JSON.stringify(getPath(live, p)) !== v) conflicts.push({ manager: other, path: p });
      }
    }
    if (conflicts.length && !force) {
      return this.#status(
        res,
        409,
        'Conflict',
        `Apply failed with ${conflicts.length} conflict${conflicts.length > 1 ? 's' : ''}: ${conflicts.map((c) => `conflict with "${c.manager}": ${c.path}`).join(', ')}`,
        { causes: conflicts.map((c) => ({ reason: 'FieldManagerConflict', message: `conflict with "${c.manager}"`, field: c.path })) },
      );
    }
    for (const c of conflicts) owners.get(c.manager)?.delete(c.path);
    // Start from the live object; drop fields this manager owned and no longer applies (unless another owns them).
    let next: StoredObject = live ? structuredClone(live) : this.#fresh(r, namespace, { ...o, metadata: { name } });
    for (const p of owners.get(manager)?.keys() ?? []) {
      if (!applied.has(p) && ![...owners].some(([m, ps]) => m !== manager && ps.has(p))) deletePath(next, p);
    }
    for (const [p, v] of applied) setPath(next, p, JSON.parse(v) as unknown);
    owners.set(manager, applied);
    for (const [m, ps] of owners) if (ps.size === 0) owners.delete(m);
    const invalid = await this.#validate(r, next);
    if (invalid) return this.#status(res, 422, 'Invalid', `${r.kind} "${name}" is invalid: ${invalid}`);
    const finalizers = (o: StoredObject | undefined) => (o?.metadata['finalizers'] as string[] | undefined) ?? [];
    if (live?.metadata.deletionTimestamp && finalizers(next).some((f) => !finalizers(live).includes(f)))
      return this.#status(
        res,
        422,
        'Forbidden',
        `${r.kind} "${name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted`,
      );
    const changed = !live || JSON.stringify(stripMeta(live)) !== JSON.stringify(stripMeta(next));
    // The generation counts changes outside metadata (and status), as the real server's strategies do.
    const specChanged = !!live && JSON.stringify({ ...live, metadata: {} }) !== JSON.stringify({ ...next, metadata: {} });
    if (changed && live)
      next = {
        ...next,
        metadata: { ...next.metadata, resourceVersion: String(++this.#rv), generation: Number(live.metadata['generation'] ?? 1) + (specChanged ? 1 : 0) },
      };
    if (live?.metadata.deletionTimestamp && finalizers(next).length === 0) {
      // The last finalizer is gone: the object goes.
      this.#objects.delete(key);
      this.#owners.delete(key);
      this.#emit('DELETED', r, next);
      return this.#json(res, 200, next);
    }
    this.#owners.set(key, owners);
    this.#objects.set(key, next);
    if (changed) this.#emit(live ? 'MODIFIED' : 'ADDED', r, next);
    this.#json(res, live ? 200 : 201, next);
  }
}

/** What the API server sends on a watch whose resourceVersion was compacted away. */
const GONE = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'too old resource version', reason: 'Expired', code: 410 };

interface VolumeLite {
  name: string;
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: object;
  image?: { reference: string };
  configMap?: SourceLite;
  secret?: SourceLite;
  projected?: { sources: { configMap?: SourceLite; secret?: SourceLite }[] };
}
interface SourceLite {
  name?: string;
  secretName?: string;
  items?: { key: string; path: string }[];
}
interface PodSpecLite {
  containers: {
    name: string;
    workingDir?: string;
    env?: { name: string; value?: string }[];
    volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  }[];
  volumes?: VolumeLite[];
}

function apiVersionOf(r: Resource): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

function keyOf(r: Resource, namespace: string, name: string): string {
  return `${apiVersionOf(r)}/${r.kind}/${namespace}/${name}`;
}

/** Leaf paths of an applied object (lists atomic), with their JSON values; identity and status excluded. */
function leaves(o: StoredObject): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (v: unknown, p: string) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
      for (const [k, x] of Object.entries(v)) walk(x, p ? `${p}.${k.replace(/\./g, '\\.')}` : k.replace(/\./g, '\\.'));
    } else out.set(p, JSON.stringify(v));
  };
  const { apiVersion: _a, kind: _k, status: _s, metadata, ...rest } = o;
  const { name: _n, namespace: _ns, resourceVersion: _rv, uid: _u, ...meta } = metadata;
  walk({ ...rest, metadata: meta }, '');
  out.delete('metadata');
  return out;
}

function splitPath(p: string): string[] {
  return p.split(/(?<!\\)\./).map((s) => s.replace(/\\\./g, '.'));
}

function getPath(o: unknown, p: string): unknown {
  let cur = o;
  for (const k of splitPath(p)) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

function setPath(o: object, p: string, v: unknown): void {
  const ks = splitPath(p);
  let cur = o as Record<string, unknown>;
  for (const k of ks.slice(0, -1)) {
    if (!cur[k] || typeof cur[k] !== 'object' || Array.isArray(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[ks[ks.length - 1] ?? ''] = v;
}

function deletePath(o: object, p: string): void {
  const ks = splitPath(p);
  let cur = o as Record<string, unknown>;
  for (const k of ks.slice(0, -1)) {
    if (!cur[k] || typeof cur[k] !== 'object') return;
    cur = cur[k] as Record<string, unknown>;
  }
  delete cur[ks[ks.length - 1] ?? ''];
}

function stripMeta(o: StoredObject): unknown {
  const { resourceVersion: _r, generation: _g, ...m } = o.metadata as Record<string, unknown>;
  return { ...o, metadata: m };
}

/** Kubernetes label selector semantics: comma = and; `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`. */
export function matchLabels(labels: Record<string, string>, selector: string): boolean {
  for (const raw of selector.match(/[^,(]+(\([^)]*\))?/g) ?? []) {
    const t = raw.trim();
    if (!t) continue;
    let m: RegExpExecArray | null;
    if ((m = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(t))) {
      const vals = (m[3] ?? '').split(',').map((s) => s.trim());
      const has = (m[1] ?? '') in labels && vals.includes(labels[m[1] ?? ''] ?? '');
      if (m[2] === 'in' ? !has : has) return false;
    } else if ((m = /^([^\s!=]+)\s*!=\s*(\S*)$/.exec(t))) {
      if (labels[m[1] ?? ''] === m[2]) return false;
    } else if ((m = /^([^\s!=]+)\s*==?\s*(\S*)$/.exec(t))) {
      if (labels[m[1] ?? ''] !== m[2]) return false;
    } else if ((m = /^!([^\s!=]+)$/.exec(t))) {
      if ((m[1] ?? '') in labels) return false;
    } else if (!(t in labels)) return false;
  }
  return true;
}

function matchFields(o: StoredObject, selector: string): boolean {
  for (const t of selector.split(',').filter(Boolean)) {
    const [k, v] = t.split('=');
    if (k === 'metadata.name' && o.metadata.name !== v) return false;
    if (k === 'metadata.namespace' && o.metadata.namespace !== v) return false;
  }
  return true;
}
