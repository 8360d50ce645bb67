import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient, setupCode } from './helpers/client.ts';
import { CLIENT_ID, oidcLogin, startIdp, toCallback, type IdpUser } from './helpers/oidc-idp.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';

type Me = {
  user: { id: string; email: string; displayName: string; platformAdmin: boolean; breakglass: boolean; memberships: { slug: string; role: string }[] };
};

const roles = (me: Me) => me.user.memberships.map((m) => `${m.slug}:${m.role}`).sort();

describe('OIDC login against a real OpenID provider', async () => {
  const server = await startTestServer();
  const canary = `canary-secret-${randomBytes(16).toString('hex')}`;
  const user: IdpUser = { sub: 'alice-0001', email: 'Alice@Example.test', name: 'Alice Liddell', tenants: ['acme:member', 'beta:tenant_admin'] };
  let idp = await startIdp({ redirectUri: `${server.url}/api/v1/auth/oidc/callback`, clientSecret: canary, user: () => user });
  after(() => idp.stop());
  const admin = new ApiClient(server.url);
  const providerJar = new Map<string, string>();
  const settings = () => ({
    issuer: idp.issuer,
    clientId: CLIENT_ID,
    displayName: 'Local IdP',
    scopes: 'openid email profile clawplane',
    allowInsecureHttp: true,
  });

  test('onboarding configures OIDC against the live provider; the secret is never returned', async () => {
    const r = await admin.json<{ csrfToken: string }>('POST', '/api/v1/onboarding/admin', {
      email: ADMIN_EMAIL,
      password: ADMIN_PASSWORD,
      setupCode: await setupCode(server),
    });
    admin.csrf = r.csrfToken;
    const http = await admin.call('POST', '/api/v1/onboarding/oidc', { ...settings(), clientSecret: canary, allowInsecureHttp: false });
    assert.equal(http.status, 400, 'a plain-http issuer needs allowInsecureHttp');
    assert.match(((await http.json()) as { message: string }).message, /https/);
    await admin.json('POST', '/api/v1/onboarding/oidc', { ...settings(), clientSecret: canary });
    await admin.json('POST', '/api/v1/onboarding/provider', { skip: true });
    await admin.json('POST', '/api/v1/onboarding/defaults', {});

    const res = await admin.call('GET', '/api/v1/platform/oidc');
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.ok(!text.includes(canary), 'the client secret is not in the response');
    const view = JSON.parse(text) as Record<string, unknown>;
    assert.equal(view['clientSecretSet'], true);
    assert.equal(view['issuer'], idp.issuer);
    assert.equal(view['redirectUri'], `${server.url}/api/v1/auth/oidc/callback`);
    assert.ok(!('clientSecret' in view));
    assert.deepEqual(await new ApiClient(server.url).json('GET', '/api/v1/auth/providers'), { local: true, oidc: { enabled: true, displayName: 'Local IdP' } });
    for (const slug of ['acme', 'beta', 'gamma']) await admin.json('POST', '/api/v1/tenants', { slug, name: slug.toUpperCase() }, 201);
  });

  let aliceId = '';

  test('a user signs in through the provider and gets the tenants the claim names', async () => {
    const prompts: string[] = [];
    const { browser, location } = await oidcLogin(server, providerJar, user.sub, '/tenants', prompts);
    assert.deepEqual(prompts, ['login', 'consent'], 'the provider asked the user to sign in and consent');
    assert.equal(location, '/tenants');
    const me = await browser.json<Me>('GET', '/api/v1/auth/me');
    aliceId = me.user.id;
    assert.equal(me.user.email, 'alice@example.test', 'email from the provider (lower-cased)');
    assert.equal(me.user.displayName, 'Alice Liddell');
    assert.equal(me.user.platformAdmin, false);
    assert.equal(me.user.breakglass, false);
    assert.deepEqual(roles(me), ['acme:member', 'beta:tenant_admin']);
    assert.equal((await browser.call('GET', '/api/v1/tenants/beta/members')).status, 200, 'the membership is usable');
    assert.equal((await browser.call('GET', '/api/v1/tenants/gamma/members')).status, 404, 'no tenant the claim does not name');

    const audit = await server.db.query<{ actor: string; target: string; detail: { method: string; tenants: Record<string, string> } }>(
      "SELECT actor, target, detail FROM audit_events WHERE action = 'auth.login' AND decision = 'success' AND detail->>'method' = 'oidc'",
    );
    assert.equal(audit.rows.length, 1);
    assert.equal(audit.rows[0]?.target, `user:${aliceId}`);
    assert.deepEqual(audit.rows[0]?.detail.tenants, { acme: 'member', beta: 'tenant_admin' });
  });

  test('a tampered, unknown or foreign state is refused without a session; the real one works once', async () => {
    const browser = new ApiClient(server.url);
    const cb = await toCallback(server, browser, providerJar, user.sub, '/');
    const state = cb.searchParams.get('state') ?? '';
    const refused = async (c: ApiClient, url: URL, message: RegExp) => {
      const res = await c.call('GET', url.pathname + url.search);
      const body = (await res.json()) as { code: string; message: string };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(body.code, 'oidc_failed');
      assert.match(body.message, message);
      assert.match(body.message, /Start the sign-in again/);
      assert.ok(!c.cookies.has('clawplane_session'), 'no session');
    };
    for (const bad of [`${state}x`, 'unknown-state', '']) {
      const u = new URL(cb);
      u.searchParams.set('state', bad);
      await refused(browser, u, /not started in this browser/);
    }
    // Login CSRF: someone else's genuine callback URL does not sign this browser in.
    await refused(new ApiClient(server.url), cb, /not started in this browser/);
    // A state Clawplane never issued, even with a matching cookie.
    const forged = new ApiClient(server.url);
    forged.cookies.set('clawplane_oidc', 'forged-state');
    const u = new URL(cb);
    u.searchParams.set('state', 'forged-state');
    await refused(forged, u, /unknown or expired/);

    // Extra parameters some providers add (Keycloak's session_state) do not get in the way.
    const ok = await browser.call('GET', `${cb.pathname}${cb.search}&session_state=abc`);
    assert.equal(ok.status, 302, await ok.text());
    assert.ok(browser.cookies.has('clawplane_session'));
    assert.ok(!browser.cookies.has('clawplane_oidc'), 'the state cookie is cleared');
    const replay = new ApiClient(server.url);
    replay.cookies.set('clawplane_oidc', state);
    await refused(replay, cb, /unknown or expired/);
  });

  test('cancelling at the provider ends in a clear 400 and an audited failure', async () => {
    const failures = async () => (await server.db.query("SELECT 1 FROM audit_events WHERE action = 'auth.login' AND decision = 'failure'")).rowCount;
    const before = await failures();
    const browser = new ApiClient(server.url);
    const prompts: string[] = [];
    const cb = await toCallback(server, browser, new Map(), user.sub, '/', { prompts, cancelAt: 'consent' });
    assert.deepEqual(prompts, ['login', 'consent']);
    assert.equal(cb.searchParams.get('error'), 'access_denied');
    const res = await browser.call('GET', cb.pathname + cb.search);
    const body = (await res.json()) as { message: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(body.message, /access_denied.*Start the sign-in again/);
    assert.ok(!browser.cookies.has('clawplane_session'));
    assert.equal(await failures(), (before ?? 0) + 1);
  });

  test('the next login follows the claim; memberships added by hand are kept', async () => {
    const added = await admin.json<{ userId: string }>('POST', '/api/v1/tenants/gamma/members', { email: 'alice@example.test', role: 'viewer' }, 201);
    assert.equal(added.userId, aliceId, 'the same user, not a second account');
    user.tenants = ['acme:viewer', 'platform_admin', 'nosuch:member', 'gamma:tenant_admin', 'acme'];
    const first = await oidcLogin(server, providerJar, user.sub);
    const me = await first.browser.json<Me>('GET', '/api/v1/auth/me');
    assert.equal(me.user.id, aliceId);
    assert.deepEqual(roles(me), ['acme:viewer', 'gamma:viewer'], 'beta dropped with the claim; the hand-added gamma role is not overridden');
    assert.equal(me.user.platformAdmin, true);

    user.tenants = [];
    const second = await oidcLogin(server, providerJar, user.sub);
    const me2 = await second.browser.json<Me>('GET', '/api/v1/auth/me');
    assert.deepEqual(roles(me2), ['gamma:viewer']);
    assert.equal(me2.user.platformAdmin, false, 'platform admin follows the claim too');
  });

  test("members by OIDC group: a tenant's mapped group grants its role at sign-in (the highest role wins); removing the group from the user or from the mapping takes it away; hand-added members stay", async () => {
    const { tenants } = server.services;
    const acme = await tenants.get('acme');
    const beta = await tenants.get('beta');
    // What the operator writes from a Tenant resource's spec.members (test/operator.test.ts covers that part).
    await tenants.setOidcGroups(acme.id, [{ group: 'acme-admins', role: 'tenant_admin' }], { actor: 'operator' });
    await tenants.setOidcGroups(beta.id, [{ group: 'staff', role: 'viewer' }], { actor: 'operator' });
    const view = await admin.json<{ items: { group: string; role: string }[] }>('GET', '/api/v1/tenants/acme/oidc-groups');
    assert.deepEqual(view.items, [{ group: 'acme-admins', role: 'tenant_admin' }], 'the API shows the mapping');
    // The tenant claim says acme:viewer; the group says tenant_admin: the higher one applies.
    user.tenants = ['acme:viewer'];
    user.groups = ['acme-admins', 'staff', 'unmapped'];
    const a = await oidcLogin(server, providerJar, user.sub);
    const me = await a.browser.json<Me>('GET', '/api/v1/auth/me');
    assert.deepEqual(roles(me), ['acme:tenant_admin', 'beta:viewer', 'gamma:viewer']);
    assert.equal((await a.browser.call('GET', '/api/v1/tenants/acme/members')).status, 200, 'the group-granted role is usable');
    // The group removed from the user at the provider: gone at the next sign-in, the claim's role stays.
    user.groups = ['staff'];
    const b = await oidcLogin(server, providerJar, user.sub);
    assert.deepEqual(roles(await b.browser.json<Me>('GET', '/api/v1/auth/me')), ['acme:viewer', 'beta:viewer', 'gamma:viewer']);
    // The group removed from the tenant's mapping: gone at once, for the session already open (no new sign-in).
    const changes = await tenants.setOidcGroups(beta.id, [], { actor: 'operator' });
    assert.deepEqual(
      changes.map((c) => [c.slug, c.role]),
      [['beta', null]],
    );
    assert.deepEqual(roles(await b.browser.json<Me>('GET', '/api/v1/auth/me')), ['acme:viewer', 'gamma:viewer']);
    assert.equal((await b.browser.call('GET', '/api/v1/tenants/beta/members')).status, 404, 'the open session lost beta');
    // Mapped again: users whose last sign-in carried the group are members at once.
    await tenants.setOidcGroups(beta.id, [{ group: 'staff', role: 'member' }], { actor: 'operator' });
    assert.deepEqual(roles(await b.browser.json<Me>('GET', '/api/v1/auth/me')), ['acme:viewer', 'beta:member', 'gamma:viewer']);
    // A group mapping never touches a membership added by hand (gamma's viewer, added through the API).
    const gamma = await tenants.get('gamma');
    await tenants.setOidcGroups(gamma.id, [{ group: 'staff', role: 'tenant_admin' }], { actor: 'operator' });
    assert.deepEqual(roles(await b.browser.json<Me>('GET', '/api/v1/auth/me')), ['acme:viewer', 'beta:member', 'gamma:viewer']);
    await tenants.setOidcGroups(gamma.id, [], { actor: 'operator' });
    const audit = await server.db.query<{ actor: string; detail: { after: unknown[] } }>(
      "SELECT actor, detail FROM audit_events WHERE action = 'tenant.oidc_groups' AND tenant_id = $1 ORDER BY seq",
      [beta.id],
    );
    assert.deepEqual(
      audit.rows.map((r) => [r.actor, r.detail.after.length]),
      [
        ['operator', 1],
        ['operator', 0],
        ['operator', 1],
      ],
    );
    // A provider that sends the groups claim under another name: the setting names it.
    await admin.json('PUT', '/api/v1/platform/oidc', { ...settings(), groupsClaim: 'memberOf' });
    const c = await oidcLogin(server, providerJar, user.sub);
    assert.deepEqual(roles(await c.browser.json<Me>('GET', '/api/v1/auth/me')), ['acme:viewer', 'gamma:viewer'], 'no `memberOf` claim: no group roles');
    await admin.json('PUT', '/api/v1/platform/oidc', settings());
    assert.equal((await admin.json<{ groupsClaim: string }>('GET', '/api/v1/platform/oidc')).groupsClaim, 'groups', 'the default');
    user.tenants = [];
    user.groups = [];
    await oidcLogin(server, providerJar, user.sub);
  });

  test('returnTo never redirects off-site', async () => {
    for (const returnTo of ['//evil.example', '/\\evil.example', 'https://evil.example/', '/%0d%0aSet-Cookie:x=y', 'javascript:alert(1)']) {
      const { location } = await oidcLogin(server, providerJar, user.sub, returnTo);
      assert.equal(location, returnTo.startsWith('/%') ? returnTo : '/', returnTo);
    }
  });

  test('PUT /platform/oidc: an unreachable issuer is refused and the working settings stay', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadIssuer = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const res = await admin.call('PUT', '/api/v1/platform/oidc', { ...settings(), issuer: deadIssuer });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { message: string }).message, /Could not load the OpenID configuration/);
    const view = await admin.json<{ issuer: string; clientSecretSet: boolean }>('GET', '/api/v1/platform/oidc');
    assert.equal(view.issuer, idp.issuer);

    // Saving without clientSecret keeps the stored one.
    const saved = await admin.json<{ displayName: string; clientSecretSet: boolean }>('PUT', '/api/v1/platform/oidc', {
      ...settings(),
      displayName: 'Company SSO',
    });
    assert.deepEqual([saved.displayName, saved.clientSecretSet], ['Company SSO', true]);
    await oidcLogin(server, providerJar, user.sub);
  });

  test('a wrong client secret fails the callback with a clear 400 and an audited failure', async () => {
    const wrong = `wrong-${canary}`;
    await admin.json('PUT', '/api/v1/platform/oidc', { ...settings(), clientSecret: wrong });
    const browser = new ApiClient(server.url);
    const cb = await toCallback(server, browser, providerJar, user.sub, '/');
    const res = await browser.call('GET', cb.pathname + cb.search);
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { message: string }).message, /not accepted.*Start the sign-in again/);
    assert.ok(!browser.cookies.has('clawplane_session'));
    const fail = await server.db.query(
      "SELECT detail FROM audit_events WHERE action = 'auth.login' AND decision = 'failure' AND detail->>'reason' LIKE '%invalid_client%'",
    );
    assert.equal(fail.rowCount, 1);
    await admin.json('PUT', '/api/v1/platform/oidc', { ...settings(), clientSecret: canary });
    await oidcLogin(server, providerJar, user.sub);
  });

  test('the client secret appears in no audit row, settings row or log line', async () => {
    const rows = await server.db.query('SELECT * FROM audit_events');
    assert.ok(rows.rows.length > 5);
    assert.ok(!JSON.stringify(rows.rows).includes(canary.slice('canary-secret-'.length)), 'not in audit_events');
    const settingsRows = await server.db.query('SELECT * FROM platform_settings');
    assert.ok(!JSON.stringify(settingsRows.rows).includes(canary.slice('canary-secret-'.length)), 'not in platform_settings');
    const logs = capturedLogs.join('');
    assert.ok(logs.length > 0, 'logs were captured');
    assert.ok(!logs.includes(canary.slice('canary-secret-'.length)), 'not in the logs');
  });

  test('the breakglass admin still signs in while the provider is down', async () => {
    await idp.stop();
    const c = new ApiClient(server.url);
    const r = await c.json<Me>('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    assert.equal(r.user.breakglass, true);
    assert.equal((await c.call('GET', '/api/v1/auth/me')).status, 200);
    // SSO fails with a message, not a hang or a 500, once the cached discovery is dropped by a save.
    const save = await admin.call('PUT', '/api/v1/platform/oidc', settings());
    assert.equal(save.status, 400);
    const start = await c.call('GET', '/api/v1/auth/oidc/start');
    assert.notEqual(start.status, 500);
    idp = { issuer: idp.issuer, stop: async () => undefined };
  });
});
