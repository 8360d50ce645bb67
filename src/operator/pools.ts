/**
 * `ExecutorPool` resources (clawplane.dev/v1alpha1) onto Clawplane's executor pools (docs/adr/0014-executor-pools.md)
 * through the same PoolService the API uses, audited with the actor `operator` (docs/adr/0011-kubernetes.md).
 *
 * A pool belongs to the tenant of the `Tenant` resource its `tenantRef` names (that resource's
 * `status.tenantId`: only a tenant the operator manages). A pool created through the API is never touched:
 * a resource whose tenant already has a pool of its agent type that its status does not carry gets
 * Ready=False, reason PoolExists, unless annotated `clawplane.dev/adopt: "true"` (as a Tenant's SlugTaken).
 * The agent type of a pool cannot change (the service refuses it): a resource that changes it is refused.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { ClawplaneError } from '../errors.ts';
import type { PoolService } from '../pools/service.ts';
import type { Pool, PoolInput } from '../pools/types.ts';
import { AGENT_TYPES, type AgentType } from '../tasks/types.ts';

export interface ExecutorPoolSpec {
  tenantRef: { name: string };
  agentType: string;
  minExecutors?: number;
  maxExecutors: number;
  maxPerSandbox?: number;
  shards?: number;
  /** What deleting the resource does to the pool: Delete (default) drains and removes it; Retain keeps it. */
  deletionPolicy?: 'Retain' | 'Delete';
}

export interface ExecutorPoolResource extends KubernetesObject {
  metadata: NonNullable<KubernetesObject['metadata']> & { name: string };
  spec?: ExecutorPoolSpec;
  status?: { poolId?: string; tenantId?: string; observedGeneration?: number; executors?: number; sandboxes?: number; conditions?: unknown[] };
}

export interface PoolOutcome {
  message: string;
  /** What the status carries besides the conditions. */
  status: { poolId?: string; tenantId?: string; executors?: number; sandboxes?: number };
}

/** The pool the resource describes, created or changed to match; throws a ClawplaneError for a refusal. */
export async function applyPool(
  r: ExecutorPoolResource,
  o: { pools: PoolService; tenantIdOf: (tenantResource: string) => Promise<string | undefined>; adopt: boolean; by: { actor: string; requestId: string } },
): Promise<PoolOutcome> {
  const spec = r.spec;
  if (!spec) throw new ClawplaneError('invalid_spec', 422, 'the resource has no spec');
  const tenantId = await o.tenantIdOf(spec.tenantRef.name);
  if (!tenantId)
    throw new ClawplaneError(
      'invalid_spec',
      422,
      `tenantRef names Tenant "${spec.tenantRef.name}", which does not exist in this namespace or is not Ready (its status carries no tenant id); the pool is applied once it is.`,
    );
  if (!(AGENT_TYPES as readonly string[]).includes(spec.agentType))
    throw new ClawplaneError('invalid_spec', 422, `agentType "${spec.agentType}" is not an agent type Clawplane runs; use one of ${AGENT_TYPES.join(', ')}.`);
  const agentType = spec.agentType as AgentType;
  const want = {
    minExecutors: spec.minExecutors ?? 0,
    maxExecutors: spec.maxExecutors,
    shards: spec.shards ?? 1,
    executorsPerSandbox: spec.maxPerSandbox ?? 4,
  };
  const existing = (await o.pools.list(tenantId)).find((p) => p.agentType === agentType);
  const tracked = r.status?.poolId;
  let pool: Pool;
  if (tracked && existing?.id !== tracked) {
    const mine = (await o.pools.list(tenantId)).find((p) => p.id === tracked);
    if (mine)
      throw new ClawplaneError(
        'invalid_spec',
        422,
        `The pool's agent type cannot change (this resource's pool runs "${mine.agentType}"); create another ExecutorPool for "${agentType}".`,
      );
  }
  if (!existing) {
    pool = await o.pools.create(tenantId, { agentType, ...want } satisfies PoolInput, o.by);
  } else if (existing.id === tracked || o.adopt) {
    const patch = Object.fromEntries(Object.entries(want).filter(([k, v]) => existing[k as keyof typeof want] !== v));
    pool = Object.keys(patch).length ? await o.pools.update(tenantId, existing.id, patch, o.by) : existing;
  } else {
    throw new ClawplaneError(
      'pool_exists',
      409,
      `The tenant already has a "${agentType}" pool that was not created from this resource; the operator leaves it alone. Annotate clawplane.dev/adopt: "true" to manage it from here.`,
    );
  }
  const executors = pool.activeExecutors.reduce((a, b) => a + b, 0);
  return {
    message: `pool ${pool.agentType} (${pool.state}): ${executors} executor${executors === 1 ? '' : 's'} running in ${pool.sandboxes} sandbox${pool.sandboxes === 1 ? '' : 'es'}, ${pool.minExecutors}–${pool.maxExecutors} per shard, ${pool.shards} shard${pool.shards === 1 ? '' : 's'}`,
    status: { poolId: pool.id, tenantId, executors, sandboxes: pool.sandboxes },
  };
}
