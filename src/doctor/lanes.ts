import type { Db } from '../db/pool.ts';
import { parseCron } from '../lanes/rules.ts';
import { fail, ok, warn, type Finding } from './types.ts';

/** How late a slot may be before the doctor calls the scheduler stalled: the catch-up grace (ADR 0012) and three ticks. */
const overdueAfterMs = (tickMs: number) => 120_000 + 3 * tickMs;
/** A run that has not ended and has had no live workflow for this long is stuck. */
const STUCK_AFTER = '5 minutes';
const list = (xs: string[]) => `${xs.slice(0, 5).join('; ')}${xs.length > 5 ? ` (+${xs.length - 5} more)` : ''}`;

/**
 * Lane schedules (docs/adr/0012-lane-scheduling.md): every enabled scheduled lane of an active tenant has a next
 * slot, its cron still parses in its tenant's zone, and no slot is overdue (an overdue slot means no worker replica
 * ticks the scheduler, or its ticks fail).
 */
export async function checkLaneSchedules(db: Db, tickMs: number): Promise<Finding> {
  const r = await db.query<{ tenant: string; name: string; schedule: string; tz: string; next: Date | null; late_ms: number | null }>(
    `SELECT t.slug AS tenant, l.name, l.schedule, t.time_zone AS tz, l.next_slot_at AS next, (extract(epoch FROM now() - l.next_slot_at) * 1000)::float8 AS late_ms
       FROM lanes l JOIN tenants t ON t.id = l.tenant_id
      WHERE l.enabled AND l.schedule IS NOT NULL AND t.status = 'active' ORDER BY t.slug, l.name`,
  );
  const broken: string[] = [];
  const overdue: string[] = [];
  for (const l of r.rows) {
    try {
      if (!parseCron(l.schedule, l.tz, 'schedule').nextRun()) broken.push(`${l.tenant}/${l.name}: "${l.schedule}" never fires again`);
    } catch (err) {
      broken.push(`${l.tenant}/${l.name}: "${l.schedule}" in ${l.tz} does not parse (${(err as Error).message})`);
      continue;
    }
    if (l.next === null) broken.push(`${l.tenant}/${l.name}: no next slot`);
    else if ((l.late_ms ?? 0) > overdueAfterMs(tickMs))
      overdue.push(`${l.tenant}/${l.name}: the slot of ${l.next.toISOString()} is ${Math.round((l.late_ms ?? 0) / 60_000)} min overdue`);
  }
  if (broken.length > 0)
    return fail(
      `broken schedule(s): ${list(broken)}`,
      'PATCH the lane with a valid five-field cron (or set it again, which recomputes the next slot); a lane that should not run: PATCH {"enabled": false}',
    );
  if (overdue.length > 0)
    return fail(
      `the scheduler is not firing: ${list(overdue)}`,
      'run at least one clawplane serve with the worker role (CLAWPLANE_ROLES) and look in its log for "lane scheduler tick failed"',
    );
  if (r.rows.length === 0) return ok('no scheduled lane is enabled');
  const next = r.rows.flatMap((l) => (l.next ? [l.next.getTime()] : [])).sort((x, y) => x - y)[0];
  return ok(`${r.rows.length} scheduled lane(s), each with a valid next slot${next === undefined ? '' : `; the next at ${new Date(next).toISOString()}`}`);
}

/**
 * Lane runs that have not ended but have no live workflow: queued for minutes without one (no worker replica
 * dequeues or starts them), or whose workflow ended without ending the run.
 */
export async function checkLaneRuns(db: Db): Promise<Finding> {
  const dbos = await db.query<{ t: string | null }>(`SELECT to_regclass('dbos.workflow_status')::text AS t`);
  const r = await db.query<{ id: string; tenant: string; lane: string; status: string; wf: string | null }>(
    `SELECT r.id, t.slug AS tenant, r.lane_name AS lane, r.status, ${dbos.rows[0]?.t ? 'w.status' : 'NULL::text'} AS wf
       FROM lane_runs r JOIN tenants t ON t.id = r.tenant_id
       ${dbos.rows[0]?.t ? 'LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = r.id::text' : ''}
      WHERE r.status IN ('queued', 'running', 'waiting_approval') AND r.created_at < now() - interval '${STUCK_AFTER}'
        ${dbos.rows[0]?.t ? "AND (w.workflow_uuid IS NULL OR w.status NOT IN ('PENDING', 'ENQUEUED', 'DELAYED'))" : ''}
      ORDER BY r.created_at`,
  );
  if (r.rows.length === 0) return ok(`no lane run is stuck (every run that has not ended has a live workflow)`);
  const stuck = r.rows.map(
    (x) => `${x.tenant}/${x.lane} run ${x.id} is ${x.status} ${x.wf ? `but its workflow ended (${x.wf})` : `with no workflow for over ${STUCK_AFTER}`}`,
  );
  return warn(
    `${r.rows.length} stuck lane run(s): ${list(stuck)}`,
    'cancel each (POST /api/v1/tenants/{tenant}/lane-runs/{runId}/cancel); if runs stay queued, run a clawplane serve with the worker role (CLAWPLANE_ROLES)',
  );
}
