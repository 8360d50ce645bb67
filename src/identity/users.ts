import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { ClawplaneError, ConflictError, NotFoundError, RateLimitedError, UnauthenticatedError, ValidationError } from '../errors.ts';
import type { Audited } from '../tenancy/tenants.ts';
import { DUMMY_HASH, hashPassword, passwordProblem, verifyPassword } from './passwords.ts';
import type { TenantRole } from './principal.ts';

/** Lockout and throttling for password logins (issue 3; OWASP Authentication Cheat Sheet). */
export const LOGIN_POLICY = {
  /** Consecutive failures that lock the account… */
  maxFailures: 5,
  /** …for this long. */
  lockMs: 15 * 60 * 1000,
  /** Failures from one client address allowed per window before it is throttled. */
  perClientFailures: 20,
  windowMs: 5 * 60 * 1000,
};

export class AccountLockedError extends ClawplaneError {
  constructor(retryAfterSeconds: number) {
    super(
      'account_locked',
      429,
      `Too many failed sign-in attempts: this account is locked for ${Math.ceil(retryAfterSeconds / 60)} more minute(s). On the host, "clawplane admin reset-password" unlocks it.`,
      { details: { retryAfterSeconds } },
    );
  }
}

export interface User {
  id: string;
  email: string;
  displayName: string;
  platformAdmin: boolean;
  breakglass: boolean;
  lastLoginAt: string | null;
  memberships: { tenantId: string; slug: string; name: string; role: TenantRole }[];
}

interface UserRow {
  id: string;
  email: string;
  display_name: string;
  platform_admin: boolean;
  breakglass: boolean;
  password_hash: string | null;
  failed_logins: number;
  locked_until: Date | null;
  last_login_at: Date | null;
  disabled: boolean;
}

export class UserService {
  private readonly db: Db;
  constructor(db: Db) {
    this.db = db;
  }

  async get(id: string): Promise<User> {
    const r = await this.db.query<UserRow>('SELECT * FROM users WHERE id = $1', [id]);
    const u = r.rows[0];
    if (!u) throw new NotFoundError('User');
    const m = await this.db.query<{ tenant_id: string; slug: string; name: string; role: TenantRole }>(
      'SELECT m.tenant_id, t.slug, t.name, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id WHERE m.user_id = $1 ORDER BY t.slug',
      [id],
    );
    return {
      id: u.id,
      email: u.email,
      displayName: u.display_name,
      platformAdmin: u.platform_admin,
      breakglass: u.breakglass,
      lastLoginAt: u.last_login_at ? u.last_login_at.toISOString() : null,
      memberships: m.rows.map((x) => ({ tenantId: x.tenant_id, slug: x.slug, name: x.name, role: x.role })),
    };
  }

  async breakglassExists(): Promise<boolean> {
    return ((await this.db.query('SELECT 1 FROM users WHERE breakglass')).rowCount ?? 0) > 0;
  }

  /** Creates the one local platform admin that always works, also when OIDC is down (issue 3). */
  async createBreakglass(input: { email: string; password: string; displayName?: string | undefined }, by: Audited): Promise<string> {
    const problem = passwordProblem(input.password);
    if (problem) throw new ValidationError(`The password ${problem}.`, [{ path: 'body.password', message: problem }]);
    const hash = await hashPassword(input.password);
    return this.db.tx(async (tx) => {
      if ((await tx.query('SELECT 1 FROM users WHERE breakglass FOR UPDATE')).rowCount) {
        throw new ConflictError('The breakglass admin already exists. Sign in instead.', 'admin_exists');
      }
      const r = await tx.query<{ id: string }>(
        `INSERT INTO users (email, display_name, platform_admin, breakglass, password_hash) VALUES ($1, $2, true, true, $3)
         ON CONFLICT (email) DO UPDATE SET platform_admin = true, breakglass = true, password_hash = EXCLUDED.password_hash
         RETURNING id`,
        [input.email.toLowerCase(), input.displayName ?? 'Administrator', hash],
      );
      const id = (r.rows[0] as { id: string }).id;
      await appendAudit(tx, { actor: by.actor, action: 'admin.create', target: `user:${id}`, decision: 'success', requestId: by.requestId ?? null });
      return id;
    });
  }

  /**
   * Password sign-in for the breakglass admin. Unknown emails cost the same hash as known ones; failures
   * count toward a per-account lockout and a per-client throttle; both outcomes are audited.
   */
  async login(email: string, password: string, meta: { client: string; requestId?: string | undefined }): Promise<string> {
    const clientKey = `client:${meta.client}`;
    const recent = await this.db.query<{ n: number; oldest: Date | null }>(
      'SELECT count(*)::int AS n, min(at) AS oldest FROM login_failures WHERE key = $1 AND at > now() - make_interval(secs => $2)',
      [clientKey, LOGIN_POLICY.windowMs / 1000],
    );
    const rc = recent.rows[0];
    if (rc && rc.n >= LOGIN_POLICY.perClientFailures) {
      const retry = rc.oldest ? Math.max(1, Math.ceil((rc.oldest.getTime() + LOGIN_POLICY.windowMs - Date.now()) / 1000)) : 60;
      await this.audit('auth.login', 'failure', { email, reason: 'throttled' }, undefined, meta.requestId);
      throw new RateLimitedError(`Too many failed sign-ins from your address. Try again in ${retry} seconds.`, retry);
    }
    const r = await this.db.query<UserRow>('SELECT * FROM users WHERE email = $1', [email.toLowerCase()]);
    const u = r.rows[0];
    if (u?.locked_until && u.locked_until.getTime() > Date.now()) {
      await this.audit('auth.login', 'failure', { email, reason: 'locked' }, u.id, meta.requestId);
      throw new AccountLockedError((u.locked_until.getTime() - Date.now()) / 1000);
    }
    const ok = await verifyPassword(password, u?.password_hash ?? DUMMY_HASH);
    if (!u || !u.password_hash || !ok || u.disabled) {
      await this.db.tx(async (tx) => {
        await tx.query('INSERT INTO login_failures (key) VALUES ($1)', [clientKey]);
        await tx.query('DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)', [LOGIN_POLICY.windowMs / 1000]);
        if (u) {
          await tx.query(
            `UPDATE users SET failed_logins = failed_logins + 1,
                    locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + make_interval(secs => $3) ELSE locked_until END
              WHERE id = $1`,
            [u.id, LOGIN_POLICY.maxFailures, LOGIN_POLICY.lockMs / 1000],
          );
        }
        await appendAudit(tx, {
          actor: u ? `user:${u.id}` : 'anonymous',
          action: 'auth.login',
          target: u ? `user:${u.id}` : null,
          decision: 'failure',
          detail: { email, reason: 'bad_credentials', method: 'password' },
          requestId: meta.requestId ?? null,
        });
      });
      throw new UnauthenticatedError('The email or password is wrong.');
    }
    await this.db.tx(async (tx) => {
      await tx.query('UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = now() WHERE id = $1', [u.id]);
      await appendAudit(tx, {
        actor: `user:${u.id}`,
        action: 'auth.login',
        target: `user:${u.id}`,
        decision: 'success',
        detail: { method: 'password' },
        requestId: meta.requestId ?? null,
      });
    });
    return u.id;
  }

  /** `clawplane admin reset-password`: new password, lockout cleared; the caller ends the old sessions. */
  async resetBreakglassPassword(password: string, by: Audited): Promise<{ id: string; email: string }> {
    const problem = passwordProblem(password);
    if (problem) throw new ValidationError(`The password ${problem}.`, [{ path: 'password', message: problem }]);
    const hash = await hashPassword(password);
    return this.db.tx(async (tx) => {
      const r = await tx.query<{ id: string; email: string }>(
        'UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL WHERE breakglass RETURNING id, email',
        [hash],
      );
      const u = r.rows[0];
      if (!u) throw new NotFoundError('The breakglass admin', 'Finish onboarding first.');
      await tx.query('DELETE FROM sessions WHERE user_id = $1', [u.id]);
      await appendAudit(tx, { actor: by.actor, action: 'admin.reset_password', target: `user:${u.id}`, decision: 'success', requestId: by.requestId ?? null });
      return u;
    });
  }

  private async audit(
    action: string,
    decision: string,
    detail: Record<string, unknown>,
    userId: string | undefined,
    requestId: string | undefined,
  ): Promise<void> {
    await this.db.tx((tx) =>
      appendAudit(tx, {
        actor: userId ? `user:${userId}` : 'anonymous',
        action,
        target: userId ? `user:${userId}` : null,
        decision,
        detail,
        requestId: requestId ?? null,
      }),
    );
  }
}
