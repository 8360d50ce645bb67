/**
 * The kubernetes driver's calls to the API server, through @kubernetes/client-node: server-side apply
 * with the field manager `clawplane` (docs/adr/0011-kubernetes.md), create, get, list by label,
 * delete, pod logs, and a Pod watch that resumes from its last resourceVersion when the stream drops.
 *
 * Faults: a 409 on apply is another field manager owning a field we set (we never force on objects
 * that are not ours); 429, 5xx and connection errors are retried a few times with backoff (the API
 * server answers them during upgrades and etcd leader changes), then become SandboxUnavailableError
 * with what failed. Nothing here logs an object: Secrets hold tokens.
 */
import { ApiException, CoreV1Api, KubeConfig, KubernetesObjectApi, PatchStrategy, Watch, type KubernetesObject } from '@kubernetes/client-node';
import { ConflictError } from '../../../errors.ts';
import { SandboxUnavailableError } from '../../types.ts';
import { FIELD_MANAGER } from './labels.ts';

/** What an object needs to be addressed. */
export interface ObjectKey {
  apiVersion: string;
  kind: string;
  name: string;
}

export interface KubeObject extends KubernetesObject {
  metadata: NonNullable<KubernetesObject['metadata']> & { name: string };
  [k: string]: unknown;
}

/** Builds the client configuration: a kubeconfig file, else KUBECONFIG, ~/.kube/config or the in-cluster service account. */
export function loadKubeConfig(file: string): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kc;
}

const RETRIABLE = new Set([429, 500, 502, 503, 504]);

export class KubeApi {
  readonly namespace: string;
  readonly kc: KubeConfig;
  readonly #objects: KubernetesObjectApi;
  readonly #core: CoreV1Api;
  readonly #attempts: number;
  readonly #backoffMs: number;

  constructor(kc: KubeConfig, namespace: string, opts: { attempts?: number; backoffMs?: number } = {}) {
    this.kc = kc;
    this.namespace = namespace;
    this.#objects = KubernetesObjectApi.makeApiClient(kc);
    this.#core = kc.makeApiClient(CoreV1Api);
    this.#attempts = opts.attempts ?? 4;
    this.#backoffMs = opts.backoffMs ?? 250;
  }

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '(no cluster in the kubeconfig)';
  }

  /** One call with retries on transient answers; `what` names it in errors (never the object's content). */
  async #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const code = statusOf(err);
        const transient = code === undefined ? isConnectionError(err) : RETRIABLE.has(code);
        if (transient && attempt < this.#attempts) {
          await sleep(this.#backoffMs * 2 ** (attempt - 1));
          continue;
        }
        if (code === 409)
          throw new ConflictError(
            `Kubernetes refused to ${what}: ${messageOf(err)}. Another field manager owns a field Clawplane sets; remove that manager's change (kubectl apply --server-side by another tool) or let Clawplane own the object.`,
            'kubernetes_conflict',
          );
        if (transient)
          throw new SandboxUnavailableError(
            `The Kubernetes API server at ${this.server} failed to ${what} ${attempt} times (${code !== undefined ? `HTTP ${code}: ${messageOf(err)}` : messageOf(err)}); the operation is retried on the next reconcile.`,
            err,
          );
        if (code === 401 || code === 403)
          throw new SandboxUnavailableError(
            `The Kubernetes API server refused to ${what} (HTTP ${code}: ${messageOf(err)}): give the control plane's service account the sandbox-driver Role of the Helm chart in namespace ${this.namespace}.`,
            err,
          );
        if (code === 422) throw new SandboxUnavailableError(`The Kubernetes API server found an object invalid when asked to ${what}: ${messageOf(err)}.`, err);
        throw err;
      }
    }
  }

  /** Server-side apply of an object we own (force: ours by label, so a stale field of ours is taken back). */
  apply<T extends KubeObject>(obj: T, opts: { force: boolean }): Promise<KubeObject> {
    const o = clientModel({ ...obj, metadata: { ...obj.metadata, namespace: this.namespace } });
    return this.#call(`apply ${obj.kind} ${obj.metadata.name}`, () =>
      this.#objects.patch(o, undefined, undefined, FIELD_MANAGER, opts.force, PatchStrategy.ServerSideApply),
    ) as Promise<KubeObject>;
  }

  /** Creates an object that must not exist yet (a Pod is immutable per start); null when it already exists. */
  async create<T extends KubeObject>(obj: T): Promise<KubeObject | null> {
    const o = clientModel({ ...obj, metadata: { ...obj.metadata, namespace: this.namespace } });
    try {
      return (await this.#call(`create ${obj.kind} ${obj.metadata.name}`, () => this.#objects.create(o, undefined, undefined, FIELD_MANAGER))) as KubeObject;
    } catch (err) {
      if (err instanceof ConflictError) return null;
      throw err;
    }
  }

  async get(key: ObjectKey): Promise<KubeObject | null> {
    try {
      return (await this.#call(`read ${key.kind} ${key.name}`, () =>
        this.#objects.read({ apiVersion: key.apiVersion, kind: key.kind, metadata: { name: key.name, namespace: this.namespace } }),
      )) as KubeObject;
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw err;
    }
  }

  async list(apiVersion: string, kind: string, selector: { labels?: string; fields?: string }): Promise<{ items: KubeObject[]; resourceVersion: string }> {
    const l = await this.#call(`list ${kind}`, () =>
      this.#objects.list(apiVersion, kind, this.namespace, undefined, undefined, undefined, selector.fields, selector.labels),
    );
    return { items: l.items as KubeObject[], resourceVersion: l.metadata?.resourceVersion ?? '' };
  }

  /** Deletes by name; gone already is fine. */
  async delete(key: ObjectKey, opts: { gracePeriodSeconds?: number } = {}): Promise<boolean> {
    try {
      await this.#call(`delete ${key.kind} ${key.name}`, () =>
        this.#objects.delete(
          { apiVersion: key.apiVersion, kind: key.kind, metadata: { name: key.name, namespace: this.namespace } },
          undefined,
          undefined,
          opts.gracePeriodSeconds,
          undefined,
          'Background',
        ),
      );
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw err;
    }
  }

  async podLog(name: string, tailLines: number): Promise<string> {
    try {
      return await this.#call(`read the log of Pod ${name}`, () =>
        this.#core.readNamespacedPodLog({ name, namespace: this.namespace, container: 'supervisor', tailLines }),
      );
    } catch (err) {
      if (statusOf(err) === 404 || statusOf(err) === 400) return '';
      throw err;
    }
  }

  /**
   * Watches one Pod until `until` says done (returns its answer) or the signal aborts. A dropped stream is
   * resumed from the last resourceVersion seen; a 410 Gone (too old) starts over from a fresh read.
   */
  async watchPod<R>(name: string, until: (pod: KubeObject | null) => R | undefined, signal: AbortSignal): Promise<R> {
    let rv: string | undefined;
    for (;;) {
      signal.throwIfAborted();
      if (rv === undefined) {
        // A list (not a get) gives the collection's resourceVersion even when the Pod does not exist.
        const l = await this.list('v1', 'Pod', { fields: `metadata.name=${name}` });
        const r = until(l.items[0] ?? null);
        if (r !== undefined) return r;
        rv = l.resourceVersion;
      }
      const outcome = await new Promise<{ result?: R; gone?: boolean; err?: unknown }>((resolve) => {
        let settled = false;
        const settle = (v: { result?: R; gone?: boolean; err?: unknown }) => {
          if (settled) return;
          settled = true;
          signal.removeEventListener('abort', onAbort);
          void ctl.then((c) => c.abort()).catch(() => undefined);
          resolve(v);
        };
        const onAbort = () => settle({ err: signal.reason });
        signal.addEventListener('abort', onAbort, { once: true });
        const ctl = new Watch(this.kc).watch(
          `/api/v1/namespaces/${this.namespace}/pods`,
          { fieldSelector: `metadata.name=${name}`, resourceVersion: rv, allowWatchBookmarks: true },
          (phase, obj: KubeObject & { code?: number }) => {
            if (phase === 'ERROR') {
              settle(obj.code === 410 ? { gone: true } : { err: new Error(`watch error ${obj.code ?? ''}`) });
              return;
            }
            if (obj.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
            if (phase === 'BOOKMARK') return;
            const r = until(phase === 'DELETED' ? null : obj);
            if (r !== undefined) settle({ result: r });
          },
          // The stream ended (the server's timeout or a cut): resume from rv.
          () => settle({}),
        );
        ctl.catch((err: unknown) => settle(statusOf(err) === 410 ? { gone: true } : { err }));
      });
      if (outcome.result !== undefined) return outcome.result;
      if (signal.aborted) throw signal.reason;
      if (outcome.gone) rv = undefined;
      else if (outcome.err !== undefined) {
        // A watch that cannot start (the server down): back off, then read afresh.
        await sleep(this.#backoffMs);
        rv = undefined;
      }
    }
  }
}

/**
 * client-node serializes a built-in kind through its generated model, which names a few attributes
 * differently from the wire (V1NetworkPolicyIngressRule's `from` is `_from`) and silently drops a
 * wire-named one. Our objects are plain wire JSON (kubernetes-models), so the one such field we send is
 * renamed here; test/sandbox-kubernetes.test.ts asserts the API server receives `from`.
 */
function clientModel<T extends KubeObject>(obj: T): T {
  if (obj.kind !== 'NetworkPolicy') return obj;
  const spec = obj['spec'] as { ingress?: Record<string, unknown>[] } | undefined;
  if (!spec?.ingress) return obj;
  return { ...obj, spec: { ...spec, ingress: spec.ingress.map(({ from, ...rule }) => (from === undefined ? rule : { ...rule, _from: from })) } };
}

export function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const c = (err as { code?: unknown; statusCode?: unknown } | null)?.statusCode;
  return typeof c === 'number' ? c : undefined;
}

function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown; cause?: { code?: unknown } } | null)?.code ?? (err as { cause?: { code?: unknown } } | null)?.cause?.code;
  return typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|UND_ERR_SOCKET)$/.test(code);
}

/** The API server's own message (a Status body), never the object we sent. */
function messageOf(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as unknown;
    const parsed = typeof body === 'string' ? safeJson(body) : body;
    const m = (parsed as { message?: unknown } | null)?.message;
    return typeof m === 'string' ? m : `HTTP ${err.code}`;
  }
  return err instanceof Error ? err.message : String(err);
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return null;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
