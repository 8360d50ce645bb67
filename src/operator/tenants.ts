/**
 * The operator role (docs/adr/0011-kubernetes.md): `Tenant` and `ExecutorPool` resources
 * (clawplane.dev/v1alpha1) in its namespace are the declarative (GitOps) interface; the database stays the
 * source of truth. Each pass lists the Tenants, then the ExecutorPools (pools.ts), applies each spec
 * through the same service the API uses (TenantService, PoolService; audited with the actor `operator`),
 * and writes `status` back by server-side apply on the status subresource: a `Ready` condition with the
 * reason of any refusal, the database id, and the generation it saw. A refusal is also a Warning Event on
 * the resource (events.ts), once per change.
 *
 * A tenant created through the API is never touched: a resource whose slug names an existing tenant it did
 * not create (its status carries no such tenant id) gets Ready=False, reason SlugTaken, unless annotated
 * `clawplane.dev/adopt: "true"`. One operator is active at a time: each pass takes the `operator` lease
 * of ADR 0009 (work_claims), so replicas never race on a create.
 */
import { KubernetesObjectApi, PatchStrategy, Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ZodError } from 'zod';
import { ClawplaneError } from '../errors.ts';
import { isTenantRole, type OidcGroupMapping } from '../identity/oidc-groups.ts';
import { TENANT_ROLES } from '../identity/principal.ts';
import type { InstanceService } from '../instances/instances.ts';
import type { PoolService } from '../pools/service.ts';
import type { WorkClaims } from '../replicas/claims.ts';
import type { Quotas, Tenant, TenantService } from '../tenancy/tenants.ts';
import { OperatorEvents } from './events.ts';
import { applyPool, type ExecutorPoolResource } from './pools.ts';

export const OPERATOR_FIELD_MANAGER = 'clawplane-operator';
export const ADOPT_ANNOTATION = 'clawplane.dev/adopt';
/** On every Tenant and ExecutorPool the operator manages, so their deletion waits for it (deletionPolicy). */
export const FINALIZER = 'clawplane.dev/operator';
const API_VERSION = 'clawplane.dev/v1alpha1';

/** The Tenant resource's spec as the CRD defines it (the API server has validated it against the schema). */
export interface TenantSpec {
  slug: string;
  displayName: string;
  suspended?: boolean;
  tier?: string;
  runtimeVersion?: string;
  idleTimeoutMinutes?: number;
  quotas?: {
    maxInstances?: number;
    maxConcurrentTasks?: number;
    maxStorageBytes?: number;
    maxSandboxes?: number;
    cpu?: string | number;
    memory?: string | number;
    dailyTokenBudget?: number;
    dailyCostBudgetUsd?: string;
  };
  members?: { oidcGroup: string; role: string }[];
  /** What deleting the resource does to the tenant: Retain (default) keeps it and its data; Delete deletes it. */
  deletionPolicy?: 'Retain' | 'Delete';
}

interface TenantResource extends KubernetesObject {
  metadata: NonNullable<KubernetesObject['metadata']> & { name: string };
  spec?: TenantSpec;
  status?: { tenantId?: string; observedGeneration?: number; conditions?: Condition[] };
}

interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

/** Reported as not enforced when the operator runs without the instance service (never silently dropped). */
const NOT_YET = ['runtimeVersion'] as const;

/** The API's bound on the CPU and memory quotas (src/api/schemas.ts). */
const MAX_QUOTA = 100_000_000;

export interface PassResult {
  applied: number;
  refused: number;
  /** False when another replica held the operator lease. */
  active: boolean;
}

export interface OperatorOptions {
  namespace: string;
  tenants: TenantService;
  /** Absent: ExecutorPool resources are not read. */
  pools?: PoolService;
  /** Moves the tenant's instances to spec.runtimeVersion. Absent: runtimeVersion is reported as not enforced. */
  instances?: InstanceService;
  claims?: WorkClaims;
  log: Logger;
  /** The tiers sandboxes can run in (CLAWPLANE_KUBE_RUNTIME_CLASSES' keys); another is refused. Absent: any. */
  tiers?: string[];
  /** How often the lease is renewed (or taken over) and a failed list retried. Default 10 s. */
  intervalMs?: number;
  /** The full pass behind the watches, a safety net for a missed event. Default 10 min. */
  resyncMs?: number;
}

type Resource = (TenantResource | ExecutorPoolResource) & { kind?: string };

export class TenantOperator {
  readonly #api: KubernetesObjectApi;
  readonly #status: StatusApi;
  readonly #events: OperatorEvents;
  readonly #o: Omit<OperatorOptions, 'claims' | 'intervalMs' | 'resyncMs'> & { claims: WorkClaims | undefined; intervalMs: number; resyncMs: number };
  readonly #kc: KubeConfig;
  #stopped = true;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #watching = false;
  #kicked = false;
  #watchGen = 0;
  #watches: Promise<AbortController>[] = [];
  #lastPass = 0;
  #listed = { tenants: '', pools: '' };
  /** What the last pass and the watches since know: Tenant resource name → tenant id; the ExecutorPool resources. */
  #tenantIds = new Map<string, string | undefined>();
  #pools = new Map<string, ExecutorPoolResource>();
  /** ExecutorPools being deleted whose pool still drains: reconciled again every interval until it is gone. */
  #draining = new Map<string, ExecutorPoolResource>();

  constructor(kc: KubeConfig, opts: OperatorOptions) {
    this.#api = KubernetesObjectApi.makeApiClient(kc);
    this.#status = kc.makeApiClient(StatusApi);
    this.#events = new OperatorEvents(kc, opts.namespace, opts.log);
    this.#kc = kc;
    this.#o = { ...opts, claims: opts.claims, intervalMs: opts.intervalMs ?? 10_000, resyncMs: opts.resyncMs ?? 600_000 };
  }

  /**
   * Runs until stop(): while this replica holds the operator lease, a full pass (a list of each kind), then a
   * watch of each kind from the list's resourceVersion, each event reconciling the one resource it names
   * (a Tenant's also the pools that refer to it). A watch that drops or answers 410 Gone is replaced by a
   * new list and watch; a full pass every `resyncMs` is the safety net. The lease is renewed (or taken,
   * or found lost) every `intervalMs`.
   */
  start(): void {
    this.#stopped = false;
    this.#loop = this.#leaseLoop();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    this.#endWatches();
    await this.#queue;
    await this.#o.claims?.release('operator', 'tenants');
  }

  async #leaseLoop(): Promise<void> {
    while (!this.#stopped) {
      try {
        const held = !this.#o.claims || (await this.#o.claims.claim('operator', 'tenants'));
        if (!held) this.#endWatches();
        else if (!this.#watching || Date.now() - this.#lastPass >= this.#o.resyncMs) await this.#relist();
        else if (this.#o.pools)
          for (const p of [...this.#draining.values()]) await this.#serial(() => this.#reconcilePool(p, this.#o.pools as PoolService, this.#tenantIds));
      } catch (err) {
        this.#endWatches();
        this.#kicked = false;
        this.#o.log.warn({ err: (err as Error).message }, 'operator pass failed; retrying');
      }
      if (this.#kicked) {
        // A watch ended: list and watch again now (at most once a second: a server that ends every watch at once is not hammered).
        this.#kicked = false;
        await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - this.#lastPass))));
        continue;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.#o.intervalMs);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** A full pass, then watches from its lists' resourceVersions (replacing any open ones). */
  async #relist(): Promise<void> {
    this.#endWatches();
    const r = await this.#serial(() => this.pass());
    if (!r.active || this.#stopped) return;
    this.#watching = true;
    const gen = ++this.#watchGen;
    this.#watch('Tenant', 'tenants', this.#listed.tenants, gen);
    if (this.#o.pools) this.#watch('ExecutorPool', 'executorpools', this.#listed.pools, gen);
  }

  #watch(kind: 'Tenant' | 'ExecutorPool', plural: string, resourceVersion: string, gen: number): void {
    const current = () => gen === this.#watchGen && this.#watching && !this.#stopped;
    let rv = resourceVersion;
    let gone = false;
    const startedAt = Date.now();
    const relist = (why: string) => {
      if (!current()) return;
      this.#o.log.info({ kind, why }, 'operator watch lost its place; listing again');
      this.#watching = false;
      // Listed again by the lease loop, now rather than at its next tick.
      this.#kicked = true;
      this.#wake?.();
    };
    // client-node ends a watch that saw nothing for 30 s (its inactivity timeout): like any other end, it is
    // watched again from the last resourceVersion, one request per kind while the namespace is quiet.
    const ctl = new Watch(this.#kc).watch(
      `/apis/clawplane.dev/v1alpha1/namespaces/${this.#o.namespace}/${plural}`,
      { resourceVersion, allowWatchBookmarks: true },
      (phase: string, obj: Resource & { code?: number }) => {
        if (!current()) return;
        if (phase === 'ERROR') {
          gone = true;
          return relist(obj.code === 410 ? '410 Gone: the resourceVersion is too old' : `watch error ${obj.code ?? ''}`);
        }
        if (obj.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
        if (phase === 'BOOKMARK') return;
        void this.#serial(() => this.#onEvent(kind, phase, obj)).catch((err: unknown) =>
          this.#o.log.warn(
            { kind, resource: obj.metadata?.name, err: (err as Error).message },
            'operator could not apply a watched change; the next pass retries',
          ),
        );
      },
      // The stream ended (the server's timeout, a load balancer, a cut): watch again from the last
      // resourceVersion seen; a 410 for it lists again. A stream that ends at once waits a second first.
      (err: unknown) => {
        if (!current() || gone) return;
        if (err && !rv) return relist(`the watch failed: ${(err as Error).message}`);
        setTimeout(() => this.#watch(kind, plural, rv, gen), Math.max(0, 1000 - (Date.now() - startedAt)));
      },
    );
    this.#watches.push(ctl);
  }

  #endWatches(): void {
    this.#watching = false;
    this.#watchGen++;
    for (const w of this.#watches.splice(0)) void w.then((c) => c.abort()).catch(() => undefined);
  }

  /** One watched change: the resource it names (deletions change nothing in the database). */
  async #onEvent(kind: 'Tenant' | 'ExecutorPool', phase: string, obj: Resource): Promise<void> {
    if (this.#stopped) return;
    const name = obj.metadata.name;
    if (kind === 'Tenant') {
      if (phase === 'DELETED') {
        this.#tenantIds.delete(name);
        return;
      }
      const before = this.#tenantIds.get(name);
      const out = await this.#reconcile(obj as TenantResource);
      this.#tenantIds.set(name, out.tenantId);
      // A tenant just made (or adopted) lets the pools that wait for it be applied.
      if (out.tenantId !== before && this.#o.pools)
        for (const p of this.#pools.values()) if (p.spec?.tenantRef.name === name) await this.#reconcilePool(p, this.#o.pools, this.#tenantIds);
      return;
    }
    if (phase === 'DELETED') {
      this.#pools.delete(name);
      this.#draining.delete(name);
      return;
    }
    this.#pools.set(name, obj as ExecutorPoolResource);
    if (this.#o.pools) await this.#reconcilePool(obj as ExecutorPoolResource, this.#o.pools, this.#tenantIds);
  }

  /** Reconciles run one at a time (events, passes), so one resource is never applied twice at once. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** One pass over every Tenant, then every ExecutorPool, in the namespace. */
  async pass(): Promise<PassResult> {
    if (this.#o.claims && !(await this.#o.claims.claim('operator', 'tenants'))) return { applied: 0, refused: 0, active: false };
    const list = await this.#api.list<TenantResource>(API_VERSION, 'Tenant', this.#o.namespace);
    const poolList = this.#o.pools ? await this.#api.list<ExecutorPoolResource>(API_VERSION, 'ExecutorPool', this.#o.namespace) : undefined;
    let applied = 0;
    let refused = 0;
    // A pool's tenantRef is resolved to the tenant id its Tenant's status carries (now, in this pass).
    const tenants = new Map<string, string | undefined>();
    for (const r of list.items) {
      const outcome = await this.#reconcile(r);
      tenants.set(r.metadata.name, outcome.tenantId);
      if (outcome.status === 'True') applied++;
      else refused++;
    }
    if (this.#o.pools && poolList) {
      for (const r of poolList.items) {
        const outcome = await this.#reconcilePool(r, this.#o.pools, tenants);
        if (outcome.status === 'True') applied++;
        else refused++;
      }
    }
    this.#tenantIds = tenants;
    this.#pools = new Map((poolList?.items ?? []).map((p) => [p.metadata.name, p]));
    this.#listed = { tenants: list.metadata?.resourceVersion ?? '', pools: poolList?.metadata?.resourceVersion ?? '' };
    this.#lastPass = Date.now();
    return { applied, refused, active: true };
  }

  async #reconcilePool(r: ExecutorPoolResource, pools: PoolService, tenants: Map<string, string | undefined>): Promise<{ status: 'True' | 'False' }> {
    if (r.metadata.deletionTimestamp) return this.#finalizePool(r, pools);
    this.#draining.delete(r.metadata.name);
    const generation = r.metadata.generation ?? 0;
    let condition: Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;
    let extra: NonNullable<ExecutorPoolResource['status']>;
    try {
      const out = await applyPool(r, {
        pools,
        tenantIdOf: (name) => Promise.resolve(tenants.get(name)),
        adopt: r.metadata.annotations?.[ADOPT_ANNOTATION] === 'true',
        by: { actor: 'operator', requestId: `executorpool/${r.metadata.namespace ?? ''}/${r.metadata.name}` },
      });
      extra = out.status;
      condition = { type: 'Ready', status: 'True', reason: 'Applied', message: out.message };
    } catch (err) {
      extra = { ...(r.status?.poolId ? { poolId: r.status.poolId } : {}), ...(r.status?.tenantId ? { tenantId: r.status.tenantId } : {}) };
      condition = this.#refusal(err, r);
    }
    await this.#finish({ ...r, kind: 'ExecutorPool' }, { ...extra, observedGeneration: generation, conditions: [this.#transition(r, condition, generation)] });
    // After the status: the finalizer's own watch event then carries the pool id (a stale one would read as PoolExists).
    if (extra.poolId) await this.#ensureFinalizer({ ...r, kind: 'ExecutorPool' });
    return { status: condition.status === 'True' ? 'True' : 'False' };
  }

  /** A refusal as a condition (its reason from the error's code), never a crash. */
  #refusal(err: unknown, r: Resource): Omit<Condition, 'lastTransitionTime' | 'observedGeneration'> {
    // A service's own input check (a bound the CRD's CEL rules also state, which a cluster without them lets through).
    if (err instanceof ZodError)
      return {
        type: 'Ready',
        status: 'False',
        reason: 'InvalidSpec',
        message: err.issues.map((i) => `${i.path.join('.') || 'spec'}: ${i.message}`).join('; '),
      };
    const e = err instanceof ClawplaneError ? err : undefined;
    if (!e) this.#o.log.error({ err, resource: r.metadata.name }, 'operator could not apply a resource');
    return {
      type: 'Ready',
      status: 'False',
      reason: e ? reasonOf(e.code) : 'InternalError',
      message: e ? e.message : 'the operator failed on this resource; see its logs',
    };
  }

  /** Writes the status when it changed; a new or changed refusal is also a Warning Event on the resource. */
  async #finish(r: Resource & { kind: string }, status: Record<string, unknown> & { conditions: Condition[] }): Promise<void> {
    const prev = (r.status?.conditions as Condition[] | undefined)?.find((c) => c.type === 'Ready');
    const now = status.conditions.find((c) => c.type === 'Ready');
    await this.#writeStatus(r, status);
    if (now?.status === 'False' && (prev?.status !== now.status || prev.reason !== now.reason || prev.message !== now.message))
      await this.#events.warn(
        { apiVersion: API_VERSION, kind: r.kind, metadata: { ...r.metadata, namespace: r.metadata.namespace ?? this.#o.namespace } },
        now.reason,
        now.message,
      );
  }

  async #reconcile(r: TenantResource): Promise<{ status: 'True' | 'False'; tenantId: string | undefined }> {
    if (r.metadata.deletionTimestamp) return this.#finalizeTenant(r);
    const generation = r.metadata.generation ?? 0;
    const by = { actor: 'operator', requestId: `tenant/${r.metadata.namespace ?? ''}/${r.metadata.name}` };
    let tenantId = r.status?.tenantId;
    let condition: Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;
    try {
      const spec = r.spec;
      if (!spec) throw new ClawplaneError('invalid_spec', 422, 'the resource has no spec');
      // Checked before anything is written: a tier with no RuntimeClass would fail every start of the tenant.
      if (spec.tier !== undefined && this.#o.tiers && !this.#o.tiers.includes(spec.tier))
        throw new ClawplaneError(
          'invalid_spec',
          422,
          `tier "${spec.tier}" has no RuntimeClass on this platform (CLAWPLANE_KUBE_RUNTIME_CLASSES has ${this.#o.tiers.join(', ') || 'none'}); use one of those, or ask the platform admin to add it.`,
        );
      // Checked before anything is written too: an unknown version would fail every start of the tenant.
      if (spec.runtimeVersion !== undefined && this.#o.instances && !(await this.#o.instances.hasRuntime(spec.runtimeVersion)))
        throw new ClawplaneError(
          'runtime_missing',
          409,
          `runtimeVersion ${spec.runtimeVersion} is not installed on this control plane (only the default, ${this.#o.instances.defaultRuntimeVersion}, is pulled on demand): a platform admin must run "clawplane runtime pull openclaw@${spec.runtimeVersion}" first. Nothing was changed.`,
        );
      const existing = await this.#o.tenants.find(spec.slug);
      const adopt = r.metadata.annotations?.[ADOPT_ANNOTATION] === 'true';
      let t: Tenant;
      if (!existing) {
        t = await this.#o.tenants.create({ slug: spec.slug, name: spec.displayName, quotas: quotasOf(spec) }, by);
      } else if (existing.id === tenantId || adopt) {
        t = existing;
        const quotas = quotasOf(spec);
        const changed = t.name !== spec.displayName || Object.entries(quotas).some(([k, v]) => t.quotas[k as keyof Quotas] !== v);
        if (changed) t = await this.#o.tenants.update(t.id, { name: spec.displayName, quotas }, by);
      } else {
        throw new ClawplaneError(
          'slug_taken',
          409,
          `A tenant with slug "${spec.slug}" already exists and was not created from this resource; the operator leaves it alone. Annotate ${ADOPT_ANNOTATION}: "true" to manage it from here.`,
        );
      }
      const want = spec.suspended ? 'suspended' : 'active';
      if (t.status !== want) t = await this.#o.tenants.setStatus(t.id, want, { ...by, reason: 'Tenant resource spec.suspended' });
      const tier = spec.tier ?? null;
      if ((await this.#o.tenants.tier(t.id)) !== tier) await this.#o.tenants.setTier(t.id, tier, by);
      // Members by OIDC group: the resource owns the tenant's whole mapping (none listed: none mapped).
      const groups = (spec.members ?? []).map((m) => ({ group: m.oidcGroup, role: m.role })).sort((a, b) => (a.group < b.group ? -1 : 1));
      const bad = groups.find((g) => !isTenantRole(g.role));
      if (bad) throw new ClawplaneError('invalid_spec', 422, `members: role "${bad.role}" of group "${bad.group}" is not one of ${TENANT_ROLES.join(', ')}`);
      if (JSON.stringify(await this.#o.tenants.oidcGroups(t.id)) !== JSON.stringify(groups))
        await this.#o.tenants.setOidcGroups(t.id, groups as OidcGroupMapping[], by);
      const runtime = this.#o.instances ? await this.#applyRuntime(t, spec.runtimeVersion ?? null, this.#o.instances, by) : '';
      tenantId = t.id;
      const ignored = NOT_YET.filter((f) => f !== 'runtimeVersion' || !this.#o.instances).filter(
        (f) => (f.startsWith('quotas.') ? spec.quotas?.[f.slice(7) as keyof NonNullable<TenantSpec['quotas']>] : spec[f as keyof TenantSpec]) !== undefined,
      );
      condition = {
        type: 'Ready',
        status: 'True',
        reason: 'Applied',
        message: `tenant ${t.slug} (${t.status}) matches the spec${runtime}${groups.length ? `; ${groups.length} OIDC group${groups.length === 1 ? '' : 's'} mapped to roles` : ''}${ignored.length ? `; not enforced by this release: ${ignored.join(', ')}` : ''}`,
      };
    } catch (err) {
      // Refusals become the condition's reason (QuotaExceeded, SlugTaken, validation), never a crash.
      condition = this.#refusal(err, r);
    }
    await this.#finish(
      { ...r, kind: 'Tenant' },
      { ...(tenantId ? { tenantId } : {}), observedGeneration: generation, conditions: [this.#transition(r, condition, generation)] },
    );
    // After the status: the finalizer's own watch event then carries the tenant id (a stale one would read as SlugTaken).
    if (tenantId) await this.#ensureFinalizer({ ...r, kind: 'Tenant' });
    return { status: condition.status === 'True' ? 'True' : 'False', tenantId };
  }

  /**
   * spec.runtimeVersion: the tenant's instances are upgraded to it (each through InstanceService.upgrade,
   * as `POST .../upgrade` does: state kept, a failed health check rolls back), then the tenant's version is
   * recorded, which new instances deploy with. The upgrades are asked only while the recorded version
   * differs from the spec (so an instance that rolled back is not upgraded again on every reconcile: the
   * condition names it; a new version in the spec tries again). Unset: the platform default for new
   * instances; running ones keep their version (no downgrade is implied). Returns the condition's note.
   */
  async #applyRuntime(t: Tenant, want: string | null, instances: InstanceService, by: { actor: string; requestId: string }): Promise<string> {
    const have = await this.#o.tenants.runtimeVersion(t.id);
    if (want !== have) {
      if (want !== null)
        for (const i of await instances.list(t.id))
          if (i.runtimeVersion !== want && i.desiredState !== 'destroyed') await instances.upgrade(t.id, i.id, { runtimeVersion: want }, by);
      await this.#o.tenants.setRuntimeVersion(t.id, want, by);
    }
    if (want === null) return '';
    const all = (await instances.list(t.id)).filter((i) => i.desiredState !== 'destroyed');
    const off = all.filter((i) => i.runtimeVersion !== want);
    const names = off.slice(0, 5).map((i) => `${i.name} (${i.runtimeVersion})`);
    return `; runtime ${want} on ${all.length - off.length} of ${all.length} instance${all.length === 1 ? '' : 's'}${off.length ? `, not on it: ${names.join(', ')}${off.length > 5 ? ', …' : ''}` : ''}`;
  }

  /**
   * A managed resource carries the operator's finalizer, so deleting it (kubectl delete, a GitOps prune)
   * waits until the operator has applied its deletionPolicy, even when the operator was down at the time.
   * Server-side applied with the operator's field manager, which owns only this list entry: the spec
   * stays the user's.
   */
  async #ensureFinalizer(r: Resource & { kind: string }): Promise<void> {
    if (r.metadata.finalizers?.includes(FINALIZER)) return;
    await this.#setFinalizer(r, true);
  }

  async #setFinalizer(r: Resource & { kind: string }, on: boolean): Promise<void> {
    const ns = r.metadata.namespace ?? this.#o.namespace;
    await this.#api.patch(
      { apiVersion: API_VERSION, kind: r.kind, metadata: { name: r.metadata.name, namespace: ns, finalizers: on ? [FINALIZER] : [] } } as KubernetesObject,
      undefined,
      undefined,
      OPERATOR_FIELD_MANAGER,
      false,
      PatchStrategy.ServerSideApply,
    );
  }

  #involved(r: Resource & { kind: string }) {
    return { apiVersion: API_VERSION, kind: r.kind, metadata: { ...r.metadata, namespace: r.metadata.namespace ?? this.#o.namespace } };
  }

  /**
   * A Tenant resource being deleted (docs/adr/0011-kubernetes.md, "Deletion"): `Retain` (the default)
   * leaves the tenant, its instances and their state in the database, managed through the API from then
   * on; `Delete` deletes the tenant and everything it owns, as `DELETE /api/v1/tenants/{tenant}` does.
   * Either is audited (actor `operator`) and a Normal Event says which; then the finalizer goes and so does
   * the resource. A failure keeps the finalizer (the resource stays Terminating) with the reason in the
   * condition and a Warning Event; the next reconcile tries again.
   */
  async #finalizeTenant(r: TenantResource): Promise<{ status: 'True' | 'False'; tenantId: string | undefined }> {
    const tenantId = r.status?.tenantId;
    if (!r.metadata.finalizers?.includes(FINALIZER)) return { status: 'True', tenantId };
    const policy = r.spec?.deletionPolicy ?? 'Retain';
    const by = { actor: 'operator', requestId: `tenant/${r.metadata.namespace ?? ''}/${r.metadata.name}` };
    const res = { ...r, kind: 'Tenant' };
    try {
      const t = tenantId ? await this.#o.tenants.find(tenantId) : undefined;
      if (t && policy === 'Delete') {
        await this.#o.tenants.remove(t.id, by);
        await this.#events.normal(
          this.#involved(res),
          'TenantDeleted',
          `The Tenant resource was deleted with spec.deletionPolicy: Delete: tenant ${t.slug} (${t.id}) and everything it owned were deleted.`,
        );
      } else if (t) {
        await this.#o.tenants.released(t.id, { ...by, reason: 'Tenant resource deleted; spec.deletionPolicy: Retain' });
        await this.#events.normal(
          this.#involved(res),
          'TenantRetained',
          `The Tenant resource was deleted; tenant ${t.slug} (${t.id}) is kept with its instances and data (spec.deletionPolicy: Retain) and is managed through the API from now on. To delete it: DELETE /api/v1/tenants/${t.slug}?confirm=${t.slug}; to manage it from a resource again: the ${ADOPT_ANNOTATION} annotation.`,
        );
      }
      await this.#setFinalizer(res, false);
      return { status: 'True', tenantId: undefined };
    } catch (err) {
      const c = this.#refusal(err, r);
      const generation = r.metadata.generation ?? 0;
      await this.#finish(res, {
        ...(tenantId ? { tenantId } : {}),
        observedGeneration: generation,
        conditions: [this.#transition(r, { ...c, message: `deletion (${policy}) failed: ${c.message}` }, generation)],
      });
      return { status: 'False', tenantId };
    }
  }

  /**
   * An ExecutorPool resource being deleted: `Delete` (its default: a pool holds no tenant data; its tasks'
   * records stay with the tenant) drains the pool (no new tasks) and removes it once its unfinished tasks
   * have ended, as `DELETE .../pools/{pool}` would after a drain; until then the resource stays
   * Terminating with `Ready=False, reason=Draining` and is looked at again every interval. `Retain` leaves
   * the pool as it is. A Normal Event says which.
   */
  async #finalizePool(r: ExecutorPoolResource, pools: PoolService): Promise<{ status: 'True' | 'False' }> {
    const name = r.metadata.name;
    if (!r.metadata.finalizers?.includes(FINALIZER)) {
      this.#draining.delete(name);
      return { status: 'True' };
    }
    const policy = r.spec?.deletionPolicy ?? 'Delete';
    const by = { actor: 'operator', requestId: `executorpool/${r.metadata.namespace ?? ''}/${name}` };
    const res = { ...r, kind: 'ExecutorPool' };
    const { poolId, tenantId } = r.status ?? {};
    const generation = r.metadata.generation ?? 0;
    try {
      const pool = poolId && tenantId ? (await pools.list(tenantId)).find((p) => p.id === poolId) : undefined;
      if (pool && tenantId && policy === 'Delete') {
        if (pool.state !== 'draining') await pools.setState(tenantId, pool.id, 'draining', by);
        try {
          await pools.remove(tenantId, pool.id, by);
        } catch (err) {
          if (!(err instanceof ClawplaneError) || err.code !== 'pool_busy') throw err;
          this.#draining.set(name, r);
          await this.#finish(res, {
            ...(r.status ?? {}),
            observedGeneration: generation,
            conditions: [
              this.#transition(
                r,
                {
                  type: 'Ready',
                  status: 'False',
                  reason: 'Draining',
                  message: `being deleted: the pool takes no new tasks and is removed once ${err.message.replace(/^The pool still has /, '').replace(/: drain.*$/, '')} end`,
                },
                generation,
              ),
            ],
          });
          return { status: 'False' };
        }
        await this.#events.normal(
          this.#involved(res),
          'PoolDeleted',
          `The ExecutorPool resource was deleted: the ${pool.agentType} pool (${pool.id}) was drained and removed (spec.deletionPolicy: Delete).`,
        );
      } else if (pool) {
        await this.#events.normal(
          this.#involved(res),
          'PoolRetained',
          `The ExecutorPool resource was deleted; the ${pool.agentType} pool (${pool.id}) is kept as it is (spec.deletionPolicy: Retain) and is managed through the API from now on.`,
        );
      }
      await this.#setFinalizer(res, false);
      this.#draining.delete(name);
      return { status: 'True' };
    } catch (err) {
      const c = this.#refusal(err, r);
      this.#draining.set(name, r);
      await this.#finish(res, {
        ...(r.status ?? {}),
        observedGeneration: generation,
        conditions: [this.#transition(r, { ...c, message: `deletion (${policy}) failed: ${c.message}` }, generation)],
      });
      return { status: 'False' };
    }
  }

  /** lastTransitionTime moves only when the status changes (metav1.Condition semantics). */
  #transition(r: Resource, c: Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>, generation: number): Condition {
    const prev = (r.status?.conditions as Condition[] | undefined)?.find((x) => x.type === c.type);
    return {
      ...c,
      observedGeneration: generation,
      lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
  }

  async #writeStatus(r: Resource & { kind: string }, status: Record<string, unknown>): Promise<void> {
    const same = JSON.stringify(r.status ?? {}) === JSON.stringify(status);
    if (same) return;
    const ns = r.metadata.namespace ?? this.#o.namespace;
    // The status subresource: server-side apply with our own field manager (spec stays the user's).
    await this.#status.patch(
      { apiVersion: API_VERSION, kind: r.kind, metadata: { name: r.metadata.name, namespace: ns }, status } as KubernetesObject,
      undefined,
      undefined,
      OPERATOR_FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
  }
}

/** The object API aimed at the `/status` subresource (client-node has no generic status call). */
class StatusApi extends KubernetesObjectApi {
  protected override async specUriPath(spec: KubernetesObject, action: Parameters<KubernetesObjectApi['specUriPath']>[1]): Promise<string> {
    return `${await super.specUriPath(spec, action)}/status`;
  }
}

function quotasOf(spec: TenantSpec): Partial<Quotas> {
  const q = spec.quotas ?? {};
  const out: Partial<Quotas> = {};
  if (q.maxInstances !== undefined) out.maxInstances = q.maxInstances;
  if (q.maxConcurrentTasks !== undefined) out.maxConcurrentTasks = q.maxConcurrentTasks;
  if (q.maxStorageBytes !== undefined) out.maxStorageBytes = q.maxStorageBytes;
  // Unset is "no bound" (null), so removing it from the resource removes the bound.
  out.maxSandboxes = q.maxSandboxes ?? null;
  if (q.dailyTokenBudget !== undefined) out.dailyTokenBudget = q.dailyTokenBudget;
  if (q.dailyCostBudgetUsd !== undefined) out.dailyCostBudgetUsd = Number(q.dailyCostBudgetUsd);
  if (spec.idleTimeoutMinutes !== undefined) out.idleTimeoutMinutes = spec.idleTimeoutMinutes;
  // What the tenant's executor pools may reserve in total (src/pools/service.ts checks it), from Kubernetes quantities.
  if (q.cpu !== undefined) out.maxCpuMillis = bounded('quotas.cpu', cpuMillis(q.cpu), 'millicores');
  if (q.memory !== undefined) out.maxMemoryMb = bounded('quotas.memory', memoryMiB(q.memory), 'MiB');
  return out;
}

/** A CPU quantity ("4", "2.5", "2500m", 4) in millicores, rounded up (as the API server rounds quantities). */
export function cpuMillis(q: string | number): number {
  const s = String(q);
  return s.endsWith('m') ? Math.ceil(Number(s.slice(0, -1))) : Math.ceil(Number(s) * 1000);
}

const MEMORY_UNITS: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };

/** A memory quantity ("8Gi", "512Mi", "1G", bytes) in MiB, rounded down (a quota never grows past what was written). */
export function memoryMiB(q: string | number): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$/.exec(String(q));
  if (!m) throw new ClawplaneError('invalid_spec', 422, `quotas.memory "${q}" is not a memory quantity such as 8Gi or 512Mi`);
  return Math.floor((Number(m[1]) * (MEMORY_UNITS[m[2] ?? ''] ?? 1)) / 2 ** 20);
}

function bounded(field: string, v: number, unit: string): number {
  if (!Number.isFinite(v) || v < 0 || v > MAX_QUOTA)
    throw new ClawplaneError('invalid_spec', 422, `${field} is ${v} ${unit}, more than Clawplane's limit of ${MAX_QUOTA}`);
  return v;
}

/** A ClawplaneError code as a condition reason (CamelCase, as Kubernetes conditions spell them). */
function reasonOf(code: string): string {
  if (/^[A-Z][A-Za-z]*$/.test(code)) return code;
  return code.replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase());
}
