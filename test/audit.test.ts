import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import pg from 'pg';
import { appendAudit } from '../src/audit/log.ts';
import { verifyAuditChain } from '../src/audit/verify.ts';
import { testDatabase, urlFor } from './helpers/db.ts';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

describe('audit log', async () => {
  const { db, name, url } = await testDatabase();

  test('events chain, and an event rolls back with the change it records', async () => {
    await db.tx((tx) => appendAudit(tx, { actor: 'system', action: 'test.one', detail: { b: 2, a: [1, { z: 1, y: 'é' }] } }));
    await db.tx((tx) =>
      appendAudit(tx, { actor: 'user:x', tenantId: '00000000-0000-4000-8000-000000000001', action: 'test.two', target: 't', decision: 'allow' }),
    );
    await assert.rejects(
      db.tx(async (tx) => {
        await appendAudit(tx, { actor: 'system', action: 'test.rolled-back' });
        throw new Error('change failed');
      }),
      /change failed/,
    );
    const rows = await db.query<{ seq: number; action: string }>('SELECT seq, action FROM audit_events ORDER BY seq');
    assert.deepEqual(
      rows.rows.map((r) => r.action),
      ['test.one', 'test.two'],
    );
    assert.deepEqual(await verifyAuditChain(db), { ok: true, checked: 2 });
  });

  test('concurrent appenders keep one gap-free chain', async () => {
    await Promise.all(Array.from({ length: 25 }, (_, i) => db.tx((tx) => appendAudit(tx, { actor: 'system', action: 'test.burst', detail: { i } }))));
    const r = await verifyAuditChain(db);
    assert.equal(r.ok, true);
    assert.equal(r.checked, 27);
  });

  test('UPDATE, DELETE and TRUNCATE are refused', async () => {
    await assert.rejects(db.query(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 1`), /append-only/);
    await assert.rejects(db.query('DELETE FROM audit_events WHERE seq = 1'), /append-only/);
    await assert.rejects(db.query('TRUNCATE audit_events'), /append-only/);
    await assert.rejects(
      db.query(`INSERT INTO audit_events (seq, ts, actor, action, prev_hash, hash) VALUES (999, now(), 'x', 'forged', 'x', 'y')`),
      /audit chain broken/,
    );
  });

  test('verification does not depend on the session time zone', async () => {
    await db.query(`SET TIME ZONE 'Asia/Tokyo'`);
    const c = await db.pool.connect();
    try {
      await c.query(`SET TIME ZONE 'America/St_Johns'`);
      assert.equal((await verifyAuditChain(c)).ok, true);
    } finally {
      c.release();
    }
  });

  test('a superuser who disables the trigger and edits a row is caught at that row', async () => {
    assert.equal(
      spawnSync(process.execPath, [cli, 'audit', 'verify'], {
        env: { ...process.env, DATABASE_URL: url, CLAWPLANE_SECRET_KEY: 'a'.repeat(64) },
        encoding: 'utf8',
      }).status,
      0,
    );
    await runAs(name, [
      'ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update',
      `UPDATE audit_events SET detail = '{"i": 999}' WHERE seq = 5`,
      'ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update',
    ]);
    const r = await verifyAuditChain(db);
    assert.equal(r.ok, false);
    assert.equal(r.firstBad?.seq, 5);
    assert.match(r.firstBad?.reason ?? '', /edited/);
    const out = spawnSync(process.execPath, [cli, 'audit', 'verify'], {
      env: { ...process.env, DATABASE_URL: url, CLAWPLANE_SECRET_KEY: 'a'.repeat(64) },
      encoding: 'utf8',
    });
    assert.equal(out.status, 1, 'the CLI exits 1 on a broken chain');
    assert.match(out.stdout, /BROKEN at seq 5/);
  });

  test('a deleted row is caught as a gap', async () => {
    const { db: db2, name: name2 } = await testDatabase();
    for (let i = 0; i < 4; i++) await db2.tx((tx) => appendAudit(tx, { actor: 'system', action: 'test.n', detail: { i } }));
    await runAs(name2, ['ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update', 'DELETE FROM audit_events WHERE seq = 2']);
    const r = await verifyAuditChain(db2);
    assert.equal(r.ok, false);
    assert.equal(r.firstBad?.seq, 2);
  });
});

/** Runs statements as the superuser, connected to the given database. */
async function runAs(database: string, statements: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: urlFor(database) });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
  } finally {
    await c.end();
  }
}
