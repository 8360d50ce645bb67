import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import { keysetPage, type Sorts } from '../db/keyset.ts';
import type { Db, Queryable } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../errors.ts';
import type { AgentDefaults } from '../identity/onboarding.ts';
import type { Json, ToolRestrictions } from '../runtime/config.ts';
import type { GatewayLayout } from '../sandbox/types.ts';
import type { ApprovalChat } from './approval-delivery.ts';
import { applyWay } from './reload-plan.ts';
import {
  CHANGE_KINDS,
  changeKinds,
  configHash,
  diffConfigs,
  GatewaySettingsSchema,
  heartbeatMinutes,
  redactSecrets,
  renderForLayout,
  tenantRenderInput,
  type ChangeKind,
  type DiffEntry,
  type GatewaySettings,
  type LiveInputs,
  type TenantRenderInput,
} from './settings.ts';

/**
 * Versioned gateway configuration (docs/adr/0013-gateway-config-versions.md). Every change to what a tenant's
 * gateways are configured with becomes an immutable, numbered version; the reconciler starts the newest
 * approved one, marks it good once the gateway is healthy, and falls back to the last known good one when it
 * is not. Versions are per tenant: every input of the render is a tenant's (or the platform's), and all of a
 * tenant's instances run the same configuration.
 */
export const VERSION_STATUSES = ['pending', 'approved', 'good', 'failed', 'rejected', 'superseded'] as const;
export type VersionStatus = (typeof VERSION_STATUSES)[number];

export interface ConfigVersion {
  id: string;
  number: number;
  parent: number | null;
  settings: GatewaySettings;
  /** openclaw.json of the tenant's first gateway, secrets shown as references. */
  config: Record<string, Json>;
  hash: string;
  diff: DiffEntry[];
  kinds: ChangeKind[];
  author: string;
  reason: string;
  status: VersionStatus;
  statusReason: string;
  decidedBy: string | null;
  decidedAt: string | null;
  appliedAt: string | null;
  /** How it was first applied and found healthy: reloaded in place (`hot`) or by a start (`restart`); null until then. */
  appliedHow: AppliedHow | null;
  createdAt: string;
}

/** How a version reached a gateway: OpenClaw reloaded it in place, or the gateway (re)started on it. */
export type AppliedHow = 'hot' | 'restart';

export interface ReviewRules {
  /** Kinds of change that wait for a second admin. */
  review: string[];
  /** The shortest heartbeat interval, in minutes (null: no cap). */
  heartbeatMinMinutes: number | null;
  /** The shortest interval between two runs of one cron job, in minutes (null: no cap). */
  cronMinMinutes: number | null;
  /** Per agent id: caps of its own; the stricter of the tenant's and the agent's applies. */
  agentCaps: Record<string, AgentCaps>;
  updatedBy: string | null;
  updatedAt: string | null;
}

/** Caps of one agent, in minutes between two runs (null or absent: the tenant's cap). */
export interface AgentCaps {
  heartbeatMinMinutes?: number | null | undefined;
  cronMinMinutes?: number | null | undefined;
}

/** The caps that bind `agent`: the stricter (longer interval) of the tenant's and the agent's own. */
export function effectiveCaps(
  rules: Pick<ReviewRules, 'heartbeatMinMinutes' | 'cronMinMinutes' | 'agentCaps'>,
  agent: string,
): { heartbeatMinMinutes: number | null; cronMinMinutes: number | null } {
  const own = Object.hasOwn(rules.agentCaps, agent) ? rules.agentCaps[agent] : undefined;
  const stricter = (a: number | null, b: number | null | undefined) => (a === null ? (b ?? null) : b === null || b === undefined ? a : Math.max(a, b));
  return {
    heartbeatMinMinutes: stricter(rules.heartbeatMinMinutes, own?.heartbeatMinMinutes),
    cronMinMinutes: stricter(rules.cronMinMinutes, own?.cronMinMinutes),
  };
}

/** A tenant's review rules and caps (defaults when it has none). */
export async function readRules(q: Queryable, tenantId: string): Promise<ReviewRules> {
  const r = await q.query<{
    review: string[];
    heartbeat_min_minutes: number | null;
    cron_min_minutes: number | null;
    agent_caps: Record<string, AgentCaps>;
    updated_by: string;
    updated_at: Date;
  }>('SELECT review, heartbeat_min_minutes, cron_min_minutes, agent_caps, updated_by, updated_at FROM gateway_config_rules WHERE tenant_id = $1', [tenantId]);
  const row = r.rows[0];
  return row
    ? {
        review: row.review,
        heartbeatMinMinutes: row.heartbeat_min_minutes,
        cronMinMinutes: row.cron_min_minutes,
        agentCaps: row.agent_caps,
        updatedBy: row.updated_by,
        updatedAt: row.updated_at.toISOString(),
      }
    : { review: [], heartbeatMinMinutes: null, cronMinMinutes: null, agentCaps: {}, updatedBy: null, updatedAt: null };
}

/** Who changes something: the audit actor, and the person behind it (the two-person rule compares these). */
export interface ChangeBy {
  actor: string;
  person: string;
  requestId?: string | undefined;
}

interface Row {
  id: string;
  number: number;
  parent: number | null;
  settings: GatewaySettings;
  config: Record<string, Json>;
  hash: string;
  diff: DiffEntry[];
  kinds: ChangeKind[];
  author: string;
  proposer: string;
  reason: string;
  status: VersionStatus;
  status_reason: string;
  decided_by: string | null;
  decided_at: Date | null;
  applied_at: Date | null;
  applied_how: AppliedHow | null;
  created_at: Date;
}

const toVersion = (r: Row): ConfigVersion => ({
  id: r.id,
  number: r.number,
  parent: r.parent,
  settings: r.settings,
  config: r.config,
  hash: r.hash,
  diff: r.diff,
  kinds: r.kinds,
  author: r.author,
  reason: r.reason,
  status: r.status,
  statusReason: r.status_reason,
  decidedBy: r.decided_by,
  decidedAt: r.decided_at?.toISOString() ?? null,
  appliedAt: r.applied_at?.toISOString() ?? null,
  appliedHow: r.applied_how ?? null,
  createdAt: r.created_at.toISOString(),
});

export const VERSION_SORTS = { number: [{ sql: 'v.number', type: 'bigint' }] } satisfies Sorts;

/** A version named by its number (`7`) or its id (a uuid). */
export type VersionRef = string;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The statuses a start may use: the newest of these is what the tenant's gateways should run. */
const STARTABLE = `status IN ('approved', 'good')`;

export class GatewayConfigService {
  readonly #db: Db;
  readonly #events: EventChannel;
  readonly #layout: GatewayLayout;
  readonly #live: (tenantId: string) => Promise<{ defaults: AgentDefaults; restrictions: ToolRestrictions }>;
  readonly #log: Logger;
  readonly #chat: ApprovalChat | undefined;

  /** `chat`: where a change waiting for review is also posted (the tenant's approval chats). */
  constructor(opts: {
    db: Db;
    events: EventChannel;
    layout: GatewayLayout;
    live: (tenantId: string) => Promise<{ defaults: AgentDefaults; restrictions: ToolRestrictions }>;
    log: Logger;
    chat?: ApprovalChat;
  }) {
    this.#db = opts.db;
    this.#chat = opts.chat;
    this.#events = opts.events;
    this.#layout = opts.layout;
    this.#live = opts.live;
    this.#log = opts.log;
  }

  async list(
    tenantId: string,
    o: { limit: number; cursor?: string | undefined; sort: string; status?: VersionStatus | undefined },
  ): Promise<{ items: ConfigVersion[]; nextCursor: string | null }> {
    const where = ['v.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    if (o.status) {
      vals.push(o.status);
      where.push(`v.status = $${vals.length}`);
    }
    return keysetPage(this.#db, {
      sort: o.sort,
      sorts: VERSION_SORTS,
      limit: o.limit,
      cursor: o.cursor,
      from: 'gateway_config_versions v',
      select: 'v.*',
      where,
      vals,
      map: (r) => toVersion(r as unknown as Row),
    });
  }

  async get(tenantId: string, ref: VersionRef, q: Queryable = this.#db): Promise<ConfigVersion> {
    return toVersion(await this.#row(q, tenantId, ref));
  }

  /** The structural diff from one version's configuration to another's (either order). */
  async diff(tenantId: string, from: VersionRef, to: VersionRef): Promise<{ from: number; to: number; diff: DiffEntry[] }> {
    const [a, b] = await Promise.all([this.#row(this.#db, tenantId, from, 'query.from'), this.#row(this.#db, tenantId, to, 'query.to')]);
    return { from: a.number, to: b.number, diff: diffConfigs(a.config, b.config) };
  }

  async rules(tenantId: string, q: Queryable = this.#db): Promise<ReviewRules> {
    return readRules(q, tenantId);
  }

  async setRules(
    tenantId: string,
    rules: { review: string[]; heartbeatMinMinutes: number | null; cronMinMinutes?: number | null; agentCaps?: Record<string, AgentCaps> },
    by: ChangeBy,
  ): Promise<ReviewRules> {
    const review = [...new Set(rules.review)].sort();
    const cronMinMinutes = rules.cronMinMinutes ?? null;
    const agentCaps = rules.agentCaps ?? {};
    await this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      await tx.query(
        `INSERT INTO gateway_config_rules (tenant_id, review, heartbeat_min_minutes, cron_min_minutes, agent_caps, updated_by) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id) DO UPDATE SET review = EXCLUDED.review, heartbeat_min_minutes = EXCLUDED.heartbeat_min_minutes, cron_min_minutes = EXCLUDED.cron_min_minutes,
           agent_caps = EXCLUDED.agent_caps, updated_by = EXCLUDED.updated_by, updated_at = now()`,
        [tenantId, review, rules.heartbeatMinMinutes, cronMinMinutes, JSON.stringify(agentCaps), by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'gateway_config.rules_changed',
        target: `tenant:${tenantId}`,
        decision: 'success',
        detail: { review, heartbeatMinMinutes: rules.heartbeatMinMinutes, cronMinMinutes, agentCaps },
        requestId: by.requestId ?? null,
      });
      // Caps are part of the effective configuration (a capped heartbeat, the cron cap): once the tenant has
      // versions, a change of them is a version of its own, in this transaction (none when nothing renders
      // differently). Like a policy change it never waits for review: a cap only takes frequency away.
      const current = await this.#current(tx, tenantId);
      if (current) await this.#record(tx, tenantId, current.settings, { ...by, reason: 'caps changed', review: [], apply: 'hot' });
    });
    return this.rules(tenantId);
  }

  /**
   * A tenant admin's change: the settings the gateways should have. Applies at once, or waits as a pending
   * version when one of its kinds is under review. A heartbeat above the tenant's cap is refused (400).
   */
  async propose(
    tenantId: string,
    input: { settings: GatewaySettings; reason: string },
    by: ChangeBy,
    o: { review?: 'rules' | 'always' } = {},
  ): Promise<ConfigVersion> {
    const settings = GatewaySettingsSchema.parse(input.settings);
    const made = await this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const rules = await this.rules(tenantId, tx);
      const cap = effectiveCaps(rules, (await this.#live(tenantId)).defaults.agentName).heartbeatMinMinutes;
      if (settings.heartbeatEvery !== undefined && cap !== null) {
        const every = heartbeatMinutes(settings.heartbeatEvery);
        if (every > 0 && every < cap) {
          throw new ValidationError(
            `The heartbeat every ${settings.heartbeatEvery} is more often than the cap heartbeat_min_minutes (${cap} minutes): choose ${cap}m or longer, or "0m" for none.`,
            [{ path: 'body.settings.heartbeatEvery', message: `more often than the cap heartbeat_min_minutes (${cap} minutes)` }],
          );
        }
      }
      await this.#ensureBase(tx, tenantId);
      // An agent's proposal (the broker's /governance/proposals) waits for review whatever the rules say.
      const v = await this.#record(tx, tenantId, settings, { ...by, reason: input.reason, review: o.review === 'always' ? [...CHANGE_KINDS] : rules.review });
      if (!v) throw new ConflictError('This changes nothing: the gateways already run this configuration.', 'no_change');
      return v;
    });
    this.#announce(tenantId, made);
    return made;
  }

  /** A version waiting for review is posted to the tenant's approval chats, after its transaction committed. */
  #announce(tenantId: string, v: ConfigVersion): void {
    if (v.status !== 'pending' || !this.#chat) return;
    void this.#chat.deliver(tenantId, {
      kind: 'config',
      id: String(v.number),
      summary: `version ${v.number} (${v.kinds.join(', ')}) by ${v.author}: ${v.reason}`.slice(0, 300),
    });
  }

  /** A new version with the settings of `ref` (any version, also a failed or rejected one); under review when rollbacks are. */
  async rollback(tenantId: string, ref: VersionRef, reason: string, by: ChangeBy): Promise<ConfigVersion> {
    const made = await this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const target = await this.#row(tx, tenantId, ref);
      await this.#ensureBase(tx, tenantId);
      const rules = await this.rules(tenantId, tx);
      const v = await this.#record(tx, tenantId, target.settings, {
        ...by,
        reason: reason || `roll back to version ${target.number}`,
        review: rules.review,
        extraKinds: ['rollback'],
        rollbackOf: target.number,
      });
      if (!v) throw new ConflictError(`The gateways already run the configuration of version ${target.number}.`, 'no_change');
      return v;
    });
    this.#announce(tenantId, made);
    return made;
  }

  /**
   * Records what the tenant's gateways would now be configured with, after a change outside this module (the
   * tool policy). Never waits for review (a policy only takes tools away). Running gateways reload it in place
   * where the reload plan allows and are not restarted for it otherwise (today `tools` needs a restart,
   * src/governance/reload-plan.ts): the broker enforces the policy on every call already, and the next start
   * applies the version.
   */
  async capture(tenantId: string, by: ChangeBy, reason: string): Promise<ConfigVersion | null> {
    return this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const current = await this.#current(tx, tenantId);
      return this.#record(tx, tenantId, current?.settings ?? {}, { ...by, reason, review: [], apply: 'hot' });
    });
  }

  async approve(tenantId: string, ref: VersionRef, comment: string, by: ChangeBy): Promise<ConfigVersion> {
    return this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const v = await this.#row(tx, tenantId, ref);
      if (v.status !== 'pending') throw new ConflictError(`Version ${v.number} is ${v.status}, not waiting for review.`, 'not_pending');
      if (v.proposer === by.person) throw new ForbiddenError(`You proposed version ${v.number}: another tenant admin must approve it (two-person rule).`);
      const current = await this.#current(tx, tenantId);
      if ((current?.number ?? null) !== v.parent) {
        throw new ConflictError(
          `The configuration changed since version ${v.number} was proposed (it was made from version ${v.parent ?? 'none'}, the gateways now run version ${current?.number ?? 'none'}): reject it and propose it again.`,
          'stale_version',
        );
      }
      await tx.query(
        `UPDATE gateway_config_versions SET status = 'approved', status_reason = $3, decided_by = $4, decided_at = now() WHERE tenant_id = $1 AND number = $2`,
        [tenantId, v.number, comment ? `approved: ${comment}` : 'approved', by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'gateway_config.approved',
        target: `gateway_config:${v.number}`,
        decision: 'success',
        detail: { number: v.number, kinds: v.kinds, proposer: v.author, comment },
        requestId: by.requestId ?? null,
      });
      await this.#activate(tx, tenantId, v.number, v.config, 'now');
      return this.get(tenantId, String(v.number), tx);
    });
  }

  async reject(tenantId: string, ref: VersionRef, reason: string, by: ChangeBy): Promise<ConfigVersion> {
    return this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const v = await this.#row(tx, tenantId, ref);
      if (v.status !== 'pending') throw new ConflictError(`Version ${v.number} is ${v.status}, not waiting for review.`, 'not_pending');
      await tx.query(
        `UPDATE gateway_config_versions SET status = 'rejected', status_reason = $3, decided_by = $4, decided_at = now() WHERE tenant_id = $1 AND number = $2`,
        [tenantId, v.number, `rejected: ${reason}`, by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'gateway_config.rejected',
        target: `gateway_config:${v.number}`,
        decision: 'deny',
        detail: { number: v.number, kinds: v.kinds, proposer: v.author, reason },
        requestId: by.requestId ?? null,
      });
      return this.get(tenantId, String(v.number), tx);
    });
  }

  /**
   * The configuration a gateway of the tenant starts with: the newest approved or good version, rendered with
   * today's policy and platform defaults. When those changed the render since that version, the change is
   * recorded as a new version first (author `system`), so what runs is always a version. A tenant's first start
   * records its first version.
   */
  async forStart(tenantId: string): Promise<{ version: number; input: TenantRenderInput }> {
    return this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const v = await this.#toRun(tx, tenantId);
      return { version: v.number, input: v.input };
    });
  }

  /** The newest startable version, after recording drift of the platform defaults, the policy or a cap (under #lock). */
  async #toRun(tx: Queryable, tenantId: string): Promise<{ number: number; config: Record<string, Json>; input: TenantRenderInput }> {
    const current = await this.#current(tx, tenantId);
    const made = await this.#record(tx, tenantId, current?.settings ?? {}, {
      actor: 'system',
      person: 'system',
      reason: current ? `the platform defaults, the tool policy or a cap changed the configuration of version ${current.number}` : 'first configuration',
      review: [],
      apply: 'none',
    });
    const v = made ?? (current ? toVersion(current) : undefined);
    if (!v) throw new Error('no configuration version after recording one');
    const live = await this.#liveInputs(tx, tenantId);
    return { number: v.number, config: v.config, input: tenantRenderInput(v.settings, live) };
  }

  /**
   * What a running gateway asked to reload in place (instances.config_target) should do, decided under the
   * tenant's lock against what it runs (instances.config_version): `hot` with the version to render, or
   * `restart` (its generation is bumped here) when OpenClaw would not reload every changed path
   * (src/governance/reload-plan.ts), the driver cannot write into a running sandbox (`canHot` false), or what
   * it runs is not known; null when it already runs the newest version. `rewrite`: render the newest version
   * even when the gateway runs it (its file is written again, e.g. after it refused a newer one).
   */
  async hotPlan(
    tenantId: string,
    instanceId: string,
    o: { canHot: boolean; rewrite?: boolean },
  ): Promise<{ way: 'hot'; version: number; input: TenantRenderInput; paths: string[] } | { way: 'restart'; reason: string } | null> {
    return this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const inst = await tx.query<{ config_version: number | null; config: Record<string, Json> | null }>(
        `SELECT i.config_version, v.config FROM instances i LEFT JOIN gateway_config_versions v ON v.tenant_id = i.tenant_id AND v.number = i.config_version
          WHERE i.tenant_id = $1 AND i.id = $2 FOR UPDATE OF i`,
        [tenantId, instanceId],
      );
      const running = inst.rows[0];
      if (!running) return null;
      const next = await this.#toRun(tx, tenantId);
      if (next.number === running.config_version && !o.rewrite) {
        await tx.query('UPDATE instances SET config_target = NULL WHERE tenant_id = $1 AND id = $2', [tenantId, instanceId]);
        return null;
      }
      const way = running.config ? applyWay(running.config, next.config) : null;
      const why = !o.canHot
        ? 'the sandbox driver cannot reload a running gateway'
        : !way
          ? 'what the gateway runs is not known'
          : way.way === 'restart'
            ? `OpenClaw restarts for ${way.paths.slice(0, 5).join(', ')}`
            : '';
      if (why) {
        await this.#restart(tx, tenantId, instanceId);
        return { way: 'restart', reason: why };
      }
      return { way: 'hot', version: next.number, input: next.input, paths: way?.paths ?? [] };
    });
  }

  /** The instance restarts onto the newest version instead of reloading it (its generation moves on). */
  async #restart(tx: Queryable, tenantId: string, instanceId: string): Promise<void> {
    await tx.query(
      `UPDATE instances SET generation = generation + 1, config_target = NULL, failures = 0, next_attempt_at = NULL, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
      [tenantId, instanceId],
    );
    await this.#events.publish(tx, 'instance.changed', { instanceId });
  }

  /** A running gateway could not reload in place for a reason other than the version (a timeout): restart it onto it. */
  async restartInstead(tenantId: string, instanceId: string): Promise<void> {
    await this.#db.tx((tx) => this.#restart(tx, tenantId, instanceId));
  }

  /** The instance's gateway is healthy on `version`: a new one becomes the tenant's last known good. */
  async applied(tenantId: string, instanceId: string, version: number, how: AppliedHow = 'restart'): Promise<void> {
    await this.#db.tx(async (tx) => {
      // A reload asked for a newer version meanwhile stays asked for.
      await tx.query(
        'UPDATE instances SET config_version = $3, config_target = CASE WHEN config_target > $3 THEN config_target END WHERE tenant_id = $1 AND id = $2',
        [tenantId, instanceId, version],
      );
      const r = await tx.query(
        `UPDATE gateway_config_versions SET status = 'good', status_reason = $3, applied_at = now(), applied_how = $4 WHERE tenant_id = $1 AND number = $2 AND status = 'approved'`,
        [
          tenantId,
          version,
          how === 'hot' ? `applied without a restart: instance ${instanceId} reloaded it and is healthy` : `applied: instance ${instanceId} healthy`,
          how,
        ],
      );
      if (r.rowCount === 0) return;
      await appendAudit(tx, {
        actor: 'system',
        tenantId,
        action: 'gateway_config.applied',
        target: `gateway_config:${version}`,
        decision: 'success',
        detail: { number: version, instanceId, how },
      });
    });
  }

  /**
   * The gateway failed its check on `version`. A version not yet known good is marked failed and the last known
   * good one is returned to start instead (instances already running the failed one restart onto it). A version
   * that was good before, or a tenant with no good version yet, is not rolled back: null (the start is retried).
   */
  async failed(tenantId: string, instanceId: string, version: number, reason: string): Promise<{ fallback: number } | null> {
    return this.#db.tx(async (tx) => {
      await this.#lock(tx, tenantId);
      const good = await tx.query<{ number: number }>(
        `SELECT number FROM gateway_config_versions WHERE tenant_id = $1 AND status = 'good' AND number <> $2 ORDER BY number DESC LIMIT 1`,
        [tenantId, version],
      );
      const lkg = good.rows[0]?.number;
      if (lkg === undefined) return null;
      const r = await tx.query(
        `UPDATE gateway_config_versions SET status = 'failed', status_reason = $3 WHERE tenant_id = $1 AND number = $2 AND status = 'approved'`,
        [tenantId, version, `failed its check on instance ${instanceId}: ${reason}; rolled back to version ${lkg}`],
      );
      if (r.rowCount === 0) return null;
      this.#log.warn(
        { tenant_id: tenantId, instance_id: instanceId, version, to: lkg, reason },
        'gateway configuration failed its check; rolling back to the last known good version',
      );
      // Told to the tenant's admins through the audit log (their Audit page and API), with the reason.
      await appendAudit(tx, {
        actor: 'system',
        tenantId,
        action: 'gateway_config.rolled_back',
        target: `gateway_config:${version}`,
        decision: 'failure',
        detail: { failed: version, to: lkg, instanceId, reason },
      });
      const others = await tx.query<{ id: string }>(
        `UPDATE instances SET generation = generation + 1, updated_at = now() WHERE tenant_id = $1 AND id <> $2 AND config_version = $3 AND desired_state = 'running' RETURNING id`,
        [tenantId, instanceId, version],
      );
      for (const o of others.rows) await this.#events.publish(tx, 'instance.changed', { instanceId: o.id });
      return { fallback: lkg };
    });
  }

  /** A tenant's first change is compared (and reviewed) against what its gateways run without one: record that first. */
  async #ensureBase(tx: Queryable, tenantId: string): Promise<void> {
    if (await this.#current(tx, tenantId)) return;
    await this.#record(tx, tenantId, {}, { actor: 'system', person: 'system', reason: 'first configuration', review: [], apply: 'none' });
  }

  async #liveInputs(q: Queryable, tenantId: string): Promise<LiveInputs> {
    const [live, rules] = await Promise.all([this.#live(tenantId), this.rules(tenantId, q)]);
    return { ...live, ...effectiveCaps(rules, live.defaults.agentName) };
  }

  /** One writer per tenant at a time, across replicas: numbers stay gap-free and a hash is compared once. */
  async #lock(tx: Queryable, tenantId: string): Promise<void> {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('gateway_config:' || $1))`, [tenantId]);
  }

  async #current(q: Queryable, tenantId: string): Promise<Row | undefined> {
    const r = await q.query<Row>(`SELECT * FROM gateway_config_versions WHERE tenant_id = $1 AND ${STARTABLE} ORDER BY number DESC LIMIT 1`, [tenantId]);
    return r.rows[0];
  }

  async #row(q: Queryable, tenantId: string, ref: VersionRef, field = 'path.version'): Promise<Row> {
    let r;
    if (/^[1-9][0-9]{0,8}$/.test(ref))
      r = await q.query<Row>('SELECT * FROM gateway_config_versions WHERE tenant_id = $1 AND number = $2', [tenantId, Number(ref)]);
    else if (UUID.test(ref)) r = await q.query<Row>('SELECT * FROM gateway_config_versions WHERE tenant_id = $1 AND id = $2', [tenantId, ref]);
    else
      throw new ValidationError(`"${ref.slice(0, 40)}" is not a version: give its number (e.g. 3) or its id.`, [
        { path: field, message: 'a version number or id' },
      ]);
    const row = r.rows[0];
    if (!row) throw new NotFoundError('Configuration version', 'GET …/gateway-config/versions lists them.');
    return row;
  }

  /**
   * Renders `settings` with today's inputs and records it as the next version unless the gateways' configuration
   * would not change (then null). Must run under #lock.
   */
  async #record(
    tx: Queryable,
    tenantId: string,
    settings: GatewaySettings,
    o: ChangeBy & { reason: string; review: string[]; extraKinds?: ChangeKind[]; rollbackOf?: number; apply?: 'now' | 'hot' | 'none' },
  ): Promise<ConfigVersion | null> {
    const current = await this.#current(tx, tenantId);
    const live = await this.#liveInputs(tx, tenantId);
    const config = redactSecrets(renderForLayout(this.#layout, tenantRenderInput(settings, live))) as Record<string, Json>;
    const hash = configHash(config);
    if (current && current.hash === hash) return null;
    const kinds = [
      ...new Set([...changeKinds(current ? { settings: current.settings, config: current.config } : null, { settings, config }), ...(o.extraKinds ?? [])]),
    ].sort();
    const waits = kinds.some((k) => o.review.includes(k));
    const next = await tx.query<{ n: number }>('SELECT coalesce(max(number), 0) + 1 AS n FROM gateway_config_versions WHERE tenant_id = $1', [tenantId]);
    const number = next.rows[0]?.n ?? 1;
    const diff = current ? diffConfigs(current.config, config) : [];
    const status: VersionStatus = waits ? 'pending' : 'approved';
    await tx.query(
      `INSERT INTO gateway_config_versions (id, tenant_id, number, parent, settings, config, hash, diff, kinds, author, proposer, reason, status, status_reason)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
      [
        randomUUID(),
        tenantId,
        number,
        current?.number ?? null,
        JSON.stringify(settings),
        JSON.stringify(config),
        hash,
        JSON.stringify(diff),
        kinds,
        o.actor,
        o.person,
        o.reason,
        status,
        waits ? `waiting for a second admin (${kinds.filter((k) => o.review.includes(k)).join(', ')} under review)` : '',
      ],
    );
    await appendAudit(tx, {
      actor: o.actor,
      tenantId,
      action: 'gateway_config.version_created',
      target: `gateway_config:${number}`,
      decision: waits ? 'pending' : 'success',
      detail: {
        number,
        parent: current?.number ?? null,
        kinds,
        status,
        hash,
        changes: diff.length,
        reason: o.reason,
        ...(o.rollbackOf !== undefined ? { rollbackOf: o.rollbackOf } : {}),
      },
      requestId: o.requestId ?? null,
    });
    if (!waits) await this.#activate(tx, tenantId, number, config, o.apply ?? 'now');
    return this.get(tenantId, String(number), tx);
  }

  /**
   * `number` is now the version to run: older approved ones never applied are superseded, and the tenant's
   * running gateways move onto it; the reconciler applies and checks it there. A gateway whose difference from
   * what it runs is only in paths OpenClaw reloads in place (src/governance/reload-plan.ts) is asked to reload
   * (`config_target`); the others restart (`now`: an admin's change) or take it at their next start (`hot`: a
   * policy change, which the broker enforces already; `none`: a version recorded at a start).
   */
  async #activate(tx: Queryable, tenantId: string, number: number, config: Record<string, Json>, apply: 'now' | 'hot' | 'none'): Promise<void> {
    await tx.query(
      `UPDATE gateway_config_versions SET status = 'superseded', status_reason = $3 WHERE tenant_id = $1 AND number < $2 AND status = 'approved'`,
      [tenantId, number, `superseded by version ${number} before it was applied`],
    );
    if (apply === 'none') return;
    const r = await tx.query<{ id: string; status: string; config: Record<string, Json> | null }>(
      `SELECT i.id, i.status, v.config FROM instances i LEFT JOIN gateway_config_versions v ON v.tenant_id = i.tenant_id AND v.number = i.config_version
        WHERE i.tenant_id = $1 AND i.desired_state = 'running' ORDER BY i.id FOR UPDATE OF i`,
      [tenantId],
    );
    for (const i of r.rows) {
      // Only a gateway that runs can reload; one starting or backing off starts on the newest version anyway.
      const hot = i.status === 'running' && i.config !== null && applyWay(i.config, config).way === 'hot';
      if (hot) await tx.query('UPDATE instances SET config_target = $3 WHERE tenant_id = $1 AND id = $2', [tenantId, i.id, number]);
      else if (apply === 'now')
        await tx.query(
          `UPDATE instances SET generation = generation + 1, config_target = NULL, failures = 0, next_attempt_at = NULL, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
          [tenantId, i.id],
        );
      else continue;
      await this.#events.publish(tx, 'instance.changed', { instanceId: i.id });
    }
  }
}
