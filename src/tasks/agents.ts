import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ConflictError, NotFoundError } from '../errors.ts';
import { AGENT_TYPES, HIGH_RISK_TYPES, type Agent, type AgentType, type RiskClass } from './types.ts';

/**
 * Agent definitions per tenant (issue 8, item 2): what dispatch matches tasks against. The risk class
 * follows the agent type (shell and browser are high risk and run in their own sandbox); it is stored so
 * a future "high" for other types needs no migration.
 */
const Name = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'lowercase letters, digits and inner hyphens, at most 40, e.g. "researcher"');
const Capability = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, 'a capability such as "summarise" or "slack.post"');

export const agentInput = z.strictObject({
  name: Name,
  agentType: z.enum(AGENT_TYPES).default('chat'),
  capabilities: z.array(Capability).max(50).default([]),
  model: z.string().min(1).max(200).nullable().default(null).describe('Model override (a model id the broker routes); null: the tenant default'),
  trustLevel: z.number().int().min(0).max(3).default(1).describe('0 = never dispatched; dispatch prefers higher'),
});
export type AgentInput = z.input<typeof agentInput>;

export const agentPatch = z.strictObject({
  agentType: z.enum(AGENT_TYPES).optional(),
  capabilities: z.array(Capability).max(50).optional(),
  model: z.string().min(1).max(200).nullable().optional(),
  trustLevel: z.number().int().min(0).max(3).optional(),
});

interface Row {
  id: string;
  tenant_id: string;
  name: string;
  agent_type: AgentType;
  capabilities: string[];
  model: string | null;
  trust_level: number;
  risk_class: RiskClass;
  created_at: Date;
  updated_at: Date;
}

const toAgent = (r: Row): Agent => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  agentType: r.agent_type,
  capabilities: r.capabilities,
  model: r.model,
  trustLevel: r.trust_level,
  riskClass: r.risk_class,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

export const riskOf = (t: AgentType): RiskClass => (HIGH_RISK_TYPES.includes(t) ? 'high' : 'standard');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class AgentService {
  readonly #db: Db;
  constructor(db: Db) {
    this.#db = db;
  }

  async list(tenantId: string): Promise<Agent[]> {
    const r = await this.#db.query<Row>('SELECT * FROM agents WHERE tenant_id = $1 ORDER BY name', [tenantId]);
    return r.rows.map(toAgent);
  }

  /** By id or name. */
  async get(tenantId: string, ref: string, q: Queryable = this.#db): Promise<Agent> {
    const r = UUID.test(ref)
      ? await q.query<Row>('SELECT * FROM agents WHERE tenant_id = $1 AND id = $2', [tenantId, ref])
      : await q.query<Row>('SELECT * FROM agents WHERE tenant_id = $1 AND name = $2', [tenantId, ref]);
    if (!r.rows[0]) throw new NotFoundError('Agent');
    return toAgent(r.rows[0]);
  }

  async create(tenantId: string, raw: AgentInput, by: { actor: string; requestId?: string }): Promise<Agent> {
    const a = agentInput.parse(raw);
    return this.#db.tx(async (tx) => {
      const dup = await tx.query('SELECT 1 FROM agents WHERE tenant_id = $1 AND name = $2', [tenantId, a.name]);
      if (dup.rowCount) throw new ConflictError(`An agent named "${a.name}" already exists in this tenant: choose another name.`, 'agent_name_taken');
      const r = await tx.query<Row>(
        `INSERT INTO agents (tenant_id, name, agent_type, capabilities, model, trust_level, risk_class) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
        [tenantId, a.name, a.agentType, a.capabilities, a.model, a.trustLevel, riskOf(a.agentType)],
      );
      const agent = toAgent(r.rows[0] as Row);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'agent.create',
        target: `agent:${agent.id}`,
        decision: 'success',
        detail: { name: a.name, agentType: a.agentType, trustLevel: a.trustLevel },
        requestId: by.requestId ?? null,
      });
      return agent;
    });
  }

  async update(tenantId: string, ref: string, patch: z.infer<typeof agentPatch>, by: { actor: string; requestId?: string }): Promise<Agent> {
    return this.#db.tx(async (tx) => {
      const cur = await this.get(tenantId, ref, tx);
      const type = patch.agentType ?? cur.agentType;
      const r = await tx.query<Row>(
        `UPDATE agents SET agent_type = $3, capabilities = $4, model = $5, trust_level = $6, risk_class = $7, updated_at = now()
          WHERE tenant_id = $1 AND id = $2 RETURNING *`,
        [
          tenantId,
          cur.id,
          type,
          patch.capabilities ?? cur.capabilities,
          patch.model === undefined ? cur.model : patch.model,
          patch.trustLevel ?? cur.trustLevel,
          riskOf(type),
        ],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'agent.update',
        target: `agent:${cur.id}`,
        decision: 'success',
        detail: { ...patch },
        requestId: by.requestId ?? null,
      });
      return toAgent(r.rows[0] as Row);
    });
  }

  async remove(tenantId: string, ref: string, by: { actor: string; requestId?: string }): Promise<void> {
    await this.#db.tx(async (tx) => {
      const cur = await this.get(tenantId, ref, tx);
      await tx.query('DELETE FROM agents WHERE tenant_id = $1 AND id = $2', [tenantId, cur.id]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'agent.delete',
        target: `agent:${cur.id}`,
        decision: 'success',
        detail: { name: cur.name },
        requestId: by.requestId ?? null,
      });
    });
  }

  /**
   * Dispatch: the agent named by the task, or the best agent with the capability. Trust 0 is never
   * picked; among matches, higher trust wins, then the better success rate on that skill, then the name.
   */
  async pick(
    tenantId: string,
    want: { agent: string | null; capability: string | null; agentType?: AgentType | null },
  ): Promise<{ agent: Agent; reason: string } | { error: string }> {
    const type = want.agentType ?? null;
    if (want.agent) {
      let a: Agent;
      try {
        a = await this.get(tenantId, want.agent);
      } catch (err) {
        if (err instanceof NotFoundError) return { error: `No agent "${want.agent}" in this tenant.` };
        throw err;
      }
      if (a.trustLevel === 0) return { error: `Agent "${a.name}" has trust level 0 (quarantined) and is not dispatched.` };
      if (want.capability && !a.capabilities.includes(want.capability)) return { error: `Agent "${a.name}" does not have capability "${want.capability}".` };
      if (type && a.agentType !== type) return { error: `Agent "${a.name}" is of type ${a.agentType}, not ${type} as the task asks.` };
      return { agent: a, reason: 'named by the task' };
    }
    const r = await this.#db.query<Row & { rate: number | null }>(
      `SELECT a.*, s.successes::float / NULLIF(s.attempts, 0) AS rate
         FROM agents a LEFT JOIN agent_skills s ON s.agent_id = a.id AND s.skill = $2
        WHERE a.tenant_id = $1 AND $2 = ANY (a.capabilities) AND a.trust_level > 0 AND ($3::text IS NULL OR a.agent_type = $3)
        ORDER BY a.trust_level DESC, COALESCE(s.successes::float / NULLIF(s.attempts, 0), 0.5) DESC, a.name
        LIMIT 1`,
      [tenantId, want.capability ?? '', type],
    );
    const row = r.rows[0];
    if (!row) return { error: `No agent with capability "${want.capability ?? ''}"${type ? ` of type ${type}` : ''} and trust level above 0 in this tenant.` };
    return {
      agent: toAgent(row),
      reason: `capability "${want.capability ?? ''}", trust ${row.trust_level}, success rate ${row.rate === null ? 'n/a' : row.rate.toFixed(2)}`,
    };
  }

  /** Records one outcome of the agent on a skill (the task's capability, else its agent type). */
  async recordOutcome(q: Queryable, tenantId: string, agentId: string, skill: string, success: boolean): Promise<void> {
    await q.query(
      `INSERT INTO agent_skills (tenant_id, agent_id, skill, attempts, successes) VALUES ($1, $2, $3, 1, $4)
       ON CONFLICT (agent_id, skill) DO UPDATE SET attempts = agent_skills.attempts + 1, successes = agent_skills.successes + EXCLUDED.successes, updated_at = now()`,
      [tenantId, agentId, skill, success ? 1 : 0],
    );
  }

  async skills(tenantId: string, agentId: string): Promise<{ skill: string; attempts: number; successes: number }[]> {
    const r = await this.#db.query<{ skill: string; attempts: number; successes: number }>(
      'SELECT skill, attempts, successes FROM agent_skills WHERE tenant_id = $1 AND agent_id = $2 ORDER BY skill',
      [tenantId, agentId],
    );
    return r.rows;
  }
}
