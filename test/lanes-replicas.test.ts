/**
 * Lane schedules across replicas (docs/adr/0012-lane-scheduling.md): two `clawplane serve` processes on one
 * PostgreSQL, both worker replicas ticking their schedulers every 50 ms on one injected clock (a file both read,
 * CLAWPLANE_TEST_LANE_CLOCK_FILE). A due slot produces exactly one run however many ticks see it; after every
 * replica was down past several slots, each lane follows its catch-up rule once.
 *
 * Every step of these lanes needs an approval, so a run parks at its first step and nothing else happens: what
 * is asserted is the scheduler's side (the runs, their slots and triggers, the audit events).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { Lane, Run } from '../src/lanes/types.ts';
import { testDatabase } from './helpers/db.ts';
import { onboardVia, sharedSecretKey, startReplica, via, waitUntil, type Replica } from './helpers/replicas.ts';

/** The sum of a metric's samples (all label sets) on one replica; 0 when it has none yet. */
async function metric(r: Replica, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${r.url}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if ((m[1] ?? '').includes(labels)) sum += Number(m[2]);
  return sum;
}

describe('lane schedules with two replicas on one database', async () => {
  const database = await testDatabase({ autoDrop: false });
  const secretKey = sharedSecretKey();
  const clockDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-lane-clock-'));
  const clockFile = path.join(clockDir, 'now');
  const setClock = (iso: string) => writeFile(clockFile, iso);
  await setClock('2027-03-01T09:30:00Z');
  const env = {
    CLAWPLANE_LANE_TICK_MS: '50',
    CLAWPLANE_TEST_LANE_CLOCK_FILE: clockFile,
    CLAWPLANE_REPLICA_HEARTBEAT_MS: '200',
    CLAWPLANE_REPLICA_EXPIRE_MS: '1500',
  };
  let replicas: Replica[] = [];
  for (const name of ['s1', 's2']) replicas.push(await startReplica({ name, databaseUrl: database.url, secretKey, env }));
  after(async () => {
    await database.drop();
    await rm(clockDir, { recursive: true, force: true });
  });
  const slug = 'sched';
  const { admin, tenantId } = await onboardVia(replicas[0] as Replica, slug);
  const api = (p: string) => `/api/v1/tenants/${slug}${p}`;
  const q = <T extends object>(sql: string, params: unknown[] = []) => database.db.query<T>(sql, params).then((r) => r.rows);

  /** Sets the shared clock and waits until every replica has completed a tick that read it. */
  const tickAt = async (iso: string) => {
    await setClock(iso);
    const at = new Date(iso).getTime() / 1000;
    for (const r of replicas) await waitUntil(`${r.name} ticked at ${iso}`, async () => (await metric(r, 'clawplane_lane_scheduler_clock_seconds')) >= at);
  };
  const runsOf = (laneId: string) =>
    q<{ id: string; trigger: string; slot_at: Date | null }>('SELECT id, trigger, slot_at FROM lane_runs WHERE lane_id = $1 ORDER BY created_at, id', [laneId]);
  const slots = async (laneId: string) => (await runsOf(laneId)).map((r) => `${r.trigger} ${r.slot_at?.toISOString().slice(11, 16)}`);

  let once: Lane;
  let skip: Lane;

  test('a lane created on replica 1 places its first slot by the injected clock', async () => {
    await admin.json('POST', api('/projects'), { name: 'ops', laneKinds: ['health'] }, 201);
    const body = (name: string, catchUp: string) => ({
      name,
      project: 'ops',
      kind: 'health',
      harmless: true,
      schedule: '0 * * * *',
      catchUp,
      steps: [{ name: 'check', capability: 'ops', input: 'check the instance', requiresApproval: true }],
    });
    once = await admin.json<Lane>('POST', api('/lanes'), body('hourly-once', 'run-once'), 201);
    skip = await via(admin, replicas[1] as Replica).json<Lane>('POST', api('/lanes'), body('hourly-skip', 'skip'), 201);
    // 09:30 on the file's clock (the tenant's zone is UTC): the next slot is 10:00 that day, not one in the real present.
    assert.equal(once.nextSlotAt, '2027-03-01T10:00:00.000Z');
    assert.equal(skip.nextSlotAt, '2027-03-01T10:00:00.000Z');
    await tickAt('2027-03-01T09:59:59Z');
    assert.deepEqual([await slots(once.id), await slots(skip.id)], [[], []], 'not due yet');
  });

  test('each due slot fires exactly once while both replicas tick', async (t) => {
    const firedBefore = await Promise.all(replicas.map((r) => metric(r, 'clawplane_lane_runs_fired_total')));
    for (const at of ['2027-03-01T10:00:01Z', '2027-03-01T10:00:30Z', '2027-03-01T11:00:00Z', '2027-03-01T11:01:59Z', '2027-03-01T12:00:02Z']) await tickAt(at);
    for (const lane of [once, skip]) assert.deepEqual(await slots(lane.id), ['schedule 10:00', 'schedule 11:00', 'schedule 12:00'], lane.name);
    // Both replicas ticked through every slot; the runs they created between them are exactly the six above.
    const fired = await Promise.all(replicas.map(async (r, i) => (await metric(r, 'clawplane_lane_runs_fired_total')) - (firedBefore[i] ?? 0)));
    t.diagnostic(`runs created per replica: ${fired.join(', ')}`);
    assert.equal(
      fired.reduce((a, b) => a + b, 0),
      6,
    );
    for (const r of replicas) assert.ok((await metric(r, 'clawplane_lane_scheduler_ticks_total')) > 5, `${r.name} ticked`);
    // Each run started once (a workflow per run, whichever replica dequeued it) and parks at its approval step.
    for (const run of await runsOf(once.id)) {
      await waitUntil(`run ${run.id} parks`, async () => (await admin.json<Run>('GET', api(`/lane-runs/${run.id}`))).status === 'waiting_approval');
    }
    const audits = await q<{ n: number }>("SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND action = 'lane.run'", [tenantId]);
    assert.equal(audits[0]?.n, 6, 'one lane.run audit event per run');
    const lanes = await admin.json<{ items: Lane[] }>('GET', api('/lanes'));
    assert.deepEqual(
      lanes.items.map((l) => l.nextSlotAt),
      ['2027-03-01T13:00:00.000Z', '2027-03-01T13:00:00.000Z'],
    );
  });

  test('after both replicas were down past three slots, "run-once" runs the latest once and "skip" runs none', async () => {
    const down = replicas;
    for (const r of down) {
      r.child.kill('SIGTERM');
      await r.exited;
    }
    // Down from 12:00 until 15:20: the slots 13:00, 14:00 and 15:00 were missed.
    await setClock('2027-03-01T15:20:00Z');
    replicas = [];
    for (const r of down) replicas.push(await startReplica({ name: `${r.name}-again`, databaseUrl: database.url, secretKey, env, dataDir: r.dataDir }));
    await tickAt('2027-03-01T15:20:00Z');
    await tickAt('2027-03-01T15:20:01Z');
    assert.deepEqual(await slots(once.id), ['schedule 10:00', 'schedule 11:00', 'schedule 12:00', 'catch-up 15:00']);
    assert.deepEqual(await slots(skip.id), ['schedule 10:00', 'schedule 11:00', 'schedule 12:00']);
    const missed = await q<{ target: string; detail: { missed: number; catchUp: string; from: string; runs?: string } }>(
      "SELECT target, detail FROM audit_events WHERE tenant_id = $1 AND action = 'lane.slots_missed' ORDER BY target",
      [tenantId],
    );
    assert.deepEqual(
      missed.map((m) => [m.target, m.detail.catchUp, m.detail.missed, m.detail.from, m.detail.runs ?? null]).sort(),
      [
        [`lane:${once.id}`, 'run-once', 3, '2027-03-01T13:00:00.000Z', '2027-03-01T15:00:00.000Z'],
        [`lane:${skip.id}`, 'skip', 3, '2027-03-01T13:00:00.000Z', null],
      ].sort(),
      'one record per lane, whichever replica saw it first',
    );
    // Both lanes go on from the next slot; it fires once, on time.
    for (const lane of [once, skip])
      assert.equal((await via(admin, replicas[0] as Replica).json<Lane>('GET', api(`/lanes/${lane.id}`))).nextSlotAt, '2027-03-01T16:00:00.000Z');
    await tickAt('2027-03-01T16:00:00Z');
    await tickAt('2027-03-01T16:00:05Z');
    assert.deepEqual((await slots(once.id)).slice(-2), ['catch-up 15:00', 'schedule 16:00']);
    assert.deepEqual((await slots(skip.id)).slice(-1), ['schedule 16:00']);
    // The runs parked before the restart were recovered and still wait for their approval: nothing ran twice.
    const steps = await q<{ n: number }>('SELECT count(*)::int AS n FROM lane_run_steps WHERE tenant_id = $1 AND task_id IS NOT NULL', [tenantId]);
    assert.equal(steps[0]?.n, 0);
  });
});
