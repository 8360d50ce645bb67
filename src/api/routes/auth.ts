import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { getConnInfo } from '@hono/node-server/conninfo';
import { SESSION_TTL_MS } from '../../identity/sessions.ts';
import type { App, RouteDeps } from '../app.ts';
import { requireUser, sessionCookieName } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { Email, errorResponses, json, jsonBody, UserSchema } from '../schemas.ts';

const Me = z.object({ user: UserSchema, csrfToken: z.string() }).openapi('Me');

/** The client address for throttling: the socket peer (a proxy in front must be trusted explicitly; not yet). */
export function clientAddress(c: Context<AppEnv>): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Signs the user in: a new session id (no fixation) in an HttpOnly, SameSite=Lax cookie. */
export async function startSession(c: Context<AppEnv>, deps: RouteDeps<'sessions', 'secureCookies'>, userId: string): Promise<{ csrfToken: string }> {
  // The session this browser had before signing in again ends: one browser, one live session.
  const previous = getCookie(c, sessionCookieName(deps.secureCookies));
  if (previous) await deps.sessions.destroyById(previous);
  const s = await deps.sessions.create(userId, { ip: clientAddress(c), userAgent: c.req.header('user-agent') });
  setCookie(c, sessionCookieName(deps.secureCookies), s.id, {
    httpOnly: true,
    sameSite: 'Lax',
    secure: deps.secureCookies,
    path: '/',
    maxAge: Math.floor(SESSION_TTL_MS / 1000),
  });
  return { csrfToken: s.csrfToken };
}

/** Holds the OIDC state between start and callback, binding the callback to the browser that started it. */
function oidcStateCookieName(secure: boolean): string {
  return secure ? '__Host-clawplane_oidc' : 'clawplane_oidc';
}

export function registerAuth(app: App, deps: RouteDeps<'oidc' | 'sessions' | 'users', 'publicOrigin' | 'secureCookies'>): void {
  const { users, sessions, oidc } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/auth/providers',
      tags: ['auth'],
      summary: 'How one can sign in (for the login page)',
      responses: { 200: json(z.object({ local: z.boolean(), oidc: z.object({ enabled: z.boolean(), displayName: z.string() }) })) },
    }),
    async (c) => c.json({ local: true, oidc: await oidc.enabled() }, 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/auth/login',
      tags: ['auth'],
      summary: 'Sign in with the breakglass admin password',
      request: { body: jsonBody(z.strictObject({ email: Email, password: z.string().min(1).max(256) })) },
      responses: { 200: json(Me), ...errorResponses, 429: json(z.object({ code: z.string(), message: z.string() }), 'Throttled or locked') },
    }),
    async (c) => {
      const { email, password } = c.req.valid('json');
      const userId = await users.login(email, password, { client: clientAddress(c), requestId: c.get('requestId') });
      const { csrfToken } = await startSession(c, deps, userId);
      return c.json({ user: await users.get(userId), csrfToken }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/auth/logout',
      tags: ['auth'],
      summary: 'End this session',
      responses: { 200: json(z.object({ ok: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const p = requireUser(c);
      await sessions.destroy(p.sessionHash);
      deleteCookie(c, sessionCookieName(deps.secureCookies), { path: '/', secure: deps.secureCookies });
      return c.json({ ok: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/auth/me',
      tags: ['auth'],
      summary: 'The signed-in user, their tenants and the CSRF token to send with changes',
      responses: { 200: json(Me), ...errorResponses },
    }),
    async (c) => {
      const p = requireUser(c);
      return c.json({ user: await users.get(p.userId), csrfToken: p.csrfToken }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/auth/oidc/start',
      tags: ['auth'],
      summary: 'Start single sign-on: redirects to the identity provider',
      request: { query: z.object({ returnTo: z.string().max(2000).optional() }) },
      responses: { 302: { description: 'Redirect to the identity provider' }, ...errorResponses },
    }),
    async (c) => {
      const url = await oidc.begin(c.req.valid('query').returnTo ?? '/');
      // Lax: the provider's redirect back is a top-level GET, so the cookie comes along.
      setCookie(c, oidcStateCookieName(deps.secureCookies), url.searchParams.get('state') ?? '', {
        httpOnly: true,
        sameSite: 'Lax',
        secure: deps.secureCookies,
        path: '/',
        maxAge: 10 * 60,
      });
      return c.redirect(url.toString(), 302);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/auth/oidc/callback',
      tags: ['auth'],
      summary: 'Where the identity provider sends the user back',
      request: {
        query: z.object({
          state: z.string().max(500).optional(),
          code: z.string().max(4000).optional(),
          error: z.string().max(500).optional(),
          iss: z.string().max(2000).optional(),
          error_description: z.string().max(2000).optional(),
        }),
      },
      responses: { 302: { description: 'Signed in; redirect to the app' }, ...errorResponses },
    }),
    async (c) => {
      const cookieName = oidcStateCookieName(deps.secureCookies);
      const browserState = getCookie(c, cookieName);
      const { userId, returnTo } = await oidc.complete(new URL(c.req.url.replace(/^https?:\/\/[^/]+/, deps.publicOrigin)), {
        requestId: c.get('requestId'),
        browserState,
      });
      deleteCookie(c, cookieName, { path: '/', secure: deps.secureCookies });
      await startSession(c, deps, userId);
      return c.redirect(returnTo, 302);
    },
  );
}
