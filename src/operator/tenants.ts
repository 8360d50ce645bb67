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
import { KubernetesObjectApi, PatchStrategy, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ClawplaneError } from '../errors.ts';
import type { PoolService } from '../pools/service.ts';
import type { WorkClaims } from '../replicas/claims.ts';
import type { Quotas, Tenant, TenantService } from '../tenancy/tenants.ts';
import { OperatorEvents } from './events.ts';
import { applyPool, type ExecutorPoolResource } from './pools.ts';

export const OPERATOR_FIELD_MANAGER = 'clawplane-operator';
export const ADOPT_ANNOTATION = 'clawplane.dev/adopt';
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

/** The spec fields this release stores; the rest are reported as not enforced (never silently dropped). */
const NOT_YET = ['tier', 'runtimeVersion', 'members', 'quotas.maxSandboxes', 'quotas.cpu', 'quotas.memory'] as const;

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
  claims?: WorkClaims;
  log: Logger;
  intervalMs?: number;
}

type Resource = (TenantResource | ExecutorPoolResource) & { kind?: string };

export class TenantOperator {
  readonly #api: KubernetesObjectApi;
  readonly #status: StatusApi;
  readonly #events: OperatorEvents;
  readonly #o: Omit<OperatorOptions, 'claims' | 'intervalMs'> & { claims: WorkClaims | undefined; intervalMs: number };
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;

  constructor(kc: KubeConfig, opts: OperatorOptions) {
    this.#api = KubernetesObjectApi.makeApiClient(kc);
    this.#status = kc.makeApiClient(StatusApi);
    this.#events = new OperatorEvents(kc, opts.namespace, opts.log);
    this.#o = { ...opts, claims: opts.claims, intervalMs: opts.intervalMs ?? 10_000 };
  }

  start(): void {
    const tick = () => {
      this.#running = this.pass()
        .catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'operator pass failed; retrying'))
        .finally(() => {
          if (this.#timer !== undefined) this.#timer = setTimeout(tick, this.#o.intervalMs);
        });
    };
    this.#timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
    await this.#o.claims?.release('operator', 'tenants');
  }

  /** One pass over every Tenant resource in the namespace. */
  async pass(): Promise<PassResult> {
    if (this.#o.claims && !(await this.#o.claims.claim('operator', 'tenants'))) return { applied: 0, refused: 0, active: false };
    const list = await this.#api.list<TenantResource>(API_VERSION, 'Tenant', this.#o.namespace);
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
    if (this.#o.pools) {
      const pools = await this.#api.list<ExecutorPoolResource>(API_VERSION, 'ExecutorPool', this.#o.namespace);
      for (const r of pools.items) {
        const outcome = await this.#reconcilePool(r, this.#o.pools, tenants);
        if (outcome.status === 'True') applied++;
        else refused++;
      }
    }
    return { applied, refused, active: true };
  }

  async #reconcilePool(r: ExecutorPoolResource, pools: PoolService, tenants: Map<string, string | undefined>): Promise<{ status: 'True' | 'False' }> {
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
    return { status: condition.status === 'True' ? 'True' : 'False' };
  }

  /** A refusal as a condition (its reason from the error's code), never a crash. */
  #refusal(err: unknown, r: Resource): Omit<Condition, 'lastTransitionTime' | 'observedGeneration'> {
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
    const generation = r.metadata.generation ?? 0;
    const by = { actor: 'operator', requestId: `tenant/${r.metadata.namespace ?? ''}/${r.metadata.name}` };
    let tenantId = r.status?.tenantId;
    let condition: Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;
    try {
      const spec = r.spec;
      if (!spec) throw new ClawplaneError('invalid_spec', 422, 'the resource has no spec');
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
      tenantId = t.id;
      const ignored = NOT_YET.filter(
        (f) => (f.startsWith('quotas.') ? spec.quotas?.[f.slice(7) as keyof NonNullable<TenantSpec['quotas']>] : spec[f as keyof TenantSpec]) !== undefined,
      );
      condition = {
        type: 'Ready',
        status: 'True',
        reason: 'Applied',
        message: `tenant ${t.slug} (${t.status}) matches the spec${ignored.length ? `; not enforced by this release: ${ignored.join(', ')}` : ''}`,
      };
    } catch (err) {
      // Refusals become the condition's reason (QuotaExceeded, SlugTaken, validation), never a crash.
      condition = this.#refusal(err, r);
    }
    await this.#finish(
      { ...r, kind: 'Tenant' },
      { ...(tenantId ? { tenantId } : {}), observedGeneration: generation, conditions: [this.#transition(r, condition, generation)] },
    );
    return { status: condition.status === 'True' ? 'True' : 'False', tenantId };
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
  if (q.dailyTokenBudget !== undefined) out.dailyTokenBudget = q.dailyTokenBudget;
  if (q.dailyCostBudgetUsd !== undefined) out.dailyCostBudgetUsd = Number(q.dailyCostBudgetUsd);
  if (spec.idleTimeoutMinutes !== undefined) out.idleTimeoutMinutes = spec.idleTimeoutMinutes;
  return out;
}

/** A ClawplaneError code as a condition reason (CamelCase, as Kubernetes conditions spell them). */
function reasonOf(code: string): string {
  if (/^[A-Z][A-Za-z]*$/.test(code)) return code;
  return code.replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase());
}
