/**
 * A real OpenID provider (oidc-provider v9) for the tests that sign in through OIDC (test/oidc.test.ts,
 * test/operator.test.ts), and the browser's part of a sign-in against it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import { ApiClient } from './client.ts';
import type { TestServer } from './server.ts';

/** What the identity provider says about the one test user; tests change it between logins. */
export interface IdpUser {
  sub: string;
  email: string;
  name: string;
  tenants: string[];
  /** The groups claim (`groups`), released with the `clawplane` scope. */
  groups?: string[];
}

export interface Idp {
  issuer: string;
  stop(): Promise<void>;
}

export const CLIENT_ID = 'clawplane';

/**
 * A real OpenID provider (oidc-provider v9) on a free port: one confidential client, PKCE required, the
 * built-in dev login and consent pages, and a `clawplane` scope that releases the tenant claim.
 * The provider keeps its default conformIdTokenClaims: scope-granted claims are served from userinfo,
 * as many real providers do, so Clawplane must not rely on the ID token alone.
 */
export async function startIdp(opts: { redirectUri: string; clientSecret: string; user: () => IdpUser }): Promise<Idp> {
  let handler: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const srv = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: [{ client_id: CLIENT_ID, client_secret: opts.clientSecret, redirect_uris: [opts.redirectUri], token_endpoint_auth_method: 'client_secret_basic' }],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'clawplane', 'offline_access'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], clawplane: ['clawplane_tenants', 'groups'] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    findAccount: (_ctx, sub) => {
      const u = opts.user();
      if (sub !== u.sub) return undefined;
      return {
        accountId: sub,
        claims: () => ({ sub, email: u.email, email_verified: true, name: u.name, clawplane_tenants: u.tenants, ...(u.groups ? { groups: u.groups } : {}) }),
      };
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
export async function toCallback(
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
export async function oidcLogin(
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
