import { randomUUID } from 'node:crypto';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { cancelWorkflow, sendToWorkflow } from '../durable/engine.ts';
import { ConflictError, NotFoundError, QuotaExceededError, ValidationError } from '../errors.ts';
import { putSetting } from '../identity/settings.ts';
import { checkLane, checkProject, isTimeZone, loadPlatformLaneSettings, parseCron, PLATFORM_SETTINGS_KEY } from './rules.ts';
import {
  LANE_CHECKS,
  laneInput,
  lanePatch,
  platformLaneSettings,
  projectInput,
  projectPatch,
  type Finding,
  type Lane,
  type LaneInput,
  type LanePatch,
  type LaneStep,
  type PlatformLaneSettings,
  type Project,
  type ProjectInput,
  type Run,
  type RunStatus,
  type RunStep,
  type RunTrigger,
} from './types.ts';

export interface Audited {
  actor: string;
  requestId?: string | undefined;
}

/** The built-in doctor lane's name (and its project's) and schedule: every hour, on the hour, in the tenant's zone. */
export const DOCTOR_LANE = 'doctor';
export const DOCTOR_SCHEDULE = '0 * * * *';

/** The DBOS topic a parked step waits on; the decision is also in its row (a lost send is re-read). */
export const laneApprovalTopic = (runId: string, index: number) => `lane-approval:${runId}:${index}`;

/** Starts a run's workflow (enqueued on the lanes queue; idempotent by run id). Set by the runtime. */
export type RunStarter = (run: { tenantId: string; runId: string; steps: LaneStep[] }) => Promise<void>;

interface ProjectRow {
  id: string;
  tenant_id: string;
  name: string;
  description: string;
  repositories: string[];
  hosts: string[];
  data_sources: string[];
  lane_kinds: Project['laneKinds'];
  runs_per_day: number;
  created_at: Date;
  updated_at: Date;
}
const toProject = (r: ProjectRow): Project => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  description: r.description,
  repositories: r.repositories,
  hosts: r.hosts,
  dataSources: r.data_sources,
  laneKinds: r.lane_kinds,
  runsPerDay: r.runs_per_day,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

interface LaneRow {
  id: string;
  tenant_id: string;
  project_id: string;
  project: string;
  name: string;
  kind: Lane['kind'];
  description: string;
  steps: LaneStep[];
  read_only: boolean;
  harmless: boolean;
  enabled: boolean;
  schedule: string | null;
  catch_up: Lane['catchUp'];
  next_slot_at: Date | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}
const toLane = (r: LaneRow): Lane => ({
  id: r.id,
  tenantId: r.tenant_id,
  projectId: r.project_id,
  project: r.project,
  name: r.name,
  kind: r.kind,
  description: r.description,
  steps: r.steps,
  readOnly: r.read_only,
  harmless: r.harmless,
  enabled: r.enabled,
  schedule: r.schedule,
  catchUp: r.catch_up,
  nextSlotAt: r.next_slot_at?.toISOString() ?? null,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});
const LANE_SELECT = 'SELECT l.*, p.name AS project FROM lanes l JOIN projects p ON p.id = l.project_id';

interface RunRow {
  id: string;
  tenant_id: string;
  lane_id: string;
  lane_name: string;
  trigger: RunTrigger;
  slot_at: Date | null;
  status: RunStatus;
  status_reason: string;
  created_by: string;
  summary_key: string | null;
  artifact_bytes: string;
  input_tokens: string;
  output_tokens: string;
  cost_usd: string;
  model_calls: number;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}
interface StepRow {
  run_id: string;
  idx: number;
  name: string;
  requires_approval: boolean;
  status: RunStep['status'];
  status_reason: string;
  task_id: string | null;
  decided_by: string | null;
  input_tokens: string;
  output_tokens: string;
  cost_usd: string;
  model_calls: number;
  started_at: Date | null;
  finished_at: Date | null;
  findings: Finding[] | null;
}
const toStep = (r: StepRow): RunStep => ({
  index: r.idx,
  name: r.name,
  requiresApproval: r.requires_approval,
  status: r.status,
  reason: r.status_reason,
  taskId: r.task_id,
  decidedBy: r.decided_by,
  inputTokens: Number(r.input_tokens),
  outputTokens: Number(r.output_tokens),
  costUsd: Number(r.cost_usd),
  modelCalls: r.model_calls,
  startedAt: r.started_at?.toISOString() ?? null,
  finishedAt: r.finished_at?.toISOString() ?? null,
  findings: r.findings,
});
const toRun = (r: RunRow, steps: StepRow[]): Run => ({
  id: r.id,
  tenantId: r.tenant_id,
  laneId: r.lane_id,
  lane: r.lane_name,
  trigger: r.trigger,
  slotAt: r.slot_at?.toISOString() ?? null,
  status: r.status,
  reason: r.status_reason,
  createdBy: r.created_by,
  summaryKey: r.summary_key,
  artifactBytes: Number(r.artifact_bytes),
  inputTokens: Number(r.input_tokens),
  outputTokens: Number(r.output_tokens),
  costUsd: Number(r.cost_usd),
  modelCalls: r.model_calls,
  createdAt: r.created_at.toISOString(),
  startedAt: r.started_at?.toISOString() ?? null,
  finishedAt: r.finished_at?.toISOString() ?? null,
  steps: steps.filter((s) => s.run_id === r.id).map(toStep),
});

const unique = (err: unknown, what: string): never => {
  if ((err as { code?: string }).code === '23505') throw new ConflictError(`${what} already exists: choose another name.`, 'already_exists');
  throw err;
};

/**
 * Projects, lanes and runs of a tenant (docs/lanes.md). Every change is audited in its transaction. Runs are
 * started through `RunStarter` (the runtime enqueues the workflow); scheduled runs come from the scheduler.
 */
export class LaneService {
  readonly #db: Db;
  #starter: RunStarter | undefined;
  /** The scheduler's clock (tests inject one): new lanes' first slot is computed from it. */
  now: () => Date = () => new Date();

  constructor(db: Db) {
    this.#db = db;
  }

  useStarter(s: RunStarter): void {
    this.#starter = s;
  }

  // --- settings -------------------------------------------------------------------------------------

  platformSettings(): Promise<PlatformLaneSettings> {
    return loadPlatformLaneSettings(this.#db);
  }

  async setPlatformSettings(raw: unknown, by: Audited): Promise<PlatformLaneSettings> {
    const s = platformLaneSettings.parse(raw);
    await this.#db.tx(async (tx) => {
      await putSetting(tx, PLATFORM_SETTINGS_KEY, s);
      await appendAudit(tx, {
        actor: by.actor,
        action: 'lanes.platform_settings',
        target: 'platform:lanes',
        decision: 'success',
        detail: { ...s },
        requestId: by.requestId ?? null,
      });
    });
    return s;
  }

  async timeZone(tenantId: string, q: Queryable = this.#db): Promise<string> {
    const r = await q.query<{ time_zone: string }>('SELECT time_zone FROM tenants WHERE id = $1', [tenantId]);
    const tz = r.rows[0]?.time_zone;
    if (tz === undefined) throw new NotFoundError('Tenant');
    return tz;
  }

  /** Sets the zone schedules are read in; every scheduled lane's next slot moves with it. */
  async setTimeZone(tenantId: string, timeZone: string, by: Audited): Promise<{ timeZone: string }> {
    if (!isTimeZone(timeZone))
      throw new ValidationError(`The request is invalid: body.timeZone: "${timeZone}" is not an IANA time zone (e.g. "Europe/Berlin").`, [
        { path: 'body.timeZone', message: 'an IANA time zone such as "Europe/Berlin" or "UTC"' },
      ]);
    await this.#db.tx(async (tx) => {
      await tx.query('UPDATE tenants SET time_zone = $2 WHERE id = $1', [tenantId, timeZone]);
      const lanes = await tx.query<{ id: string; schedule: string }>(
        'SELECT id, schedule FROM lanes WHERE tenant_id = $1 AND schedule IS NOT NULL FOR UPDATE',
        [tenantId],
      );
      for (const l of lanes.rows)
        await tx.query('UPDATE lanes SET next_slot_at = $2 WHERE id = $1', [l.id, parseCron(l.schedule, timeZone).nextRun(this.now())]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'lanes.time_zone',
        target: `tenant:${tenantId}`,
        decision: 'success',
        detail: { timeZone },
        requestId: by.requestId ?? null,
      });
    });
    return { timeZone };
  }

  // --- projects -------------------------------------------------------------------------------------

  async listProjects(tenantId: string): Promise<Project[]> {
    const r = await this.#db.query<ProjectRow>('SELECT * FROM projects WHERE tenant_id = $1 ORDER BY name', [tenantId]);
    return r.rows.map(toProject);
  }

  async getProject(tenantId: string, id: string, q: Queryable = this.#db): Promise<Project> {
    const r = await q.query<ProjectRow>('SELECT * FROM projects WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
    const row = r.rows[0];
    if (!row) throw new NotFoundError('Project');
    return toProject(row);
  }

  async createProject(tenantId: string, raw: ProjectInput, by: Audited): Promise<Project> {
    const p = projectInput.parse(raw);
    checkProject(p, await this.platformSettings());
    return this.#db
      .tx(async (tx) => {
        const r = await tx.query<ProjectRow>(
          `INSERT INTO projects (tenant_id, name, description, repositories, hosts, data_sources, lane_kinds, runs_per_day) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
          [tenantId, p.name, p.description, p.repositories, p.hosts, p.dataSources, p.laneKinds, p.runsPerDay],
        );
        const row = r.rows[0] as ProjectRow;
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'project.create',
          target: `project:${row.id}`,
          decision: 'success',
          detail: { ...p },
          requestId: by.requestId ?? null,
        });
        return toProject(row);
      })
      .catch((err: unknown) => unique(err, `Project "${p.name}"`));
  }

  async updateProject(tenantId: string, id: string, raw: unknown, by: Audited): Promise<Project> {
    const patch = projectPatch.parse(raw);
    const settings = await this.platformSettings();
    return this.#db.tx(async (tx) => {
      const cur = await this.getProject(tenantId, id, tx);
      const next = { ...cur, ...Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) } as Project;
      checkProject(next, settings);
      const r = await tx.query<ProjectRow>(
        `UPDATE projects SET description = $3, repositories = $4, hosts = $5, data_sources = $6, lane_kinds = $7, runs_per_day = $8, updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING *`,
        [tenantId, id, next.description, next.repositories, next.hosts, next.dataSources, next.laneKinds, next.runsPerDay],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'project.update',
        target: `project:${id}`,
        decision: 'success',
        detail: { ...patch },
        requestId: by.requestId ?? null,
      });
      return toProject(r.rows[0] as ProjectRow);
    });
  }

  async removeProject(tenantId: string, id: string, by: Audited): Promise<void> {
    await this.#db.tx(async (tx) => {
      const r = await tx.query('DELETE FROM projects WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
      if (r.rowCount === 0) throw new NotFoundError('Project');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'project.delete',
        target: `project:${id}`,
        decision: 'success',
        detail: {},
        requestId: by.requestId ?? null,
      });
    });
  }

  // --- lanes ----------------------------------------------------------------------------------------

  async listLanes(tenantId: string): Promise<Lane[]> {
    const r = await this.#db.query<LaneRow>(`${LANE_SELECT} WHERE l.tenant_id = $1 ORDER BY l.name`, [tenantId]);
    return r.rows.map(toLane);
  }

  async getLane(tenantId: string, id: string, q: Queryable = this.#db): Promise<Lane> {
    const r = await q.query<LaneRow>(`${LANE_SELECT} WHERE l.tenant_id = $1 AND l.id = $2`, [tenantId, id]);
    const row = r.rows[0];
    if (!row) throw new NotFoundError('Lane');
    return toLane(row);
  }

  async #projectByName(q: Queryable, tenantId: string, name: string): Promise<Project> {
    const r = await q.query<ProjectRow>('SELECT * FROM projects WHERE tenant_id = $1 AND name = $2', [tenantId, name]);
    const row = r.rows[0];
    if (!row)
      throw new ValidationError(`The request is invalid: body.project: no project "${name}" in this tenant.`, [
        { path: 'body.project', message: `no project "${name}" in this tenant: create it first` },
      ]);
    return toProject(row);
  }

  async createLane(tenantId: string, raw: LaneInput, by: Audited): Promise<Lane> {
    const l = laneInput.parse(raw);
    const settings = await this.platformSettings();
    return this.#db
      .tx(async (tx) => {
        const project = await this.#projectByName(tx, tenantId, l.project);
        const tz = await this.timeZone(tenantId, tx);
        checkLane(l, project, settings, tz);
        const enabled = l.enabled ?? l.harmless;
        const next = l.schedule ? parseCron(l.schedule, tz).nextRun(this.now()) : null;
        const r = await tx.query<{ id: string }>(
          `INSERT INTO lanes (tenant_id, project_id, name, kind, description, steps, read_only, harmless, enabled, schedule, catch_up, next_slot_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id`,
          [
            tenantId,
            project.id,
            l.name,
            l.kind,
            l.description,
            JSON.stringify(l.steps),
            l.readOnly,
            l.harmless,
            enabled,
            l.schedule,
            l.catchUp,
            next,
            by.actor,
          ],
        );
        const id = (r.rows[0] as { id: string }).id;
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'lane.create',
          target: `lane:${id}`,
          decision: 'success',
          detail: {
            name: l.name,
            project: l.project,
            kind: l.kind,
            readOnly: l.readOnly,
            harmless: l.harmless,
            enabled,
            schedule: l.schedule,
            catchUp: l.catchUp,
            steps: l.steps.map((s) => ({ name: s.name, requiresApproval: s.requiresApproval })),
          },
          requestId: by.requestId ?? null,
        });
        return this.getLane(tenantId, id, tx);
      })
      .catch((err: unknown) => unique(err, `Lane "${l.name}"`));
  }

  async updateLane(tenantId: string, id: string, raw: LanePatch, by: Audited): Promise<Lane> {
    const patch = lanePatch.parse(raw);
    const settings = await this.platformSettings();
    return this.#db.tx(async (tx) => {
      const cur = await this.getLane(tenantId, id, tx);
      await tx.query('SELECT 1 FROM lanes WHERE id = $1 FOR UPDATE', [id]);
      const projectName = patch.project ?? cur.project;
      const project = await this.#projectByName(tx, tenantId, projectName);
      const tz = await this.timeZone(tenantId, tx);
      const next = {
        kind: patch.kind ?? cur.kind,
        description: patch.description ?? cur.description,
        steps: patch.steps ?? cur.steps,
        readOnly: patch.readOnly ?? cur.readOnly,
        harmless: patch.harmless ?? cur.harmless,
        enabled: patch.enabled ?? cur.enabled,
        schedule: patch.schedule === undefined ? cur.schedule : patch.schedule,
        catchUp: patch.catchUp ?? cur.catchUp,
      };
      checkLane(next, project, settings, tz);
      // A new schedule, or enabling, starts from the next slot after now: slots from before do not count as missed.
      const rearm = next.schedule !== cur.schedule || (next.enabled && !cur.enabled);
      const slot =
        next.schedule === null
          ? null
          : rearm
            ? parseCron(next.schedule, tz).nextRun(this.now())
            : cur.nextSlotAt
              ? new Date(cur.nextSlotAt)
              : parseCron(next.schedule, tz).nextRun(this.now());
      await tx.query(
        `UPDATE lanes SET project_id = $3, kind = $4, description = $5, steps = $6, read_only = $7, harmless = $8, enabled = $9, schedule = $10, catch_up = $11, next_slot_at = $12, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
        [
          tenantId,
          id,
          project.id,
          next.kind,
          next.description,
          JSON.stringify(next.steps),
          next.readOnly,
          next.harmless,
          next.enabled,
          next.schedule,
          next.catchUp,
          slot,
        ],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'lane.update',
        target: `lane:${id}`,
        decision: 'success',
        detail: { ...patch, steps: patch.steps?.map((s) => ({ name: s.name, requiresApproval: s.requiresApproval })) },
        requestId: by.requestId ?? null,
      });
      return this.getLane(tenantId, id, tx);
    });
  }

  async removeLane(tenantId: string, id: string, by: Audited): Promise<void> {
    await this.#db.tx(async (tx) => {
      const active = await tx.query(
        "SELECT 1 FROM lane_runs WHERE tenant_id = $1 AND lane_id = $2 AND status NOT IN ('succeeded', 'failed', 'cancelled') LIMIT 1",
        [tenantId, id],
      );
      const r = await tx.query('SELECT 1 FROM lanes WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
      if (r.rowCount === 0) throw new NotFoundError('Lane');
      if (active.rowCount)
        throw new ConflictError('The lane has a run in progress: wait for it to end (or reject its pending approval), then delete the lane.', 'lane_busy');
      await tx.query('DELETE FROM lanes WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'lane.delete',
        target: `lane:${id}`,
        decision: 'success',
        detail: {},
        requestId: by.requestId ?? null,
      });
    });
  }

  // --- the doctor lane -------------------------------------------------------------------------------

  /**
   * The built-in doctor lane (docs/lanes.md, "The doctor lane"): hourly in the tenant's time zone, harmless
   * and read-only, its steps checks Clawplane computes itself (instance health, budgets near their caps,
   * credentials about to expire). Enabling creates its project and lane when missing (checked against the
   * platform's rules like any other) or enables it; disabling keeps it and its runs. A tenant lane of that
   * name that is not the built-in one is a 409.
   */
  async setDoctorLane(tenantId: string, enabled: boolean, by: Audited): Promise<Lane> {
    const r = await this.#db.query<{ id: string }>('SELECT id FROM lanes WHERE tenant_id = $1 AND name = $2', [tenantId, DOCTOR_LANE]);
    const id = r.rows[0]?.id;
    if (id !== undefined) {
      const cur = await this.getLane(tenantId, id);
      if (!cur.steps.every((s) => s.check !== undefined))
        throw new ConflictError(`This tenant has its own lane named "${DOCTOR_LANE}": rename or delete it to use the built-in doctor lane.`, 'lane_name_taken');
      return cur.enabled === enabled ? cur : this.updateLane(tenantId, id, { enabled }, by);
    }
    if (!enabled) throw new NotFoundError('Doctor lane');
    const settings = await this.platformSettings();
    const projects = await this.#db.query<{ id: string }>('SELECT id FROM projects WHERE tenant_id = $1 AND name = $2', [tenantId, DOCTOR_LANE]);
    if (projects.rowCount === 0) {
      await this.createProject(
        tenantId,
        {
          name: DOCTOR_LANE,
          description: "The built-in doctor lane's project: checks only, it reaches nothing outside",
          laneKinds: ['health'],
          runsPerDay: Math.min(48, settings.maxRunsPerDay),
        },
        by,
      );
    }
    return this.createLane(
      tenantId,
      {
        name: DOCTOR_LANE,
        project: DOCTOR_LANE,
        kind: 'health',
        description: 'Hourly: instance health, budgets near their caps, credentials about to expire (computed by Clawplane, no agent)',
        readOnly: true,
        harmless: true,
        enabled: true,
        schedule: DOCTOR_SCHEDULE,
        catchUp: 'skip',
        steps: LANE_CHECKS.map((c) => ({ name: c, check: c })),
      },
      by,
    );
  }

  // --- runs -----------------------------------------------------------------------------------------

  /** A run on demand (the API): refused while the tenant is suspended (the route checks) or over the project's runs per day. */
  async trigger(tenantId: string, laneId: string, by: Audited): Promise<Run> {
    const lane = await this.getLane(tenantId, laneId);
    const run = await this.#db.tx((tx) => this.insertRun(tx, lane, 'manual', null, by, { strictQuota: true }));
    if (!run) throw new ConflictError('The run was not created.', 'conflict');
    await this.start(run.tenantId, run.id, lane.steps);
    return this.getRun(tenantId, run.id);
  }

  /**
   * Inserts a run and its step rows in the caller's transaction; null when this (lane, slot) already has one
   * (another replica fired it). Over the project's runs per day: a manual run is refused (429), a scheduled
   * one is recorded failed with the reason, so the missed slot shows.
   */
  async insertRun(
    tx: Queryable,
    lane: Lane,
    trigger: RunTrigger,
    slotAt: Date | null,
    by: Audited,
    opts: { strictQuota?: boolean } = {},
  ): Promise<{ id: string; tenantId: string; status: RunStatus } | null> {
    const quota = await tx.query<{ runs_per_day: number; n: number }>(
      `SELECT p.runs_per_day, (SELECT count(*)::int FROM lane_runs r JOIN lanes l2 ON l2.id = r.lane_id
                                  WHERE l2.project_id = p.id AND r.created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS n
         FROM projects p WHERE p.id = $1 FOR UPDATE OF p`,
      [lane.projectId],
    );
    const q = quota.rows[0];
    const over = q !== undefined && q.n >= q.runs_per_day;
    if (over && opts.strictQuota)
      throw new QuotaExceededError(
        `Project "${lane.project}" allows ${q.runs_per_day} lane runs per UTC day and has used them: try again tomorrow or raise its runsPerDay.`,
      );
    const id = randomUUID();
    const status: RunStatus = over ? 'failed' : 'queued';
    const reason = over ? `rate limit: project "${lane.project}" allows ${q.runs_per_day} runs per UTC day` : '';
    const r = await tx.query(
      `INSERT INTO lane_runs (id, tenant_id, lane_id, lane_name, trigger, slot_at, status, status_reason, created_by, finished_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $7 = 'failed' THEN now() END) ON CONFLICT (lane_id, slot_at) DO NOTHING`,
      [id, lane.tenantId, lane.id, lane.name, trigger, slotAt, status, reason, by.actor],
    );
    if (r.rowCount === 0) return null;
    for (const [i, s] of lane.steps.entries()) {
      await tx.query(
        `INSERT INTO lane_run_steps (tenant_id, run_id, idx, name, requires_approval, status, status_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [lane.tenantId, id, i, s.name, s.requiresApproval, over ? 'skipped' : 'pending', over ? reason : ''],
      );
    }
    await appendAudit(tx, {
      actor: by.actor,
      tenantId: lane.tenantId,
      action: 'lane.run',
      target: `lane-run:${id}`,
      decision: over ? 'deny' : 'success',
      detail: { lane: lane.name, laneId: lane.id, trigger, slotAt: slotAt?.toISOString() ?? null, ...(over ? { reason } : {}) },
      requestId: by.requestId ?? null,
    });
    return { id, tenantId: lane.tenantId, status };
  }

  /** Starts (or re-attaches to) a queued run's workflow. */
  async start(tenantId: string, runId: string, steps: LaneStep[]): Promise<void> {
    if (!this.#starter) throw new Error('lane runs cannot start: no runtime bound (LaneRuntime.start)');
    await this.#starter({ tenantId, runId, steps });
  }

  async getRun(tenantId: string, id: string, q: Queryable = this.#db): Promise<Run> {
    const r = await q.query<RunRow>('SELECT * FROM lane_runs WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
    const row = r.rows[0];
    if (!row) throw new NotFoundError('Lane run');
    const steps = await q.query<StepRow>('SELECT * FROM lane_run_steps WHERE tenant_id = $1 AND run_id = $2 ORDER BY idx', [tenantId, id]);
    return toRun(row, steps.rows);
  }

  async listRuns(tenantId: string, f: { laneId?: string | undefined; status?: RunStatus | undefined; limit: number }): Promise<Run[]> {
    const r = await this.#db.query<RunRow>(
      `SELECT * FROM lane_runs WHERE tenant_id = $1 AND ($2::uuid IS NULL OR lane_id = $2) AND ($3::text IS NULL OR status = $3) ORDER BY created_at DESC, id DESC LIMIT $4`,
      [tenantId, f.laneId ?? null, f.status ?? null, f.limit],
    );
    if (r.rows.length === 0) return [];
    const steps = await this.#db.query<StepRow>('SELECT * FROM lane_run_steps WHERE tenant_id = $1 AND run_id = ANY($2::uuid[]) ORDER BY idx', [
      tenantId,
      r.rows.map((x) => x.id),
    ]);
    return r.rows.map((x) => toRun(x, steps.rows));
  }

  /**
   * Cancels a run that has not ended: the row ends now (its unfinished steps skipped with the reason), then the
   * workflow and the task it waits on are cancelled (DBOS cancels child workflows; task housekeeping ends the
   * task's row). A cancelled run writes no summary.json.
   */
  async cancel(tenantId: string, runId: string, by: Audited & { reason?: string | undefined }): Promise<Run> {
    const reason = `cancelled by ${by.actor}${by.reason ? `: ${by.reason}` : ''}`;
    await this.#db.tx(async (tx) => {
      const run = await this.getRun(tenantId, runId, tx);
      if (run.status === 'cancelled') return;
      if (run.status === 'succeeded' || run.status === 'failed') throw new ConflictError(`The run already ended (${run.status}).`, 'run_ended');
      await tx.query(`UPDATE lane_runs SET status = 'cancelled', status_reason = $3, finished_at = now() WHERE tenant_id = $1 AND id = $2`, [
        tenantId,
        runId,
        reason,
      ]);
      await tx.query(
        `UPDATE lane_run_steps SET status = 'skipped', status_reason = $3, finished_at = CASE WHEN started_at IS NULL THEN NULL ELSE now() END WHERE tenant_id = $1 AND run_id = $2 AND status IN ('pending', 'waiting_approval', 'running')`,
        [tenantId, runId, `skipped: run ${reason}`],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'lane.run.cancel',
        target: `lane-run:${runId}`,
        decision: 'success',
        detail: { reason: by.reason ?? null },
        requestId: by.requestId ?? null,
      });
    });
    await cancelWorkflow(runId);
    return this.getRun(tenantId, runId);
  }

  /**
   * A person's decision on a step parked for approval: recorded in its row (the workflow re-reads it), then
   * sent to the run's workflow with the step as idempotency key, as task approvals are (src/tasks/approvals.ts).
   */
  async decide(
    tenantId: string,
    runId: string,
    index: number,
    decision: 'approved' | 'rejected',
    by: Audited & { comment?: string | undefined },
  ): Promise<Run> {
    await this.#db.tx(async (tx) => {
      await this.getRun(tenantId, runId, tx);
      const st = await tx.query<{ status: string; decided_by: string | null }>(
        'SELECT status, decided_by FROM lane_run_steps WHERE tenant_id = $1 AND run_id = $2 AND idx = $3 FOR UPDATE',
        [tenantId, runId, index],
      );
      const row = st.rows[0];
      if (!row) throw new NotFoundError('Step');
      if (row.status !== 'waiting_approval' || row.decided_by !== null)
        throw new ConflictError(
          `Step ${index} is not waiting for an approval (it is ${row.status}${row.decided_by ? `, decided by ${row.decided_by}` : ''}).`,
          'not_waiting',
        );
      const comment = by.comment ? `: ${by.comment}` : '';
      if (decision === 'approved')
        await tx.query(`UPDATE lane_run_steps SET decided_by = $4, status_reason = $5 WHERE tenant_id = $1 AND run_id = $2 AND idx = $3`, [
          tenantId,
          runId,
          index,
          by.actor,
          `approved by ${by.actor}${comment}`,
        ]);
      else
        await tx.query(
          `UPDATE lane_run_steps SET decided_by = $4, status = 'failed', status_reason = $5, finished_at = now() WHERE tenant_id = $1 AND run_id = $2 AND idx = $3`,
          [tenantId, runId, index, by.actor, `rejected by ${by.actor}${comment}`],
        );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: decision === 'approved' ? 'lane.step.approve' : 'lane.step.reject',
        target: `lane-run:${runId}`,
        decision: 'success',
        detail: { step: index, comment: by.comment ?? null },
        requestId: by.requestId ?? null,
      });
    });
    await sendToWorkflow(runId, laneApprovalTopic(runId, index), { decision, by: by.actor }, `${runId}:${index}`);
    return this.getRun(tenantId, runId);
  }
}
