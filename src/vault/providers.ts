import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import { EventChannel } from '../events/channel.ts';
import { createLogger } from '../observability/logger.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ClawplaneError, ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import { checkUrlShape, guardedFetch, type EgressPolicy } from '../net/ssrf.ts';
import type { ActorContext, CredentialService } from './credentials.ts';

/**
 * LLM providers per tenant and model routing (issue 4). The catalogue says how to reach each kind of
 * provider; the service stores a tenant's provider settings and its routes (tenant default, per-agent
 * and per-skill overrides, ordered fallbacks), and tests a connection through the SSRF-guarded egress
 * path the broker uses.
 */

export const PROVIDER_KINDS = ['anthropic', 'openai', 'gemini', 'mistral', 'deepseek', 'openrouter', 'openai_compatible'] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

export interface ProviderCatalogEntry {
  kind: ProviderKind;
  label: string;
  /** API root including its version segment; null when the tenant must give one. */
  defaultBaseUrl: string | null;
  /** Appended to the base URL to list models. */
  modelsPath: string;
  /** How the key is sent: `Authorization: Bearer`, Anthropic's `x-api-key`, Google's `x-goog-api-key`. */
  auth: 'bearer' | 'x-api-key' | 'x-goog-api-key';
  extraHeaders: Record<string, string>;
  /** False for OpenAI-compatible servers such as Ollama that often run without a key. */
  keyRequired: boolean;
  /** Where the model list sits in the JSON answer, and which property holds each model's id. */
  listField: 'data' | 'models';
  idField: 'id' | 'name';
}

export const PROVIDER_CATALOGUE: Readonly<Record<ProviderKind, ProviderCatalogEntry>> = {
  anthropic: {
    kind: 'anthropic',
    label: 'Anthropic',
    defaultBaseUrl: 'https://api.anthropic.com/v1',
    modelsPath: '/models',
    auth: 'x-api-key',
    extraHeaders: { 'anthropic-version': '2023-06-01' },
    keyRequired: true,
    listField: 'data',
    idField: 'id',
  },
  openai: {
    kind: 'openai',
    label: 'OpenAI',
    defaultBaseUrl: 'https://api.openai.com/v1',
    modelsPath: '/models',
    auth: 'bearer',
    extraHeaders: {},
    keyRequired: true,
    listField: 'data',
    idField: 'id',
  },
  gemini: {
    kind: 'gemini',
    label: 'Google Gemini',
    defaultBaseUrl: 'https://generativelanguage.googleapis.com/v1beta',
    modelsPath: '/models?pageSize=1000',
    auth: 'x-goog-api-key',
    extraHeaders: {},
    keyRequired: true,
    listField: 'models',
    idField: 'name',
  },
  mistral: {
    kind: 'mistral',
    label: 'Mistral',
    defaultBaseUrl: 'https://api.mistral.ai/v1',
    modelsPath: '/models',
    auth: 'bearer',
    extraHeaders: {},
    keyRequired: true,
    listField: 'data',
    idField: 'id',
  },
  deepseek: {
    kind: 'deepseek',
    label: 'DeepSeek',
    defaultBaseUrl: 'https://api.deepseek.com',
    modelsPath: '/models',
    auth: 'bearer',
    extraHeaders: {},
    keyRequired: true,
    listField: 'data',
    idField: 'id',
  },
  openrouter: {
    kind: 'openrouter',
    label: 'OpenRouter',
    defaultBaseUrl: 'https://openrouter.ai/api/v1',
    modelsPath: '/models',
    auth: 'bearer',
    extraHeaders: {},
    keyRequired: true,
    listField: 'data',
    idField: 'id',
  },
  openai_compatible: {
    kind: 'openai_compatible',
    label: 'OpenAI-compatible (Ollama, vLLM, llama.cpp)',
    defaultBaseUrl: null,
    modelsPath: '/models',
    auth: 'bearer',
    extraHeaders: {},
    keyRequired: false,
    listField: 'data',
    idField: 'id',
  },
};

/** Request headers that authenticate to a provider of this kind. */
export function providerAuthHeaders(kind: ProviderKind, key: string | undefined): Record<string, string> {
  const e = PROVIDER_CATALOGUE[kind];
  const headers: Record<string, string> = { accept: 'application/json', ...e.extraHeaders };
  if (key === undefined) return headers;
  if (e.auth === 'bearer') headers['authorization'] = `Bearer ${key}`;
  else headers[e.auth] = key;
  return headers;
}

/** Model ids from a model-list answer; [] when the shape is not the expected one. */
export function parseModelList(kind: ProviderKind, body: unknown): string[] {
  const e = PROVIDER_CATALOGUE[kind];
  const list = body !== null && typeof body === 'object' ? (body as Record<string, unknown>)[e.listField] : undefined;
  if (!Array.isArray(list)) return [];
  return list.flatMap((m: unknown) => {
    const id = m !== null && typeof m === 'object' ? (m as Record<string, unknown>)[e.idField] : undefined;
    return typeof id === 'string' ? [id.replace(/^models\//, '')] : [];
  });
}

export interface ProviderInfo {
  id: string;
  tenantId: string;
  kind: ProviderKind;
  name: string;
  baseUrl: string;
  credentialId: string | null;
  defaultModel: string | null;
  enabled: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export type RouteScope = 'tenant' | 'agent' | 'skill';

export interface ModelRoute {
  scope: RouteScope;
  /** '' for the tenant default; the agent type or skill id otherwise. */
  scopeName: string;
  /** Position 0 is the primary; the rest are fallbacks, tried in order. */
  targets: { providerId: string; model: string }[];
}

export interface ResolvedTarget {
  providerId: string;
  kind: ProviderKind;
  baseUrl: string;
  credentialId: string | null;
  model: string;
}

export type ConnectionTestResult =
  | { ok: true; modelCount: number; models: string[]; latencyMs: number }
  | { ok: false; error: { code: string; message: string }; latencyMs: number };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const model = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^\s]+$/, 'must not contain spaces');

const providerFields = {
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'must be 1-63 of letters, digits, "_", "." or "-"'),
  baseUrl: z.string().min(1).max(2048),
  credentialId: z.uuid().nullable(),
  defaultModel: model.nullable(),
  enabled: z.boolean(),
};
/** Input for `create`; strict, so tenantId or id in the body is refused. */
export const createProviderInput = z.strictObject({
  kind: z.enum(PROVIDER_KINDS),
  name: providerFields.name,
  baseUrl: providerFields.baseUrl.optional(),
  credentialId: providerFields.credentialId.optional(),
  defaultModel: providerFields.defaultModel.optional(),
  enabled: providerFields.enabled.optional(),
});
export const updateProviderInput = z.strictObject({
  name: providerFields.name.optional(),
  baseUrl: providerFields.baseUrl.optional(),
  credentialId: providerFields.credentialId.optional(),
  defaultModel: providerFields.defaultModel.optional(),
  enabled: providerFields.enabled.optional(),
});
export const setRouteInput = z
  .strictObject({
    scope: z.enum(['tenant', 'agent', 'skill']),
    scopeName: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_.-]{0,99}$/, 'must be an agent type or skill id')
      .optional(),
    targets: z.array(z.strictObject({ providerId: z.uuid(), model })).max(16, 'at most 16 (a primary and 15 fallbacks)'),
  })
  .refine((r) => (r.scope === 'tenant') === (r.scopeName === undefined), {
    message: 'scopeName is required for agent and skill routes and not allowed for the tenant default',
    path: ['scopeName'],
  });

interface ProviderRow {
  id: string;
  tenant_id: string;
  kind: ProviderKind;
  name: string;
  base_url: string;
  credential_id: string | null;
  default_model: string | null;
  enabled: boolean;
  created_at: Date;
  updated_at: Date;
}
const COLUMNS = 'id, tenant_id, kind, name, base_url, credential_id, default_model, enabled, created_at, updated_at';

function info(r: ProviderRow): ProviderInfo {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    kind: r.kind,
    name: r.name,
    baseUrl: r.base_url,
    credentialId: r.credential_id,
    defaultModel: r.default_model,
    enabled: r.enabled,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function parse<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issues = r.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(input)', message: i.message }));
  throw new ValidationError(`The ${what} is invalid: ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}.`, issues);
}

function dbError(err: unknown, name: string | undefined): never {
  const code = (err as { code?: string }).code;
  if (code === '23505') throw new ConflictError(`A provider named "${name ?? ''}" already exists in this tenant. Choose another name.`, 'provider_name_taken');
  // The composite foreign key refuses another tenant's credential exactly like a missing one.
  if (code === '23503') throw new NotFoundError('Credential');
  throw err;
}

/** Replaces every occurrence of `secret` in `text`: a provider may echo the key in an error. */
function redact(text: string, secret: string | undefined): string {
  return secret && secret.length >= 4 ? text.split(secret).join('[redacted]') : text;
}

export class ProviderService {
  readonly #db: Db;
  readonly #credentials: CredentialService;
  readonly #egress: EgressPolicy;
  readonly #events: EventChannel;
  readonly #fetch: typeof guardedFetch;

  /** `events` carries `routes.changed` to every replica's broker route cache (none: this process only). */
  constructor(opts: { db: Db; credentials: CredentialService; egress: EgressPolicy; events?: EventChannel; fetch?: typeof guardedFetch }) {
    this.#db = opts.db;
    this.#events = opts.events ?? EventChannel.local(createLogger('silent'));
    this.#credentials = opts.credentials;
    this.#egress = opts.egress;
    this.#fetch = opts.fetch ?? guardedFetch;
  }

  /** The base URL to store: the kind's default or the given one, checked by the SSRF guard's static rules. */
  /** The checked base URL for a provider kind (the catalogue default when none is given). */
  baseUrlFor(kind: ProviderKind, given: string | undefined): string {
    return this.#baseUrl(kind, given);
  }

  #baseUrl(kind: ProviderKind, given: string | undefined): string {
    const url = given ?? PROVIDER_CATALOGUE[kind].defaultBaseUrl;
    if (url === null)
      throw new ValidationError(`A ${PROVIDER_CATALOGUE[kind].label} provider needs a baseUrl, e.g. http://ollama.internal:11434/v1.`, [
        { path: 'baseUrl', message: 'is required' },
      ]);
    const { url: parsed } = checkUrlShape(url, this.#egress);
    if (parsed.search || parsed.hash)
      throw new ValidationError('The baseUrl must not have a query or fragment.', [{ path: 'baseUrl', message: 'has a query or fragment' }]);
    return parsed.toString().replace(/\/+$/, '');
  }

  /** After a tenant's providers or routes changed: every replica's broker drops its cached routes. */
  async #notify(tenantId: string): Promise<void> {
    await this.#events.publish(this.#db, 'routes.changed', { tenantId });
  }

  async create(tenantId: string, input: unknown, ctx: ActorContext): Promise<ProviderInfo> {
    const r = await this.#createImpl(tenantId, input, ctx);
    await this.#notify(tenantId);
    return r;
  }

  async update(tenantId: string, id: string, input: unknown, ctx: ActorContext): Promise<ProviderInfo> {
    const r = await this.#updateImpl(tenantId, id, input, ctx);
    await this.#notify(tenantId);
    return r;
  }

  async remove(tenantId: string, id: string, ctx: ActorContext): Promise<void> {
    await this.#removeImpl(tenantId, id, ctx);
    await this.#notify(tenantId);
  }

  async setRoute(tenantId: string, input: unknown, ctx: ActorContext): Promise<ModelRoute> {
    const r = await this.#setRouteImpl(tenantId, input, ctx);
    await this.#notify(tenantId);
    return r;
  }

  async #createImpl(tenantId: string, input: unknown, ctx: ActorContext): Promise<ProviderInfo> {
    const p = parse(createProviderInput, input, 'provider');
    if (!UUID.test(tenantId)) throw new NotFoundError('Tenant');
    const baseUrl = this.#baseUrl(p.kind, p.baseUrl);
    return this.#db.tx(async (q) => {
      const r = await q
        .query<ProviderRow>(
          `INSERT INTO llm_providers (tenant_id, kind, name, base_url, credential_id, default_model, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${COLUMNS}`,
          [tenantId, p.kind, p.name, baseUrl, p.credentialId ?? null, p.defaultModel ?? null, p.enabled ?? true],
        )
        .catch((err: unknown) => dbError(err, p.name));
      const row = r.rows[0];
      if (!row) throw new Error('INSERT … RETURNING gave no row');
      await appendAudit(q, {
        actor: ctx.actor,
        tenantId,
        action: 'provider.create',
        target: `provider:${row.id}`,
        decision: 'success',
        requestId: ctx.requestId ?? null,
        detail: { kind: row.kind, name: row.name, baseUrl },
      });
      return info(row);
    });
  }

  async list(tenantId: string): Promise<ProviderInfo[]> {
    if (!UUID.test(tenantId)) return [];
    const r = await this.#db.query<ProviderRow>(`SELECT ${COLUMNS} FROM llm_providers WHERE tenant_id = $1 ORDER BY name`, [tenantId]);
    return r.rows.map(info);
  }

  async get(tenantId: string, id: string): Promise<ProviderInfo> {
    return info(await this.#row(this.#db, tenantId, id));
  }

  async #row(q: Queryable, tenantId: string, id: string, lock = false): Promise<ProviderRow> {
    if (!UUID.test(tenantId) || !UUID.test(id)) throw new NotFoundError('Provider');
    const r = await q.query<ProviderRow>(`SELECT ${COLUMNS} FROM llm_providers WHERE tenant_id = $1 AND id = $2${lock ? ' FOR UPDATE' : ''}`, [tenantId, id]);
    const row = r.rows[0];
    if (!row) throw new NotFoundError('Provider');
    return row;
  }

  async #updateImpl(tenantId: string, id: string, input: unknown, ctx: ActorContext): Promise<ProviderInfo> {
    const p = parse(updateProviderInput, input, 'provider update');
    return this.#db.tx(async (q) => {
      const cur = await this.#row(q, tenantId, id, true);
      const baseUrl = p.baseUrl === undefined ? cur.base_url : this.#baseUrl(cur.kind, p.baseUrl);
      const next = {
        name: p.name ?? cur.name,
        credentialId: p.credentialId === undefined ? cur.credential_id : p.credentialId,
        defaultModel: p.defaultModel === undefined ? cur.default_model : p.defaultModel,
        enabled: p.enabled ?? cur.enabled,
      };
      const r = await q
        .query<ProviderRow>(
          `UPDATE llm_providers SET name = $3, base_url = $4, credential_id = $5, default_model = $6, enabled = $7, updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING ${COLUMNS}`,
          [tenantId, id, next.name, baseUrl, next.credentialId, next.defaultModel, next.enabled],
        )
        .catch((err: unknown) => dbError(err, next.name));
      const row = r.rows[0];
      if (!row) throw new NotFoundError('Provider');
      await appendAudit(q, {
        actor: ctx.actor,
        tenantId,
        action: 'provider.update',
        target: `provider:${id}`,
        decision: 'success',
        requestId: ctx.requestId ?? null,
        detail: { changed: Object.keys(p) },
      });
      return info(row);
    });
  }

  /** Deletes a provider; routes through it go with it (ON DELETE CASCADE), and the audit says how many. */
  async #removeImpl(tenantId: string, id: string, ctx: ActorContext): Promise<void> {
    await this.#db.tx(async (q) => {
      const cur = await this.#row(q, tenantId, id, true);
      const routes = await q.query('DELETE FROM model_routes WHERE tenant_id = $1 AND provider_id = $2', [tenantId, id]);
      await q.query('DELETE FROM llm_providers WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
      await appendAudit(q, {
        actor: ctx.actor,
        tenantId,
        action: 'provider.delete',
        target: `provider:${id}`,
        decision: 'success',
        requestId: ctx.requestId ?? null,
        detail: { name: cur.name, routesRemoved: routes.rowCount ?? 0 },
      });
    });
  }

  /** Replaces the ordered targets of one route; an empty list removes the override. */
  async #setRouteImpl(tenantId: string, input: unknown, ctx: ActorContext): Promise<ModelRoute> {
    const r = parse(setRouteInput, input, 'model route');
    if (!UUID.test(tenantId)) throw new NotFoundError('Tenant');
    const scopeName = r.scopeName ?? '';
    return this.#db.tx(async (q) => {
      await q.query('DELETE FROM model_routes WHERE tenant_id = $1 AND scope = $2 AND scope_name = $3', [tenantId, r.scope, scopeName]);
      for (const [position, t] of r.targets.entries()) {
        await q
          .query('INSERT INTO model_routes (tenant_id, scope, scope_name, position, provider_id, model) VALUES ($1, $2, $3, $4, $5, $6)', [
            tenantId,
            r.scope,
            scopeName,
            position,
            t.providerId,
            t.model,
          ])
          .catch((err: unknown) => {
            // Another tenant's provider id fails the composite key just like a missing one.
            if ((err as { code?: string }).code === '23503') throw new NotFoundError(`Provider ${t.providerId}`);
            throw err;
          });
      }
      await appendAudit(q, {
        actor: ctx.actor,
        tenantId,
        action: 'model_route.set',
        target: `route:${r.scope}:${scopeName}`,
        decision: 'success',
        requestId: ctx.requestId ?? null,
        detail: { targets: r.targets },
      });
      return { scope: r.scope, scopeName, targets: r.targets };
    });
  }

  async listRoutes(tenantId: string): Promise<ModelRoute[]> {
    if (!UUID.test(tenantId)) return [];
    const rows = await this.#db.query<{ scope: RouteScope; scope_name: string; provider_id: string; model: string }>(
      'SELECT scope, scope_name, provider_id, model FROM model_routes WHERE tenant_id = $1 ORDER BY scope, scope_name, position',
      [tenantId],
    );
    const out: ModelRoute[] = [];
    for (const row of rows.rows) {
      let last = out.at(-1);
      if (!last || last.scope !== row.scope || last.scopeName !== row.scope_name) {
        last = { scope: row.scope, scopeName: row.scope_name, targets: [] };
        out.push(last);
      }
      last.targets.push({ providerId: row.provider_id, model: row.model });
    }
    return out;
  }

  /**
   * The ordered (provider, model) list the broker tries for a request: the skill's override, else the
   * agent's, else the tenant default; disabled providers are skipped. Empty means "not configured".
   */
  async resolveRoute(tenantId: string, who: { agent?: string; skill?: string } = {}): Promise<ResolvedTarget[]> {
    if (!UUID.test(tenantId)) return [];
    const candidates: [RouteScope, string][] = [];
    if (who.skill) candidates.push(['skill', who.skill]);
    if (who.agent) candidates.push(['agent', who.agent]);
    candidates.push(['tenant', '']);
    for (const [scope, scopeName] of candidates) {
      const r = await this.#db.query<{ provider_id: string; kind: ProviderKind; base_url: string; credential_id: string | null; model: string }>(
        `SELECT r.provider_id, p.kind, p.base_url, p.credential_id, r.model
           FROM model_routes r JOIN llm_providers p ON p.tenant_id = r.tenant_id AND p.id = r.provider_id
          WHERE r.tenant_id = $1 AND r.scope = $2 AND r.scope_name = $3 AND p.enabled
          ORDER BY r.position`,
        [tenantId, scope, scopeName],
      );
      if (r.rows.length > 0) {
        return r.rows.map((x) => ({ providerId: x.provider_id, kind: x.kind, baseUrl: x.base_url, credentialId: x.credential_id, model: x.model }));
      }
    }
    return [];
  }

  /**
   * Lists the provider's models through the guarded egress path with the decrypted key (the decrypt is
   * audited with purpose `provider.test_connection`). The result never contains the key.
   */
  async testConnection(tenantId: string, providerId: string, ctx: ActorContext): Promise<ConnectionTestResult> {
    const p = await this.get(tenantId, providerId);
    const entry = PROVIDER_CATALOGUE[p.kind];
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    let key: string | undefined;
    try {
      if (p.credentialId) {
        key = (
          await this.#credentials.decryptForBroker(tenantId, p.credentialId, {
            actor: ctx.actor,
            purpose: `provider.test_connection:${p.id}`,
            requestId: ctx.requestId ?? null,
          })
        ).value;
      } else if (entry.keyRequired) {
        return {
          ok: false,
          error: { code: 'credential_missing', message: `The provider "${p.name}" has no API key. Attach a credential to it, then test again.` },
          latencyMs: 0,
        };
      }
      return await this.probe({ kind: p.kind, baseUrl: p.baseUrl, name: p.name, key }, started);
    } catch (err) {
      if (!(err instanceof ClawplaneError)) throw err;
      return { ok: false, error: { code: err.code, message: redact(err.message, key) }, latencyMs: elapsed() };
    }
  }

  /**
   * Lists a provider's models with the given key through the guarded egress path: the connection test
   * for a stored provider, and for the platform's default provider during onboarding. Never returns the key.
   */
  async probe(p: { kind: ProviderKind; baseUrl: string; name: string; key: string | undefined }, started = performance.now()): Promise<ConnectionTestResult> {
    const entry = PROVIDER_CATALOGUE[p.kind];
    const elapsed = () => Math.round(performance.now() - started);
    const key = p.key;
    try {
      const res = await this.#fetch(`${p.baseUrl}${entry.modelsPath}`, { headers: providerAuthHeaders(p.kind, key) }, this.#egress);
      if (!res.ok) {
        await res.body?.cancel();
        return { ok: false, error: { code: `http_${res.status}`, message: httpHint(p.name, res.status) }, latencyMs: elapsed() };
      }
      let body: unknown;
      try {
        body = await res.json();
      } catch {
        return {
          ok: false,
          error: {
            code: 'bad_response',
            message: `"${p.name}" did not answer with JSON. Check that the base URL points at the API root (it usually ends in /v1).`,
          },
          latencyMs: elapsed(),
        };
      }
      // A hostile or buggy server could reflect the key as a model id: "never returns the key" holds anyway.
      const models = parseModelList(p.kind, body).map((m) => redact(m, key));
      return { ok: true, modelCount: models.length, models: models.slice(0, 500), latencyMs: elapsed() };
    } catch (err) {
      if (!(err instanceof ClawplaneError)) throw err;
      return { ok: false, error: { code: err.code, message: redact(err.message, key) }, latencyMs: elapsed() };
    }
  }
}

function httpHint(name: string, status: number): string {
  if (status === 401 || status === 403)
    return `"${name}" refused the API key (HTTP ${status}). Check that the credential is current and has access to the models API.`;
  if (status === 404) return `"${name}" has no models endpoint at this base URL (HTTP 404). Check the base URL; it usually ends in /v1.`;
  if (status === 429) return `"${name}" is rate limiting this key (HTTP 429). Wait a minute and test again.`;
  return `"${name}" answered HTTP ${status}. Check the base URL and the provider's status page.`;
}
