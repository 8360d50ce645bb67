import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { withIdleTransactionTimeout } from '../src/durable/engine.ts';
import { adminUrl, testDatabase } from './helpers/db.ts';

const child = path.resolve(import.meta.dirname, 'fixtures/durable-child.ts');

describe('durable engine (DBOS)', async () => {
  const { db, url } = await testDatabase();

  test('a workflow survives kill -9 of its process and no completed step runs twice', async () => {
    const wf = `selfcheck-${Date.now()}`;
    const p = spawn(process.execPath, [child, 'start', url, wf], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      // Wait until the first step has run and the workflow is parked.
      for (let i = 0; i < 200; i++) {
        const r = await db.query('SELECT 1 FROM durable_self_checks WHERE workflow_id = $1', [wf]);
        if (r.rowCount) break;
        await sleep(100);
      }
      await sleep(300);
    } finally {
      p.kill('SIGKILL');
    }
    await new Promise((r) => p.once('close', r));
    const before = await db.query<{ step: string }>('SELECT step FROM durable_self_checks WHERE workflow_id = $1', [wf]);
    assert.deepEqual(
      before.rows.map((r) => r.step),
      ['before-wait'],
      'the first step ran before the crash',
    );

    const rec = spawnSync(process.execPath, [child, 'recover', url, wf], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(rec.status, 0, rec.stderr);
    assert.deepEqual(JSON.parse(rec.stdout.trim().split('\n').pop() ?? ''), { continued: true, message: 'go' });

    const after = await db.query<{ step: string; n: number }>(
      'SELECT step, count(*)::int AS n FROM durable_self_checks WHERE workflow_id = $1 GROUP BY step ORDER BY step',
      [wf],
    );
    assert.deepEqual(after.rows, [
      { step: 'after-wait', n: 1 },
      { step: 'before-wait', n: 1 },
    ]);
  });
});

test("DBOS's idle-in-transaction timeout reaches its sessions as a startup option (no query queued on each new connection)", async () => {
  const c = new pg.Client({ connectionString: withIdleTransactionTimeout(adminUrl(), 61_000) });
  await c.connect();
  try {
    assert.equal((await c.query<{ v: string }>("SELECT current_setting('idle_in_transaction_session_timeout') AS v")).rows[0]?.v, '61s');
  } finally {
    await c.end();
  }
  // A URL that already sets it is left alone.
  const set = withIdleTransactionTimeout(adminUrl(), 5_000);
  assert.equal(withIdleTransactionTimeout(set), set);
});
