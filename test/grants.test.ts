/**
 * Grants (issue 5, item 6): a sandbox asks to use a tool and gets a short-lived scoped token, a parked
 * approval, or a 403 with the reason and policy ids. Tokens: EdDSA only (alg none and key confusion
 * refused), audience = the tool, expiry, revocation by jti. Every outcome is audited without the token.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';
import { GrantInvalidError, GrantService, grantRoutes, type GrantCaller, type SandboxResolver } from '../src/broker/grants.ts';
import { PolicyService } from '../src/policy/service.ts';
import { TenantService } from '../src/tenancy/tenants.ts';
import { testDatabase } from './helpers/db.ts';

describe('grants', async () => {
  const { db } = await testDatabase();
  const tenants = new TenantService(db);
  const acme = await tenants.create({ slug: 'acme', name: 'Acme' }, { actor: 'test' });
  const other = await tenants.create({ slug: 'other', name: 'Other' }, { actor: 'test' });
  const policy = new PolicyService(db);
  const grants = new GrantService({ db, policy });
  // A stand-in for the broker's token store (src/broker/identity.ts): same shape, no database.
  const callers = new Map<string, GrantCaller>([
    ['cpb_acme', { id: 'start-acme-1', tenantId: acme.id, instanceId: 'inst-1', sandboxId: 'sb-1' }],
    ['cpb_other', { id: 'start-other-1', tenantId: other.id, instanceId: 'inst-2', sandboxId: 'sb-2' }],
  ]);
  const sandboxes: SandboxResolver = { resolve: (t) => Promise.resolve(callers.get(t)) };
  const app = grantRoutes({ grants, sandboxes });
  const ask = (body: unknown, token = 'cpb_acme', raw?: string) =>
    app.request('/broker/grants', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: raw ?? JSON.stringify(body),
    });
  const auditRows = async (action: string) =>
    (
      await db.query<{ actor: string; decision: string; target: string; detail: Record<string, unknown> }>(
        'SELECT actor, decision, target, detail FROM audit_events WHERE action = $1 ORDER BY seq',
        [action],
      )
    ).rows;

  test('an allowed tool use gets a scoped EdDSA token (aud = tool, ≤ 5 min) that verifies for that tool only', async () => {
    const res = await ask({ tool: 'web_fetch', agent: 'main', context: { host: 'api.example.com', taskId: 'task-7' } });
    assert.equal(res.status, 201);
    const body = (await res.json()) as { token: string; jti: string; scope: string; policyIds: string[]; expiresAt: string };
    assert.equal(body.scope, 'tool:web_fetch host:api.example.com');
    assert.deepEqual(body.policyIds, ['baseline/permit-standard-risk']);
    const header = decodeProtectedHeader(body.token);
    assert.equal(header.alg, 'EdDSA');
    const claims = decodeJwt(body.token);
    assert.equal(claims.aud, 'web_fetch');
    assert.equal(claims['tenant'], acme.id);
    assert.equal(claims.jti, body.jti);
    assert.ok((claims.exp ?? 0) - (claims.iat ?? 0) <= 300);

    const verified = await grants.verifyGrant(body.token, { tool: 'web_fetch', tenantId: acme.id });
    assert.deepEqual(
      [verified.tenantId, verified.sandboxStartId, verified.agent, verified.context.host, verified.context.taskId],
      [acme.id, 'start-acme-1', 'main', 'api.example.com', 'task-7'],
    );

    await assert.rejects(
      grants.verifyGrant(body.token, { tool: 'exec' }),
      (e: unknown) => e instanceof GrantInvalidError && /not valid for this use \(aud\)/.test(e.message),
    );
    await assert.rejects(grants.verifyGrant(body.token, { tool: 'web_fetch', tenantId: other.id }), /another tenant/);

    const [row] = await auditRows('tool.grant.issue');
    assert.equal(row?.actor, 'sandbox:start-acme-1');
    assert.equal(row?.decision, 'allow');
    assert.equal(row?.detail['jti'], body.jti);
    const all = JSON.stringify((await db.query('SELECT * FROM audit_events')).rows) + JSON.stringify((await db.query('SELECT * FROM tool_grants')).rows);
    assert.ok(!all.includes(body.token.split('.')[2] ?? 'x'), 'the token signature is never stored');
  });

  test('a denied tool use is a 403 with the explanation and the determining policy ids, audited', async () => {
    const res = await ask({ tool: 'gateway' });
    assert.equal(res.status, 403);
    const body = (await res.json()) as { code: string; message: string; details: { policyIds: string[] } };
    assert.equal(body.code, 'policy_denied');
    assert.deepEqual(body.details.policyIds, ['baseline/forbid-critical']);
    assert.match(body.message, /Critical-risk tools are never used/);
    const rows = await auditRows('tool.grant.deny');
    assert.deepEqual(rows.at(-1)?.detail['policyIds'], ['baseline/forbid-critical']);
    assert.equal(rows.at(-1)?.target, 'tool:gateway');

    await policy.setTenantPolicy(
      acme.id,
      { execPolicy: 'deny', policies: [{ id: 'no-web', description: '', cedar: 'forbid (principal, action, resource) when { resource.group == "web" };' }] },
      { actor: 'test' },
    );
    const denied = (await (await ask({ tool: 'web_fetch' })).json()) as { details: { policyIds: string[] } };
    assert.deepEqual(denied.details.policyIds, ['tenant/no-web']);
    // The other tenant's sandbox is not affected by acme's restriction.
    assert.equal((await ask({ tool: 'web_fetch' }, 'cpb_other')).status, 201);
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, { actor: 'test' });
  });

  test('requires approval: 202 with an approval id and a pending approval row, audited', async () => {
    await policy.setTenantPolicy(acme.id, { execPolicy: 'ask', policies: [] }, { actor: 'test' });
    const res = await ask({ tool: 'exec', agent: 'main', context: { taskId: 'task-9' } });
    assert.equal(res.status, 202);
    const body = (await res.json()) as { outcome: string; approvalId: string; policyIds: string[]; explanation: string };
    assert.equal(body.outcome, 'requires_approval');
    assert.ok(body.policyIds.includes('baseline/approve-exec'));
    const row = (
      await db.query<{ tenant_id: string; status: string; tool: string; context: { taskId: string }; policy_ids: string[] }>(
        'SELECT * FROM tool_approvals WHERE id = $1',
        [body.approvalId],
      )
    ).rows[0];
    assert.deepEqual([row?.tenant_id, row?.status, row?.tool, row?.context.taskId], [acme.id, 'pending', 'exec', 'task-9']);
    assert.equal((await auditRows('tool.grant.approval_required')).at(-1)?.detail['approvalId'], body.approvalId);
    // No token was issued for it.
    assert.equal((await db.query("SELECT 1 FROM tool_grants WHERE tool = 'exec'")).rowCount, 0);
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, { actor: 'test' });
  });

  test('without a valid broker token: 401; a malformed or over-posted body: 400', async () => {
    assert.equal((await ask({ tool: 'read' }, '')).status, 401);
    assert.equal((await ask({ tool: 'read' }, 'cpb_unknown')).status, 401);
    assert.equal((await ask(undefined, 'cpb_acme', '{not json')).status, 400);
    const extra = await ask({ tool: 'read', tenantId: other.id });
    assert.equal(extra.status, 400);
    assert.match(await extra.text(), /unknown field\(s\): tenantId/);
    assert.equal((await ask({ tool: 'read', context: { channel: 'x', secret: 'y' } })).status, 400);
  });

  test('a grant expires (short exp, no clock tolerance)', async () => {
    // 2 s, not 1: JWT times are whole seconds, so a 1 s grant issued at x.999 s is already expired at x+1.
    const quick = new GrantService({ db, policy, ttlSeconds: 2 });
    const r = await quick.request(callers.get('cpb_acme') as GrantCaller, { tool: 'read', agent: 'main', context: {} });
    assert.equal(r.outcome, 'granted');
    if (r.outcome !== 'granted') return;
    await quick.verifyGrant(r.token, { tool: 'read' });
    await sleep(3100);
    await assert.rejects(quick.verifyGrant(r.token, { tool: 'read' }), (e: unknown) => e instanceof GrantInvalidError && /expired/.test(e.message));
    // A TTL above five minutes is capped.
    const long = new GrantService({ db, policy, ttlSeconds: 3600 });
    const l = await long.request(callers.get('cpb_acme') as GrantCaller, { tool: 'read', agent: 'main', context: {} });
    assert.ok(l.outcome === 'granted' && l.expiresAt.getTime() - Date.now() <= 300_000);
  });

  test('revocation by jti is checked on verify; another tenant cannot revoke it; a stopped sandbox revokes all its grants', async () => {
    const caller = callers.get('cpb_acme') as GrantCaller;
    const r = await grants.request(caller, { tool: 'read', agent: 'main', context: {} });
    assert.ok(r.outcome === 'granted');
    if (r.outcome !== 'granted') return;
    assert.equal(await grants.revoke(other.id, r.jti, { actor: 'user:b' }), false);
    await grants.verifyGrant(r.token, { tool: 'read' });
    assert.equal(await grants.revoke(acme.id, r.jti, { actor: 'user:a', reason: 'test' }), true);
    assert.equal(await grants.revoke(acme.id, r.jti, { actor: 'user:a' }), false);
    await assert.rejects(grants.verifyGrant(r.token, { tool: 'read' }), /revoked/);
    assert.equal(await grants.revoke(acme.id, 'not-a-uuid', { actor: 'user:a' }), false);

    const g1 = await grants.request(caller, { tool: 'read', agent: 'main', context: {} });
    const g2 = await grants.request(caller, { tool: 'ls', agent: 'main', context: {} });
    assert.ok(g1.outcome === 'granted' && g2.outcome === 'granted');
    if (g1.outcome !== 'granted' || g2.outcome !== 'granted') return;
    assert.ok((await grants.revokeSandbox(acme.id, caller.id, { actor: 'system' })) >= 2);
    await assert.rejects(grants.verifyGrant(g1.token, { tool: 'read' }), /revoked/);
    await assert.rejects(grants.verifyGrant(g2.token, { tool: 'ls' }), /revoked/);
  });

  test('forged tokens are refused: alg none, HS256 with the public key, another Ed25519 key, unknown jti', async () => {
    const r = await grants.request(callers.get('cpb_other') as GrantCaller, { tool: 'read', agent: 'main', context: {} });
    assert.ok(r.outcome === 'granted');
    if (r.outcome !== 'granted') return;
    const header = decodeProtectedHeader(r.token);
    const payload = decodeJwt(r.token);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ ...header, alg: 'none' })}.${b64(payload)}.`;
    await assert.rejects(grants.verifyGrant(none, { tool: 'read' }), GrantInvalidError);

    const spki = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' });
    const hs = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', typ: header.typ as string }).sign(new Uint8Array(spki));
    await assert.rejects(grants.verifyGrant(hs, { tool: 'read' }), GrantInvalidError);

    const otherKey = generateKeyPairSync('ed25519').privateKey;
    const forged = await new SignJWT(payload).setProtectedHeader({ alg: 'EdDSA', typ: header.typ as string, kid: header.kid as string }).sign(otherKey);
    await assert.rejects(grants.verifyGrant(forged, { tool: 'read' }), GrantInvalidError);

    // A real grant from another broker process (another signing key) is not ours either.
    const elsewhere = new GrantService({ db, policy });
    const e = await elsewhere.request(callers.get('cpb_other') as GrantCaller, { tool: 'read', agent: 'main', context: {} });
    assert.ok(e.outcome === 'granted');
    if (e.outcome !== 'granted') return;
    await assert.rejects(grants.verifyGrant(e.token, { tool: 'read' }), GrantInvalidError);
    await assert.rejects(grants.verifyGrant('not.a.jwt', { tool: 'read' }), GrantInvalidError);
  });
});
