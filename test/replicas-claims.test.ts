/**
 * One owner at a time (docs/adr/0009-replica-coordination.md): three `clawplane serve` processes with the
 * reconciler role share one PostgreSQL. Every instance is worked by exactly one replica (leases in
 * work_claims); a replica killed with -9 leaves leases that lapse, and live replicas take the work over
 * without repeating what was done. No sandbox is started here: what is asserted is the database's side.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Activity } from '../src/ingress/activity.ts';
import { ADMIN_EMAIL, onboard } from './helpers/client.ts';
import { testDatabase } from './helpers/db.ts';
import { startTestServer } from './helpers/server.ts';
import { onboardVia, sharedSecretKey, startReplica, via, waitUntil, type Replica } from './helpers/replicas.ts';

describe('reconciler replicas claim every instance once', async () => {
  const database = await testDatabase({ autoDrop: false });
  const secretKey = sharedSecretKey();
  const replicas: Replica[] = [];
  // Short heartbeats and passes so a killed replica's leases lapse quickly.
  const env = { CLAWPLANE_REPLICA_HEARTBEAT_MS: '200', CLAWPLANE_REPLICA_EXPIRE_MS: '1500', CLAWPLANE_RECONCILE_INTERVAL_MS: '200' };
  for (const name of ['c1', 'c2', 'c3']) replicas.push(await startReplica({ name, databaseUrl: database.url, secretKey, env }));
  after(() => database.drop());
  const slug = 'claims';
  const q = <T extends object>(sql: string, params: unknown[] = []) => database.db.query<T>(sql, params).then((r) => r.rows);

  const { admin } = await onboardVia(replicas[1] as Replica, slug);
  await q(`UPDATE tenants SET max_instances = 100 WHERE slug = $1`, [slug]);

  /** Deploys `n` stopped instances, spread over the replicas. */
  const deploy = async (prefix: string, n: number) =>
    Promise.all(
      Array.from({ length: n }, (_, i) =>
        via(admin, replicas[i % 3] as Replica)
          .json<{ id: string }>('POST', `/api/v1/tenants/${slug}/instances`, { name: `${prefix}${i}`, start: false }, 202)
          .then((x) => x.id),
      ),
    );
  const destroyedAudits = async (ids: string[]) => {
    const rows = await q<{ target: string; n: number }>(
      `SELECT target, count(*)::int AS n FROM audit_events WHERE action = 'instance.destroyed' AND target = ANY($1) GROUP BY target`,
      [ids.map((id) => `instance:${id}`)],
    );
    return new Map(rows.map((r) => [r.target.slice('instance:'.length), r.n]));
  };

  test('instances destroyed through all three replicas at once are each destroyed by exactly one replica', async () => {
    const ids = await deploy('d', 24);
    // Every replica hears instance.changed for each destroy and runs a pass at once: without leases, two or
    // three replicas would destroy the same instance (and audit it) side by side.
    await Promise.all(
      ids.map((id, i) => via(admin, replicas[(i + 1) % 3] as Replica).json('DELETE', `/api/v1/tenants/${slug}/instances/${id}`, undefined, 202)),
    );
    await waitUntil('every instance is gone', async () => (await q('SELECT 1 FROM instances WHERE id = ANY($1)', [ids])).length === 0);
    const audits = await destroyedAudits(ids);
    for (const id of ids) assert.equal(audits.get(id), 1, `instance ${id} destroyed exactly once`);
    // Leases of instances that are gone do not pile up forever: none is renewed, each lapses; nothing else holds them.
    const owners = await q<{ owner: string }>(`SELECT DISTINCT owner FROM work_claims WHERE kind = 'instance' AND item = ANY($1)`, [ids]);
    assert.ok(owners.every((o) => replicas.some((r) => r.id === o.owner)));
  });

  test('a replica killed with -9 holding leases: they lapse, live replicas take the instances over, nothing is done twice', async () => {
    const ids = await deploy('k', 12);
    // Instances that want to run but back off for a day: claimed on every pass, no step taken (no sandbox here).
    await q(
      `UPDATE instances SET desired_state = 'running', status = 'error', status_reason = 'backing off', next_attempt_at = now() + interval '1 day' WHERE id = ANY($1)`,
      [ids],
    );
    const leases = async () =>
      new Map(
        (
          await q<{ item: string; owner: string; live: boolean }>(
            `SELECT item, owner, expires_at > now() AS live FROM work_claims WHERE kind = 'instance' AND item = ANY($1)`,
            [ids],
          )
        ).map((r) => [r.item, r]),
      );
    await waitUntil('every instance is leased', async () => {
      const l = await leases();
      return ids.every((id) => l.get(id)?.live === true);
    });
    const before = await leases();
    for (const id of ids)
      assert.ok(
        replicas.some((r) => r.id === before.get(id)?.owner),
        'each lease is held by one of the replicas',
      );
    // The holder of most leases dies without a word.
    const counts = replicas.map((r) => ids.filter((id) => before.get(id)?.owner === r.id).length);
    const victim = replicas[counts.indexOf(Math.max(...counts))] as Replica;
    const held = ids.filter((id) => before.get(id)?.owner === victim.id);
    const events = async () => (await q<{ n: number }>('SELECT count(*)::int AS n FROM instance_events WHERE instance_id = ANY($1)', [ids]))[0]?.n;
    const eventsBefore = await events();
    victim.child.kill('SIGKILL');
    await victim.exited;
    const live = replicas.filter((r) => r !== victim);
    // While its leases have not lapsed, nobody takes them (one owner at a time, even when the owner is dead).
    const right = await q<{ item: string; owner: string }>(
      `SELECT item, owner FROM work_claims WHERE kind = 'instance' AND item = ANY($1) AND expires_at > now()`,
      [held],
    );
    for (const r of right) assert.equal(r.owner, victim.id, 'a live lease is never taken from its owner');
    await waitUntil("the dead replica's instances are leased by live replicas", async () => {
      const l = await leases();
      return ids.every((id) => l.get(id)?.live === true && live.some((r) => r.id === l.get(id)?.owner));
    });
    // Taking over records nothing new for these instances: no step is repeated.
    assert.equal(await events(), eventsBefore);
    // Task housekeeping is swept by one live worker.
    await waitUntil('a live replica holds the housekeeping lease', async () => {
      const h = await q<{ owner: string }>(`SELECT owner FROM work_claims WHERE kind = 'tasks.housekeeping' AND expires_at > now()`);
      return h.length === 1 && live.some((r) => r.id === h[0]?.owner);
    });
    // The work goes on: each instance is destroyed once, by a live replica.
    await Promise.all(ids.map((id, i) => via(admin, live[i % 2] as Replica).json('DELETE', `/api/v1/tenants/${slug}/instances/${id}`, undefined, 202)));
    await waitUntil('every instance is gone', async () => (await q('SELECT 1 FROM instances WHERE id = ANY($1)', [ids])).length === 0);
    const audits = await destroyedAudits(ids);
    for (const id of ids) assert.equal(audits.get(id), 1, `instance ${id} destroyed exactly once`);
  });
});

describe('activity through another replica keeps an instance from the idle reaper', async () => {
  // Replica 1 is this server (its reaper holds the lease); replica 2 is represented by its Activity, which is
  // all of replica 2 that the reaper sees: the rows it writes. Passes are rare so no sandbox is started here.
  const server = await startTestServer({
    CLAWPLANE_IDLE_TIMEOUT_MS: '3000',
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '600000',
    CLAWPLANE_REPLICA_EXPIRE_MS: '3600000',
  });
  const admin = await onboard(server);
  await admin.json('POST', '/api/v1/tenants', { slug: 'busy', name: 'Busy' }, 201);
  await admin.json('POST', '/api/v1/tenants/busy/members', { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
  const { id } = await admin.json<{ id: string }>('POST', '/api/v1/tenants/busy/instances', { name: 'main', start: false }, 202);
  const { db } = server.database;
  const desired = async () => (await db.query<{ d: string }>('SELECT desired_state AS d FROM instances WHERE id = $1', [id])).rows[0]?.d;
  const replica2 = new Activity({ db, writeMs: 50 });

  test('an instance used only through replica 2 is not reaped by replica 1; once unused it is', async () => {
    const { reaper } = server.services;
    // Running as far as the database says (written behind the reconciler's back: no event, no pass).
    await db.query(`UPDATE instances SET desired_state = 'running', status = 'running' WHERE id = $1`, [id]);
    // Used through replica 2 for well over the idle timeout; replica 1 sweeps all along and never serves it.
    const t0 = Date.now();
    while (Date.now() - t0 < 7000) {
      replica2.touch(id);
      assert.deepEqual(await reaper.sweep(), [], 'not reaped while in use elsewhere');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await desired(), 'running');
    assert.equal(server.services.activity.last(id), undefined, 'replica 1 never saw the traffic itself');
    // A request in flight on replica 2 (a long stream) counts too, with no new traffic.
    const done = replica2.begin(id);
    const t1 = Date.now();
    while (Date.now() - t1 < 5000) {
      await replica2.flush();
      assert.deepEqual(await reaper.sweep(), [], 'not reaped while a request is in flight elsewhere');
      await new Promise((r) => setTimeout(r, 100));
    }
    done();
    await replica2.stop();
    // Unused now: replica 1 reaps it after the timeout.
    let stopped: string[] = [];
    while (stopped.length === 0) {
      stopped = await reaper.sweep();
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(stopped, [id]);
    assert.equal(await desired(), 'stopped');
  });
});
