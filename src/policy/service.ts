import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { EventChannel } from '../events/channel.ts';
import { createLogger } from '../observability/logger.ts';
import { compileBaseline, compilePolicy, compileTenantPolicies, type CompiledPolicy } from './compile.ts';
import { PolicyEngine, type LoadedPolicySet } from './engine.ts';
import { ToolRegistry } from './tools.ts';
import type { EffectiveToolLists, PolicyDecision, PolicyScope, PolicySource, ToolRequest } from './types.ts';

export type ExecPolicy = 'deny' | 'ask';

/** A baseline policy as the API shows it. */
export interface BaselinePolicy extends PolicySource {
  effect: 'permit' | 'forbid';
  approval: boolean;
  contextual: boolean;
}

/** A tenant's tool governance: exec setting and forbid-only restrictions. */
export interface TenantToolPolicy {
  execPolicy: ExecPolicy;
  policies: PolicySource[];
  version: number;
  updatedAt: Date | null;
}

interface TenantSet {
  execPolicy: ExecPolicy;
  set: LoadedPolicySet;
}

interface Stamp {
  actor: string;
  requestId?: string;
}

/** Stored form of a restriction: exactly the fields people wrote (no compiled text). */
function sourceOf(p: PolicySource): PolicySource {
  const out: PolicySource = { id: p.id, description: p.description, cedar: p.cedar };
  if (p.scope && (p.scope.agent !== undefined || p.scope.channel !== undefined)) {
    const scope: PolicyScope = {};
    if (p.scope.agent !== undefined) scope.agent = p.scope.agent;
    if (p.scope.channel !== undefined) scope.channel = p.scope.channel;
    out.scope = scope;
  }
  return out;
}

/**
 * Tool policy (issue 5, item 5): the platform baseline and each tenant's forbid-only restrictions,
 * stored in the database and compiled into one preparsed Cedar policy set per tenant. Sets are cached
 * and rebuilt on the next decision after a change made through any replica (the event channel carries
 * `policy.changed`); while the channel is down nothing is cached: every decision reads the database
 * (fail closed, docs/adr/0009-replica-coordination.md).
 */
export class PolicyService {
  readonly tools: ToolRegistry;
  private readonly db: Db;
  private readonly engine = new PolicyEngine();
  private baseline: Promise<CompiledPolicy[]> | undefined;
  private readonly sets = new Map<string, Promise<TenantSet>>();
  private loads = 0;
  /** The baseline's Cedar text as written (for display), by policy id. */
  private sourceText = new Map<string, string>();
  private readonly events: EventChannel;

  /** Without `events`, changes are seen by this process only (one process, as in unit tests). */
  constructor(db: Db, events: EventChannel = EventChannel.local(createLogger('silent'))) {
    this.db = db;
    this.events = events;
    this.tools = new ToolRegistry(db, events);
    events.on('policy.changed', ({ tenantId }) => this.invalidate(tenantId ?? undefined));
    events.onReset(() => this.invalidate());
  }

  /** The platform baseline, in order. */
  async getBaseline(): Promise<BaselinePolicy[]> {
    return (await this.baselinePolicies()).map((p) => ({
      id: p.id.slice('baseline/'.length),
      description: p.description,
      cedar: this.sourceText.get(p.id) ?? p.text,
      effect: p.effect,
      approval: p.approval,
      contextual: p.contextual,
    }));
  }

  /** Replaces the platform baseline (platform admin). Validated against the schema first; audited. */
  async setBaseline(sources: PolicySource[], by: Stamp): Promise<BaselinePolicy[]> {
    compileBaseline(sources.map((s) => ({ id: s.id, description: s.description, cedar: s.cedar })));
    await this.db.tx(async (tx) => {
      await tx.query('DELETE FROM policy_baseline');
      for (const [i, s] of sources.entries()) {
        await tx.query('INSERT INTO policy_baseline (id, position, description, cedar, updated_by) VALUES ($1, $2, $3, $4, $5)', [
          s.id,
          i + 1,
          s.description,
          s.cedar,
          by.actor,
        ]);
      }
      await appendAudit(tx, {
        actor: by.actor,
        action: 'policy.baseline.update',
        target: 'policy:baseline',
        decision: 'success',
        detail: { policyIds: sources.map((s) => `baseline/${s.id}`) },
        requestId: by.requestId ?? null,
      });
      await this.events.publish(tx, 'policy.changed', { tenantId: null });
    });
    return this.getBaseline();
  }

  async getTenantPolicy(tenantId: string): Promise<TenantToolPolicy> {
    const r = await this.db.query<{ exec_policy: ExecPolicy; policies: PolicySource[]; version: number; updated_at: Date }>(
      'SELECT exec_policy, policies, version, updated_at FROM tenant_tool_policies WHERE tenant_id = $1',
      [tenantId],
    );
    const row = r.rows[0];
    if (!row) return { execPolicy: 'deny', policies: [], version: 0, updatedAt: null };
    return { execPolicy: row.exec_policy, policies: row.policies, version: row.version, updatedAt: row.updated_at };
  }

  /**
   * Replaces a tenant's restrictions (tenant admin). Refuses any permit and anything the schema does not
   * allow, with a 400 naming the policy; audited in the same transaction.
   */
  async setTenantPolicy(tenantId: string, input: { execPolicy: ExecPolicy; policies: PolicySource[] }, by: Stamp): Promise<TenantToolPolicy> {
    const sources = input.policies.map(sourceOf);
    compileTenantPolicies(sources);
    await this.db.tx(async (tx) => {
      const r = await tx.query<{ version: number }>(
        `INSERT INTO tenant_tool_policies (tenant_id, exec_policy, policies, version, updated_at, updated_by)
         VALUES ($1, $2, $3, 1, now(), $4)
         ON CONFLICT (tenant_id) DO UPDATE SET exec_policy = EXCLUDED.exec_policy, policies = EXCLUDED.policies,
           version = tenant_tool_policies.version + 1, updated_at = now(), updated_by = EXCLUDED.updated_by
         RETURNING version`,
        [tenantId, input.execPolicy, JSON.stringify(sources), by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'policy.tenant.update',
        target: `tenant:${tenantId}`,
        decision: 'success',
        detail: { execPolicy: input.execPolicy, policyIds: sources.map((s) => `tenant/${s.id}`), version: r.rows[0]?.version ?? null },
        requestId: by.requestId ?? null,
      });
      await this.events.publish(tx, 'policy.changed', { tenantId });
    });
    return this.getTenantPolicy(tenantId);
  }

  /** Decides one tool use. An unknown tool is denied (the registry is the list of what exists). */
  async decide(tenantId: string, req: ToolRequest): Promise<PolicyDecision> {
    const tool = await this.tools.get(req.tool);
    if (!tool) {
      return {
        outcome: 'deny',
        policyIds: [],
        policies: [],
        explanation: `Denied: "${req.tool}" is not in the tool registry, so no policy can permit it. A platform admin can register it.`,
        errors: [],
      };
    }
    return this.withSet(tenantId, ({ execPolicy, set }) => this.engine.decide(set, { tenantId, execPolicy, agent: req.agent, tool, context: req.context }));
  }

  /** Runs `fn` on the tenant's set: the cached one while the event channel is live, else one built for this call. */
  private async withSet<T>(tenantId: string, fn: (s: TenantSet) => T): Promise<T> {
    if (this.events.live) return fn(await this.tenantSet(tenantId));
    const s = await this.buildSet(tenantId, `${tenantId}:${++this.loads}`, this.loadBaseline());
    try {
      return fn(s);
    } finally {
      this.engine.unload(s.set);
    }
  }

  /**
   * The tools an agent may use, must ask for, and may never use, for rendering into the tenant's
   * OpenClaw config (`tools.allow` / `tools.deny`): defence in depth, the broker still decides each use.
   * Decided without a context; a tool denied only by @contextual forbids (scopes) is listed as allowed,
   * since some contexts permit it.
   */
  async effectiveToolLists(tenantId: string, agent = 'main'): Promise<EffectiveToolLists & { decisions: Record<string, PolicyDecision> }> {
    const lists: EffectiveToolLists & { decisions: Record<string, PolicyDecision> } = { allow: [], requiresApproval: [], deny: [], decisions: {} };
    // Tools first: no await may fall between taking the set and the last decision on it (see drop()).
    const tools = await this.tools.list();
    return this.withSet(tenantId, ({ execPolicy, set }) => {
      for (const tool of tools) {
        const d = this.engine.decide(set, { tenantId, execPolicy, agent, tool, context: {} });
        lists.decisions[tool.name] = d;
        if (d.outcome === 'allow') lists.allow.push(tool.name);
        else if (d.outcome === 'requires_approval') lists.requiresApproval.push(tool.name);
        else if (d.policyIds.length > 0 && d.policyIds.every((id) => set.meta.get(id)?.contextual === true)) lists.allow.push(tool.name);
        else lists.deny.push(tool.name);
      }
      return lists;
    });
  }

  /** Drops cached policy sets in this process: one tenant's, or all (baseline changed, channel reset). */
  invalidate(tenantId?: string): void {
    if (tenantId === undefined) {
      this.baseline = undefined;
      for (const id of [...this.sets.keys()]) this.drop(id);
    } else {
      this.drop(tenantId);
    }
  }

  private drop(tenantId: string): void {
    const p = this.sets.get(tenantId);
    this.sets.delete(tenantId);
    // Free the preparsed sets once no decision can still pick them up from the cache.
    if (p)
      p.then(
        (s) => this.engine.unload(s.set),
        () => undefined,
      ).catch(() => undefined);
  }

  private baselinePolicies(): Promise<CompiledPolicy[]> {
    if (!this.events.live) return this.loadBaseline();
    const p = (this.baseline ??= this.loadBaseline());
    p.catch(() => {
      if (this.baseline === p) this.baseline = undefined;
    });
    return p;
  }

  private async loadBaseline(): Promise<CompiledPolicy[]> {
    const r = await this.db.query<{ id: string; description: string; cedar: string }>(
      'SELECT id, description, cedar FROM policy_baseline ORDER BY position, id',
    );
    const compiled = r.rows.map((row) => compilePolicy('baseline', row));
    this.sourceText = new Map(r.rows.map((row) => [`baseline/${row.id}`, row.cedar]));
    return compiled;
  }

  private tenantSet(tenantId: string): Promise<TenantSet> {
    let p = this.sets.get(tenantId);
    if (!p) {
      p = this.buildSet(tenantId, `${tenantId}:${++this.loads}`, this.baselinePolicies());
      this.sets.set(tenantId, p);
      p.catch(() => {
        if (this.sets.get(tenantId) === p) this.sets.delete(tenantId);
      });
    }
    return p;
  }

  private async buildSet(tenantId: string, key: string, baselineP: Promise<CompiledPolicy[]>): Promise<TenantSet> {
    const [baseline, tenant] = await Promise.all([baselineP, this.getTenantPolicy(tenantId)]);
    let restrictions: CompiledPolicy[];
    try {
      restrictions = compileTenantPolicies(tenant.policies);
    } catch (err) {
      // Stored restrictions that no longer compile (a schema change) must not silently vanish:
      // fail closed with a forbid-all that says why, until a tenant admin saves valid ones.
      restrictions = [
        compilePolicy('tenant', {
          id: 'invalid-restrictions',
          description: `This tenant's restrictions no longer validate (${err instanceof Error ? err.message : String(err)}); every tool is refused until a tenant admin fixes them`,
          cedar: 'forbid (principal, action, resource);',
        }),
      ];
    }
    return { execPolicy: tenant.execPolicy, set: this.engine.load(key, [...baseline, ...restrictions]) };
  }
}
