import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { NotFoundError } from '../errors.ts';
import { swarmRuleInput, type SwarmPolicy, type SwarmRule, type SwarmRuleInput, type SwarmStep } from './types.ts';

interface Row {
  id: string;
  tenant_id: string;
  name: string;
  capability: string;
  steps: SwarmStep[];
  policy: SwarmPolicy;
  quorum: number | null;
  created_at: Date;
  updated_at: Date;
}

const toRule = (r: Row): SwarmRule => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  capability: r.capability,
  steps: r.steps,
  policy: r.policy,
  quorum: r.quorum,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The tenant's swarm rules (CRUD, audited); name and capability are unique per tenant (409 from the index). */
export class SwarmRuleService {
  readonly #db: Db;
  constructor(db: Db) {
    this.#db = db;
  }

  async list(tenantId: string): Promise<SwarmRule[]> {
    const r = await this.#db.query<Row>('SELECT * FROM swarm_rules WHERE tenant_id = $1 ORDER BY name', [tenantId]);
    return r.rows.map(toRule);
  }

  /** By id or name. */
  async get(tenantId: string, ref: string, q: Queryable = this.#db): Promise<SwarmRule> {
    const r = await q.query<Row>(`SELECT * FROM swarm_rules WHERE tenant_id = $1 AND ${UUID.test(ref) ? 'id' : 'name'} = $2`, [tenantId, ref]);
    if (!r.rows[0]) throw new NotFoundError('Swarm rule');
    return toRule(r.rows[0]);
  }

  /** The rule a new task with this capability follows, if any. */
  async forCapability(q: Queryable, tenantId: string, capability: string): Promise<SwarmRule | undefined> {
    const r = await q.query<Row>('SELECT * FROM swarm_rules WHERE tenant_id = $1 AND capability = $2', [tenantId, capability]);
    return r.rows[0] ? toRule(r.rows[0]) : undefined;
  }

  async create(tenantId: string, raw: SwarmRuleInput, by: { actor: string; requestId?: string | undefined }): Promise<SwarmRule> {
    const input = swarmRuleInput.parse(raw);
    return this.#db.tx(async (tx) => {
      const r = await tx.query<Row>(
        'INSERT INTO swarm_rules (tenant_id, name, capability, steps, policy, quorum) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
        [tenantId, input.name, input.capability, JSON.stringify(input.steps), input.policy, input.quorum ?? null],
      );
      const rule = toRule(r.rows[0] as Row);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'swarm_rule.create',
        target: `swarm_rule:${rule.id}`,
        decision: 'success',
        detail: { name: rule.name, capability: rule.capability, agentTypes: rule.steps.map((s) => s.agentType), policy: rule.policy, quorum: rule.quorum },
        requestId: by.requestId ?? null,
      });
      return rule;
    });
  }

  async remove(tenantId: string, ref: string, by: { actor: string; requestId?: string | undefined }): Promise<void> {
    await this.#db.tx(async (tx) => {
      const cur = await this.get(tenantId, ref, tx);
      await tx.query('DELETE FROM swarm_rules WHERE tenant_id = $1 AND id = $2', [tenantId, cur.id]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'swarm_rule.delete',
        target: `swarm_rule:${cur.id}`,
        decision: 'success',
        detail: { name: cur.name },
        requestId: by.requestId ?? null,
      });
    });
  }
}
