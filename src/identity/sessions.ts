import type { Db } from '../db/pool.ts';
import type { Principal } from './principal.ts';
import { newSecret, sha256 } from './tokens.ts';

export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

/** Server-side sessions: the cookie carries a random id, the database only its SHA-256 (issue 3). */
export class SessionService {
  private readonly db: Db;
  constructor(db: Db) {
    this.db = db;
  }

  /** A fresh session id at every login (no fixation); returns the cookie value and the CSRF token. */
  async create(userId: string, meta: { ip?: string | undefined; userAgent?: string | undefined }): Promise<{ id: string; csrfToken: string; expiresAt: Date }> {
    const id = newSecret();
    const csrfToken = newSecret();
    const expiresAt = new Date(Date.now() + SESSION_TTL_MS);
    await this.db.query('INSERT INTO sessions (id_hash, user_id, csrf_token, expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6)', [
      sha256(id),
      userId,
      csrfToken,
      expiresAt,
      meta.ip ?? null,
      (meta.userAgent ?? '').slice(0, 300),
    ]);
    // Housekeeping: expired sessions are useless; drop them as we go.
    await this.db.query('DELETE FROM sessions WHERE expires_at < now()');
    return { id, csrfToken, expiresAt };
  }

  /** The signed-in user for a cookie value, or undefined when unknown, expired or the user is disabled. */
  async resolve(id: string): Promise<Extract<Principal, { kind: 'user' }> | undefined> {
    const hash = sha256(id);
    const r = await this.db.query<{ user_id: string; email: string; platform_admin: boolean; csrf_token: string; last_seen_at: Date }>(
      `SELECT s.user_id, u.email, u.platform_admin, s.csrf_token, s.last_seen_at
         FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.id_hash = $1 AND s.expires_at > now() AND NOT u.disabled`,
      [hash],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    if (Date.now() - row.last_seen_at.getTime() > 60_000) {
      await this.db.query('UPDATE sessions SET last_seen_at = now() WHERE id_hash = $1', [hash]);
    }
    return { kind: 'user', userId: row.user_id, email: row.email, platformAdmin: row.platform_admin, sessionHash: hash, csrfToken: row.csrf_token };
  }

  async destroy(sessionHash: string): Promise<void> {
    await this.db.query('DELETE FROM sessions WHERE id_hash = $1', [sessionHash]);
  }

  /** Ends a session given the cookie value (for a re-login from the same browser). */
  async destroyById(id: string): Promise<void> {
    await this.destroy(sha256(id));
  }

  async destroyAllFor(userId: string): Promise<void> {
    await this.db.query('DELETE FROM sessions WHERE user_id = $1', [userId]);
  }
}
