/**
 * Several control planes on one database (docs/adr/0009-replica-coordination.md): three `clawplane serve`
 * processes share one PostgreSQL. What one changes, the others enforce at once (PostgreSQL LISTEN/NOTIFY);
 * a replica that cannot hear changes stops trusting its caches.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient } from './helpers/client.ts';
import { testDatabase } from './helpers/db.ts';
import { sharedSecretKey, startReplica, within, type Replica } from './helpers/replicas.ts';

/** The same signed-in person, talking to another replica (sessions live in the database). */
function via(c: ApiClient, r: Replica): ApiClient {
  const other = new ApiClient(r.url, c.bearer ? { bearer: c.bearer } : {});
  other.cookies = c.cookies;
  other.csrf = c.csrf;
  return other;
}

describe('three replicas on one database', async () => {
  const database = await testDatabase({ autoDrop: false });
  const secretKey = sharedSecretKey();
  const replicas: Replica[] = [];
  // Short heartbeats so a killed replica is found dead quickly.
  const env = { CLAWPLANE_REPLICA_HEARTBEAT_MS: '200', CLAWPLANE_REPLICA_EXPIRE_MS: '1500' };
  for (const name of ['r1', 'r2', 'r3']) replicas.push(await startReplica({ name, databaseUrl: database.url, secretKey, env }));
  // After the replicas' own hooks (registered above): they stop before their database goes.
  after(() => database.drop());
  const [r1, r2, r3] = replicas as [Replica, Replica, Replica];
  let admin: ApiClient;
  const slug = 'acme';

  test('one setup code works whichever replica the admin reaches', async () => {
    const codes = await Promise.all(replicas.map(async (r) => (await readFile(path.join(r.dataDir, 'setup-code'), 'utf8')).trim()));
    assert.equal(new Set(codes).size, 1, 'every replica wrote the same code');
    // The code from r3's data directory, entered through r2.
    admin = new ApiClient(r2.url);
    const res = await admin.json<{ csrfToken: string }>('POST', '/api/v1/onboarding/admin', {
      email: ADMIN_EMAIL,
      password: ADMIN_PASSWORD,
      setupCode: codes[2],
    });
    admin.csrf = res.csrfToken;
    await via(admin, r1).json('POST', '/api/v1/onboarding/oidc', { skip: true });
    await via(admin, r3).json('POST', '/api/v1/onboarding/provider', { skip: true });
    await admin.json('POST', '/api/v1/onboarding/defaults', {});
    await via(admin, r1).json('POST', '/api/v1/tenants', { slug, name: 'Acme' }, 201);
    // Platform admins do not read tenants' resources: the admin joins this tenant as its admin.
    await via(admin, r3).json('POST', `/api/v1/tenants/${slug}/members`, { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
  });

  const explain = async (r: Replica, tool: string) =>
    (await via(admin, r).json<{ outcome: string }>('POST', `/api/v1/tenants/${slug}/policy/explain`, { tool })).outcome;

  test('a forbid saved on replica 1 is enforced on replicas 2 and 3 within 1 s', async (t) => {
    // Each replica has decided (and cached the tenant's policy set) before the change.
    for (const r of replicas) assert.equal(await explain(r, 'read'), 'allow');
    await via(admin, r1).json('PUT', `/api/v1/tenants/${slug}/policy`, {
      execPolicy: 'deny',
      policies: [{ id: 'no-read', description: 'no reading', cedar: 'forbid (principal, action, resource) when { resource.name == "read" };' }],
    });
    for (const r of [r2, r3]) {
      const ms = await within(1000, `${r.name} denies read`, async () => (await explain(r, 'read')) === 'deny');
      t.diagnostic(`${r.name}: forbid enforced after ${ms.toFixed(0)} ms`);
    }
    assert.equal(await explain(r1, 'read'), 'deny');
  });

  test('a tool-registry risk change (low → critical) saved on replica 1 is enforced on replica 3 within 1 s', async (t) => {
    for (const r of replicas) assert.equal(await explain(r, 'ls'), 'allow');
    await via(admin, r1).json('PUT', '/api/v1/policy/tools/ls', { risk: 'critical', group: 'fs', description: 'List workspace files' });
    for (const r of [r3, r2]) {
      const ms = await within(1000, `${r.name} denies ls`, async () => (await explain(r, 'ls')) === 'deny');
      t.diagnostic(`${r.name}: registry change enforced after ${ms.toFixed(0)} ms`);
    }
  });

  test('an API token revoked on one replica is refused by every replica within 1 s', async (t) => {
    const {
      token,
      info: { id },
    } = await via(admin, r1).json<{ token: string; info: { id: string } }>('POST', `/api/v1/tenants/${slug}/tokens`, { name: 'ci', role: 'viewer' }, 201);
    const clients = replicas.map((r) => new ApiClient(r.url, { bearer: token }));
    // Every replica has resolved (and cached) the token.
    for (const c of clients) assert.equal((await c.call('GET', `/api/v1/tenants/${slug}/policy`)).status, 200);
    assert.equal((await via(admin, r2).call('DELETE', `/api/v1/tenants/${slug}/tokens/${id}`)).status, 200);
    for (const [i, c] of clients.entries()) {
      const ms = await within(
        1000,
        `replica ${i + 1} refuses the revoked token`,
        async () => (await c.call('GET', `/api/v1/tenants/${slug}/policy`)).status === 401,
      );
      t.diagnostic(`r${i + 1}: revoked token refused after ${ms.toFixed(0)} ms`);
    }
  });

  test('a replica that loses its notification connection drops its caches and reads the database until it is back', async () => {
    await via(admin, r1).json('PUT', `/api/v1/tenants/${slug}/policy`, { execPolicy: 'deny', policies: [] });
    await within(1000, 'r2 allows read again', async () => (await explain(r2, 'read')) === 'allow');
    // A change that no replica hears of (written behind the control plane's back): r2 keeps its cached set...
    await database.db.query(`UPDATE tenant_tool_policies SET policies = $1 WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $2)`, [
      JSON.stringify([{ id: 'quiet', description: '', cedar: 'forbid (principal, action, resource) when { resource.name == "read" };' }]),
      slug,
    ]);
    assert.equal(await explain(r2, 'read'), 'allow', 'the cached set serves while the channel is up (so the cache is real)');
    // ...until its LISTEN connection is cut: then it may have missed changes, so it drops what it cached.
    const killed = await database.db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
      `clawplane-events:${r2.id}`.slice(0, 63),
    ]);
    assert.equal(killed.rowCount, 1, "r2's listening connection exists");
    await within(5000, 'r2 denies read after losing its channel', async () => (await explain(r2, 'read')) === 'deny');
    await within(
      10_000,
      'r2 logs the loss and the recovery',
      async () => /event channel lost its database connection/.test(r2.output()) && /event channel listening again/.test(r2.output()),
    );
    // Back: changes are heard again.
    await via(admin, r3).json('PUT', `/api/v1/tenants/${slug}/policy`, { execPolicy: 'deny', policies: [] });
    await within(1000, 'r2 allows read after the change made on r3', async () => (await explain(r2, 'read')) === 'allow');
  });

  test('platform admins see every replica, its roles and node; a replica killed with -9 expires and exactly one live replica takes it over', async () => {
    type R = { id: string; state: string; roles: string[]; node: string; self: boolean; recoveredBy: string | null };
    const list = async (r: Replica) => (await via(admin, r).json<{ items: R[] }>('GET', '/api/v1/platform/replicas')).items;
    const seen = await list(r1);
    assert.deepEqual(seen.map((x) => x.id).sort(), replicas.map((r) => r.id).sort());
    assert.ok(seen.every((x) => x.state === 'live' && x.roles.join(',') === 'api,worker,broker,reconciler' && x.node !== ''));
    assert.equal(seen.find((x) => x.self)?.id, r1.id);
    // A tenant member who is not a platform admin is refused.
    const { token } = await via(admin, r1).json<{ token: string }>('POST', `/api/v1/tenants/${slug}/tokens`, { name: 'nosy', role: 'tenant_admin' }, 201);
    assert.equal((await new ApiClient(r2.url, { bearer: token }).call('GET', '/api/v1/platform/replicas')).status, 403);

    r3.child.kill('SIGKILL');
    await r3.exited;
    await within(20_000, 'r3 expires and is taken over', async () => {
      const x = (await list(r1)).find((y) => y.id === r3.id);
      return x?.state === 'expired' && x.recoveredBy !== null;
    });
    const after = await list(r2);
    const dead = after.find((y) => y.id === r3.id);
    assert.ok(dead?.recoveredBy === r1.id || dead?.recoveredBy === r2.id, 'a live replica took it over');
    // Exactly once: the claim is one row; the later heartbeats of both live replicas leave it alone.
    const rows = await database.db.query<{ recovered_by: string; recovered_at: Date }>('SELECT recovered_by, recovered_at FROM replicas WHERE id = $1', [
      r3.id,
    ]);
    await new Promise((r) => setTimeout(r, 600));
    const again = await database.db.query<{ recovered_by: string; recovered_at: Date }>('SELECT recovered_by, recovered_at FROM replicas WHERE id = $1', [
      r3.id,
    ]);
    assert.deepEqual(again.rows, rows.rows);
  });
});
