/**
 * `clawplane doctor` on lanes (src/doctor/lanes.ts): a lane whose schedule no longer parses or whose slot is
 * overdue (no worker replica ticks the scheduler) fails `lanes.schedules`; a run that has not ended and has no
 * live workflow warns `lanes.runs`. The server here has no worker role, as a broken installation would, so
 * nothing fires or starts behind the test's back; faults are planted in the real database.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkLaneRuns, checkLaneSchedules } from '../src/doctor/lanes.ts';
import type { DoctorReport } from '../src/doctor/types.ts';
import type { Lane, Run } from '../src/lanes/types.ts';
import { ADMIN_EMAIL, onboard } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

describe('doctor: lane schedules and stuck runs', async () => {
  const server = await startTestServer({ CLAWPLANE_ROLES: 'api,broker,reconciler' });
  const admin = await onboard(server);
  const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'docl', name: 'Doctor lanes' }, 201);
  await admin.json('POST', '/api/v1/tenants/docl/members', { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
  const api = (p: string) => `/api/v1/tenants/docl${p}`;
  const { db } = server;
  const tick = server.config.lanes.tickMs;

  test('healthy: no lane, then a scheduled lane with its next slot, pass', async () => {
    assert.equal((await checkLaneSchedules(db, tick)).status, 'ok');
    assert.equal((await checkLaneRuns(db)).status, 'ok');
    await admin.json('POST', api('/projects'), { name: 'ops', laneKinds: ['health'] }, 201);
    await admin.json<Lane>(
      'POST',
      api('/lanes'),
      { name: 'nightly', project: 'ops', kind: 'health', harmless: true, schedule: '0 3 * * *', steps: [{ name: 'check', capability: 'ops', input: 'check' }] },
      201,
    );
    const f = await checkLaneSchedules(db, tick);
    assert.equal(f.status, 'ok', f.detail);
    assert.match(f.detail, /^1 scheduled lane\(s\), each with a valid next slot; the next at \d{4}-/);
  });

  test('an overdue slot fails lanes.schedules with the lane and the fix; so does a schedule that no longer parses', async () => {
    await db.query(`UPDATE lanes SET next_slot_at = date_trunc('minute', now()) - interval '1 hour' WHERE tenant_id = $1 AND name = 'nightly'`, [t.id]);
    const overdue = await checkLaneSchedules(db, tick);
    assert.equal(overdue.status, 'fail');
    assert.match(overdue.detail, /the scheduler is not firing: docl\/nightly: the slot of \S+ is 6\d min overdue/);
    assert.match(overdue.fix ?? '', /worker role \(CLAWPLANE_ROLES\)/);
    // Through the API report too, under its stable id.
    const report = await admin.json<DoctorReport>('GET', '/api/v1/platform/doctor');
    assert.equal(report.checks.find((c) => c.id === 'lanes.schedules')?.status, 'fail');
    assert.equal(report.ok, false);
    // A schedule that cannot be read (written behind the API's back, e.g. by an older build) is named as broken.
    await db.query(`UPDATE lanes SET schedule = '99 * * * *' WHERE tenant_id = $1 AND name = 'nightly'`, [t.id]);
    const broken = await checkLaneSchedules(db, tick);
    assert.equal(broken.status, 'fail');
    assert.match(broken.detail, /broken schedule\(s\): docl\/nightly: "99 \* \* \* \*" in UTC does not parse/);
    // Disabling the lane clears it.
    await db.query(`UPDATE lanes SET enabled = false WHERE tenant_id = $1 AND name = 'nightly'`, [t.id]);
    assert.equal((await checkLaneSchedules(db, tick)).status, 'ok');
  });

  test('runs that have not ended without a live workflow warn lanes.runs, each named', async () => {
    const lane = await admin.json<Lane>(
      'POST',
      api('/lanes'),
      { name: 'manual', project: 'ops', kind: 'health', harmless: true, steps: [{ name: 'check', capability: 'ops', input: 'check' }] },
      201,
    );
    // A run whose workflow was enqueued but ended without ending the run, and one that never got a workflow.
    const ended = await admin.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    await db.query(`UPDATE dbos.workflow_status SET status = 'CANCELLED' WHERE workflow_uuid = $1`, [ended.id]);
    const full = await server.services.lanes.getLane(t.id, lane.id);
    const orphan = await db.tx((tx) => server.services.lanes.insertRun(tx, full, 'manual', null, { actor: 'test' }));
    assert.ok(orphan);
    assert.equal((await checkLaneRuns(db)).status, 'ok', 'young runs are not stuck yet');
    await db.query(`UPDATE lane_runs SET created_at = now() - interval '10 minutes' WHERE id = ANY($1)`, [[ended.id, orphan.id]]);
    const f = await checkLaneRuns(db);
    assert.equal(f.status, 'warn');
    assert.match(f.detail, /^2 stuck lane run\(s\): /);
    assert.match(f.detail, new RegExp(`docl/manual run ${ended.id} is queued but its workflow ended \\(CANCELLED\\)`));
    assert.match(f.detail, new RegExp(`docl/manual run ${orphan.id} is queued with no workflow for over 5 minutes`));
    assert.match(f.fix ?? '', /lane-runs\/\{runId\}\/cancel/);
    // Cancelling through the API ends them; the doctor is satisfied again.
    for (const id of [ended.id, orphan.id]) await admin.json('POST', api(`/lane-runs/${id}/cancel`), {});
    assert.equal((await checkLaneRuns(db)).status, 'ok');
  });
});
