/**
 * The broker's shared state across replicas (docs/adr/0009-replica-coordination.md): three `clawplane serve`
 * processes on one PostgreSQL enforce one set of budgets (reserved and settled in the database), and sign and
 * verify tool grants with one set of keys sealed in the vault.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { createPrivateKey } from 'node:crypto';
import { newSecret, sha256 } from '../src/identity/tokens.ts';
import { dbKeyVersionStore, LocalKeyProvider } from '../src/vault/local-key-provider.ts';
import { Vault } from '../src/vault/vault.ts';
import { ApiClient } from './helpers/client.ts';
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
  const cred = await via(admin, r1).json<{ id: string }>(
    'POST',
    `/api/v1/tenants/${slug}/credentials`,
    { name: 'fake-key', type: 'api_key', value: canary },
    201,
  );
  const provider = await via(admin, r3).json<{ id: string }>(
    'POST',
    `/api/v1/tenants/${slug}/providers`,
    { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: cred.id },
    201,
  );
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
    const res = await fetch(base + path, {
      method: 'POST',
      headers: { authorization: `Bearer ${sandboxToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    bodies.push(text);
    return { status: res.status, text, retryAfter: res.headers.get('retry-after') };
  };

  test('200 concurrent model calls over three replicas spend exactly the daily cap, never more', async (t) => {
    // One call through each replica first (its token, route and key caches warm), then 200 at once.
    for (const b of brokers)
      assert.equal((await post(b, '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: 'warm' }] })).status, 200);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        post(brokers[i % 3] ?? '', '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: `call ${i}` }] }).then((r) => ({
          ...r,
          replica: i % 3,
        })),
      ),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    t.diagnostic(`admitted ${ok.length} (per replica ${[0, 1, 2].map((i) => ok.filter((r) => r.replica === i).length).join('/')}), refused ${refused.length}`);
    assert.equal(
      ok.length + refused.length,
      200,
      `every call is admitted or refused with 429: ${results.find((r) => r.status !== 200 && r.status !== 429)?.text}`,
    );
    // Bound: a call is admitted only while settled spend + reservations in flight < cap, and each reserves
    // 100 ≥ what it uses; so the spend after the last admission is < cap + 100, i.e. ≤ cap in steps of 100.
    // Refusals happen only when spend + reservations ≥ cap, and every reservation became a 100-token call:
    // so the day ends exactly at the cap. Per-process counters would have let each replica spend the cap.
    assert.equal((ok.length + 3) * TOKENS_PER_CALL, CAP, 'exactly the cap was spent');
    // A call is settled after its answer went out (the caller does not wait): wait for the last settlement.
    for (let i = 0; ; i++) {
      const open = await database.db.query(`SELECT 1 FROM broker_reservations WHERE tenant_id = $1 AND settled_at IS NULL`, [tenantId]);
      if (open.rowCount === 0) break;
      assert.ok(i < 199, `every reservation is settled (${open.rowCount} still open)`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const spend = await database.db.query<{ tokens: string }>(`SELECT tokens FROM broker_spend WHERE tenant_id = $1 AND scope = 'tenant'`, [tenantId]);
    assert.equal(Number(spend.rows[0]?.tokens), CAP, 'the shared counter agrees');
    const err = JSON.parse(refused[0]?.text ?? '{}') as { error: { code: string; message: string } };
    assert.equal(err.error.code, 'daily_tokens');
    assert.match(err.error.message, /daily token budget of tenant \(5000 tokens\) is used up; it resets at 00:00 UTC/);
    assert.ok(Number(refused[0]?.retryAfter) > 0, 'a refusal says when to retry');
    // The usage rows (written by each replica in batches) add up to the same.
    for (let i = 0; i < 200; i++) {
      const u = await database.db.query<{ n: number; t: string }>(
        `SELECT count(*)::int AS n, coalesce(sum(input_tokens + output_tokens), 0) AS t FROM llm_usage WHERE tenant_id = $1`,
        [tenantId],
      );
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

  const grant = async (base: string) => {
    const r = await post(base, '/broker/grants', { tool: 'read', agent: 'main' });
    assert.equal(r.status, 201, r.text);
    return (JSON.parse(r.text) as { token: string }).token;
  };
  const verify = (base: string, token: string) => post(base, '/broker/grants/verify', { token, tool: 'read' });
  const kidOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { kid: string }).kid;
  let r1Now = r1;

  test('a grant issued by replica 1 verifies on replica 3, and after replica 1 restarts', async () => {
    const token = await grant(brokerUrl(r1));
    assert.equal((await verify(brokerUrl(r3), token)).status, 200, 'replica 3 verifies it');
    const onR2 = await grant(brokerUrl(r2));
    assert.equal(kidOf(onR2), kidOf(token), 'every replica signs with the one shared key');
    // Replica 1 restarts (same data directory, so the same replica id): its grants still verify, on it too.
    r1.child.kill('SIGTERM');
    await r1.exited;
    r1Now = await startReplica({ name: 'r1', databaseUrl: database.url, secretKey, env, dataDir: r1.dataDir });
    assert.equal(r1Now.id, r1.id);
    assert.equal((await verify(brokerUrl(r1Now), token)).status, 200, 'the restarted replica verifies what it issued before');
    assert.equal(kidOf(await grant(brokerUrl(r1Now))), kidOf(token), 'and signs with the same key');
    // Refusals say what is wrong; none is a 500.
    const bad = await verify(brokerUrl(r3), `${token.slice(0, -4)}AAAA`);
    assert.equal(bad.status, 401);
    assert.match(bad.text, /"code":"grant_invalid".*not a valid Clawplane grant/);
    const wrongTool = await post(brokerUrl(r3), '/broker/grants/verify', { token, tool: 'exec' });
    assert.equal(wrongTool.status, 401);
    assert.match(wrongTool.text, /not valid for this use \(aud\)/);
    assert.equal((await post(brokerUrl(r3), '/broker/grants/verify', { token })).status, 400);
    const anon = await fetch(`${brokerUrl(r3)}/broker/grants/verify`, { method: 'POST', body: JSON.stringify({ token, tool: 'read' }) });
    assert.equal(anon.status, 401);
  });

  test('a key rotation keeps grants of the old key valid within the overlap, and refuses them after', async () => {
    const old = await grant(brokerUrl(r2));
    const rotated = await via(admin, r3).json<{ kid: string; retired: string; overlapSeconds: number }>('POST', '/api/v1/platform/grant-keys/rotate', {
      overlapSeconds: 3,
    });
    const at = Date.now();
    assert.equal(rotated.retired, kidOf(old));
    // Within the overlap, every replica still verifies the old key's grant.
    for (const r of [r1Now, r2, r3]) assert.equal((await verify(brokerUrl(r), old)).status, 200, `${r.name} verifies it within the overlap`);
    // New grants are signed with the new key on every replica (each drops its cached key on the event).
    for (const r of [r1Now, r2, r3]) {
      let kid = '';
      for (let i = 0; i < 100 && kid !== rotated.kid; i++) {
        kid = kidOf(await grant(brokerUrl(r)));
        if (kid !== rotated.kid) await new Promise((res) => setTimeout(res, 20));
      }
      assert.equal(kid, rotated.kid, `${r.name} signs with the new key`);
    }
    const fresh = await grant(brokerUrl(r1Now));
    const keys = await via(admin, r1Now).json<{ items: { kid: string; current: boolean; verifyUntil: string | null }[] }>('GET', '/api/v1/platform/grant-keys');
    assert.deepEqual(
      keys.items.map((k) => [k.kid, k.current]),
      [
        [rotated.kid, true],
        [kidOf(old), false],
      ],
    );
    await new Promise((res) => setTimeout(res, Math.max(0, 3_000 - (Date.now() - at)) + 300));
    for (const r of [r1Now, r2, r3]) {
      const after = await verify(brokerUrl(r), old);
      assert.equal(after.status, 401, `${r.name} refuses the old key's grant after the overlap`);
      assert.match(after.text, /retired signing key .* Ask for a new grant/);
      assert.equal((await verify(brokerUrl(r), fresh)).status, 200, `${r.name} verifies the new key's grant`);
    }
    // Only platform admins rotate; a bad overlap is a clear 400.
    const { token: tenantToken } = await via(admin, r2).json<{ token: string }>(
      'POST',
      `/api/v1/tenants/${slug}/tokens`,
      { name: 'nosy', role: 'tenant_admin' },
      201,
    );
    assert.equal((await new ApiClient(r2.url, { bearer: tenantToken }).call('POST', '/api/v1/platform/grant-keys/rotate', {})).status, 403);
    assert.equal((await via(admin, r2).call('POST', '/api/v1/platform/grant-keys/rotate', { overlapSeconds: -1 })).status, 400);
  });

  test('grant signing keys appear in no log, API body or audit row', async () => {
    const vault = new Vault({
      db: database.db,
      keys: new LocalKeyProvider({ secret: Buffer.from(secretKey, 'base64'), versions: dbKeyVersionStore(database.db) }),
    });
    const kids = (await database.db.query<{ kid: string }>('SELECT kid FROM grant_signing_keys')).rows.map((k) => k.kid);
    assert.equal(kids.length, 2);
    const secrets: string[] = [];
    for (const kid of kids) {
      const pem = await vault.openPlatformSecret(`grant-key.${kid}`);
      const d = (createPrivateKey(pem).export({ format: 'jwk' }) as { d: string }).d;
      secrets.push(d, pem.split('\n')[1] ?? '');
    }
    const audit = (await database.db.query<{ row: string }>('SELECT row_to_json(a)::text AS row FROM audit_events a')).rows.map((r) => r.row);
    const haystacks = [
      ...bodies,
      ...[r1, r1Now, r2, r3].map((r) => r.output()),
      ...audit,
      JSON.stringify(await via(admin, r1Now).json('GET', '/api/v1/platform/grant-keys')),
    ];
    for (const secret of secrets) {
      assert.ok(secret.length >= 40);
      for (const h of haystacks) assert.ok(!h.includes(secret), 'a private grant key leaked');
    }
    assert.ok(
      audit.some((a) => a.includes('grant_key.rotate')),
      'the rotation is audited',
    );
  });

  test('no body the broker answered shows the provider key', () => {
    assert.ok(bodies.length > 200);
    for (const b of bodies) assert.ok(!b.includes(canary));
    for (const r of [...replicas, r1Now]) assert.ok(!r.output().includes(canary), `${r.name}'s log is clean`);
  });
});
