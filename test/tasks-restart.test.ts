/**
 * kill -9 of the control plane in the middle of task workflows (issue 8). A child process runs the
 * server with a STAND-IN executor that counts its runs (test/fixtures/tasks-child.ts). After a restart,
 * the interrupted task completes, no completed step ran twice, and a task parked for approval before
 * the crash resumes when approved after it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { testDatabase } from './helpers/db.ts';

const child = path.resolve(import.meta.dirname, 'fixtures/tasks-child.ts');

describe('durable tasks survive kill -9', { timeout: 1_200_000 }, async () => {
  const { db, url } = await testDatabase();
  await db.query('CREATE TABLE task_side_effects (id bigserial PRIMARY KEY, task_id uuid NOT NULL, kind text NOT NULL)');
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-tasks-restart-'));
  const key = randomBytes(32).toString('base64');

  test('the interrupted task completes without repeating completed steps; the parked approval resumes', async () => {
    const p = spawn(process.execPath, [child, 'start', url, dataDir, key], { stdio: ['ignore', 'pipe', 'inherit'] });
    let ids: { tenantId: string; slowId: string; approvalId: string } | undefined;
    try {
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      for (let i = 0; i < 600 && !ids; i++) {
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) ids = JSON.parse(line) as typeof ids;
        else await sleep(100);
      }
      assert.ok(ids, 'the child printed the task ids');
      // Kill while the slow task is inside its execute step and the other is parked.
      for (let i = 0; i < 600; i++) {
        const r = await db.query<{ slow: number; parked: number }>(
          `SELECT (SELECT count(*)::int FROM task_side_effects WHERE task_id = $1) AS slow,
                  (SELECT count(*)::int FROM tasks WHERE id = $2 AND status = 'waiting_approval'
                      -- parked in recv: DBOS has checkpointed the step that parked it (killed between that step's
                      -- commit and its checkpoint, the step runs again after the restart, as it must)
                      AND EXISTS (SELECT 1 FROM dbos.operation_outputs WHERE workflow_uuid = $2::text AND function_name = 'settle')) AS parked`,
          [ids.slowId, ids.approvalId],
        );
        if (r.rows[0]?.slow === 1 && r.rows[0].parked === 1) break;
        await sleep(100);
      }
    } finally {
      p.kill('SIGKILL');
    }
    await new Promise((r) => p.once('close', r));
    assert.ok(ids);
    const mid = await db.query<{ status: string }>('SELECT status FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id = $2 DESC', [
      [ids.slowId, ids.approvalId],
      ids.slowId,
    ]);
    assert.deepEqual(
      mid.rows.map((r) => r.status),
      ['executing', 'waiting_approval'],
      'killed mid-workflow',
    );

    const rec = spawnSync(process.execPath, [child, 'recover', url, dataDir, key, ids.slowId, ids.approvalId, ids.tenantId], {
      encoding: 'utf8',
      timeout: 900_000,
    });
    assert.equal(rec.status, 0, rec.stderr);
    const res = JSON.parse(rec.stdout.trim().split('\n').pop() ?? '{}') as Record<string, string>;
    assert.deepEqual(res, { slow: 'completed', slowOutput: 'slow job done', approval: 'completed', approvalOutput: 'done resume' });

    // Side effects: the interrupted execute ran again (it never completed); nothing that completed ran twice.
    const fx = await db.query<{ task_id: string; kind: string; n: number }>('SELECT task_id, kind, count(*)::int AS n FROM task_side_effects GROUP BY 1, 2');
    const count = (id: string, kind: string) => fx.rows.find((r) => r.task_id === id && r.kind === kind)?.n ?? 0;
    assert.equal(count(ids.slowId, 'first'), 2, 'the execute step interrupted by the kill ran again');
    assert.equal(count(ids.approvalId, 'first'), 1, 'the execute step that completed before the kill did not run again');
    assert.equal(count(ids.approvalId, 'resume'), 1);
    const steps = await db.query<{ task_id: string; k: string; n: number }>(
      `SELECT task_id, step || '.' || kind AS k, count(*)::int AS n FROM task_events WHERE task_id = ANY($1::uuid[]) GROUP BY 1, 2`,
      [[ids.slowId, ids.approvalId]],
    );
    for (const s of steps.rows) {
      if (s.k === 'execute.started' || s.k === 'execute.stand_in') continue;
      const expected: number = s.task_id === ids.approvalId && s.k === 'execute.completed' ? 2 : 1;
      assert.equal(s.n, expected, `${s.task_id === ids.slowId ? 'slow' : 'approval'} ${s.k} ran ${s.n} times`);
    }
    const approver = await db.query<{ decided_by: string }>('SELECT decided_by FROM task_approvals WHERE task_id = $1', [ids.approvalId]);
    assert.equal(approver.rows[0]?.decided_by, 'user:approver');
    await rm(dataDir, { recursive: true, force: true });
  });
});
