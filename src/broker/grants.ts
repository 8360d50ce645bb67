import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { Hono, type Context, type Env } from 'hono';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { ClawplaneError, type ErrorCode } from '../errors.ts';
import type { PolicyService } from '../policy/service.ts';
import type { PolicyDecision, ToolContext } from '../policy/types.ts';
import { GrantKeyRefused, staticGrantKeys, type GrantKeySource } from './grant-keys.ts';

/**
 * Who asks for a grant: one sandbox start, as the broker's token store resolves it (src/broker/identity.ts
 * `SandboxTokens.resolve` has this shape). Declared here so grants depend on an interface, not a driver.
 */
export interface GrantCaller {
  /** The sandbox start (the broker token's row). */
  id: string;
  tenantId: string;
  instanceId: string;
  sandboxId: string;
}

/** Maps `Authorization: Bearer <broker token>` to a sandbox start, or undefined (401). */
export interface SandboxResolver {
  resolve(token: string): Promise<GrantCaller | undefined>;
}

/** An Ed25519 key pair held in memory (tests); replicas share keys through GrantKeyring (grant-keys.ts). */
export interface GrantKeys {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function generateGrantKeys(): GrantKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { kid: randomUUID(), privateKey, publicKey };
}

/** The claims of a verified grant. */
export interface GrantClaims {
  jti: string;
  /** The tool (the token's audience). */
  tool: string;
  tenantId: string;
  instanceId: string;
  sandboxStartId: string;
  agent: string;
  /** Space-separated: `tool:<name>` then `channel:…`, `repo:…`, `host:…` for each context value given. */
  scope: string;
  context: ToolContext;
  expiresAt: Date;
}

/** A grant as people see it (the token itself is never kept). */
export interface GrantInfo {
  jti: string;
  instanceId: string;
  sandboxStartId: string;
  agent: string;
  tool: string;
  scope: string;
  issuedAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
}

/** A parked tool use waiting for a person (the tasks issue resumes the workflow on it). */
export interface ApprovalInfo {
  id: string;
  instanceId: string | null;
  agent: string;
  tool: string;
  context: ToolContext;
  policyIds: string[];
  explanation: string;
  createdAt: Date;
}

export type GrantOutcome =
  | { outcome: 'granted'; token: string; jti: string; tool: string; scope: string; expiresAt: Date; decision: PolicyDecision }
  | { outcome: 'requires_approval'; approvalId: string; decision: PolicyDecision }
  | { outcome: 'deny'; decision: PolicyDecision };

/** A grant token that must not be honoured: bad signature, wrong tool, expired, revoked. */
export class GrantInvalidError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('grant_invalid', 401, message, { cause });
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,199}$/;
const ContextValue = z.string().min(1).max(500);

/** Body of POST /broker/grants (strict: unknown fields are refused). */
export const GrantRequestSchema = z.strictObject({
  tool: z.string().regex(/^[a-z][a-z0-9_.-]{0,99}$/, 'a tool name from the registry, e.g. "web_fetch"'),
  agent: z.string().regex(NAME, 'an agent id, e.g. "main"').default('main'),
  context: z
    .strictObject({ channel: ContextValue.optional(), repo: ContextValue.optional(), host: ContextValue.optional(), taskId: ContextValue.optional() })
    .default({}),
});
export type GrantRequest = z.infer<typeof GrantRequestSchema>;

/** Body of POST /broker/grants/verify. */
const VerifyRequestSchema = z.strictObject({
  token: z.string().min(1).max(8192),
  tool: z.string().regex(/^[a-z][a-z0-9_.-]{0,99}$/, 'a tool name from the registry'),
});

const TYP = 'clawplane-grant+jwt';
/** The longest a grant lives; also the overlap a rotated-out signing key keeps verifying. */
export const GRANT_MAX_TTL_SECONDS = 300;
const MAX_TTL_SECONDS = GRANT_MAX_TTL_SECONDS;

function scopeOf(tool: string, ctx: ToolContext): string {
  const parts = [`tool:${tool}`];
  for (const k of ['channel', 'repo', 'host'] as const) if (ctx[k] !== undefined) parts.push(`${k}:${ctx[k]}`);
  return parts.join(' ');
}

function cleanContext(ctx: GrantRequest['context']): ToolContext {
  const out: ToolContext = {};
  for (const k of ['channel', 'repo', 'host', 'taskId'] as const) {
    const v = ctx[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * Grants (issue 5, item 6): a sandbox asks to use a tool; the tool policy decides; the answer is a
 * short-lived scoped token (EdDSA JWT, aud = the tool, exp ≤ 5 min, jti recorded for revocation), a
 * parked approval, or a refusal with the reason and the determining policy ids. Every outcome is audited
 * in the transaction that records it; the token itself is never stored or logged.
 */
/** A deny decided outside the Cedar set for one grant request, or null to leave the policy's decision. */
export type GrantRestriction = (tenantId: string, tool: string, context: ToolContext) => Promise<PolicyDecision | null>;

export class GrantService {
  private readonly db: Db;
  private readonly policy: PolicyService;
  private readonly keys: GrantKeySource;
  private readonly issuer: string;
  private readonly ttlSeconds: number;

  constructor(deps: { db: Db; policy: PolicyService; keys?: GrantKeySource | GrantKeys; issuer?: string; ttlSeconds?: number }) {
    this.db = deps.db;
    this.policy = deps.policy;
    const k = deps.keys ?? generateGrantKeys();
    this.keys = 'signing' in k ? k : staticGrantKeys(k);
    this.issuer = deps.issuer ?? 'clawplane-broker';
    this.ttlSeconds = Math.min(Math.max(1, Math.floor(deps.ttlSeconds ?? MAX_TTL_SECONDS)), MAX_TTL_SECONDS);
  }

  private readonly restrictions: GrantRestriction[] = [];

  /** Adds a restriction decided after the tool policy (docs/lanes.md: read-only lanes); it may only deny. */
  restrict(fn: GrantRestriction): void {
    this.restrictions.push(fn);
  }

  /** Decides and answers one grant request from an authenticated sandbox. */
  async request(caller: GrantCaller, input: GrantRequest, requestId?: string): Promise<GrantOutcome> {
    const context = cleanContext(input.context);
    let decision = await this.policy.decide(caller.tenantId, { agent: input.agent, tool: input.tool, context });
    // Restrictions from outside the policy set (a read-only lane step) only ever narrow: deny wins.
    if (decision.outcome !== 'deny') {
      for (const restrict of this.restrictions) {
        const d = await restrict(caller.tenantId, input.tool, context);
        if (d) {
          decision = d;
          break;
        }
      }
    }
    const actor = `sandbox:${caller.id}`;
    const base = {
      actor,
      tenantId: caller.tenantId,
      target: `tool:${input.tool}`,
      requestId: requestId ?? null,
    };
    const detail = { agent: input.agent, instanceId: caller.instanceId, context, policyIds: decision.policyIds, explanation: decision.explanation };

    if (decision.outcome === 'deny') {
      await this.db.tx((tx) => appendAudit(tx, { ...base, action: 'tool.grant.deny', decision: 'deny', detail: { ...detail, errors: decision.errors } }));
      return { outcome: 'deny', decision };
    }

    if (decision.outcome === 'requires_approval') {
      const approvalId = await this.db.tx(async (tx) => {
        const r = await tx.query<{ id: string }>(
          `INSERT INTO tool_approvals (tenant_id, instance_id, sandbox_start_id, agent, tool, context, policy_ids, explanation)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
          [caller.tenantId, caller.instanceId, caller.id, input.agent, input.tool, JSON.stringify(context), decision.policyIds, decision.explanation],
        );
        const id = (r.rows[0] as { id: string }).id;
        await appendAudit(tx, { ...base, action: 'tool.grant.approval_required', decision: 'requires_approval', detail: { ...detail, approvalId: id } });
        return id;
      });
      return { outcome: 'requires_approval', approvalId, decision };
    }

    const jti = randomUUID();
    const scope = scopeOf(input.tool, context);
    const now = Math.floor(Date.now() / 1000);
    const exp = now + this.ttlSeconds;
    const key = await this.keys.signing();
    const token = await new SignJWT({ tenant: caller.tenantId, instance: caller.instanceId, agent: input.agent, scope, ctx: context })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP, kid: key.kid })
      .setIssuer(this.issuer)
      .setSubject(`sandbox:${caller.id}`)
      .setAudience(input.tool)
      .setJti(jti)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .sign(key.privateKey);
    const expiresAt = new Date(exp * 1000);
    await this.db.tx(async (tx) => {
      await tx.query(
        `INSERT INTO tool_grants (jti, tenant_id, instance_id, sandbox_start_id, agent, tool, scope, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [jti, caller.tenantId, caller.instanceId, caller.id, input.agent, input.tool, scope, expiresAt],
      );
      await appendAudit(tx, { ...base, action: 'tool.grant.issue', decision: 'allow', detail: { ...detail, jti, scope, expiresAt: expiresAt.toISOString() } });
    });
    return { outcome: 'granted', token, jti, tool: input.tool, scope, expiresAt, decision };
  }

  /**
   * Verifies a grant for the egress side: signature (EdDSA only: `alg: none` and HS* are refused), type,
   * issuer, audience = `tool`, expiry (no clock tolerance), then the revocation list. When `tenantId`
   * is given, the grant must belong to that tenant.
   */
  async verifyGrant(token: string, expect: { tool: string; tenantId?: string }): Promise<GrantClaims> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, (header) => this.keys.verifying(header.kid), {
        algorithms: ['EdDSA'],
        typ: TYP,
        issuer: this.issuer,
        audience: expect.tool,
        requiredClaims: ['jti', 'exp', 'sub'],
      }));
    } catch (err) {
      if (err instanceof GrantKeyRefused) throw new GrantInvalidError(err.message, err);
      // Not a verdict on the grant (e.g. the database is away): let it surface as what it is.
      if (!(err instanceof joseErrors.JOSEError)) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new GrantInvalidError('The grant has expired. Ask for a new one.', err);
      if (err instanceof joseErrors.JWTClaimValidationFailed)
        throw new GrantInvalidError(`The grant is not valid for this use (${err.claim}). Ask for a grant for tool "${expect.tool}".`, err);
      throw new GrantInvalidError('The grant is not a valid Clawplane grant.', err);
    }
    const claims = this.claimsOf(payload, expect.tool);
    if (expect.tenantId !== undefined && claims.tenantId !== expect.tenantId) throw new GrantInvalidError('The grant belongs to another tenant.');
    const r = await this.db.query<{ revoked_at: Date | null }>('SELECT revoked_at FROM tool_grants WHERE jti = $1 AND tenant_id = $2', [
      claims.jti,
      claims.tenantId,
    ]);
    const row = r.rows[0];
    if (!row) throw new GrantInvalidError('The grant is unknown.');
    if (row.revoked_at !== null) throw new GrantInvalidError('The grant was revoked.');
    return claims;
  }

  /** Revokes one grant of a tenant by jti; false when the tenant has no such unrevoked grant. */
  async revoke(tenantId: string, jti: string, by: { actor: string; requestId?: string; reason?: string }): Promise<boolean> {
    if (!z.uuid().safeParse(jti).success) return false;
    return this.db.tx(async (tx) => {
      const r = await tx.query('UPDATE tool_grants SET revoked_at = now(), revoked_reason = $3 WHERE jti = $1 AND tenant_id = $2 AND revoked_at IS NULL', [
        jti,
        tenantId,
        by.reason ?? null,
      ]);
      if (r.rowCount !== 1) return false;
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'tool.grant.revoke',
        target: `grant:${jti}`,
        decision: 'success',
        detail: { reason: by.reason ?? null },
        requestId: by.requestId ?? null,
      });
      return true;
    });
  }

  /** Revokes every live grant of one sandbox start (call when the sandbox stops); returns how many. */
  async revokeSandbox(tenantId: string, sandboxStartId: string, by: { actor: string; reason?: string }): Promise<number> {
    return this.db.tx(async (tx) => {
      const r = await tx.query(
        `UPDATE tool_grants SET revoked_at = now(), revoked_reason = $3
          WHERE tenant_id = $1 AND sandbox_start_id = $2 AND revoked_at IS NULL AND expires_at > now()`,
        [tenantId, sandboxStartId, by.reason ?? 'sandbox stopped'],
      );
      const n = r.rowCount ?? 0;
      if (n > 0)
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'tool.grant.revoke',
          target: `sandbox:${sandboxStartId}`,
          decision: 'success',
          detail: { count: n },
        });
      return n;
    });
  }

  /** A tenant's recent grants (newest first), for people: never the token, only what it allows. */
  async listGrants(tenantId: string, limit = 100): Promise<GrantInfo[]> {
    const r = await this.db.query<{
      jti: string;
      instance_id: string;
      sandbox_start_id: string;
      agent: string;
      tool: string;
      scope: string;
      issued_at: Date;
      expires_at: Date;
      revoked_at: Date | null;
    }>(
      `SELECT jti, instance_id, sandbox_start_id, agent, tool, scope, issued_at, expires_at, revoked_at
         FROM tool_grants WHERE tenant_id = $1 ORDER BY issued_at DESC LIMIT $2`,
      [tenantId, limit],
    );
    return r.rows.map((g) => ({
      jti: g.jti,
      instanceId: g.instance_id,
      sandboxStartId: g.sandbox_start_id,
      agent: g.agent,
      tool: g.tool,
      scope: g.scope,
      issuedAt: g.issued_at,
      expiresAt: g.expires_at,
      revokedAt: g.revoked_at,
    }));
  }

  /** A tenant's pending approvals (oldest first): what a person must decide. */
  async listPendingApprovals(tenantId: string, limit = 100): Promise<ApprovalInfo[]> {
    const r = await this.db.query<{
      id: string;
      instance_id: string | null;
      agent: string;
      tool: string;
      context: ToolContext;
      policy_ids: string[];
      explanation: string;
      created_at: Date;
    }>(
      `SELECT id, instance_id, agent, tool, context, policy_ids, explanation, created_at
         FROM tool_approvals WHERE tenant_id = $1 AND status = 'pending' ORDER BY created_at LIMIT $2`,
      [tenantId, limit],
    );
    return r.rows.map((a) => ({
      id: a.id,
      instanceId: a.instance_id,
      agent: a.agent,
      tool: a.tool,
      context: a.context,
      policyIds: a.policy_ids,
      explanation: a.explanation,
      createdAt: a.created_at,
    }));
  }

  /** Deletes grant rows that expired more than `olderThanSeconds` ago (their tokens are refused by exp). */
  async pruneExpired(olderThanSeconds = 3600): Promise<number> {
    const r = await this.db.query('DELETE FROM tool_grants WHERE expires_at < now() - make_interval(secs => $1)', [olderThanSeconds]);
    return r.rowCount ?? 0;
  }

  private claimsOf(p: Record<string, unknown>, tool: string): GrantClaims {
    const str = (k: string): string => {
      const v = p[k];
      if (typeof v !== 'string') throw new GrantInvalidError(`The grant lacks the "${k}" claim.`);
      return v;
    };
    const sub = str('sub');
    const ctx = p['ctx'];
    const context: ToolContext = {};
    if (ctx && typeof ctx === 'object') {
      for (const k of ['channel', 'repo', 'host', 'taskId'] as const) {
        const v = (ctx as Record<string, unknown>)[k];
        if (typeof v === 'string') context[k] = v;
      }
    }
    return {
      jti: str('jti'),
      tool,
      tenantId: str('tenant'),
      instanceId: str('instance'),
      sandboxStartId: sub.replace(/^sandbox:/, ''),
      agent: str('agent'),
      scope: str('scope'),
      context,
      expiresAt: new Date(Number(p['exp']) * 1000),
    };
  }
}

function problem(c: Context, status: 400 | 401 | 403, code: ErrorCode, message: string, details?: Record<string, unknown>): Response {
  return c.json({ code, message, ...(details ? { details } : {}) }, status);
}

/**
 * POST /broker/grants on the broker's listener (Unix socket per sandbox, or internal port). The sandbox
 * authenticates with its broker token. Answers: 201 with the grant token; 202 with an approval id;
 * 403 `policy_denied` with the explanation and policy ids; 401 without a valid broker token; 400 for a
 * malformed body. Mount with `app.route('/', grantRoutes(deps))` or `registerGrantRoutes(app, deps)`.
 */
export function grantRoutes(deps: { grants: GrantService; sandboxes: SandboxResolver }): Hono {
  const app = new Hono();
  /** The calling sandbox (by its broker token) and its JSON body, or the 401/400 answer that says why not. */
  const callerAndBody = async (c: Context, shape: string): Promise<{ caller: GrantCaller; body: unknown } | Response> => {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    const caller = m?.[1] ? await deps.sandboxes.resolve(m[1]) : undefined;
    if (!caller)
      return problem(c, 401, 'unauthenticated', 'Send this sandbox\'s broker token as "Authorization: Bearer <token>"; it is unknown, expired or revoked.');
    try {
      return { caller, body: await c.req.json() };
    } catch {
      return problem(c, 400, 'bad_json', `The request body is not valid JSON. Send ${shape}.`);
    }
  };
  app.post('/broker/grants', async (c) => {
    const got = await callerAndBody(c, '{"tool": "<name>", "agent": "<id>", "context": {…}}');
    if (got instanceof Response) return got;
    const { caller, body } = got;
    const parsed = GrantRequestSchema.safeParse(body);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({
        path: ['body', ...i.path.map(String)].join('.'),
        message: i.code === 'unrecognized_keys' ? `unknown field(s): ${i.keys.join(', ')}` : i.message,
      }));
      return problem(c, 400, 'validation_failed', `The request is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { issues });
    }
    const requestId = c.req.header('x-request-id');
    const r = await deps.grants.request(caller, parsed.data, requestId && /^[\w.-]{1,100}$/.test(requestId) ? requestId : undefined);
    if (r.outcome === 'deny') return problem(c, 403, 'policy_denied', r.decision.explanation, { outcome: 'deny', policyIds: r.decision.policyIds });
    if (r.outcome === 'requires_approval') {
      return c.json({ outcome: r.outcome, approvalId: r.approvalId, policyIds: r.decision.policyIds, explanation: r.decision.explanation }, 202);
    }
    return c.json(
      {
        outcome: r.outcome,
        token: r.token,
        jti: r.jti,
        tool: r.tool,
        scope: r.scope,
        expiresAt: r.expiresAt.toISOString(),
        policyIds: r.decision.policyIds,
        explanation: r.decision.explanation,
      },
      201,
    );
  });
  // The tool side asks whether a grant it was handed is valid for its tool (signature with any replica's
  // current or overlapping key, expiry, revocation). Only grants of the caller's own tenant verify.
  app.post('/broker/grants/verify', async (c) => {
    const got = await callerAndBody(c, '{"token": "<grant>", "tool": "<name>"}');
    if (got instanceof Response) return got;
    const { caller, body } = got;
    const parsed = VerifyRequestSchema.safeParse(body);
    if (!parsed.success)
      return problem(
        c,
        400,
        'validation_failed',
        `The request is invalid: ${parsed.error.issues.map((i) => `body.${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
    try {
      const g = await deps.grants.verifyGrant(parsed.data.token, { tool: parsed.data.tool, tenantId: caller.tenantId });
      return c.json(
        { valid: true, jti: g.jti, tool: g.tool, agent: g.agent, scope: g.scope, instanceId: g.instanceId, expiresAt: g.expiresAt.toISOString() },
        200,
      );
    } catch (err) {
      if (err instanceof GrantInvalidError) return problem(c, 401, 'grant_invalid', err.message);
      throw err;
    }
  });
  return app;
}

/** Mounts the grant routes on the broker's app. */
export function registerGrantRoutes<E extends Env>(app: Hono<E>, deps: { grants: GrantService; sandboxes: SandboxResolver }): void {
  app.route('/', grantRoutes(deps));
}
