import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TaskTags } from './task-tag.ts';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import { ClawplaneError } from '../errors.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import type { CredentialService } from '../vault/credentials.ts';
import { providerAuthHeaders, type ProviderService, type ResolvedTarget } from '../vault/providers.ts';
import { sendApiError, type ApiFormat } from './api-errors.ts';
import { spanAttributes } from '../observability/tracing.ts';
import { BudgetExceededError, type BudgetHold, type Budgets } from './budgets.ts';
import type { SandboxIdentity, SandboxTokens } from './identity.ts';
import type { BrokerMetrics } from './metrics.ts';
import { costOf, type PriceTable } from './prices.ts';
import type { Upstreams } from './upstream.ts';
import { PLATFORM_CREDENTIAL, type PlatformProvider } from './platform-provider.ts';
import type { UsageRow, UsageWriter } from './usage.ts';

/** The model APIs the broker serves, and the provider path each maps to (after the base URL). */
const ROUTES: Record<string, { format: ApiFormat; api: string; upstreamPath: string }> = {
  '/v1/chat/completions': { format: 'openai', api: 'chat.completions', upstreamPath: '/chat/completions' },
  '/v1/responses': { format: 'openai', api: 'responses', upstreamPath: '/responses' },
  '/v1/embeddings': { format: 'openai', api: 'embeddings', upstreamPath: '/embeddings' },
  '/v1/messages': { format: 'anthropic', api: 'messages', upstreamPath: '/messages' },
};

const MAX_BODY = 16 * 1024 * 1024;
const KEY_TTL_MS = 15_000;
const ROUTE_TTL_MS = 2_000;
const UPSTREAM_TIMEOUT_MS = 120_000;
/** Response headers passed back to the sandbox; everything else (cookies, hop-by-hop) stays behind. */
const PASS_HEADERS = ['content-type', 'cache-control', 'x-request-id', 'openai-processing-ms', 'request-id', 'anthropic-ratelimit-requests-remaining'];

export interface ProxyDeps {
  db: Db;
  /** Keys and routes are cached only while it is live; its changes drop them (docs/adr/0009-replica-coordination.md). */
  events: EventChannel;
  log: Logger;
  tokens: SandboxTokens;
  providers: ProviderService;
  credentials: CredentialService;
  budgets: Budgets;
  prices: PriceTable;
  usage: UsageWriter;
  upstreams: Upstreams;
  metrics: BrokerMetrics;
  /** The platform's default provider, for tenants without one of their own. */
  platformProvider?: PlatformProvider;
  /** The task a call belongs to, from the tag in its system text (src/broker/task-tag.ts). */
  taskTags?: TaskTags;
  /** Refuses scheduled (heartbeat, cron) calls beyond the tenant's caps (src/governance/scheduled.ts). */
  scheduledCaps?: ScheduledAdmission;
}

/** Admits a model call or throws BudgetExceededError naming the cap it is beyond. */
export interface ScheduledAdmission {
  admit(tenantId: string, agent: string, body: Record<string, unknown>): Promise<unknown>;
}

interface Call {
  identity: SandboxIdentity;
  format: ApiFormat;
  api: string;
  upstreamPath: string;
  body: Record<string, unknown>;
  stream: boolean;
  agent: string;
  taskId: string | null;
  started: number;
  /** What the call used, settled against the budgets when it ends. */
  spent: { tokens: number; cost: number };
}

/**
 * The LLM proxy (issue 5, item 2): authenticates the sandbox, picks provider and model from the tenant's
 * routes (agent override, then tenant default; fallbacks on 429, 5xx and timeouts), checks budgets,
 * decrypts the key just in time, forwards, streams the answer back chunk by chunk and meters it.
 * Written on node:http rather than the API framework: it is a hot path whose bodies pass through as
 * bytes, and the benchmark holds it to ≤ 1 ms added latency.
 */
export class BrokerProxy {
  private readonly d: ProxyDeps;
  private readonly keys = new Map<string, { value: string; at: number }>();
  private readonly keyLoads = new Map<string, Promise<string>>();
  private readonly lastRefusalAudit = new Map<string, number>();
  private readonly routes = new Map<string, { at: number; targets: ResolvedTarget[] }>();

  constructor(deps: ProxyDeps) {
    this.d = deps;
    deps.events.on('credential.changed', ({ credentialId }) => this.forgetCredential(credentialId));
    deps.events.on('routes.changed', ({ tenantId }) => this.forgetRoutes(tenantId ?? undefined));
    deps.events.onReset(() => {
      this.keys.clear();
      this.routes.clear();
    });
  }

  /** Drops a cached key at once (called when a credential is revoked or replaced). */
  forgetCredential(credentialId: string): void {
    if (credentialId === PLATFORM_CREDENTIAL) {
      for (const k of this.keys.keys()) if (k.startsWith(`${PLATFORM_CREDENTIAL}/`)) this.keys.delete(k);
    } else this.keys.delete(credentialId);
  }

  /** Handles one request. `boundTo` is the sandbox start a per-sandbox socket belongs to. */
  async handle(req: IncomingMessage, res: ServerResponse, boundTo?: string): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const route = ROUTES[path];
    const format: ApiFormat = route?.format ?? (req.headers['anthropic-version'] ? 'anthropic' : 'openai');
    const identity = await this.authenticate(req);
    if (!identity || (boundTo !== undefined && identity.id !== boundTo)) {
      sendApiError(res, format, 401, 'invalid_sandbox_token', 'This sandbox is not recognised: its broker token is missing, expired or revoked.');
      req.resume();
      return;
    }
    if (req.method === 'GET' && path === '/v1/models') {
      await this.models(identity, res);
      return;
    }
    if (!route || req.method !== 'POST') {
      sendApiError(res, format, 404, 'not_found', `The broker does not serve ${req.method} ${path}.`);
      req.resume();
      return;
    }
    let body: Record<string, unknown>;
    try {
      const raw = await readBody(req, MAX_BODY);
      const parsed: unknown = JSON.parse(raw.toString('utf8'));
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new SyntaxError('not an object');
      body = parsed as Record<string, unknown>;
    } catch (err) {
      const tooBig = (err as { code?: string }).code === 'ETOOBIG';
      sendApiError(
        res,
        format,
        tooBig ? 413 : 400,
        tooBig ? 'request_too_large' : 'invalid_json',
        tooBig ? `The request body is over ${MAX_BODY} bytes.` : 'The request body must be a JSON object.',
      );
      return;
    }
    const model = typeof body['model'] === 'string' ? body['model'] : '';
    const agent = model.startsWith('agent/') ? model.slice('agent/'.length) : (header(req, 'x-clawplane-agent') ?? '');
    const call: Call = {
      identity,
      format,
      api: route.api,
      upstreamPath: route.upstreamPath,
      body,
      stream: body['stream'] === true,
      agent,
      // Only a tag with a valid MAC names the task: a header or a tag a sandbox writes itself cannot.
      taskId: this.d.taskTags?.take(identity.tenantId, body) ?? null,
      started: performance.now(),
      spent: { tokens: 0, cost: 0 },
    };
    await this.forward(call, req, res);
  }

  private async authenticate(req: IncomingMessage): Promise<SandboxIdentity | undefined> {
    const auth = header(req, 'authorization');
    const token = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : header(req, 'x-api-key');
    if (!token) return undefined;
    return this.d.tokens.resolve(token);
  }

  private async models(identity: SandboxIdentity, res: ServerResponse): Promise<void> {
    const r = await this.d.db.query<{ scope_name: string }>(
      `SELECT DISTINCT scope_name FROM model_routes WHERE tenant_id = $1 AND scope = 'agent' ORDER BY scope_name`,
      [identity.tenantId],
    );
    const ids = ['auto', ...r.rows.map((x) => `agent/${x.scope_name}`)];
    const text = JSON.stringify({ object: 'list', data: ids.map((id) => ({ id, object: 'model', created: 0, owned_by: 'clawplane' })) });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
    res.end(text);
  }

  private async forward(call: Call, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { identity, format } = call;
    const tenant = identity.tenantId;
    spanAttributes({
      'clawplane.tenant_id': tenant,
      'clawplane.instance_id': identity.instanceId,
      'clawplane.api': call.api,
      'clawplane.agent': call.agent,
      ...(call.taskId ? { 'clawplane.task_id': call.taskId } : {}),
    });
    const targets = (await this.route(tenant, call.agent)).filter((t) => compatible(t, format));
    if (targets.length === 0) {
      this.d.metrics.refusals.inc({ tenant, limit: 'no_route' });
      sendApiError(
        res,
        format,
        400,
        'no_model_route',
        `No ${format === 'anthropic' ? 'Anthropic' : 'OpenAI-compatible'} provider is configured for ${call.agent ? `agent "${call.agent}"` : 'this tenant'}. A tenant admin must add a provider and set a model route.`,
      );
      return;
    }
    let hold: BudgetHold;
    try {
      await this.d.scheduledCaps?.admit(tenant, call.agent, call.body);
      hold = await this.d.budgets.admit(tenant, call.agent, call.taskId);
    } catch (err) {
      if (!(err instanceof BudgetExceededError)) throw err;
      this.d.metrics.refusals.inc({ tenant, limit: err.limit });
      this.record(call, undefined, { status: 429, outcome: 'refused', input: 0, output: 0, cost: 0 });
      await this.auditRefusal(call, err);
      const retry = err.details?.['retryAfterSeconds'];
      sendApiError(res, format, 429, err.limit, err.message, typeof retry === 'number' ? retry : undefined);
      return;
    }
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    try {
      for (const [i, target] of targets.entries()) {
        const last = i === targets.length - 1;
        const outcome = await this.tryTarget(call, target, last, res, abort.signal);
        if (outcome === 'done') return;
      }
    } finally {
      // After the answer went out: the caller does not wait for the settlement.
      await hold.settle(call.spent.tokens, call.spent.cost);
      void req;
    }
  }

  /** One provider attempt. 'fallback' means: nothing was sent to the client, try the next target. */
  private async tryTarget(call: Call, target: ResolvedTarget, last: boolean, res: ServerResponse, signal: AbortSignal): Promise<'done' | 'fallback'> {
    const { identity, format } = call;
    const tenant = identity.tenantId;
    let key: string | undefined;
    try {
      key = target.credentialId ? await this.key(tenant, target.credentialId, identity, target.providerId) : undefined;
    } catch (err) {
      this.d.log.warn({ tenant_id: tenant, provider: target.providerId, err: (err as Error).message }, 'broker: provider credential unusable');
      if (!last) return 'fallback';
      sendApiError(
        res,
        format,
        503,
        'credential_unavailable',
        "The provider's API key is revoked, expired or unreadable. A tenant admin must attach a valid credential.",
      );
      this.record(call, target, { status: 503, outcome: 'upstream_error', input: 0, output: 0, cost: 0 });
      return 'done';
    }
    const body: Record<string, unknown> = { ...call.body, model: target.model };
    if (call.stream && call.api === 'chat.completions') {
      // Ask for the usage chunk at the end of the stream, so streamed calls are metered too.
      const so = typeof body['stream_options'] === 'object' && body['stream_options'] !== null ? (body['stream_options'] as Record<string, unknown>) : {};
      body['stream_options'] = { ...so, include_usage: true };
    }
    const headers: Record<string, string> = {
      ...providerAuthHeaders(target.kind, key),
      'content-type': 'application/json',
      accept: call.stream ? 'text/event-stream' : 'application/json',
    };
    const t0 = performance.now();
    let upstream;
    try {
      upstream = await this.d.upstreams.request(`${target.baseUrl.replace(/\/+$/, '')}${call.upstreamPath}`, {
        method: 'POST',
        headers,
        body: Buffer.from(JSON.stringify(body)),
        timeoutMs: UPSTREAM_TIMEOUT_MS,
        signal,
      });
    } catch (err) {
      if (signal.aborted) {
        this.record(call, target, { status: 499, outcome: 'client_aborted', input: 0, output: 0, cost: 0 });
        return 'done';
      }
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      this.record(call, target, { status: 502, outcome: last ? 'upstream_error' : 'fallback', input: 0, output: 0, cost: 0 });
      if (!last) return 'fallback';
      sendApiError(res, format, 502, 'provider_unreachable', `The model provider could not be reached (${why}).`);
      return 'done';
    }
    this.d.metrics.upstreamLatency.observe({ provider_kind: target.kind }, (performance.now() - t0) / 1000);
    const status = upstream.statusCode ?? 502;
    if (!last && (status === 429 || status >= 500)) {
      upstream.resume();
      this.record(call, target, { status, outcome: 'fallback', input: 0, output: 0, cost: 0 });
      return 'fallback';
    }
    const out: Record<string, string> = {};
    for (const h of PASS_HEADERS) {
      const v = upstream.headers[h];
      if (typeof v === 'string') out[h] = v;
    }
    res.writeHead(status, out);
    res.flushHeaders();
    const sniff = new UsageSniffer(call.stream);
    let broken = false;
    try {
      for await (const chunk of upstream as AsyncIterable<Buffer>) {
        sniff.push(chunk);
        // Forward each chunk as it arrives; respect back-pressure from a slow client.
        if (!res.write(chunk) && !res.destroyed) await new Promise<void>((r) => res.once('drain', r).once('close', r));
        if (res.destroyed) break;
      }
    } catch {
      broken = true;
    }
    const aborted = signal.aborted || res.destroyed;
    const { input, output } = sniff.usage();
    const price = await this.d.prices.find(target.model);
    const cost = costOf(price, input, output);
    call.spent.tokens += input + output;
    call.spent.cost += cost;
    // Metered before the last byte goes out, so a caller that saw the end can rely on the row existing.
    this.record(call, target, { status, outcome: aborted ? 'client_aborted' : status < 400 && !broken ? 'ok' : 'upstream_error', input, output, cost });
    if (broken) res.destroy();
    else res.end();
    return 'done';
  }

  /**
   * The tenant's route for an agent, cached for ROUTE_TTL_MS: one database round trip per call was the
   * largest cost on the hot path. A route or provider change anywhere drops it at once (`routes.changed`).
   */
  private async route(tenantId: string, agent: string): Promise<ResolvedTarget[]> {
    const k = `${tenantId}/${agent}`;
    const live = this.d.events.live;
    const epoch = this.d.events.epoch;
    const hit = live ? this.routes.get(k) : undefined;
    if (hit && Date.now() - hit.at < ROUTE_TTL_MS) return hit.targets;
    let targets = await this.d.providers.resolveRoute(tenantId, agent ? { agent } : {});
    if (targets.length === 0 && this.d.platformProvider) {
      const fallback = await this.d.platformProvider.target();
      if (fallback) targets = [fallback];
    }
    if (live && epoch === this.d.events.epoch && this.d.events.live) this.routes.set(k, { at: Date.now(), targets });
    return targets;
  }

  /** Drops cached routes of a tenant (after its providers or routes change), or of all tenants. */
  forgetRoutes(tenantId?: string): void {
    if (tenantId === undefined) this.routes.clear();
    else for (const k of this.routes.keys()) if (k.startsWith(`${tenantId}/`)) this.routes.delete(k);
  }

  private async key(tenantId: string, credentialId: string, identity: SandboxIdentity, providerId: string): Promise<string> {
    const cacheKey = credentialId === PLATFORM_CREDENTIAL ? `${PLATFORM_CREDENTIAL}/${tenantId}` : credentialId;
    // A revoked or replaced credential anywhere drops it here at once (`credential.changed`); nothing is
    // kept while the event channel is down.
    const live = this.d.events.live;
    const epoch = this.d.events.epoch;
    const keep = (value: string) => {
      if (live && epoch === this.d.events.epoch && this.d.events.live) this.keys.set(cacheKey, { value, at: Date.now() });
    };
    const hit = live ? this.keys.get(cacheKey) : undefined;
    if (hit && Date.now() - hit.at < KEY_TTL_MS) return hit.value;
    // Concurrent calls with a cold cache share one decrypt (each is an audited transaction): a burst of
    // calls would otherwise take every pooled connection at once.
    const loading = this.keyLoads.get(cacheKey);
    if (loading) return loading;
    const p = this.loadKey(tenantId, credentialId, identity, providerId, keep).finally(() => this.keyLoads.delete(cacheKey));
    this.keyLoads.set(cacheKey, p);
    return p;
  }

  private async loadKey(tenantId: string, credentialId: string, identity: SandboxIdentity, providerId: string, keep: (value: string) => void): Promise<string> {
    if (credentialId === PLATFORM_CREDENTIAL) {
      if (!this.d.platformProvider) throw new Error('no platform provider');
      const value = await this.d.platformProvider.key(tenantId, `sandbox:${identity.id}`);
      keep(value);
      return value;
    }
    // Each decrypt is audited by the credential service (actor = this sandbox start, purpose = the provider).
    const c = await this.d.credentials.decryptForBroker(tenantId, credentialId, { actor: `sandbox:${identity.id}`, purpose: `llm:${providerId}` });
    keep(c.value);
    return c.value;
  }

  private record(
    call: Call,
    target: ResolvedTarget | undefined,
    r: { status: number; outcome: UsageRow['outcome']; input: number; output: number; cost: number },
  ): void {
    const tenant = call.identity.tenantId;
    this.d.usage.record({
      tenantId: tenant,
      instanceId: call.identity.instanceId,
      sandboxToken: call.identity.id,
      agent: call.agent,
      taskId: call.taskId,
      providerId: target && target.providerId !== PLATFORM_CREDENTIAL ? target.providerId : null,
      providerKind: target?.kind ?? null,
      model: target?.model ?? (typeof call.body['model'] === 'string' ? call.body['model'].slice(0, 200) : ''),
      api: call.api,
      inputTokens: r.input,
      outputTokens: r.output,
      costUsd: r.cost,
      latencyMs: Math.round(performance.now() - call.started),
      status: r.status,
      outcome: r.outcome,
    });
    this.d.metrics.requests.inc({ tenant, api: call.api, outcome: r.outcome });
    if (r.input) this.d.metrics.tokens.inc({ tenant, direction: 'input' }, r.input);
    if (r.output) this.d.metrics.tokens.inc({ tenant, direction: 'output' }, r.output);
    if (r.cost) this.d.metrics.cost.inc({ tenant }, r.cost);
  }

  /**
   * Embeddings for the control plane's own use (knowledge search, docs/adr/0007-knowledge-search.md): the
   * same budgets, key handling, egress and metering as a sandbox's /v1/embeddings call, but one target
   * only — a fallback model's vectors cannot be compared with the primary's, so there is no fallback.
   * Throws BudgetExceededError when a cap refuses, ClawplaneError `embeddings_failed` when the provider does.
   */
  async embed(
    tenantId: string,
    target: ResolvedTarget,
    input: string[],
    ctx: { actor: string; agent: string; taskId: string | null },
  ): Promise<{ vectors: number[][]; inputTokens: number }> {
    const started = performance.now();
    const meter = (status: number, outcome: UsageRow['outcome'], tokens: number, cost: number) =>
      this.d.usage.record({
        tenantId,
        instanceId: null,
        sandboxToken: null,
        agent: ctx.agent,
        taskId: ctx.taskId,
        providerId: target.providerId !== PLATFORM_CREDENTIAL ? target.providerId : null,
        providerKind: target.kind,
        model: target.model,
        api: 'embeddings',
        inputTokens: tokens,
        outputTokens: 0,
        costUsd: cost,
        latencyMs: Math.round(performance.now() - started),
        status,
        outcome,
      });
    let hold: BudgetHold;
    try {
      hold = await this.d.budgets.admit(tenantId, ctx.agent, ctx.taskId);
    } catch (err) {
      if (err instanceof BudgetExceededError) meter(429, 'refused', 0, 0);
      throw err;
    }
    let spent = { tokens: 0, cost: 0 };
    const fail = (why: string) =>
      new ClawplaneError('embeddings_failed', 502, `The embeddings provider failed (${why}). Search falls back to words until it answers again.`);
    try {
      let key: string | undefined;
      try {
        key = target.credentialId ? await this.embedKey(tenantId, target.credentialId, ctx.actor, target.providerId) : undefined;
      } catch {
        meter(503, 'upstream_error', 0, 0);
        throw fail("the provider's API key is revoked, expired or unreadable");
      }
      const headers = { ...providerAuthHeaders(target.kind, key), 'content-type': 'application/json', accept: 'application/json' };
      let upstream;
      try {
        upstream = await this.d.upstreams.request(`${target.baseUrl.replace(/\/+$/, '')}/embeddings`, {
          method: 'POST',
          headers,
          body: Buffer.from(JSON.stringify({ model: target.model, input })),
          timeoutMs: UPSTREAM_TIMEOUT_MS,
          signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
        });
      } catch (err) {
        meter(502, 'upstream_error', 0, 0);
        throw fail((err as NodeJS.ErrnoException).code ?? 'unreachable');
      }
      const chunks: Buffer[] = [];
      for await (const c of upstream as AsyncIterable<Buffer>) chunks.push(c);
      const status = upstream.statusCode ?? 502;
      let body: { data?: { index?: number; embedding?: unknown }[]; usage?: { prompt_tokens?: number } } | undefined;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
      } catch {
        body = undefined;
      }
      const tokens = num(body?.usage?.prompt_tokens) ?? 0;
      const cost = costOf(await this.d.prices.find(target.model), tokens, 0);
      spent = { tokens, cost };
      const data = status < 400 && Array.isArray(body?.data) ? body.data : undefined;
      const vectors: number[][] = [];
      for (const [i, d] of (data ?? []).entries()) {
        const v = d.embedding;
        if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isFinite(x)))
          vectors[typeof d.index === 'number' ? d.index : i] = v as number[];
      }
      if (!data || vectors.length !== input.length || vectors.some((v) => v === undefined)) {
        meter(status < 400 ? 502 : status, 'upstream_error', tokens, cost);
        throw fail(status < 400 ? 'an answer without one vector per input' : `HTTP ${status}`);
      }
      meter(status, 'ok', tokens, cost);
      return { vectors, inputTokens: tokens };
    } finally {
      await hold.settle(spent.tokens, spent.cost);
    }
  }

  /**
   * One chat completion for the control plane's own use (conversation summaries, docs/adr/0007): the
   * tenant's targets in route order (the next one when a provider fails), with the same budgets, key
   * handling, egress guard and metering (`api = 'summaries'`) as a sandbox's model call. Not streamed.
   * Throws BudgetExceededError when a cap refuses, ClawplaneError `completion_failed` when every target fails.
   */
  async complete(
    tenantId: string,
    targets: ResolvedTarget[],
    o: { system: string; user: string; maxTokens: number },
    ctx: { actor: string; agent: string; taskId: string | null },
  ): Promise<{ text: string; model: string }> {
    let hold: BudgetHold;
    const started = performance.now();
    const meter = (target: ResolvedTarget, status: number, outcome: UsageRow['outcome'], input: number, output: number, cost: number) =>
      this.d.usage.record({
        tenantId,
        instanceId: null,
        sandboxToken: null,
        agent: ctx.agent,
        taskId: ctx.taskId,
        providerId: target.providerId !== PLATFORM_CREDENTIAL ? target.providerId : null,
        providerKind: target.kind,
        model: target.model,
        api: 'summaries',
        inputTokens: input,
        outputTokens: output,
        costUsd: cost,
        latencyMs: Math.round(performance.now() - started),
        status,
        outcome,
      });
    try {
      hold = await this.d.budgets.admit(tenantId, ctx.agent, ctx.taskId);
    } catch (err) {
      if (err instanceof BudgetExceededError && targets[0]) meter(targets[0], 429, 'refused', 0, 0, 0);
      throw err;
    }
    const spent = { tokens: 0, cost: 0 };
    const why: string[] = [];
    try {
      for (const target of targets) {
        const anthropic = target.kind === 'anthropic';
        let key: string | undefined;
        try {
          key = target.credentialId ? await this.embedKey(tenantId, target.credentialId, ctx.actor, target.providerId) : undefined;
        } catch {
          meter(target, 503, 'upstream_error', 0, 0, 0);
          why.push(`${target.model}: the API key is revoked, expired or unreadable`);
          continue;
        }
        const body = anthropic
          ? { model: target.model, max_tokens: o.maxTokens, system: o.system, messages: [{ role: 'user', content: o.user }] }
          : {
              model: target.model,
              max_tokens: o.maxTokens,
              stream: false,
              messages: [
                { role: 'system', content: o.system },
                { role: 'user', content: o.user },
              ],
            };
        let status = 502;
        let parsed: Record<string, unknown> | undefined;
        try {
          const upstream = await this.d.upstreams.request(`${target.baseUrl.replace(/\/+$/, '')}${anthropic ? '/messages' : '/chat/completions'}`, {
            method: 'POST',
            headers: { ...providerAuthHeaders(target.kind, key), 'content-type': 'application/json', accept: 'application/json' },
            body: Buffer.from(JSON.stringify(body)),
            timeoutMs: UPSTREAM_TIMEOUT_MS,
            signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
          });
          const chunks: Buffer[] = [];
          for await (const c of upstream as AsyncIterable<Buffer>) chunks.push(c);
          status = upstream.statusCode ?? 502;
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        } catch (err) {
          if (!parsed) {
            meter(target, status, 'upstream_error', 0, 0, 0);
            why.push(`${target.model}: ${(err as NodeJS.ErrnoException).code ?? (status === 502 ? 'unreachable' : `HTTP ${status}`)}`);
            continue;
          }
        }
        const usage = (parsed?.['usage'] ?? {}) as Record<string, unknown>;
        const input = num(anthropic ? usage['input_tokens'] : usage['prompt_tokens']) ?? 0;
        const output = num(anthropic ? usage['output_tokens'] : usage['completion_tokens']) ?? 0;
        const cost = costOf(await this.d.prices.find(target.model), input, output);
        spent.tokens += input + output;
        spent.cost += cost;
        const text = anthropic
          ? ((parsed?.['content'] ?? []) as { type?: string; text?: unknown }[])
              .map((b) => (b.type === 'text' && typeof b.text === 'string' ? b.text : ''))
              .join('')
          : (((parsed?.['choices'] ?? []) as { message?: { content?: unknown } }[])[0]?.message?.content ?? '');
        if (status >= 400 || typeof text !== 'string' || text.trim() === '') {
          meter(target, status < 400 ? 502 : status, 'upstream_error', input, output, cost);
          why.push(`${target.model}: ${status >= 400 ? `HTTP ${status}` : 'an answer without text'}`);
          continue;
        }
        meter(target, status, 'ok', input, output, cost);
        return { text: text.trim(), model: `${target.providerId}/${target.model}` };
      }
      throw new ClawplaneError('completion_failed', 502, `The model provider failed (${why.join('; ') || 'no target'}).`);
    } finally {
      await hold.settle(spent.tokens, spent.cost);
    }
  }

  private async embedKey(tenantId: string, credentialId: string, actor: string, providerId: string): Promise<string> {
    if (credentialId === PLATFORM_CREDENTIAL) {
      if (!this.d.platformProvider) throw new Error('no platform provider');
      return this.d.platformProvider.key(tenantId, actor);
    }
    const hit = this.keys.get(credentialId);
    if (hit && Date.now() - hit.at < KEY_TTL_MS) return hit.value;
    const c = await this.d.credentials.decryptForBroker(tenantId, credentialId, { actor, purpose: `embeddings:${providerId}` });
    this.keys.set(credentialId, { value: c.value, at: Date.now() });
    return c.value;
  }

  /** Budget refusals are audited, at most once a minute per tenant, agent and limit (a flood stays one row). */
  private async auditRefusal(call: Call, err: BudgetExceededError): Promise<void> {
    const k = `${call.identity.tenantId}/${call.agent}/${err.limit}`;
    const now = Date.now();
    if (now - (this.lastRefusalAudit.get(k) ?? 0) < 60_000) return;
    this.lastRefusalAudit.set(k, now);
    await this.d.db
      .tx((tx) =>
        appendAudit(tx, {
          actor: `sandbox:${call.identity.id}`,
          tenantId: call.identity.tenantId,
          action: 'broker.budget_refused',
          target: call.agent ? `agent:${call.agent}` : null,
          decision: 'deny',
          detail: { limit: err.limit, message: err.message, taskId: call.taskId },
        }),
      )
      .catch((e: unknown) => this.d.log.error({ err: (e as Error).message }, 'audit of a budget refusal failed'));
  }
}

/** Whether a provider can serve a request in this API format without translation. */
function compatible(t: ResolvedTarget, format: ApiFormat): boolean {
  if (format === 'anthropic') return t.kind === 'anthropic';
  if (t.kind === 'anthropic') return false;
  // Gemini speaks the OpenAI format only on its /openai endpoint.
  if (t.kind === 'gemini') return /\/openai\/?$/.test(t.baseUrl);
  return true;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.destroy();
        reject(Object.assign(new Error('too big'), { code: 'ETOOBIG' }));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * Reads token counts out of a response as it streams past, without holding it back: OpenAI's `usage`
 * (chat, responses, embeddings; in the final chunk of a stream) and Anthropic's message_start /
 * message_delta usage.
 */
export class UsageSniffer {
  private readonly stream: boolean;
  private carry = '';
  private whole: Buffer[] = [];
  private wholeSize = 0;
  private input = 0;
  private output = 0;

  constructor(stream: boolean) {
    this.stream = stream;
  }

  push(chunk: Buffer): void {
    if (!this.stream) {
      if (this.wholeSize < 4 * 1024 * 1024) {
        this.whole.push(chunk);
        this.wholeSize += chunk.length;
      }
      return;
    }
    const text = this.carry + chunk.toString('utf8');
    const lines = text.split('\n');
    this.carry = lines.pop() ?? '';
    for (const line of lines) this.line(line);
  }

  usage(): { input: number; output: number } {
    if (this.stream) {
      if (this.carry) this.line(this.carry);
      this.carry = '';
    } else if (this.whole.length) {
      try {
        this.take(JSON.parse(Buffer.concat(this.whole).toString('utf8')));
      } catch {
        // Not JSON (an upstream error page): nothing to meter.
      }
      this.whole = [];
    }
    return { input: this.input, output: this.output };
  }

  private line(line: string): void {
    const t = line.trim();
    if (!t.startsWith('data:')) return;
    const data = t.slice(5).trim();
    if (!data || data === '[DONE]' || !data.includes('_tokens')) return;
    try {
      this.take(JSON.parse(data));
    } catch {
      // A partial or non-JSON event line carries no usage.
    }
  }

  private take(obj: unknown): void {
    if (obj === null || typeof obj !== 'object') return;
    const o = obj as Record<string, unknown>;
    for (const u of [
      o['usage'],
      (o['response'] as Record<string, unknown> | undefined)?.['usage'],
      (o['message'] as Record<string, unknown> | undefined)?.['usage'],
    ]) {
      if (u === null || typeof u !== 'object') continue;
      const x = u as Record<string, unknown>;
      const inp = num(x['prompt_tokens']) ?? num(x['input_tokens']);
      const out = num(x['completion_tokens']) ?? num(x['output_tokens']);
      if (inp !== undefined) this.input = Math.max(this.input, inp);
      if (out !== undefined) this.output = Math.max(this.output, out);
    }
  }
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}
