import { timingSafeEqual } from 'node:crypto';
import * as client from 'openid-client';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ClawplaneError, ConflictError, RateLimitedError, ValidationError } from '../errors.ts';
import { parseGroupsClaim, syncOidcMemberships } from './oidc-groups.ts';
import { TENANT_ROLES, type TenantRole } from './principal.ts';
import { getSetting, putSetting } from './settings.ts';

/** Where the OIDC client secret is kept: sealed by the vault, never in settings rows or logs. */
export interface PlatformSecrets {
  seal(name: string, plaintext: string): Promise<void>;
  open(name: string): Promise<string | undefined>;
}

/** OIDC provider settings, edited by a platform admin through the API (issue 3). */
export interface OidcSettings {
  enabled: boolean;
  issuer: string;
  clientId: string;
  displayName: string;
  scopes: string;
  /**
   * Claim that maps a user to tenants and roles at each login: an array of "tenant-slug:role" strings
   * (role = tenant_admin | member | viewer) and optionally "platform_admin", or an object {slug: role}.
   */
  tenantClaim: string;
  /**
   * Claim listing the user's groups (an array of strings), mapped to tenant roles by each tenant's OIDC
   * group mapping (a Tenant resource's spec.members; docs/adr/0011-kubernetes.md). Absent in settings saved
   * before it existed: `groups`.
   */
  groupsClaim?: string;
  /** Plain-HTTP issuers are refused unless this is set (for a provider on the same host). */
  allowInsecureHttp: boolean;
}

export class OidcError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('oidc_failed', 400, message, { cause });
  }
}

const SECRET_NAME = 'oidc.client_secret';
const LOGIN_TTL_MS = 10 * 60 * 1000;
const MAX_LOGINS_IN_FLIGHT = 10_000;

export interface OidcLoginResult {
  userId: string;
  returnTo: string;
}

export class OidcService {
  private readonly db: Db;
  private readonly secrets: PlatformSecrets;
  private readonly redirectUri: string;
  private cached: { key: string; config: client.Configuration; at: number } | undefined;

  constructor(opts: { db: Db; secrets: PlatformSecrets; redirectUri: string }) {
    this.db = opts.db;
    this.secrets = opts.secrets;
    this.redirectUri = opts.redirectUri;
  }

  async settings(): Promise<(OidcSettings & { groupsClaim: string; clientSecretSet: boolean; redirectUri: string }) | undefined> {
    const s = await getSetting<OidcSettings>(this.db, 'oidc');
    if (!s) return undefined;
    return { ...s, groupsClaim: groupsClaimOf(s), clientSecretSet: (await this.secrets.open(SECRET_NAME)) !== undefined, redirectUri: this.redirectUri };
  }

  /** Saves settings after proving the issuer's discovery document can be fetched with them. */
  async save(s: OidcSettings, clientSecret: string | undefined, by: { actor: string; requestId?: string | undefined }): Promise<void> {
    const secret = clientSecret ?? (await this.secrets.open(SECRET_NAME));
    if (secret === undefined)
      throw new ValidationError('clientSecret is required the first time OIDC is configured.', [{ path: 'body.clientSecret', message: 'required' }]);
    await this.discover(s, secret);
    if (clientSecret !== undefined) await this.secrets.seal(SECRET_NAME, clientSecret);
    await this.db.tx(async (tx) => {
      await putSetting(tx, 'oidc', s);
      await appendAudit(tx, {
        actor: by.actor,
        action: 'settings.oidc',
        decision: 'success',
        detail: { issuer: s.issuer, clientId: s.clientId, enabled: s.enabled, secretChanged: clientSecret !== undefined },
        requestId: by.requestId ?? null,
      });
    });
    this.cached = undefined;
  }

  async enabled(): Promise<{ enabled: boolean; displayName: string }> {
    const s = await getSetting<OidcSettings>(this.db, 'oidc');
    return { enabled: !!s?.enabled, displayName: s?.displayName ?? '' };
  }

  /** Starts a login: returns the provider URL to redirect to (authorization code + PKCE, state, nonce). */
  async begin(returnTo: string): Promise<URL> {
    const { config, settings } = await this.active();
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    await this.db.query('DELETE FROM oidc_logins WHERE created_at < now() - make_interval(secs => $1)', [LOGIN_TTL_MS / 1000]);
    // Anyone may start a login; cap the logins in flight so the table cannot be grown on purpose.
    const inFlight = await this.db.query<{ n: number }>('SELECT count(*)::int AS n FROM oidc_logins');
    if ((inFlight.rows[0]?.n ?? 0) >= MAX_LOGINS_IN_FLIGHT) {
      throw new RateLimitedError('Too many sign-ins are in progress. Try again in a minute.', 60);
    }
    await this.db.query('INSERT INTO oidc_logins (state, code_verifier, nonce, return_to) VALUES ($1, $2, $3, $4)', [
      state,
      verifier,
      nonce,
      safeReturnTo(returnTo),
    ]);
    return client.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri,
      scope: settings.scopes,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
  }

  /**
   * Finishes a login from the provider's redirect: verifies state, PKCE and nonce, maps claims, upserts the user.
   * `browserState` is the state from the cookie set by the start route: a callback URL only signs in the
   * browser that started that login (no login CSRF with someone else's code and state).
   */
  async complete(callbackUrl: URL, meta: { requestId?: string | undefined; browserState: string | undefined }): Promise<OidcLoginResult> {
    const state = callbackUrl.searchParams.get('state') ?? '';
    if (!state || !meta.browserState || !sameString(state, meta.browserState)) {
      await this.db.tx((tx) =>
        appendAudit(tx, {
          actor: 'anonymous',
          action: 'auth.login',
          decision: 'failure',
          detail: { method: 'oidc', reason: 'state does not match the browser that started the sign-in' },
          requestId: meta.requestId ?? null,
        }),
      );
      throw new OidcError('This sign-in was not started in this browser, or it took too long. Start the sign-in again.');
    }
    const pending = await this.db.query<{ code_verifier: string; nonce: string; return_to: string; created_at: Date }>(
      'DELETE FROM oidc_logins WHERE state = $1 RETURNING code_verifier, nonce, return_to, created_at',
      [state],
    );
    const p = pending.rows[0];
    if (!p || Date.now() - p.created_at.getTime() > LOGIN_TTL_MS) throw new OidcError('This sign-in link is unknown or expired. Start the sign-in again.');
    const { config, settings } = await this.active();
    let claims: client.IDToken | undefined;
    try {
      const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: p.code_verifier,
        expectedState: state,
        expectedNonce: p.nonce,
        idTokenExpected: true,
      });
      claims = tokens.claims();
      // Conformant providers put scope-granted claims (email, profile, custom ones) in the ID token only
      // when no access token is issued (OIDC Core 5.4); otherwise they are served from userinfo. Ask it
      // when the ID token lacks what we map, so the tenant claim is not silently lost (issue 3).
      if (
        claims &&
        (claims['email'] === undefined || claims[settings.tenantClaim] === undefined || claims[groupsClaimOf(settings)] === undefined) &&
        config.serverMetadata().userinfo_endpoint
      ) {
        const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
        claims = { ...info, ...claims };
      }
    } catch (err) {
      const reason = describeOidcError(err);
      await this.db.tx((tx) =>
        appendAudit(tx, {
          actor: 'anonymous',
          action: 'auth.login',
          decision: 'failure',
          detail: { method: 'oidc', reason },
          requestId: meta.requestId ?? null,
        }),
      );
      throw new OidcError(`The identity provider's answer was not accepted: ${reason}. Start the sign-in again.`, err);
    }
    if (!claims) throw new OidcError('The identity provider returned no ID token.');
    const userId = await this.db.tx((tx) => this.upsertUser(tx, settings, claims, meta.requestId));
    return { userId, returnTo: p.return_to };
  }

  private async upsertUser(tx: Queryable, s: OidcSettings, claims: client.IDToken, requestId: string | undefined): Promise<string> {
    const issuer = claims.iss;
    const sub = claims.sub;
    const email = (typeof claims['email'] === 'string' ? claims['email'] : `${sub}@${new URL(issuer).hostname}`).toLowerCase();
    // Some providers send the string "true".
    const verified = claims['email_verified'] === true || claims['email_verified'] === 'true';
    const name = typeof claims['name'] === 'string' ? claims['name'] : '';
    const mapping = parseTenantClaim(claims[s.tenantClaim]);
    const groups = parseGroupsClaim(claims[groupsClaimOf(s)]);

    let user = (
      await tx.query<{ id: string; breakglass: boolean }>('SELECT id, breakglass FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2', [issuer, sub])
    ).rows[0];
    if (!user) {
      const byEmail = (
        await tx.query<{ id: string; breakglass: boolean; oidc_subject: string | null }>('SELECT id, breakglass, oidc_subject FROM users WHERE email = $1', [
          email,
        ])
      ).rows[0];
      if (byEmail) {
        // Link a pre-provisioned account only when the provider vouches for the email (no takeover by
        // registering someone else's address at the provider) and never the breakglass admin.
        if (!verified || byEmail.oidc_subject !== null || byEmail.breakglass) {
          throw new ConflictError(
            `An account with the email ${email} already exists and cannot be linked to this sign-in. Ask a platform admin.`,
            'account_conflict',
          );
        }
        await tx.query('UPDATE users SET oidc_issuer = $1, oidc_subject = $2 WHERE id = $3', [issuer, sub, byEmail.id]);
        user = { id: byEmail.id, breakglass: false };
      } else {
        const r = await tx.query<{ id: string }>('INSERT INTO users (email, display_name, oidc_issuer, oidc_subject) VALUES ($1, $2, $3, $4) RETURNING id', [
          email,
          name,
          issuer,
          sub,
        ]);
        user = { id: (r.rows[0] as { id: string }).id, breakglass: false };
      }
    }
    await tx.query(
      "UPDATE users SET display_name = CASE WHEN $2 = '' THEN display_name ELSE $2 END, platform_admin = (breakglass OR $3), last_login_at = now() WHERE id = $1",
      [user.id, name, mapping.platformAdmin],
    );
    // The provider's word at this sign-in (tenant claim and groups) is kept on the user, and the user's
    // oidc memberships follow it (src/identity/oidc-groups.ts); memberships added by hand are left alone.
    await tx.query('UPDATE users SET oidc_groups = $2, oidc_claim_roles = $3 WHERE id = $1', [user.id, groups, Object.fromEntries(mapping.tenants)]);
    await syncOidcMemberships(tx, { userId: user.id });
    const now = await tx.query<{ slug: string; role: TenantRole }>(
      `SELECT t.slug, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id WHERE m.user_id = $1 AND m.source = 'oidc' ORDER BY t.slug`,
      [user.id],
    );
    await appendAudit(tx, {
      actor: `user:${user.id}`,
      action: 'auth.login',
      target: `user:${user.id}`,
      decision: 'success',
      detail: {
        method: 'oidc',
        issuer,
        tenants: Object.fromEntries(now.rows.map((t) => [t.slug, t.role])),
        groups: groups.length,
        platformAdmin: mapping.platformAdmin,
      },
      requestId: requestId ?? null,
    });
    return user.id;
  }

  private async active(): Promise<{ config: client.Configuration; settings: OidcSettings }> {
    const settings = await getSetting<OidcSettings>(this.db, 'oidc');
    if (!settings?.enabled)
      throw new ConflictError('Single sign-on is not configured. Sign in with the breakglass admin, or ask a platform admin to set up OIDC.', 'oidc_disabled');
    const secret = await this.secrets.open(SECRET_NAME);
    if (secret === undefined)
      throw new ConflictError('The OIDC client secret is missing: a platform admin must save the OIDC settings again.', 'oidc_disabled');
    const key = JSON.stringify(settings);
    if (this.cached && this.cached.key === key && Date.now() - this.cached.at < 10 * 60 * 1000) return { config: this.cached.config, settings };
    const config = await this.discover(settings, secret);
    this.cached = { key, config, at: Date.now() };
    return { config, settings };
  }

  private async discover(s: OidcSettings, secret: string): Promise<client.Configuration> {
    let url: URL;
    try {
      url = new URL(s.issuer);
    } catch {
      throw new ValidationError('issuer must be a URL such as https://login.example.com/realms/main', [{ path: 'body.issuer', message: 'not a URL' }]);
    }
    if (url.protocol !== 'https:' && !s.allowInsecureHttp) {
      throw new ValidationError('issuer must use https (set allowInsecureHttp only for a provider on the same host).', [
        { path: 'body.issuer', message: 'https required' },
      ]);
    }
    try {
      return await client.discovery(url, s.clientId, secret, undefined, {
        ...(url.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : {}),
        timeout: 10,
      });
    } catch (err) {
      throw new OidcError(
        `Could not load the OpenID configuration from ${url.origin}: ${(err as Error).message}. Check the issuer URL and that Clawplane can reach it.`,
        err,
      );
    }
  }
}

function groupsClaimOf(s: OidcSettings): string {
  return s.groupsClaim ?? 'groups';
}

/** Parses the tenant claim into slug → role, ignoring entries that name no valid role. */
export function parseTenantClaim(value: unknown): { tenants: Map<string, TenantRole>; platformAdmin: boolean } {
  const tenants = new Map<string, TenantRole>();
  let platformAdmin = false;
  const add = (slug: string, role: string) => {
    if ((TENANT_ROLES as readonly string[]).includes(role) && /^[a-z0-9-]{1,40}$/.test(slug)) tenants.set(slug, role as TenantRole);
  };
  if (Array.isArray(value)) {
    for (const v of value) {
      if (typeof v !== 'string') continue;
      if (v === 'platform_admin' || v === '*:platform_admin') platformAdmin = true;
      const [slug, role] = v.split(':');
      if (slug && role) add(slug.toLowerCase(), role);
    }
  } else if (value && typeof value === 'object') {
    for (const [slug, role] of Object.entries(value)) if (typeof role === 'string') add(slug.toLowerCase(), role);
  }
  return { tenants, platformAdmin };
}

/**
 * openid-client's messages are generic ("server responded with an error"); the OAuth error code and
 * description (access_denied, invalid_client, ...) are what tells an admin what to fix.
 */
function describeOidcError(err: unknown): string {
  const e = err as { message?: unknown; error?: unknown; error_description?: unknown };
  const message = typeof e.message === 'string' ? e.message : String(err);
  const code = typeof e.error === 'string' ? e.error : undefined;
  const description = typeof e.error_description === 'string' ? `: ${e.error_description}` : '';
  return (code ? `${message} (${code}${description})` : message).slice(0, 300);
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Only same-site relative paths: never an open redirect. */
export function safeReturnTo(r: string): string {
  return /^\/(?![/\\])[\x21-\x7e]*$/.test(r) ? r : '/';
}
