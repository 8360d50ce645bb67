/**
 * Status reasons say why: an idle stop, an idle suspend and a stop someone asked for each say so in the
 * instance's status and its event, with numbers rounded for people. No sandbox is started: the
 * instances are running as far as the database says, which is all the reaper and the reconciler read.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { forPeople, idleReason, suspendedReason } from '../src/instances/reasons.ts';
import { ADMIN_EMAIL, onboard } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

test('numbers in reasons are rounded for people', () => {
  assert.equal(forPeople(647.7160449999938), '648 ms');
  assert.equal(forPeople(4_230.5), '4.2 s');
  assert.equal(forPeople(45_400), '45 s');
  assert.equal(forPeople(12.4 * 60_000), '12 min');
  assert.equal(forPeople(5 * 3_600_000 + 1), '5 h');
  assert.equal(idleReason(31 * 60_000 + 17_003), 'idle for 31 min, past the idle timeout');
  // An idle suspend says it was idle (not "on request"); one asked for names who asked.
  assert.equal(
    suspendedReason(idleReason(30 * 60_000), 42.4 * 2 ** 20, 647.7160449999938),
    'suspended to a snapshot: idle for 30 min, past the idle timeout (42 MiB, dumped in 648 ms)',
  );
  assert.equal(suspendedReason('requested by user:u1', 2 ** 20, 1234.5), 'suspended to a snapshot: requested by user:u1 (1 MiB, dumped in 1.2 s)');
});

describe('status reasons of stopped instances', async () => {
  const server = await startTestServer({
    CLAWPLANE_IDLE_TIMEOUT_MS: '60000',
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '600000',
    CLAWPLANE_WARM_RESUME: 'false',
  });
  const admin = await onboard(server);
  await admin.json('POST', '/api/v1/tenants', { slug: 'why', name: 'Why' }, 201);
  await admin.json('POST', '/api/v1/tenants/why/members', { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
  const { id } = await admin.json<{ id: string }>('POST', '/api/v1/tenants/why/instances', { name: 'main', start: false }, 202);
  const { db } = server.database;
  /** Running as far as the database says (no sandbox), last used `idle` ago. */
  const running = (idle: string) =>
    db.query(
      `UPDATE instances SET desired_state = 'running', status = 'running', status_reason = 'running', last_active_at = now() - $2::interval WHERE id = $1`,
      [id, idle],
    );
  const stopped = async () => {
    for (;;) {
      const i = await admin.json<{ status: string; statusReason: string }>('GET', `/api/v1/tenants/why/instances/${id}`);
      if (i.status === 'stopped') return i.statusReason;
      server.services.reconciler.kick();
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const lastEvent = async () =>
    (await admin.json<{ items: { toStatus: string; reason: string; actor: string }[] }>('GET', `/api/v1/tenants/why/instances/${id}/events`)).items.at(-1);

  test('an idle stop says how long the instance was idle, in its status and its event', async () => {
    await running('5 minutes 20 seconds');
    assert.deepEqual(await server.services.reaper.sweep(), [id]);
    const reason = await stopped();
    assert.equal(reason, 'stopped: idle for 5 min, past the idle timeout');
    const e = await lastEvent();
    assert.deepEqual([e?.toStatus, e?.reason], ['stopped', reason]);
    assert.notEqual(reason, 'stopped on request');
  });

  test('a stop someone asked for names who asked', async () => {
    await running('1 second');
    const me = await admin.json<{ user: { id: string } }>('GET', '/api/v1/auth/me');
    await admin.json('POST', `/api/v1/tenants/why/instances/${id}/stop`, undefined, 202);
    const reason = await stopped();
    assert.equal(reason, `stopped: requested by user:${me.user.id}`);
    assert.equal((await lastEvent())?.reason, reason);
  });
});
