import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import { containing, keysetPage, type Sorts } from '../db/keyset.ts';
import type { Db, Queryable } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { ConflictError, NotFoundError, QuotaExceededError, ValidationError } from '../errors.ts';
import { assertTenantActive } from '../identity/authz.ts';
import { scrubHostDetails } from '../observability/host-details.ts';
import { parseRuntimeSpec, type RuntimeStore } from '../runtime/store.ts';
import { sandboxesHeld, sandboxQuotaError } from '../tenancy/tenants.ts';
import { storedSandboxRef, storedSnapshotRef, type SandboxHealth, type SandboxRef, type SnapshotRef } from '../sandbox/types.ts';
import type { Vault } from '../vault/vault.ts';

/**
 * Instances (issue 6): a tenant's managed OpenClaw gateway as desired state in the database. API calls
 * only change the desired state (and audit who asked); the reconciler converges the sandbox to it and
 * records each status transition with its reason.
 */
export const INSTANCE_STATUSES = ['provisioning', 'running', 'stopped', 'upgrading', 'error', 'destroying', 'suspended'] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

/** The orders a tenant's instance list offers (names are unique per tenant). */
export const INSTANCE_SORTS = {
  name: [{ sql: 'i.name', type: 'text' }],
  createdAt: [
    { sql: 'i.created_at', type: 'timestamptz' },
    { sql: 'i.id', type: 'uuid' },
  ],
} satisfies Sorts;
export type DesiredState = 'running' | 'stopped' | 'destroyed';

export interface Instance {
  id: string;
  tenantId: string;
  name: string;
  runtimeVersion: string;
  previousRuntimeVersion: string | null;
  executors: number;
  desiredState: DesiredState;
  status: InstanceStatus;
  statusReason: string;
  health: SandboxHealth | null;
  healthCheckedAt: string | null;
  createdAt: string;
  updatedAt: string;
}

/** The row as the reconciler needs it (includes the driver handle, never shown by the API). */
export interface InstanceRow extends Instance {
  generation: number;
  observedGeneration: number;
  failures: number;
  nextAttemptAt: Date | null;
  deleteState: boolean;
  sandbox: SandboxRef | null;
  /** A suspended instance's snapshot (the driver's opaque ref: resumed once, then discarded); null when it has none. */
  snapshot: SnapshotRef | null;
  /** The node its sandbox runs on (local sandboxes belong to their host); null without a sandbox. */
  sandboxNode: string | null;
  /** Last use through any replica (throttled writes, src/ingress/activity.ts); null when never used. */
  lastActiveAt: Date | null;
  /** The configuration version its gateway was last started with or reloaded to (null: not known). */
  configVersion: number | null;
  /** A configuration version its running gateway is to reload in place (src/governance/versions.ts); null: none. */
  configTarget: number | null;
}

/** A row of a claiming read: whether this replica now holds the instance's lease, and who held it before. */
export interface ClaimedRow {
  row: InstanceRow;
  claimed: boolean;
  /** The lease holder before this read (null: none); `heldLive`: that lease had not lapsed. */
  heldBy: string | null;
  heldLive: boolean;
}

export interface InstanceEvent {
  fromStatus: string | null;
  toStatus: string;
  reason: string;
  actor: string;
  at: string;
}

interface Row {
  id: string;
  tenant_id: string;
  name: string;
  runtime_version: string;
  previous_runtime_version: string | null;
  executors: number;
  desired_state: DesiredState;
  status: InstanceStatus;
  status_reason: string;
  delete_state: boolean;
  generation: number;
  observed_generation: number;
  failures: number;
  next_attempt_at: Date | null;
  sandbox: unknown;
  snapshot: unknown;
  health: SandboxHealth | null;
  health_checked_at: Date | null;
  created_at: Date;
  updated_at: Date;
  sandbox_node: string | null;
  last_active_at: Date | null;
  config_version: number | null;
  config_target: number | null;
}

function toRow(r: Row): InstanceRow {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    name: r.name,
    runtimeVersion: r.runtime_version,
    previousRuntimeVersion: r.previous_runtime_version,
    executors: r.executors,
    desiredState: r.desired_state,
    status: r.status,
    statusReason: r.status_reason,
    health: r.health,
    healthCheckedAt: r.health_checked_at?.toISOString() ?? null,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    generation: r.generation,
    observedGeneration: r.observed_generation,
    failures: r.failures,
    nextAttemptAt: r.next_attempt_at,
    deleteState: r.delete_state,
    sandbox: storedSandboxRef(r.sandbox),
    snapshot: storedSnapshotRef(r.snapshot, r.id),
    sandboxNode: r.sandbox_node,
    lastActiveAt: r.last_active_at,
    configVersion: r.config_version ?? null,
    configTarget: r.config_target ?? null,
  };
}

/** The API view: an allow-list of fields (no handle, no generation bookkeeping). */
export function publicInstance(r: InstanceRow): Instance {
  return {
    id: r.id,
    tenantId: r.tenantId,
    name: r.name,
    runtimeVersion: r.runtimeVersion,
    previousRuntimeVersion: r.previousRuntimeVersion,
    executors: r.executors,
    desiredState: r.desiredState,
    status: r.status,
    statusReason: r.statusReason,
    health: r.health,
    healthCheckedAt: r.healthCheckedAt,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}

export const deployInput = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'lowercase letters, digits and inner hyphens, at most 40, e.g. "main"')
    .default('main'),
  runtimeVersion: z.string().max(80).optional().describe('openclaw@<version> or <version>; default: the platform default (CLAWPLANE_RUNTIME_DEFAULT_VERSION)'),
  executors: z.number().int().min(1).max(8).default(1).describe('Gateway processes in the sandbox'),
  start: z.boolean().default(true).describe('false: record the instance stopped'),
});
export type DeployInput = z.input<typeof deployInput>;

export const upgradeInput = z.strictObject({
  runtimeVersion: z.string().min(1).max(80).describe('openclaw@<version> to move to; state is kept, and a failed health check rolls back'),
});

export interface Audited {
  actor: string;
  requestId?: string | undefined;
}

export interface InstanceServiceOptions {
  db: Db;
  vault: Vault;
  runtimes: RuntimeStore;
  defaultRuntimeVersion: string;
  /** First host uid handed to tenants' sandboxes (CLAWPLANE_SANDBOX_UID_BASE). */
  uidBase: number;
  /**
   * Carries `instance.changed` after every change of desired state (every replica's reconciler acts now rather
   * than at its next tick) and `gateway_token.changed` after a rotation (every ingress drops its copy).
   */
  events: EventChannel;
  /** The node sandboxes started by this process run on (recorded with each sandbox); default: the host name. */
  node?: string;
}

// Platform secret names allow [a-z0-9_.-] only.
const secretName = (instanceId: string, kind: 'gateway-token' | 'hooks-token' = 'gateway-token') => `instance.${instanceId}.${kind}`;

export class InstanceService {
  readonly #o: InstanceServiceOptions;

  constructor(opts: InstanceServiceOptions) {
    this.#o = opts;
  }

  /** The database the instances live in (the reconciler's leases share it). */
  get db(): Db {
    return this.#o.db;
  }

  /** The node this process's sandboxes run on. */
  get node(): string {
    return this.#o.node ?? os.hostname();
  }

  get defaultRuntimeVersion(): string {
    return this.#o.defaultRuntimeVersion;
  }

  async list(tenantId: string): Promise<Instance[]> {
    const r = await this.#o.db.query<Row>('SELECT * FROM instances WHERE tenant_id = $1 ORDER BY name', [tenantId]);
    return r.rows.map((x) => publicInstance(toRow(x)));
  }

  /** One page of a tenant's instances (keyset, src/db/keyset.ts), searched by name and filtered by status. */
  async page(
    tenantId: string,
    p: { limit: number; cursor?: string | undefined; sort: string; q?: string | undefined; status?: InstanceStatus | undefined },
  ): Promise<{ items: Instance[]; nextCursor: string | null }> {
    const where = ['i.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    if (p.status !== undefined) {
      vals.push(p.status);
      where.push(`i.status = $${vals.length}`);
    }
    if (p.q !== undefined) {
      vals.push(containing(p.q));
      where.push(`i.name ILIKE $${vals.length}`);
    }
    return keysetPage(this.#o.db, {
      ...p,
      sorts: INSTANCE_SORTS,
      from: 'instances i',
      select: 'i.*',
      where,
      vals,
      map: (x) => publicInstance(toRow(x as unknown as Row)),
    });
  }

  async get(tenantId: string, id: string, q: Queryable = this.#o.db, lock = false): Promise<InstanceRow> {
    const r = await q.query<Row>(`SELECT * FROM instances WHERE tenant_id = $1 AND id = $2${lock ? ' FOR UPDATE' : ''}`, [tenantId, id]);
    if (!r.rows[0]) throw new NotFoundError('Instance');
    return toRow(r.rows[0]);
  }

  async events(tenantId: string, id: string, limit = 100): Promise<InstanceEvent[]> {
    await this.get(tenantId, id);
    const r = await this.#o.db.query<{ from_status: string | null; to_status: string; reason: string; actor: string; created_at: Date }>(
      'SELECT * FROM (SELECT * FROM instance_events WHERE tenant_id = $1 AND instance_id = $2 ORDER BY id DESC LIMIT $3) e ORDER BY id',
      [tenantId, id, limit],
    );
    return r.rows.map((e) => ({ fromStatus: e.from_status, toStatus: e.to_status, reason: e.reason, actor: e.actor, at: e.created_at.toISOString() }));
  }

  /** Creates an instance (desired running unless start=false). Refused beyond the tenant's max_instances. */
  /**
   * `poolSandbox`: the caller is an executor pool deploying one of its own sandboxes. Names starting `pool-` are
   * theirs alone (src/pools/placement.ts): the maxSandboxes quota counts those through their pool's reservation,
   * so an instance anyone else named so would run uncounted.
   */
  async deploy(tenantId: string, raw: DeployInput, by: Audited, opts: { poolSandbox?: boolean } = {}): Promise<Instance> {
    const input = deployInput.parse(raw);
    if (input.name.startsWith('pool-') && !opts.poolSandbox)
      throw new ValidationError(`Instance names starting "pool-" are kept for executor pools' own sandboxes: choose another name.`, [
        { path: 'body.name', message: 'starts with the reserved prefix "pool-"' },
      ]);
    // Unnamed: the tenant's version (a Tenant resource's spec.runtimeVersion, ADR 0011), else the platform's.
    const tenantVersion = input.runtimeVersion
      ? null
      : ((await this.#o.db.query<{ runtime_version: string | null }>('SELECT runtime_version FROM tenants WHERE id = $1', [tenantId])).rows[0]
          ?.runtime_version ?? null);
    const version = parseRuntimeSpec(input.runtimeVersion ?? tenantVersion ?? this.#o.defaultRuntimeVersion);
    if (input.start) await this.#requireRuntime(tenantId, 'instance.deploy', version, by);
    const id = randomUUID();
    const row = await this.#o.db
      .tx(async (tx) => {
        // Lock the tenant row: concurrent deploys must not both slip under the quota.
        const t = await tx.query<{ max_instances: number; max_sandboxes: number | null; slug: string; status: string }>(
          'SELECT max_instances, max_sandboxes, slug, status FROM tenants WHERE id = $1 FOR UPDATE',
          [tenantId],
        );
        const tenant = t.rows[0];
        if (!tenant) throw new NotFoundError('Tenant');
        if (input.start) assertTenantActive(tenant);
        const n = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM instances WHERE tenant_id = $1', [tenantId]);
        if ((n.rows[0]?.n ?? 0) >= tenant.max_instances) {
          throw new QuotaExceededError(
            `Tenant "${tenant.slug}" may have at most ${tenant.max_instances} instance(s) (quota maxInstances): destroy one, or ask a platform admin to raise the quota.`,
          );
        }
        if (input.start && tenant.max_sandboxes !== null && !input.name.startsWith('pool-')) {
          const held = await sandboxesHeld(tx, tenantId);
          if (held + 1 > tenant.max_sandboxes) throw sandboxQuotaError(tenant.slug, tenant.max_sandboxes, held + 1, `starting "${input.name}"`);
        }
        const dup = await tx.query('SELECT 1 FROM instances WHERE tenant_id = $1 AND name = $2', [tenantId, input.name]);
        if (dup.rowCount)
          throw new ConflictError(`An instance named "${input.name}" already exists in this tenant: choose another name.`, 'instance_name_taken');
        const status: InstanceStatus = input.start ? 'provisioning' : 'stopped';
        const r = await tx.query<Row>(
          `INSERT INTO instances (id, tenant_id, name, runtime_version, executors, desired_state, status, status_reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
          [
            id,
            tenantId,
            input.name,
            version,
            input.executors,
            input.start ? 'running' : 'stopped',
            status,
            input.start ? 'deploy requested' : 'created stopped',
          ],
        );
        await this.#event(tx, tenantId, id, null, status, input.start ? 'deploy requested' : 'created stopped', by.actor);
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'instance.deploy',
          target: `instance:${id}`,
          decision: 'success',
          detail: { name: input.name, runtimeVersion: version, executors: input.executors, start: input.start },
          requestId: by.requestId ?? null,
        });
        await this.#o.events.publish(tx, 'instance.changed', { instanceId: id });
        return toRow(r.rows[0] as Row);
      })
      .catch(async (err: unknown) => {
        if (err instanceof QuotaExceededError) await this.#refused(tenantId, 'instance.deploy', null, err.message, by);
        throw err;
      });
    return publicInstance(row);
  }

  /**
   * Asks for a stop. `why` (e.g. "idle for 30 min") is what the status and the event will say once
   * stopped; by default who asked. Kept in the status reason as "stopping (why)" until the reconciler stops it.
   */
  async stop(tenantId: string, id: string, by: Audited, why?: string): Promise<Instance> {
    return this.#setDesired(tenantId, id, 'stop', by, async (tx, row) => {
      if (row.desiredState === 'stopped' && row.status === 'stopped') return false;
      await tx.query(`UPDATE instances SET desired_state = 'stopped', status_reason = $2, updated_at = now() WHERE id = $1`, [
        id,
        `stopping (${why ?? `requested by ${by.actor}`})`,
      ]);
      return true;
    });
  }

  async start(tenantId: string, id: string, by: Audited): Promise<Instance> {
    const row = await this.get(tenantId, id);
    await this.#requireActiveTenant(this.#o.db, tenantId);
    await this.#requireRuntime(tenantId, 'instance.start', row.runtimeVersion, by, id);
    return this.#setDesired(tenantId, id, 'start', by, async (tx, r) => {
      await this.#admitRunning(tx, tenantId, r);
      await tx.query(`UPDATE instances SET desired_state = 'running', failures = 0, next_attempt_at = NULL, updated_at = now() WHERE id = $1`, [id]);
      if (r.status === 'stopped' || r.status === 'error') await this.#transition(tx, r, 'provisioning', 'start requested', by.actor);
      // A suspended instance resumes from its snapshot (issue 10); the reconciler falls back to a cold start.
      if (r.status === 'suspended') await this.#transition(tx, r, 'provisioning', 'resume requested', by.actor);
      return true;
    }).catch(this.#quotaRefused(tenantId, id, by));
  }

  async restart(tenantId: string, id: string, by: Audited): Promise<Instance> {
    const row = await this.get(tenantId, id);
    await this.#requireActiveTenant(this.#o.db, tenantId);
    await this.#requireRuntime(tenantId, 'instance.restart', row.runtimeVersion, by, id);
    return this.#setDesired(tenantId, id, 'restart', by, async (tx, r) => {
      await this.#admitRunning(tx, tenantId, r);
      await tx.query(
        `UPDATE instances SET desired_state = 'running', generation = generation + 1, failures = 0, next_attempt_at = NULL, updated_at = now() WHERE id = $1`,
        [id],
      );
      if (r.status !== 'provisioning') await this.#transition(tx, r, 'provisioning', 'restart requested', by.actor);
      return true;
    }).catch(this.#quotaRefused(tenantId, id, by));
  }

  /** Moves to another runtime version, keeping state; the reconciler rolls back when the new one fails its health check. */
  async upgrade(tenantId: string, id: string, input: z.infer<typeof upgradeInput>, by: Audited): Promise<Instance> {
    const version = parseRuntimeSpec(input.runtimeVersion);
    await this.get(tenantId, id);
    await this.#requireRuntime(tenantId, 'instance.upgrade', version, by, id);
    return this.#setDesired(
      tenantId,
      id,
      'upgrade',
      by,
      async (tx, r) => {
        if (r.runtimeVersion === version) throw new ConflictError(`Instance "${r.name}" already runs OpenClaw ${version}.`, 'same_version');
        if (r.desiredState === 'running') await this.#requireActiveTenant(tx, tenantId);
        await tx.query(
          `UPDATE instances SET previous_runtime_version = runtime_version, runtime_version = $2, generation = generation + 1, failures = 0, next_attempt_at = NULL, updated_at = now() WHERE id = $1`,
          [id, version],
        );
        if (r.desiredState === 'running') await this.#transition(tx, r, 'upgrading', `upgrade from ${r.runtimeVersion} to ${version} requested`, by.actor);
        return true;
      },
      { to: version },
    );
  }

  async destroy(tenantId: string, id: string, opts: { deleteState: boolean }, by: Audited): Promise<Instance> {
    return this.#setDesired(
      tenantId,
      id,
      'destroy',
      by,
      async (tx, r) => {
        await tx.query(`UPDATE instances SET desired_state = 'destroyed', delete_state = $2, updated_at = now() WHERE id = $1`, [id, opts.deleteState]);
        await this.#transition(
          tx,
          r,
          'destroying',
          opts.deleteState ? 'destroy requested (state will be deleted)' : 'destroy requested (state kept)',
          by.actor,
        );
        return true;
      },
      { deleteState: opts.deleteState },
    );
  }

  async #setDesired(
    tenantId: string,
    id: string,
    op: string,
    by: Audited,
    change: (tx: Queryable, row: InstanceRow) => Promise<boolean>,
    detail: Record<string, unknown> = {},
  ): Promise<Instance> {
    const row = await this.#o.db.tx(async (tx) => {
      const r = await this.get(tenantId, id, tx, true);
      if (r.desiredState === 'destroyed') throw new ConflictError(`Instance "${r.name}" is being destroyed.`, 'instance_destroying');
      const changed = await change(tx, r);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: `instance.${op}`,
        target: `instance:${id}`,
        decision: 'success',
        detail: { ...detail, changed },
        requestId: by.requestId ?? null,
      });
      await this.#o.events.publish(tx, 'instance.changed', { instanceId: id });
      return this.get(tenantId, id, tx);
    });
    return publicInstance(row);
  }

  /**
   * Every way that wakes an instance (the API, the ingress's wake, tasks, a restore, the CLI) ends here:
   * the last check that its tenant is not suspended, in the transaction that sets the instance running
   * (FOR SHARE: a suspension in flight commits first, or waits until this one has).
   */
  async #requireActiveTenant(tx: Queryable, tenantId: string): Promise<void> {
    const t = await tx.query<{ slug: string; status: string }>('SELECT slug, status FROM tenants WHERE id = $1 FOR SHARE', [tenantId]);
    if (!t.rows[0]) throw new NotFoundError('Tenant');
    assertTenantActive(t.rows[0]);
  }

  /**
   * The last check before an instance is set running (start, restart, the ingress's wake, which calls
   * start): its tenant is active and, when the instance is not running yet and the tenant has a
   * maxSandboxes quota, there is room for one more sandbox. The tenant row is locked FOR UPDATE then (as
   * deploy and the pool service do), so two starts cannot both take the last one. Pool sandboxes are
   * reserved by their pool at its max and not counted again.
   */
  async #admitRunning(tx: Queryable, tenantId: string, r: InstanceRow): Promise<void> {
    const counted = r.desiredState === 'running' || r.name.startsWith('pool-');
    const q = await tx.query<{ max_sandboxes: number | null }>('SELECT max_sandboxes FROM tenants WHERE id = $1', [tenantId]);
    if (counted || q.rows[0]?.max_sandboxes == null) return this.#requireActiveTenant(tx, tenantId);
    const t = await tx.query<{ slug: string; status: string; max_sandboxes: number | null }>(
      'SELECT slug, status, max_sandboxes FROM tenants WHERE id = $1 FOR UPDATE',
      [tenantId],
    );
    const tenant = t.rows[0];
    if (!tenant) throw new NotFoundError('Tenant');
    assertTenantActive(tenant);
    if (tenant.max_sandboxes === null) return;
    const held = await sandboxesHeld(tx, tenantId);
    if (held + 1 > tenant.max_sandboxes) throw sandboxQuotaError(tenant.slug, tenant.max_sandboxes, held + 1, `starting "${r.name}"`);
  }

  /** Whether instances can run this version now (the default is pulled on demand; another must be installed). */
  async hasRuntime(version: string): Promise<boolean> {
    return version === this.#o.defaultRuntimeVersion || (await this.#o.runtimes.has(version));
  }

  /**
   * The platform's default version is pulled by the reconciler on first start (a first deploy just
   * works); any other version must be installed by a platform admin first, so a tenant cannot make the
   * host download packages of its choosing.
   */
  async #requireRuntime(tenantId: string, action: string, version: string, by: Audited, id: string | null = null): Promise<void> {
    if (version === this.#o.defaultRuntimeVersion || (await this.#o.runtimes.has(version))) return;
    const msg = `OpenClaw ${version} is not installed on this control plane (only the default version, ${this.#o.defaultRuntimeVersion}, is pulled on demand): a platform admin must run "clawplane runtime pull openclaw@${version}" first.`;
    await this.#refused(tenantId, action, id, msg, by);
    throw new ConflictError(msg, 'runtime_missing');
  }

  /** A maxSandboxes refusal of a start is audited (decision deny) like deploy's quota refusals, then rethrown. */
  #quotaRefused(tenantId: string, id: string, by: Audited): (err: unknown) => Promise<never> {
    return async (err) => {
      if (err instanceof QuotaExceededError) await this.#refused(tenantId, 'instance.start', id, err.message, by);
      throw err;
    };
  }

  async #refused(tenantId: string, action: string, id: string | null, reason: string, by: Audited): Promise<void> {
    await this.#o.db.tx((tx) =>
      appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action,
        target: id ? `instance:${id}` : null,
        decision: 'deny',
        detail: { reason },
        requestId: by.requestId ?? null,
      }),
    );
  }

  async #event(q: Queryable, tenantId: string, id: string, from: string | null, to: string, reason: string, actor: string): Promise<void> {
    await q.query('INSERT INTO instance_events (tenant_id, instance_id, from_status, to_status, reason, actor) VALUES ($1, $2, $3, $4, $5, $6)', [
      tenantId,
      id,
      from,
      to,
      scrubHostDetails(reason),
      actor,
    ]);
  }

  async #transition(q: Queryable, row: InstanceRow, to: InstanceStatus, reason: string, actor: string): Promise<void> {
    await q.query('UPDATE instances SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1', [row.id, to, scrubHostDetails(reason)]);
    await this.#event(q, row.tenantId, row.id, row.status, to, reason, actor);
  }

  // ---- for the reconciler (system actor; not exposed through the API) ----

  /**
   * Every instance the reconciler must look at: all but those stopped (or suspended) that want to stay so
   * and have no sandbox, for which a pass does nothing. Through the partial index instances_reconcile
   * (same predicate), so idle tenants' stopped instances cost nothing per pass.
   */
  async allForReconcile(): Promise<InstanceRow[]> {
    const r = await this.#o.db.query<Row>(
      `SELECT * FROM instances
        WHERE desired_state <> 'stopped' OR status NOT IN ('stopped', 'suspended') OR sandbox IS NOT NULL
        ORDER BY created_at, id`,
    );
    return r.rows.map(toRow);
  }

  /** Instances running and meant to (the idle reaper's candidates), through the partial index instances_running. */
  async running(): Promise<InstanceRow[]> {
    const r = await this.#o.db.query<Row>(`SELECT * FROM instances WHERE status = 'running' AND desired_state = 'running' ORDER BY created_at, id`);
    return r.rows.map(toRow);
  }

  /**
   * The instances of `which` (`reconcile`: as allForReconcile; `running`: as running) read together with one
   * upsert of their leases in work_claims (docs/adr/0009-replica-coordination.md): each row says whether this
   * replica now holds it. A lease is taken when free, lapsed or already ours, never from a live owner. With a
   * node-bound driver (local sandboxes belong to their host) an instance whose sandbox runs on another node is
   * not claimed here. One statement, so claiming costs no extra round trip per pass; our own lease is rewritten
   * only once less than half its TTL is left, so most passes write nothing.
   */
  async claim(which: 'reconcile' | 'running', c: { owner: string; node: string; ttlMs: number; nodeBound: boolean }): Promise<ClaimedRow[]> {
    const where =
      which === 'reconcile'
        ? `desired_state <> 'stopped' OR status NOT IN ('stopped', 'suspended') OR sandbox IS NOT NULL`
        : `status = 'running' AND desired_state = 'running'`;
    const r = await this.#o.db.query<Row & { claimed: boolean; held_by: string | null; held_live: boolean | null }>(
      `WITH cand AS (SELECT * FROM instances WHERE ${where}),
       mine AS (
         INSERT INTO work_claims AS w (kind, item, owner, expires_at)
         SELECT 'instance', id::text, $1, now() + make_interval(secs => $2::double precision / 1000) FROM cand
          WHERE NOT $4 OR sandbox IS NULL OR sandbox_node IS NULL OR sandbox_node = $3
          ORDER BY id
         ON CONFLICT (kind, item) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
          WHERE (w.owner = EXCLUDED.owner AND w.expires_at < now() + make_interval(secs => $2::double precision / 2000)) OR w.expires_at < now()
         RETURNING item)
       SELECT cand.*, (mine.item IS NOT NULL OR (h.owner = $1 AND h.expires_at > now())) AS claimed, h.owner AS held_by, h.expires_at > now() AS held_live
         FROM cand LEFT JOIN mine ON mine.item = cand.id::text
         LEFT JOIN work_claims h ON h.kind = 'instance' AND h.item = cand.id::text
        ORDER BY cand.created_at, cand.id`,
      [c.owner, c.ttlMs, c.node, c.nodeBound],
    );
    return r.rows.map((x) => ({ row: toRow(x), claimed: x.claimed, heldBy: x.held_by, heldLive: x.held_live === true }));
  }

  async byId(id: string): Promise<InstanceRow | undefined> {
    const r = await this.#o.db.query<Row>('SELECT * FROM instances WHERE id = $1', [id]);
    return r.rows[0] ? toRow(r.rows[0]) : undefined;
  }

  /** Records a status change with its reason; audits outcomes (running, error, stopped, rollback). */
  async recordStatus(
    row: InstanceRow,
    to: InstanceStatus,
    reason: string,
    patch: Partial<{
      sandbox: SandboxRef | null;
      snapshot: SnapshotRef | null;
      desiredState: DesiredState;
      observedGeneration: number;
      failures: number;
      nextAttemptAt: Date | null;
      runtimeVersion: string;
      previousRuntimeVersion: string | null;
      health: SandboxHealth | null;
    }> = {},
    audit?: { action: string; decision: string; detail?: Record<string, unknown> },
  ): Promise<InstanceRow> {
    return this.#o.db.tx(async (tx) => {
      const sets = ['status = $2', 'status_reason = $3', 'updated_at = now()'];
      // Tenants read status reasons: a driver's error (paths, uids, CRIU or tar output) stays in the logs.
      reason = scrubHostDetails(reason);
      const vals: unknown[] = [row.id, to, reason];
      const col: Record<string, string> = {
        sandbox: 'sandbox',
        snapshot: 'snapshot',
        desiredState: 'desired_state',
        observedGeneration: 'observed_generation',
        failures: 'failures',
        nextAttemptAt: 'next_attempt_at',
        runtimeVersion: 'runtime_version',
        previousRuntimeVersion: 'previous_runtime_version',
      };
      for (const [k, v] of Object.entries(patch)) {
        vals.push((k === 'sandbox' || k === 'snapshot' || k === 'health') && v !== null ? JSON.stringify(v) : v);
        sets.push(`${col[k] ?? k} = $${vals.length}`);
        if (k === 'health') sets.push('health_checked_at = now()');
      }
      if (patch.sandbox !== undefined) {
        vals.push(patch.sandbox === null ? null : this.node);
        sets.push(`sandbox_node = $${vals.length}`);
      }
      // A start counts as use: the idle reaper measures from here, not from a use before the last stop.
      if (to === 'running' && row.status !== 'running') sets.push('last_active_at = now()');
      const r = await tx.query<Row>(`UPDATE instances SET ${sets.join(', ')} WHERE id = $1 RETURNING *`, vals);
      if (row.status !== to || row.statusReason !== reason) await this.#event(tx, row.tenantId, row.id, row.status, to, reason, 'system');
      if (audit)
        await appendAudit(tx, {
          actor: 'system',
          tenantId: row.tenantId,
          action: audit.action,
          target: `instance:${row.id}`,
          decision: audit.decision,
          detail: { status: to, reason, ...audit.detail },
        });
      return toRow(r.rows[0] as Row);
    });
  }

  /** Notes an event without a status change (adoption after a control-plane restart). */
  /** Replaces the status reason of a step in progress (no event: progress lines are not history). */
  async progress(id: string, reason: string): Promise<void> {
    await this.#o.db.query('UPDATE instances SET status_reason = $2, updated_at = now() WHERE id = $1', [id, reason]);
  }

  async note(row: InstanceRow, reason: string): Promise<void> {
    await this.#event(this.#o.db, row.tenantId, row.id, row.status, row.status, reason, 'system');
  }

  async saveSandbox(id: string, handle: SandboxRef | null): Promise<void> {
    await this.#o.db.query('UPDATE instances SET sandbox = $2, sandbox_node = $3, updated_at = now() WHERE id = $1', [
      id,
      handle === null ? null : JSON.stringify(handle),
      handle === null ? null : this.node,
    ]);
  }

  async saveHealth(id: string, health: SandboxHealth | null): Promise<void> {
    await this.#o.db.query('UPDATE instances SET health = $2, health_checked_at = now() WHERE id = $1', [id, health === null ? null : JSON.stringify(health)]);
  }

  /** Removes a destroyed instance's row and its gateway token; the audit log keeps the history. */
  async removeDestroyed(row: InstanceRow): Promise<void> {
    await this.#o.db.tx(async (tx) => {
      await tx.query('DELETE FROM instances WHERE id = $1 AND tenant_id = $2', [row.id, row.tenantId]);
      // The vault has no delete for platform secrets yet; this row is ours (named after the instance).
      await tx.query('DELETE FROM platform_secrets WHERE name = ANY($1)', [[secretName(row.id), secretName(row.id, 'hooks-token')]]);
      await appendAudit(tx, {
        actor: 'system',
        tenantId: row.tenantId,
        action: 'instance.destroyed',
        target: `instance:${row.id}`,
        decision: 'success',
        detail: { name: row.name, stateDeleted: row.deleteState },
      });
    });
  }

  /**
   * The gateway token (owner credential) for the ingress and the sandbox; never returned by the API.
   * Created sealed on first use (the reconciler's first start), one per instance.
   */
  async gatewayToken(instanceId: string): Promise<string> {
    // Once: two replicas asking first at the same time must not each seal a different token.
    return this.#o.vault.platformSecretOnce(secretName(instanceId), () => randomBytes(32).toString('hex'));
  }

  /** Stores a new gateway token (after the running gateway took it: src/instances/credentials.ts). */
  async replaceGatewayToken(instanceId: string, token: string): Promise<void> {
    await this.#o.vault.sealPlatformSecret(secretName(instanceId), token, { actor: 'system' });
    await this.#o.events.publish(this.#o.db, 'gateway_token.changed', { instanceId });
  }

  /** The token the gateway's inbound webhooks accept (ingress only); created sealed on first use, one per instance. */
  async hooksToken(instanceId: string): Promise<string> {
    const name = secretName(instanceId, 'hooks-token');
    try {
      return await this.#o.vault.openPlatformSecret(name);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      const token = randomBytes(32).toString('hex');
      await this.#o.vault.sealPlatformSecret(name, token, { actor: 'system' });
      return token;
    }
  }

  /** The tenant's sandbox uid, allocated on first use (one per tenant, never reused while the tenant exists). */
  async tenantUid(tenantId: string): Promise<number> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const have = await this.#o.db.query<{ uid: number }>('SELECT uid FROM sandbox_uids WHERE tenant_id = $1', [tenantId]);
      if (have.rows[0]) return have.rows[0].uid;
      try {
        const r = await this.#o.db.query<{ uid: number }>(
          `INSERT INTO sandbox_uids (tenant_id, uid) SELECT $1, GREATEST(COALESCE(max(uid) + 1, $2), $2) FROM sandbox_uids
           ON CONFLICT (tenant_id) DO NOTHING RETURNING uid`,
          [tenantId, this.#o.uidBase],
        );
        if (r.rows[0]) return r.rows[0].uid;
      } catch (err) {
        // Two tenants took the same next uid at once: try again.
        if ((err as { code?: string }).code !== '23505') throw err;
      }
    }
    throw new Error('could not allocate a sandbox uid');
  }

  async clusterId(): Promise<string> {
    const r = await this.#o.db.query<{ cluster_id: string }>('SELECT cluster_id FROM sandbox_cluster');
    const id = r.rows[0]?.cluster_id;
    if (!id) throw new Error('sandbox_cluster row is missing: the instances migration did not run');
    return id;
  }
}
