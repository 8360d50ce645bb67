import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import Provider from 'oidc-provider';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient, setupCode } from './helpers/client.ts';
import { capturedLogs, startTestServer, type TestServer } from './helpers/server.ts';

/** What the identity provider says about the one test user; tests change it between logins. */
interface IdpUser {
  sub: string;
  email: string;
  name: string;
  tenants: string[];
}

interface Idp {
  issuer: string;
  stop(): Promise<void>;
}

const CLIENT_ID = 'clawplane';

/**
 * A real OpenID provider (oidc-provider v9) on a free port: one confidential client, PKCE required, the
 * built-in dev login and consent pages, and a `clawplane` scope that releases the tenant claim.
 * The provider keeps its default conformIdTokenClaims: scope-granted claims are served from userinfo,
 * as many real providers do, so Clawplane must not rely on the ID token alone.
 */
async function startIdp(opts: { redirectUri: string; clientSecret: string; user: () => IdpUser }): Promise<Idp> {
  let handler: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const srv = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: [{ client_id: CLIENT_ID, client_secret: opts.clientSecret, redirect_uris: [opts.redirectUri], token_endpoint_auth_method: 'client_secret_basic' }],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'clawplane', 'offline_access'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], clawplane: ['clawplane_tenants'] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    findAccount: (_ctx, sub) => {
      const u = opts.user();
      if (sub !== u.sub) return undefined;
      return { accountId: sub, claims: () => ({ sub, email: u.email, email_verified: true, name: u.name, clawplane_tenants: u.tenants }) };
    },
  });
  handler = provider.callback();
  return {
    issuer,
    stop: () =>
      new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      }),
  };
}

/** A cookie jar for the provider's origin, as a browser would keep one. */
function storeCookies(jar: Map<string, string>, res: Response): void {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const [k, ...v] = (pair ?? '').split('=');
    if (!k) continue;
    if (/max-age=0|expires=thu, 01 jan 1970/i.test(c) || v.join('=') === '') jar.delete(k.trim());
    else jar.set(k.trim(), v.join('='));
  }
}

/**
 * Plays the browser: from Clawplane's start URL through the provider's login and consent forms until the
 * provider redirects back to Clawplane. Returns the callback URL without calling it.
 */
async function toCallback(
  server: TestServer,
  browser: ApiClient,
  providerJar: Map<string, string>,
  login: string,
  returnTo: string,
  opts: { prompts?: string[]; cancelAt?: string } = {},
): Promise<URL> {
  const start = await browser.call('GET', `/api/v1/auth/oidc/start?returnTo=${encodeURIComponent(returnTo)}`);
  assert.equal(start.status, 302, await start.text());
  let url = new URL(start.headers.get('location') ?? '');
  const origin = new URL(server.url).origin;
  for (let hop = 0; hop < 20; hop++) {
    if (url.origin === origin) return url;
    let res = await fetch(url, { redirect: 'manual', headers: { cookie: [...providerJar].map(([k, v]) => `${k}=${v}`).join('; ') } });
    storeCookies(providerJar, res);
    if (res.status === 200) {
      // A dev interaction page: submit its form as the user would (fields from oidc-provider lib/views).
      const html = await res.text();
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
      const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
      assert.ok(action && prompt, `unexpected provider page: ${html.slice(0, 500)}`);
      opts.prompts?.push(prompt);
      if (prompt === opts.cancelAt) {
        const abort = /<a href="([^"]+)">\[ Cancel \]/.exec(html)?.[1] ?? '';
        res = await fetch(new URL(abort, url), { redirect: 'manual', headers: { cookie: [...providerJar].map(([k, v]) => `${k}=${v}`).join('; ') } });
        storeCookies(providerJar, res);
        url = new URL(res.headers.get('location') ?? '', url);
        continue;
      }
      const form = new URLSearchParams(prompt === 'login' ? { prompt, login, password: 'any' } : { prompt });
      res = await fetch(new URL(action.replaceAll('&amp;', '&'), url), {
        method: 'POST',
        redirect: 'manual',
        body: form,
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: [...providerJar].map(([k, v]) => `${k}=${v}`).join('; ') },
      });
      storeCookies(providerJar, res);
    }
    const next = res.headers.get('location');
    assert.ok(res.status >= 300 && res.status < 400 && next, `provider answered ${res.status}: ${(await res.text()).slice(0, 500)}`);
    url = new URL(next, url);
  }
  throw new Error('too many redirects');
}

/** A full sign-in: returns the signed-in browser and where Clawplane sent it. */
async function oidcLogin(
  server: TestServer,
  providerJar: Map<string, string>,
  login: string,
  returnTo = '/',
  prompts?: string[],
): Promise<{ browser: ApiClient; location: string }> {
  const browser = new ApiClient(server.url);
  const cb = await toCallback(server, browser, providerJar, login, returnTo, { ...(prompts ? { prompts } : {}) });
  const res = await browser.call('GET', cb.pathname + cb.search);
  assert.equal(res.status, 302, await res.text());
  assert.ok(browser.cookies.has('clawplane_session'), 'a session cookie is set');
  assert.match(res.headers.getSetCookie().join('\n'), /HttpOnly/);
  return { browser, location: res.headers.get('location') ?? '' };
}

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
