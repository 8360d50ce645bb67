import type { Context, MiddlewareHandler } from 'hono';
import { getCookie } from 'hono/cookie';
import { ClawplaneError, ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import { authorize, type Action, type TenantRef } from '../identity/authz.ts';
import type { ApiTokenService } from '../identity/api-tokens.ts';
import type { OnboardingService } from '../identity/onboarding.ts';
import { actorOf, type Principal, type TenantRole } from '../identity/principal.ts';
import type { SessionService } from '../identity/sessions.ts';
import type { Tenant, TenantService } from '../tenancy/tenants.ts';
import type { AppEnv } from './env.ts';

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const CREDENTIAL_ROUTES = new Set(['/api/v1/auth/login', '/api/v1/onboarding/admin']);

/** Cookie name: `__Host-` requires Secure, which browsers only keep over TLS (issue 3). */
export function sessionCookieName(secure: boolean): string {
  return secure ? '__Host-clawplane_session' : 'clawplane_session';
}

export class OnboardingIncompleteError extends ClawplaneError {
  constructor(hint: string) {
    super('onboarding_incomplete', 409, `Finish first-boot onboarding first. ${hint}`);
  }
}

/** Paths that work before onboarding is complete. */
const OPEN_BEFORE_ONBOARDING = [/^\/api\/v1\/onboarding(\/|$)/, /^\/api\/v1\/auth\//, /^\/api\/v1\/(openapi\.json|docs)/, /^\/api\/v1\/platform\/oidc$/];

const TENANT_PATH = /^\/api\/v1\/tenants\/([^/]+)/;

/**
 * The tenant named in a request's path, looked up while the caller is authenticated rather than after
 * (issue 7: each database round trip in a row added to every chat turn). tenantScope still decides.
 */
const tenantLookups = new WeakMap<Request, { ref: string; tenant: Promise<Tenant | undefined> }>();

function prefetchTenant(c: Context<AppEnv>, tenants: TenantService): void {
  const m = TENANT_PATH.exec(c.req.path);
  if (!m?.[1]) return;
  let ref: string;
  try {
    ref = decodeURIComponent(m[1]);
  } catch {
    return; // malformed: tenantScope looks it up (and refuses it) as before
  }
  const tenant = tenants.find(ref);
  // Awaited by tenantScope; a request refused before it gets there must not leave an unhandled rejection.
  tenant.catch(() => undefined);
  tenantLookups.set(c.req.raw, { ref, tenant });
}

export function authentication(deps: {
  sessions: SessionService;
  tokens: ApiTokenService;
  onboarding: OnboardingService;
  tenants?: TenantService;
  secureCookies: boolean;
}): MiddlewareHandler<AppEnv> {
  const cookieName = sessionCookieName(deps.secureCookies);
  return async (c, next) => {
    c.set('principal', undefined);
    if (!c.req.path.startsWith('/api/')) return next();
    const auth = c.req.header('authorization');
    // Only for callers presenting credentials: anonymous requests cost no tenant lookup.
    if (deps.tenants && (auth !== undefined || c.req.header('cookie') !== undefined)) prefetchTenant(c, deps.tenants);
    let principal: Principal | undefined;
    if (auth !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(auth);
      if (!m?.[1]) throw new UnauthenticatedError('Malformed Authorization header: use "Authorization: Bearer <token>".');
      principal = await deps.tokens.resolve(m[1]);
      if (!principal) throw new UnauthenticatedError('The API token is unknown, expired or revoked. Create a new one.');
    } else {
      const sid = getCookie(c, cookieName);
      if (sid) principal = await deps.sessions.resolve(sid);
      // Cookie-authenticated writes need the session's CSRF token (a header a cross-site form cannot
      // set). Sign-in routes authenticate by credentials, not by the cookie, so they are exempt.
      if (
        principal?.kind === 'user' &&
        UNSAFE.has(c.req.method) &&
        !CREDENTIAL_ROUTES.has(c.req.path) &&
        c.req.header('x-csrf-token') !== principal.csrfToken
      ) {
        throw new ForbiddenError('Missing or wrong X-CSRF-Token header: send the csrfToken from /api/v1/auth/me with every change.');
      }
    }
    c.set('principal', principal);
    if (principal) c.set('log', c.get('log').child({ actor: actorOf(principal) }));
    if (!OPEN_BEFORE_ONBOARDING.some((r) => r.test(c.req.path)) && !(await deps.onboarding.isComplete())) {
      throw new OnboardingIncompleteError((await deps.onboarding.state()).hint);
    }
    return next();
  };
}

/**
 * For every path under /api/v1/tenants/{tenant}: resolves the tenant by id or slug before any body is
 * validated, and answers 404 to a caller with no relation to it, so another tenant's ids reveal nothing.
 */
export function tenantScope(tenants: TenantService): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const ref = c.req.param('tenant') ?? '';
    const principal = c.get('principal');
    if (!principal) throw new UnauthenticatedError();
    const pre = tenantLookups.get(c.req.raw);
    const t = await (pre?.ref === ref ? pre.tenant : tenants.find(ref));
    if (!t) throw new NotFoundError('Tenant');
    let role: TenantRole | undefined;
    if (principal.kind === 'token') role = principal.tenantId === t.id ? principal.role : undefined;
    else role = await tenants.roleOf(t.id, principal.userId);
    const platformAdmin = principal.kind === 'user' && principal.platformAdmin;
    if (role === undefined && !platformAdmin) throw new NotFoundError('Tenant');
    c.set('tenant', { id: t.id, slug: t.slug, status: t.status });
    c.set('role', role);
    c.set('log', c.get('log').child({ tenant_id: t.id }));
    return next();
  };
}

/** The caller, the tenant and an audit stamp, after checking `action` is allowed. */
export function allow(c: Context<AppEnv>, action: Action): { principal: Principal; tenant: TenantRef; by: { actor: string; requestId: string } } {
  const principal = c.get('principal');
  const tenant = c.get('tenant');
  authorize(principal, action, tenant, c.get('role'));
  if (!principal || !tenant) throw new NotFoundError('Tenant');
  return { principal, tenant, by: { actor: actorOf(principal), requestId: c.get('requestId') } };
}

/** For routes outside a tenant: the caller and an audit stamp after checking `action`. */
export function allowPlatform(c: Context<AppEnv>, action: 'platform.manage'): { principal: Principal; by: { actor: string; requestId: string } } {
  const principal = c.get('principal');
  authorize(principal, action);
  if (!principal) throw new UnauthenticatedError();
  return { principal, by: { actor: actorOf(principal), requestId: c.get('requestId') } };
}

export function requireUser(c: Context<AppEnv>): Extract<Principal, { kind: 'user' }> {
  const p = c.get('principal');
  if (!p) throw new UnauthenticatedError();
  if (p.kind !== 'user') throw new ForbiddenError('This needs a signed-in user, not an API token.');
  return p;
}

/**
 * For a connection that outlives its request (the gateway WebSocket): checks again, as this request was
 * checked, that the same credential still resolves, the caller still has the same role in the tenant, and
 * the tenant is still active. Resolves with why not (to close the connection with), else undefined.
 * Reads what every replica shares (sessions, tokens, memberships, the tenant row), so a suspension,
 * removal or revocation made through any replica is seen.
 */
export function connectionRecheck(
  c: Context<AppEnv>,
  deps: { sessions: SessionService; tokens: ApiTokenService; tenants: TenantService; secureCookies: boolean },
): () => Promise<string | undefined> {
  const tenant = c.get('tenant');
  const role = c.get('role');
  const auth = c.req.header('authorization');
  const bearer = auth ? /^Bearer\s+(\S+)$/i.exec(auth)?.[1] : undefined;
  const sid = bearer ? undefined : getCookie(c, sessionCookieName(deps.secureCookies));
  return async () => {
    if (!tenant) return 'the tenant is gone';
    const principal = bearer ? await deps.tokens.resolve(bearer) : sid ? await deps.sessions.resolve(sid) : undefined;
    if (!principal) return bearer ? 'the API token was revoked or expired' : 'the session ended (signed out or expired)';
    const t = await deps.tenants.find(tenant.id);
    if (!t) return 'the tenant was deleted';
    if (t.status !== 'active') return `tenant "${t.slug}" was suspended`;
    const now = principal.kind === 'token' ? (principal.tenantId === t.id ? principal.role : undefined) : await deps.tenants.roleOf(t.id, principal.userId);
    if (now !== role) return now ? `your role in the tenant changed to ${now}: reconnect` : 'you are no longer a member of the tenant';
    return undefined;
  };
}
