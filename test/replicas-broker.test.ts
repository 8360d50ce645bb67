/**
 * The broker's shared state across replicas (docs/adr/0009-replica-coordination.md): three `clawplane serve`
 * processes on one PostgreSQL enforce one set of budgets (reserved and settled in the database), and sign and
 * verify tool grants with one set of keys sealed in the vault.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { newSecret, sha256 } from '../src/identity/tokens.ts';
import { testDatabase } from './helpers/db.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { brokerUrl, onboardVia, sharedSecretKey, startReplica, via, type Replica } from './helpers/replicas.ts';

const TOKENS_PER_CALL = 100; // the fake provider's usage: 40 in + 60 out
const CAP = 5_000;

describe('three replicas share the broker: budgets and grant keys', async () => {
  const fake = await startFakeLlm();
  const database = await testDatabase({ autoDrop: false });
  const secretKey = sharedSecretKey();
  const env = {
    CLAWPLANE_BROKER_PORT: '0',
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    // Each capped call reserves at least what the fake provider will report it used.
    CLAWPLANE_BROKER_RESERVE_TOKENS: String(TOKENS_PER_CALL),
  };
  const replicas: Replica[] = [];
  for (const name of ['r1', 'r2', 'r3']) replicas.push(await startReplica({ name, databaseUrl: database.url, secretKey, env }));
  after(() => database.drop());
  const [r1, r2, r3] = replicas as [Replica, Replica, Replica];
  const slug = 'spendy';
  const { admin, tenantId } = await onboardVia(r2, slug, { dailyTokenBudget: CAP });
  const canary = `sk-canary-${randomBytes(12).toString('hex')}`;
  const cred = await via(admin, r1).json<{ id: string }>('POST', `/api/v1/tenants/${slug}/credentials`, { name: 'fake-key', type: 'api_key', value: canary }, 201);
  const provider = await via(admin, r3).json<{ id: string }>('POST', `/api/v1/tenants/${slug}/providers`, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: cred.id }, 201);
  await via(admin, r2).json('PUT', `/api/v1/tenants/${slug}/model-routes`, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] });
  // A sandbox start of the tenant, as the broker registers one (its token is what the supervisor sends).
  const sandboxToken = newSecret('cpb_');
  await database.db.query(
    `INSERT INTO sandbox_tokens (tenant_id, instance_id, sandbox_id, token_hash, expires_at) VALUES ($1, 'inst-1', 'sbx-1', $2, now() + interval '1 hour')`,
    [tenantId, sha256(sandboxToken)],
  );
  const brokers = replicas.map(brokerUrl);
  const bodies: string[] = [];
  const post = async (base: string, path: string, body: unknown) => {
    const res = await fetch(base + path, { method: 'POST', headers: { authorization: `Bearer ${sandboxToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    bodies.push(text);
    return { status: res.status, text, retryAfter: res.headers.get('retry-after') };
  };

  test('200 concurrent model calls over three replicas spend exactly the daily cap, never more', async (t) => {
    // One call through each replica first (its token, route and key caches warm), then 200 at once.
    for (const b of brokers) assert.equal((await post(b, '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: 'warm' }] })).status, 200);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => post(brokers[i % 3] ?? '', '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: `call ${i}` }] }).then((r) => ({ ...r, replica: i % 3 }))),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    t.diagnostic(`admitted ${ok.length} (per replica ${[0, 1, 2].map((i) => ok.filter((r) => r.replica === i).length).join('/')}), refused ${refused.length}`);
    assert.equal(ok.length + refused.length, 200, `every call is admitted or refused with 429: ${results.find((r) => r.status !== 200 && r.status !== 429)?.text}`);
    // Bound: a call is admitted only while settled spend + reservations in flight < cap, and each reserves
    // 100 ≥ what it uses; so the spend after the last admission is < cap + 100, i.e. ≤ cap in steps of 100.
    // Refusals happen only when spend + reservations ≥ cap, and every reservation became a 100-token call:
    // so the day ends exactly at the cap. Per-process counters would have let each replica spend the cap.
    assert.equal((ok.length + 3) * TOKENS_PER_CALL, CAP, 'exactly the cap was spent');
    const spend = await database.db.query<{ tokens: string }>(`SELECT tokens FROM broker_spend WHERE tenant_id = $1 AND scope = 'tenant'`, [tenantId]);
    assert.equal(Number(spend.rows[0]?.tokens), CAP, 'the shared counter agrees');
    const open = await database.db.query(`SELECT 1 FROM broker_reservations WHERE tenant_id = $1 AND settled_at IS NULL`, [tenantId]);
    assert.equal(open.rowCount, 0, 'every reservation was settled');
    const err = JSON.parse(refused[0]?.text ?? '{}') as { error: { code: string; message: string } };
    assert.equal(err.error.code, 'daily_tokens');
    assert.match(err.error.message, /daily token budget of tenant \(5000 tokens\) is used up; it resets at 00:00 UTC/);
    assert.ok(Number(refused[0]?.retryAfter) > 0, 'a refusal says when to retry');
    // The usage rows (written by each replica in batches) add up to the same.
    for (let i = 0; i < 200; i++) {
      const u = await database.db.query<{ n: number; t: string }>(`SELECT count(*)::int AS n, coalesce(sum(input_tokens + output_tokens), 0) AS t FROM llm_usage WHERE tenant_id = $1`, [tenantId]);
      if (u.rows[0]?.n === 203) {
        assert.equal(Number(u.rows[0].t), CAP);
        break;
      }
      assert.ok(i < 199, 'all 203 usage rows were written');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  test('a call whose replica died stops holding its reservation once it expires', async () => {
    await database.db.query(`UPDATE broker_spend SET tokens = $2 - 300 WHERE tenant_id = $1 AND scope = 'tenant'`, [tenantId, CAP]);
    // Three calls in flight on a replica that then died: their reservations fill what is left of the cap.
    await database.db.query(
      `INSERT INTO broker_reservations (id, tenant_id, agent, day, est_tokens, est_cost, expires_at)
       SELECT gen_random_uuid(), $1, '', (now() AT TIME ZONE 'UTC')::date, 100, 0, now() + interval '1 hour' FROM generate_series(1, 3)`,
      [tenantId],
    );
    const refused = await post(brokers[0] ?? '', '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(refused.status, 429);
    assert.match(refused.text, /3 call\(s\) still in flight count against it: retry when they finish/);
    await database.db.query(`UPDATE broker_reservations SET expires_at = now() WHERE tenant_id = $1 AND settled_at IS NULL`, [tenantId]);
    const ok = await post(brokers[2] ?? '', '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(ok.status, 200, ok.text);
  });

  test('no body the broker answered shows the provider key', () => {
    assert.ok(bodies.length > 200);
    for (const b of bodies) assert.ok(!b.includes(canary));
    for (const r of replicas) assert.ok(!r.output().includes(canary), `${r.name}'s log is clean`);
  });
});
