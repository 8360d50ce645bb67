import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { checkHostShape, checkUrlShape, EgressRefusedError, type EgressPolicy } from '../net/ssrf.ts';
import type { Limits } from './budgets.ts';

export interface LimitEntry extends Limits {
  /** '' = the whole tenant. */
  agent: string;
}

export interface EgressHost {
  host: string;
  /** 0 = any port. */
  port: number;
}

export interface SkillEndpoint {
  name: string;
  baseUrl: string;
  credentialId: string | null;
  authStyle: 'bearer' | 'header';
  headerName: string | null;
}

type By = { actor: string; requestId?: string | undefined };

/**
 * What a tenant admin sets for the broker: per-agent caps, the egress allow-list and skill endpoints.
 * Every change is audited and published (`governance.changed`): every replica's broker drops its caches,
 * so the change applies to the next call.
 */
export class BrokerGovernance {
  private readonly db: Db;
  private readonly events: EventChannel;
  private readonly policy: EgressPolicy;

  constructor(opts: { db: Db; events: EventChannel; policy: EgressPolicy }) {
    this.db = opts.db;
    this.events = opts.events;
    this.policy = opts.policy;
  }

  async limits(tenantId: string): Promise<LimitEntry[]> {
    const r = await this.db.query<{
      agent: string;
      daily_tokens: number | null;
      daily_cost_usd: string | null;
      requests_per_minute: number | null;
      max_calls_per_task: number | null;
    }>('SELECT agent, daily_tokens, daily_cost_usd, requests_per_minute, max_calls_per_task FROM broker_limits WHERE tenant_id = $1 ORDER BY agent', [
      tenantId,
    ]);
    return r.rows.map((x) => ({
      agent: x.agent,
      dailyTokens: x.daily_tokens,
      dailyCostUsd: x.daily_cost_usd === null ? null : Number(x.daily_cost_usd),
      requestsPerMinute: x.requests_per_minute,
      maxCallsPerTask: x.max_calls_per_task,
    }));
  }

  /** Replaces the tenant's caps with `entries`. */
  async setLimits(tenantId: string, entries: LimitEntry[], by: By): Promise<LimitEntry[]> {
    const agents = new Set<string>();
    for (const e of entries) {
      if (agents.has(e.agent))
        throw new ValidationError(`The agent "${e.agent || '(whole tenant)'}" is listed twice.`, [
          { path: 'items', message: `lists the agent "${e.agent}" twice` },
        ]);
      agents.add(e.agent);
    }
    await this.db.tx(async (tx) => {
      await tx.query('DELETE FROM broker_limits WHERE tenant_id = $1', [tenantId]);
      for (const e of entries) {
        await tx.query(
          'INSERT INTO broker_limits (tenant_id, agent, daily_tokens, daily_cost_usd, requests_per_minute, max_calls_per_task) VALUES ($1, $2, $3, $4, $5, $6)',
          [tenantId, e.agent, e.dailyTokens, e.dailyCostUsd, e.requestsPerMinute, e.maxCallsPerTask],
        );
      }
      await appendAudit(tx, { actor: by.actor, tenantId, action: 'broker.limits', decision: 'success', detail: { entries }, requestId: by.requestId ?? null });
      await this.events.publish(tx, 'governance.changed', { tenantId });
    });
    return this.limits(tenantId);
  }

  async egressHosts(tenantId: string): Promise<EgressHost[]> {
    const r = await this.db.query<EgressHost>('SELECT host, port FROM tenant_egress_hosts WHERE tenant_id = $1 ORDER BY host, port', [tenantId]);
    return r.rows;
  }

  async setEgressHosts(tenantId: string, hosts: EgressHost[], by: By): Promise<EgressHost[]> {
    const norm = hosts.map((h) => ({ host: h.host.toLowerCase().replace(/\.$/, ''), port: h.port }));
    // The connection-time rules (net/ssrf.ts), when saved: a metadata, loopback or private address is refused now, by rule name.
    const issues = norm.flatMap((h, i) => {
      try {
        checkHostShape(h.host, h.port, this.policy);
        return [];
      } catch (err) {
        if (!(err instanceof EgressRefusedError)) throw err;
        return [{ path: `body.items.${i}.host`, message: err.message, rule: err.details?.['reason'] }];
      }
    });
    if (issues.length > 0) throw new ValidationError(`The egress allow-list is refused: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, issues);
    await this.db.tx(async (tx) => {
      await tx.query('DELETE FROM tenant_egress_hosts WHERE tenant_id = $1', [tenantId]);
      for (const h of norm) {
        await tx.query('INSERT INTO tenant_egress_hosts (tenant_id, host, port) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [tenantId, h.host, h.port]);
      }
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'broker.egress_hosts',
        decision: 'success',
        detail: { hosts: norm },
        requestId: by.requestId ?? null,
      });
      await this.events.publish(tx, 'governance.changed', { tenantId });
    });
    return this.egressHosts(tenantId);
  }

  async skillEndpoints(tenantId: string): Promise<SkillEndpoint[]> {
    const r = await this.db.query<{
      name: string;
      base_url: string;
      credential_id: string | null;
      auth_style: 'bearer' | 'header';
      header_name: string | null;
    }>('SELECT name, base_url, credential_id, auth_style, header_name FROM skill_endpoints WHERE tenant_id = $1 ORDER BY name', [tenantId]);
    return r.rows.map((x) => ({ name: x.name, baseUrl: x.base_url, credentialId: x.credential_id, authStyle: x.auth_style, headerName: x.header_name }));
  }

  /** Creates or replaces a skill endpoint; the base URL must pass the SSRF rules (checked again per call). */
  async putSkillEndpoint(tenantId: string, ep: SkillEndpoint, by: By): Promise<SkillEndpoint> {
    try {
      checkUrlShape(ep.baseUrl, this.policy);
    } catch (err) {
      if (err instanceof EgressRefusedError) throw new ValidationError(`baseUrl: ${err.message}`, [{ path: 'body.baseUrl', message: err.message }]);
      throw err;
    }
    if (ep.authStyle === 'header' && !ep.headerName)
      throw new ValidationError('headerName is required when authStyle is "header".', [{ path: 'body.headerName', message: 'required' }]);
    await this.db.tx(async (tx) => {
      if (ep.credentialId) {
        const c = await tx.query('SELECT 1 FROM credentials WHERE tenant_id = $1 AND id = $2', [tenantId, ep.credentialId]);
        if (!c.rowCount) throw new NotFoundError('Credential');
      }
      await tx.query(
        `INSERT INTO skill_endpoints (tenant_id, name, base_url, credential_id, auth_style, header_name) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, name) DO UPDATE SET base_url = EXCLUDED.base_url, credential_id = EXCLUDED.credential_id,
           auth_style = EXCLUDED.auth_style, header_name = EXCLUDED.header_name, updated_at = now()`,
        [tenantId, ep.name, ep.baseUrl, ep.credentialId, ep.authStyle, ep.headerName],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'broker.skill_endpoint',
        target: `skill:${ep.name}`,
        decision: 'success',
        detail: { baseUrl: ep.baseUrl, credentialId: ep.credentialId },
        requestId: by.requestId ?? null,
      });
    });
    const saved = (await this.skillEndpoints(tenantId)).find((x) => x.name === ep.name);
    if (!saved) throw new NotFoundError('Skill endpoint');
    return saved;
  }

  async removeSkillEndpoint(tenantId: string, name: string, by: By): Promise<void> {
    await this.db.tx(async (tx) => {
      const r = await tx.query('DELETE FROM skill_endpoints WHERE tenant_id = $1 AND name = $2', [tenantId, name]);
      if (!r.rowCount) throw new NotFoundError('Skill endpoint');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'broker.skill_endpoint_remove',
        target: `skill:${name}`,
        decision: 'success',
        requestId: by.requestId ?? null,
      });
    });
  }
}
