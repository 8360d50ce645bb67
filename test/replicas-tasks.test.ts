/**
 * kill -9 of one replica with 300 tasks in flight and an approval parked (docs/adr/0009-replica-coordination.md):
 * three replicas as separate OS processes on one PostgreSQL share the task queue; one is killed while it runs
 * tasks and holds the parked approval's workflow. The others find it dead (its heartbeat expires), exactly one
 * of them recovers its workflows, the approval is decided through another replica's API, every task completes
 * and no completed step runs again. The replicas use a STAND-IN task executor that records every run
 * (test/fixtures/replica-tasks-child.ts): the property is about the workflows, not the model (the real-gateway
 * tasks are in test/tasks-gateway.test.ts).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { ApiClient } from './helpers/client.ts';
import { testDatabase } from './helpers/db.ts';
import { startReplicaChild, type ReplicaChild } from './helpers/replica-child.ts';
import { sharedSecretKey, waitUntil as waitFor } from './helpers/replicas.ts';

const debug = process.env['REPLICA_TASKS_DEBUG'] !== undefined;
async function waitUntil(what: string, probe: () => Promise<boolean>): Promise<void> {
  if (debug) console.error(new Date().toISOString(), 'waiting until', what);
  await waitFor(what, probe);
}
const TASKS = Number(process.env['REPLICA_TASKS'] ?? 300);

// Short heartbeats so the killed replica is found dead soon, with an expiry that a loaded machine's stalls do
// not reach (a live replica presumed dead loses its workflows to another: see ADR 0009); tasks take long
// enough to be in flight when the kill comes.
const env = {
  CLAWPLANE_REPLICA_HEARTBEAT_MS: '250',
  CLAWPLANE_REPLICA_EXPIRE_MS: '4000',
  CLAWPLANE_STANDIN_TURN_MS: '3000',
  CLAWPLANE_TASK_WORKER_CONCURRENCY: '15',
};
type Child = ReplicaChild;

async function startChild(name: string, databaseUrl: string, secretKey: string, seed?: number): Promise<Child> {
  const c = await startReplicaChild({ name, databaseUrl, secretKey, env, ...(seed !== undefined ? { seed } : {}) });
  after(() => c.stop());
  return c;
}

describe('kill -9 of one replica with 300 tasks in flight and an approval parked', { timeout: 900_000 }, async () => {
  const { db, url } = await testDatabase();
  await db.query('CREATE TABLE task_side_effects (id bigserial PRIMARY KEY, task_id uuid NOT NULL, kind text NOT NULL, replica text NOT NULL)');
  const key = sharedSecretKey();

  test('every task completes, no completed step runs again, the approval is decided through another replica', async (t) => {
    // Two replicas wait for work; the third creates it, so all three take from the queue from the start.
    const r2 = await startChild('r2', url, key);
    const r3 = await startChild('r3', url, key);
    const r1 = await startChild('r1', url, key, TASKS);
    const replicas = [r1, r2, r3];
    const seed = await r1.seeded;
    const all = [seed.approvalId, ...(await r1.created)];

    // The victim: the replica whose workflow holds the approval, once it is parked (its settle step is
    // checkpointed) and the victim is in the middle of running other tasks.
    let victim: Child | undefined;
    await waitUntil('the approval is parked and its replica runs other tasks', async () => {
      const r = await db.query<{ executor_id: string }>(
        `SELECT w.executor_id FROM tasks t JOIN dbos.workflow_status w ON w.workflow_uuid = t.id::text
          WHERE t.id = $1 AND t.status = 'waiting_approval'
            AND EXISTS (SELECT 1 FROM dbos.operation_outputs o WHERE o.workflow_uuid = t.id::text AND o.function_name = 'settle')`,
        [seed.approvalId],
      );
      const owner = replicas.find((c) => c.replica === r.rows[0]?.executor_id);
      const failed = await db.query<{ status_reason: string }>(`SELECT status_reason FROM tasks WHERE status = 'failed' LIMIT 1`);
      if (failed.rows[0]) throw new Error(`a task failed before the kill: ${failed.rows[0].status_reason}`);
      if (!owner) return false;
      // Runs the owner has begun (the stand-in executor recorded them) and DBOS has not checkpointed yet.
      // A task's `executing` status alone is not enough: its dispatch step may not have reached the executor.
      const busy = await db.query<{ n: number }>(
        `SELECT count(DISTINCT s.task_id)::int AS n FROM task_side_effects s
          WHERE s.replica = $1 AND s.kind = 'first'
            AND NOT EXISTS (SELECT 1 FROM dbos.operation_outputs o WHERE o.workflow_uuid = s.task_id::text AND o.function_name = 'execute')`,
        [owner.replica],
      );
      victim = owner;
      return (busy.rows[0]?.n ?? 0) >= 3;
    });
    assert.ok(victim);
    await victim.kill('SIGKILL');
    const survivors = replicas.filter((c) => c !== victim);

    // What the victim was doing when it died.
    const atKill = await db.query<{ id: string; status: string; runs: number; completed: number }>(
      `SELECT t.id, t.status,
              (SELECT count(*)::int FROM task_side_effects s WHERE s.task_id = t.id) AS runs,
              (SELECT count(*)::int FROM task_events e WHERE e.task_id = t.id AND e.step = 'execute' AND e.kind = 'completed') AS completed
         FROM tasks t WHERE t.id = ANY($1::uuid[])`,
      [all],
    );
    const interrupted = new Set(
      (
        await db.query<{ task_id: string }>(
          // Runs the victim began whose step DBOS had not checkpointed: after the takeover they run again.
          `SELECT DISTINCT s.task_id FROM task_side_effects s
            WHERE s.replica = $1 AND s.kind = 'first'
              AND NOT EXISTS (SELECT 1 FROM dbos.operation_outputs o WHERE o.workflow_uuid = s.task_id::text AND o.function_name = 'execute')`,
          [victim.replica],
        )
      ).rows.map((r) => r.task_id),
    );
    const byStatus = (s: string) => atKill.rows.filter((r) => r.status === s).length;
    t.diagnostic(
      `killed ${victim.name}: ${interrupted.size} runs interrupted; ${byStatus('completed')} completed, ${byStatus('executing')} executing, ${byStatus('queued')} queued`,
    );
    assert.ok(interrupted.size > 0, 'the victim was killed in the middle of running tasks');
    assert.ok(byStatus('completed') < TASKS, 'tasks were still in flight at the kill');

    // One live replica recovers the dead one's workflows, once.
    await waitUntil('the dead replica is recovered', async () => {
      const r = await db.query<{ recovered_by: string | null }>('SELECT recovered_by FROM replicas WHERE id = $1', [victim?.replica]);
      return Boolean(r.rows[0]?.recovered_by);
    });
    const rec = await db.query<{ recovered_by: string }>('SELECT recovered_by FROM replicas WHERE id = $1', [victim.replica]);
    assert.ok(
      survivors.some((c) => c.replica === rec.rows[0]?.recovered_by),
      `recovered by a live replica (${rec.rows[0]?.recovered_by})`,
    );

    // The approval, decided through a live replica's API once its workflow is parked again there.
    const decider = new ApiClient(survivors[0]?.url ?? '', { bearer: seed.token });
    await waitUntil('the approval is parked on a live replica', async () => {
      const r = await db.query<{ executor_id: string }>(`SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = $1`, [seed.approvalId]);
      return survivors.some((c) => c.replica === r.rows[0]?.executor_id);
    });
    await decider.json('POST', `/api/v1/tenants/${seed.slug}/tasks/${seed.approvalId}/approve`, { comment: 'after the kill' });

    await waitUntil('every task is finished', async () => {
      const r = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM tasks WHERE id = ANY($1::uuid[]) AND status IN ('completed', 'failed', 'cancelled', 'expired')`,
        [all],
      );
      return r.rows[0]?.n === all.length;
    });
    const final = await db.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM tasks WHERE id = ANY($1::uuid[]) GROUP BY 1', [all]);
    assert.deepEqual(final.rows, [{ status: 'completed', n: TASKS + 1 }], 'every task completed');

    // Runs: a task ran once, or twice when the kill interrupted its run; the approval's resume ran once.
    const runs = await db.query<{ task_id: string; kind: string; n: number }>('SELECT task_id, kind, count(*)::int AS n FROM task_side_effects GROUP BY 1, 2');
    const runsOf = (id: string, kind: string) => runs.rows.find((r) => r.task_id === id && r.kind === kind)?.n ?? 0;
    for (const id of all) {
      const expected = interrupted.has(id) ? 2 : 1;
      assert.equal(
        runsOf(id, 'first'),
        expected,
        `task ${id} ran its first turn ${runsOf(id, 'first')} times (interrupted by the kill: ${interrupted.has(id)})`,
      );
    }
    assert.equal(runsOf(seed.approvalId, 'resume'), 1, 'the approved turn ran once');
    const spread = await db.query<{ replica: string }>('SELECT DISTINCT replica FROM task_side_effects');
    assert.equal(spread.rows.length, 3, 'all three replicas ran tasks');

    // Steps: apart from the start of an execute step (again after a kill), each step event happened once.
    const steps = await db.query<{ task_id: string; k: string; n: number }>(
      `SELECT task_id, step || '.' || kind AS k, count(*)::int AS n FROM task_events WHERE task_id = ANY($1::uuid[]) GROUP BY 1, 2`,
      [all],
    );
    const repeated = steps.rows.filter((s) => {
      if (s.k === 'execute.started') return false;
      const expected = s.task_id === seed.approvalId && s.k === 'execute.completed' ? 2 : 1;
      // Even a step the kill interrupted between its commit and DBOS's record of it (it runs again in the
      // workflow's new run) finds what it wrote and does not write it twice.
      return s.n !== expected;
    });
    if (repeated.length > 0) {
      const ids = [...new Set(repeated.map((r) => r.task_id))];
      const who = await db.query(`SELECT task_id, kind, replica FROM task_side_effects WHERE task_id = ANY($1::uuid[]) ORDER BY id`, [ids]);
      const reps = await db.query(`SELECT id, recovered_by, recovered_workflows, stopped_at FROM replicas`);
      const evs = await db.query(`SELECT task_id, step, kind, detail, created_at FROM task_events WHERE task_id = ANY($1::uuid[]) ORDER BY id`, [ids]);
      t.diagnostic(`victim ${victim.replica}; runs ${JSON.stringify(who.rows)}; replicas ${JSON.stringify(reps.rows)}; events ${JSON.stringify(evs.rows)}`);
    }
    assert.deepEqual(repeated, [], 'no step DBOS had recorded ran again');
    const approver = await db.query<{ decided_by: string }>('SELECT decided_by FROM task_approvals WHERE task_id = $1', [seed.approvalId]);
    assert.match(approver.rows[0]?.decided_by ?? '', /^token:/, 'decided by the API token, through a live replica');
  });
});
