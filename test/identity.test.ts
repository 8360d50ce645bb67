import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { verifyAuditChain } from '../src/audit/verify.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient, setupCode } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

describe('identity, onboarding and tenancy', async () => {
  const server = await startTestServer();
  const anon = new ApiClient(server.url);
  const admin = new ApiClient(server.url);
  const cliEnv = {
    ...process.env,
    DATABASE_URL: server.database.url,
    CLAWPLANE_SECRET_KEY: server.config.secretKey?.toString('base64') ?? '',
    CLAWPLANE_DATA_DIR: server.config.dataDir,
  };
  /**
   * The CLI as a child process, awaited: the server runs in this test process, so a synchronous spawn
   * would stop it from answering (and from closing idle keep-alive sockets on time, which the next request
   * then met as ECONNRESET under load).
   */
  const runCli = (args: string[], input?: string) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [cli, ...args], { env: cliEnv, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (status) => resolve({ status, stdout, stderr }));
      child.stdin.end(input ?? '');
    });

  test('before onboarding, other routes answer 409 with what to do next', async () => {
    const r = await anon.call('GET', '/api/v1/tenants');
    assert.equal(r.status, 409);
    const body = (await r.json()) as { code: string; message: string };
    assert.equal(body.code, 'onboarding_incomplete');
    assert.match(body.message, /POST \/api\/v1\/onboarding\/admin/);
    const st = await anon.json<{ complete: boolean; next: string }>('GET', '/api/v1/onboarding');
    assert.deepEqual([st.complete, st.next], [false, 'admin']);
    assert.equal((await anon.call('GET', '/readyz')).status, 200, 'health is not gated');
  });

  test('the admin step needs the setup code and a long password; later steps wait their turn', async () => {
    const wrong = await anon.call('POST', '/api/v1/onboarding/admin', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD, setupCode: 'nope' });
    assert.equal(wrong.status, 403);
    assert.match(((await wrong.json()) as { message: string }).message, /setup code is wrong/);
    const weak = await anon.call('POST', '/api/v1/onboarding/admin', { email: ADMIN_EMAIL, password: 'short', setupCode: await setupCode(server) });
    assert.equal(weak.status, 400);
    const early = await anon.call('POST', '/api/v1/onboarding/defaults', {});
    assert.equal(early.status, 401, 'later steps need the admin');
    const ok = await admin.json<{ csrfToken: string; state: { next: string } }>('POST', '/api/v1/onboarding/admin', {
      email: ADMIN_EMAIL,
      password: ADMIN_PASSWORD,
      setupCode: await setupCode(server),
    });
    assert.equal(ok.state.next, 'oidc');
    admin.csrf = ok.csrfToken;
    const again = await anon.call('POST', '/api/v1/onboarding/admin', { email: 'x@y.test', password: ADMIN_PASSWORD, setupCode: 'anything' });
    assert.equal(again.status, 409, 'only one breakglass admin');
    assert.equal((await admin.call('POST', '/api/v1/onboarding/defaults', {})).status, 409, 'out of order');
    await admin.json('POST', '/api/v1/onboarding/oidc', { skip: true });
    await admin.json('POST', '/api/v1/onboarding/provider', { skip: true });
    const done = await admin.json<{ complete: boolean }>('POST', '/api/v1/onboarding/defaults', { agentName: 'helper', execPolicy: 'ask' });
    assert.equal(done.complete, true);
    assert.equal((await admin.call('GET', '/api/v1/tenants')).status, 200);
  });

  test('session cookie is HttpOnly and SameSite=Lax; writes need the CSRF token; logout ends the session', async () => {
    const c = new ApiClient(server.url);
    const res = await c.call('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    assert.equal(res.status, 200);
    const cookie = res.headers.getSetCookie()[0] ?? '';
    assert.match(cookie, /^clawplane_session=/);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Lax/);
    const first = c.cookies.get('clawplane_session');
    const { csrfToken } = (await res.json()) as { csrfToken: string };
    const noCsrf = await c.call('POST', '/api/v1/tenants', { slug: 'csrf-test', name: 'x' });
    assert.equal(noCsrf.status, 403);
    c.csrf = csrfToken;
    assert.equal((await c.call('POST', '/api/v1/tenants', { slug: 'csrf-test', name: 'x' })).status, 201);
    // A fresh login gets a fresh session id, and the session the browser had before ends.
    await c.call('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    assert.notEqual(c.cookies.get('clawplane_session'), first);
    const stale = new ApiClient(server.url);
    stale.cookies.set('clawplane_session', first ?? '');
    assert.equal((await stale.call('GET', '/api/v1/auth/me')).status, 401, 'the old session ended at re-login');
    const current = new ApiClient(server.url);
    current.cookies.set('clawplane_session', c.cookies.get('clawplane_session') ?? '');
    const me = await current.json<{ csrfToken: string }>('GET', '/api/v1/auth/me');
    current.csrf = me.csrfToken;
    assert.equal((await current.call('POST', '/api/v1/auth/logout')).status, 200);
    assert.equal((await current.call('GET', '/api/v1/auth/me')).status, 401, 'logout ends the session');
  });

  test('tenants, members and a tenant token a newcomer can use', async () => {
    const t = await admin.json<{ id: string; slug: string; quotas: { maxInstances: number } }>(
      'POST',
      '/api/v1/tenants',
      { slug: 'acme', name: 'Acme', quotas: { maxInstances: 3 } },
      201,
    );
    assert.equal(t.quotas.maxInstances, 3);
    const dup = await admin.call('POST', '/api/v1/tenants', { slug: 'acme', name: 'Again' });
    assert.equal(dup.status, 409);
    const owner = await admin.json<{ userId: string }>('POST', '/api/v1/tenants/acme/members', { email: 'Owner@Acme.test', role: 'tenant_admin' }, 201);
    const member = await admin.json<{ userId: string; email: string }>('POST', '/api/v1/tenants/acme/members', { email: 'dev@acme.test', role: 'member' }, 201);
    assert.equal(member.email, 'dev@acme.test');
    // Platform admins manage tenants but cannot mint tokens into them (that would be a way into the tenant's data).
    assert.equal((await admin.call('POST', '/api/v1/tenants/acme/tokens', { name: 'x', role: 'member' })).status, 403);

    const { token: ownerToken } = await server.services.tokens.create(
      t.id,
      { name: 'owner', role: 'tenant_admin', createdBy: owner.userId },
      { actor: 'test' },
    );
    const ownerApi = new ApiClient(server.url, { bearer: ownerToken });
    const me = await ownerApi.json<{ slug: string }>('GET', '/api/v1/tenants/acme');
    assert.equal(me.slug, 'acme');
    const members = await ownerApi.json<{ items: { email: string; role: string }[] }>('GET', `/api/v1/tenants/${t.id}/members`);
    assert.deepEqual(members.items.map((m) => m.email).sort(), ['dev@acme.test', 'owner@acme.test']);
    // A token cannot be used to mint tokens (only signed-in users can), nor list across tenants.
    assert.equal((await ownerApi.call('POST', '/api/v1/tenants/acme/tokens', { name: 'x', role: 'member' })).status, 403);
    const list = await ownerApi.json<{ items: { slug: string }[] }>('GET', '/api/v1/tenants');
    assert.deepEqual(
      list.items.map((x) => x.slug),
      ['acme'],
    );

    const { token: viewerToken, info } = await server.services.tokens.create(
      t.id,
      { name: 'viewer', role: 'viewer', createdBy: owner.userId },
      { actor: 'test' },
    );
    const viewer = new ApiClient(server.url, { bearer: viewerToken });
    assert.equal((await viewer.call('GET', '/api/v1/tenants/acme/members')).status, 200);
    assert.equal((await viewer.call('POST', '/api/v1/tenants/acme/members', { email: 'z@acme.test', role: 'viewer' })).status, 403);
    assert.equal((await viewer.call('GET', '/api/v1/tenants/acme/tokens')).status, 403);
    const tokens = await ownerApi.json<{ items: { id: string; display: string; lastUsedAt: string | null }[] }>('GET', '/api/v1/tenants/acme/tokens');
    const row = tokens.items.find((x) => x.id === info.id);
    assert.ok(row);
    assert.ok(row.lastUsedAt, 'last use is recorded');
    assert.ok(!JSON.stringify(tokens).includes(viewerToken), 'the token itself is never listed');
    await ownerApi.json('DELETE', `/api/v1/tenants/acme/tokens/${info.id}`);
    const revoked = await viewer.call('GET', '/api/v1/tenants/acme');
    assert.equal(revoked.status, 401);
    assert.match(((await revoked.json()) as { message: string }).message, /revoked/);

    // Role changes and the last-admin guard.
    assert.equal((await ownerApi.call('PATCH', `/api/v1/tenants/acme/members/${owner.userId}`, { role: 'member' })).status, 409);
    await ownerApi.json('PATCH', `/api/v1/tenants/acme/members/${member.userId}`, { role: 'viewer' });
    await ownerApi.json('DELETE', `/api/v1/tenants/acme/members/${member.userId}`);
    // Tenant admins cannot change quotas: that is the platform's call.
    assert.equal((await ownerApi.call('PATCH', '/api/v1/tenants/acme', { quotas: { maxInstances: 99 } })).status, 403);
    const patched = await admin.json<{ quotas: { maxInstances: number; dailyCostBudgetUsd: number; idleTimeoutMinutes: number | null } }>(
      'PATCH',
      '/api/v1/tenants/acme',
      { quotas: { maxInstances: 5, dailyCostBudgetUsd: 12.5, idleTimeoutMinutes: 90 } },
    );
    assert.deepEqual([patched.quotas.maxInstances, patched.quotas.dailyCostBudgetUsd, patched.quotas.idleTimeoutMinutes], [5, 12.5, 90]);
  });

  test('suspend and resume; delete needs the slug typed again', async () => {
    const s = await admin.json<{ status: string }>('POST', '/api/v1/tenants/acme/suspend', { reason: 'unpaid' });
    assert.equal(s.status, 'suspended');
    assert.equal((await admin.json<{ status: string }>('POST', '/api/v1/tenants/acme/resume')).status, 'active');
    await admin.json('POST', '/api/v1/tenants', { slug: 'doomed', name: 'Doomed' }, 201);
    assert.equal((await admin.call('DELETE', '/api/v1/tenants/doomed?confirm=wrong')).status, 400);
    await admin.json('DELETE', '/api/v1/tenants/doomed?confirm=doomed');
    assert.equal((await admin.call('GET', '/api/v1/tenants/doomed')).status, 404);
  });

  test('CLI: tenant create/list/suspend and token create/revoke', async () => {
    const run = (args: string[], input?: string) => runCli(args, input);
    const created = await run(['tenant', 'create', '--slug', 'from-cli', '--name', 'From CLI']);
    assert.equal(created.status, 0, created.stderr);
    assert.match((await run(['tenant', 'list'])).stdout, /from-cli\tactive/);
    assert.equal((await run(['tenant', 'suspend', 'from-cli'])).status, 0);
    assert.match((await run(['tenant', 'list'])).stdout, /from-cli\tsuspended/);
    assert.equal((await run(['tenant', 'suspend', 'no-such'])).status, 1);
    const tok = await run(['token', 'create', '--tenant', 'from-cli', '--name', 'ci', '--role', 'viewer']);
    assert.equal(tok.status, 0, tok.stderr);
    const token = tok.stdout.trim();
    assert.match(token, /^cpt_[A-Za-z0-9_-]{43}$/);
    assert.equal((await run(['token', 'create', '--tenant', 'from-cli', '--name', 'ci', '--role', 'god'])).status, 2);
    const id = /created token ([0-9a-f-]{36})/.exec(tok.stderr)?.[1] ?? '';
    assert.equal((await run(['token', 'revoke', '--tenant', 'from-cli', id])).status, 0);
  });

  test('audit records logins, token and membership changes, and the chain verifies', async () => {
    const rows = await server.db.query<{ action: string; decision: string; detail: Record<string, unknown> }>(
      'SELECT action, decision, detail FROM audit_events ORDER BY seq',
    );
    const actions = new Set(rows.rows.map((r) => `${r.action}:${r.decision}`));
    for (const a of [
      'auth.login:success',
      'token.create:success',
      'token.revoke:success',
      'member.add:success',
      'member.role:success',
      'member.remove:success',
      'tenant.create:success',
      'tenant.suspend:success',
      'tenant.delete:success',
      'onboarding.complete:success',
    ]) {
      assert.ok(actions.has(a), `audit has ${a}`);
    }
    assert.ok(!JSON.stringify(rows.rows).includes(ADMIN_PASSWORD), 'no password in the audit log');
    assert.equal((await verifyAuditChain(server.db)).ok, true);
  });

  test('failed logins lock the account; the CLI reset unlocks it; a flood from one address is throttled', async () => {
    const c = new ApiClient(server.url);
    for (let i = 0; i < 5; i++) assert.equal((await c.call('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: `wrong-${i}` })).status, 401);
    const locked = await c.call('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    assert.equal(locked.status, 429, 'even the right password is refused while locked');
    const body = (await locked.json()) as { code: string; message: string };
    assert.equal(body.code, 'account_locked');
    assert.match(body.message, /reset-password/);
    assert.ok(Number(locked.headers.get('retry-after')) > 0);
    const failures = await server.db.query(`SELECT 1 FROM audit_events WHERE action = 'auth.login' AND decision = 'failure'`);
    assert.ok((failures.rowCount ?? 0) >= 6);

    const newPassword = 'a brand new breakglass passphrase';
    const reset = await runCli(['admin', 'reset-password'], newPassword + '\n');
    assert.equal(reset.status, 0, reset.stderr);
    assert.equal((await c.call('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: newPassword })).status, 200);
    assert.equal((await admin.call('GET', '/api/v1/auth/me')).status, 401, 'reset ended the old sessions');

    // Unknown emails from one address: throttled after 20 failures in the window.
    let last = 0;
    for (let i = 0; i < 21; i++) last = (await c.call('POST', '/api/v1/auth/login', { email: `nobody${i}@example.test`, password: 'x' })).status;
    assert.equal(last, 429);
  });
});
