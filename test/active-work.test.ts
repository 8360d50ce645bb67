/**
 * The periodic loops read only what can need action: the reconciler's candidates leave out stopped
 * (and suspended) instances that want to stay so, the idle reaper and the backup sweep read running
 * instances only, task housekeeping reads only tasks that have not ended; and each of their statements
 * can be answered from an index (planned with sequential scans disabled, none is left on instances or
 * tasks), so a platform of mostly idle tenants pays per cycle for its active work only.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { startTestServer } from './helpers/server.ts';

describe('periodic loops touch active work only', async () => {
  // The loops do not run on their own during the test: it calls each one's candidate query itself.
  const server = await startTestServer({
    CLAWPLANE_RECONCILE_INTERVAL_MS: '600000',
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    CLAWPLANE_BACKUP_INTERVAL_MS: '0',
  });
  const { db } = server;
  const by = { actor: 'test' };
  const idle = await server.services.tenants.create({ slug: 'idle', name: 'Idle', quotas: { maxInstances: 1000 } }, by);
  const busy = await server.services.tenants.create({ slug: 'busy', name: 'Busy', quotas: { maxInstances: 1000 } }, by);
  const rows: { name: string; tenant: string; desired: string; status: string; sandbox?: object }[] = [];
  for (let i = 0; i < 60; i++) rows.push({ name: `stopped-${i}`, tenant: idle.id, desired: 'stopped', status: 'stopped' });
  for (let i = 0; i < 5; i++) rows.push({ name: `suspended-${i}`, tenant: idle.id, desired: 'stopped', status: 'suspended' });
  const active = [
    { name: 'running-1', tenant: busy.id, desired: 'running', status: 'running', sandbox: { sandboxId: 'x' } },
    { name: 'running-2', tenant: busy.id, desired: 'running', status: 'running', sandbox: { sandboxId: 'y' } },
    { name: 'waking', tenant: busy.id, desired: 'running', status: 'stopped' },
    { name: 'stopping', tenant: busy.id, desired: 'stopped', status: 'running', sandbox: { sandboxId: 'z' } },
    { name: 'left-a-sandbox', tenant: busy.id, desired: 'stopped', status: 'stopped', sandbox: { sandboxId: 'w' } },
    { name: 'failed', tenant: busy.id, desired: 'stopped', status: 'error' },
    { name: 'doomed', tenant: busy.id, desired: 'destroyed', status: 'stopped' },
  ];
  rows.push(...active);
  for (const r of rows) {
    await db.query(`INSERT INTO instances (id, tenant_id, name, runtime_version, desired_state, status, sandbox) VALUES ($1, $2, $3, '2026.9.6', $4, $5, $6)`, [
      randomUUID(),
      r.tenant,
      r.name,
      r.desired,
      r.status,
      r.sandbox ? JSON.stringify(r.sandbox) : null,
    ]);
  }
  await db.query('ANALYZE instances');

  test('the reconciler reads every instance that may need a step, and no idle stopped or suspended one', async () => {
    const names = (await server.services.instances.allForReconcile()).map((r) => r.name).sort();
    assert.deepEqual(names, active.map((r) => r.name).sort());
  });

  test('the idle reaper reads running instances only', async () => {
    const names = (await server.services.instances.running()).map((r) => r.name).sort();
    assert.deepEqual(names, ['running-1', 'running-2']);
  });

  test('no statement of a loop needs a sequential scan of instances or tasks', async () => {
    const plans: { sql: string; plan: string }[] = [];
    const query = db.query.bind(db);
    // Each SELECT the loops send is planned again on one connection with sequential scans disabled:
    // a statement no index can answer still gets a Seq Scan (at a penalty), and that is what this finds.
    db.query = (async (text: string, params?: unknown[]) => {
      if (/^\s*(WITH|SELECT)\b/i.test(text)) {
        const c = await db.pool.connect();
        try {
          await c.query('SET enable_seqscan = off');
          const r = await c.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${text}`, params);
          plans.push({ sql: text, plan: JSON.stringify(r.rows[0]?.['QUERY PLAN']) });
        } finally {
          await c.query('RESET enable_seqscan');
          c.release();
        }
      }
      return query(text, params);
    }) as typeof db.query;
    try {
      await server.services.instances.allForReconcile();
      await server.services.instances.running();
      await server.services.backups.periodicSweep(3_600_000);
      await server.services.tasks.reconcileEnded();
      await server.services.tasks.enqueueMissing();
    } finally {
      db.query = query;
    }
    assert.ok(plans.length >= 5, `${plans.length} statements planned`);
    for (const p of plans) {
      for (const table of ['instances', 'tasks']) {
        assert.ok(!new RegExp(`"Node Type":"Seq Scan"[^}]*"Relation Name":"${table}"`).test(p.plan), `a sequential scan of ${table} in: ${p.sql}\n${p.plan}`);
      }
    }
    const used = plans.map((p) => p.plan).join('\n');
    for (const index of ['instances_reconcile', 'instances_running', 'tasks_open']) assert.ok(used.includes(index), `${index} is used`);
  });
});
