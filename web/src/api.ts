/**
 * The console's typed client of /api/v1 (same origin, cookie session). Every write carries the session's
 * X-CSRF-Token, which the server hands out with sign-in, onboarding and /auth/me.
 *
 * The types are the server's: ./api.gen.ts is generated from its OpenAPI document (`npm run gen:api`;
 * test/api-types.test.ts fails when it is stale), and this file only names them. To change a shape,
 * change the route's zod schema in src/api/ and regenerate.
 */
import type { components, paths } from './api.gen.ts';

type Schemas = components['schemas'];
type Method = 'get' | 'put' | 'post' | 'patch' | 'delete';
/** The JSON a path's operation answers with (200). */
type Answer<P extends keyof paths, M extends Method> = paths[P][M] extends { responses: { 200: { content: { 'application/json': infer T } } } } ? T : never;
/** The JSON body a path's operation takes. */
type JsonBody<P extends keyof paths, M extends Method> = paths[P][M] extends { requestBody?: { content: { 'application/json': infer T } } } ? T : never;
/**
 * `true` when a runtime list names every member of a generated union and nothing else: a server enum
 * that gains or loses a value then fails `tsc -p web` at the list to update.
 */
type Lists<A extends readonly string[], U extends string> = [U] extends [A[number]] ? ([A[number]] extends [U] ? true : false) : false;
type Check<T extends true> = T;

export type TenantRole = Schemas['TenantRole'];

/** What every paged list takes (limit, cursor, sort, search); see docs/adr/0008-keyset-paging.md. */
export interface ListParams {
  limit?: number;
  cursor?: string | undefined;
  sort?: string;
  q?: string | undefined;
}
export type { Page } from './usePaged.ts';
import type { Page } from './usePaged.ts';
export const TENANT_ROLES = ['tenant_admin', 'member', 'viewer'] as const satisfies readonly TenantRole[];
type TenantRolesListed = Check<Lists<typeof TENANT_ROLES, TenantRole>>;

export type OnboardingStep = OnboardingState['steps'][number]['name'];
export type OnboardingState = Schemas['OnboardingState'];

export type User = Schemas['User'];
export type Me = Schemas['Me'];

export type AuthProviders = Answer<'/api/v1/auth/providers', 'get'>;

export type Quotas = Schemas['Quotas'];
export type Tenant = Schemas['Tenant'];

/** Computed per tenant by GET /api/v1/tenants: instances and the model usage metered since 00:00 UTC. */
export type TenantStats = Schemas['TenantStats'];
export type TenantListItem = Schemas['TenantListItem'];

export type Member = Schemas['Member'];

export type ApiToken = Schemas['ApiToken'];

export type CredentialType = Credential['type'];
export const CREDENTIAL_TYPES = ['api_key', 'oauth_token', 'bot_token', 'pat', 'secret'] as const satisfies readonly CredentialType[];
type CredentialTypesListed = Check<Lists<typeof CREDENTIAL_TYPES, CredentialType>>;
export type Credential = Schemas['Credential'];

export type SkillField = Skill['fields'][number];
export type Skill = Schemas['Skill'];

export type ProviderKind = Schemas['ProviderKind'];
/** The provider kinds the server knows (an enum: a select's value is cast to it). */
export type ProviderKindName = ProviderKind['kind'];
export type Provider = Schemas['Provider'];
export type RouteScope = ModelRoute['scope'];
export type RouteTarget = ModelRoute['targets'][number];
/** Which (provider, model) the broker tries, in order: the primary, then the fallbacks. */
export type ModelRoute = Schemas['ModelRoute'];
export type ConnectionTest = Schemas['ConnectionTest'];

export type OidcSettingsInput = Schemas['OidcSettingsInput'];
/** GET /api/v1/platform/oidc answers null until OIDC is configured. */
export type OidcSettings = NonNullable<Schemas['OidcSettings']>;

export type AgentDefaults = Schemas['AgentDefaults'];

/** An error answer of the API: `message` is written for people and is what the console shows. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | undefined;

  constructor(status: number, code: string, message: string, requestId?: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

let csrfToken: string | undefined;
const unauthenticatedListeners = new Set<() => void>();

/** Remembers the session's CSRF token (from sign-in, onboarding or /auth/me). */
export function setCsrfToken(token: string | undefined): void {
  csrfToken = token;
}

/** Called when a request answers 401: the session ended, the app goes back to the sign-in page. */
export function onUnauthenticated(fn: () => void): () => void {
  unauthenticatedListeners.add(fn);
  return () => unauthenticatedListeners.delete(fn);
}

/** One request to the API: JSON in and out, errors thrown as ApiError carrying the API's message. */
export async function request<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  } catch (err) {
    throw new ApiError(0, 'network', `Cannot reach the Clawplane server (${err instanceof Error ? err.message : String(err)}). Is it running?`);
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const e = (data ?? {}) as { code?: string; message?: string; requestId?: string };
    if (res.status === 401 && !path.startsWith('/api/v1/auth/')) for (const fn of unauthenticatedListeners) fn();
    throw new ApiError(res.status, e.code ?? `http_${res.status}`, e.message ?? `The server answered ${res.status} ${res.statusText}.`, e.requestId);
  }
  return data as T;
}

const t = (tenant: string) => `/api/v1/tenants/${encodeURIComponent(tenant)}`;

/** Every endpoint the console uses, one function each. */
export const api = {
  onboarding: {
    state: () => request<OnboardingState>('GET', '/api/v1/onboarding'),
    admin: (body: { email: string; password: string; displayName?: string; setupCode: string }) =>
      request<{ state: OnboardingState; csrfToken: string }>('POST', '/api/v1/onboarding/admin', body),
    oidc: (body: OidcSettingsInput | { skip: true }) => request<OnboardingState>('POST', '/api/v1/onboarding/oidc', body),
    provider: (body: { skip: true } | DefaultProviderInput) =>
      request<{ state: OnboardingState; test?: { ok: boolean; modelCount?: number; latencyMs: number } }>('POST', '/api/v1/onboarding/provider', body),
    defaults: (body: AgentDefaults) => request<OnboardingState>('POST', '/api/v1/onboarding/defaults', body),
  },
  auth: {
    providers: () => request<AuthProviders>('GET', '/api/v1/auth/providers'),
    login: (email: string, password: string) => request<Me>('POST', '/api/v1/auth/login', { email, password }),
    logout: () => request<{ ok: true }>('POST', '/api/v1/auth/logout'),
    me: () => request<Me>('GET', '/api/v1/auth/me'),
    /** A full-page navigation, not a fetch: the identity provider's pages must load in the window. */
    oidcStartUrl: (returnTo: string) => `/api/v1/auth/oidc/start?returnTo=${encodeURIComponent(returnTo)}`,
  },
  platform: {
    oidc: () => request<OidcSettings | null>('GET', '/api/v1/platform/oidc'),
    saveOidc: (body: OidcSettingsInput) => request<OidcSettings>('PUT', '/api/v1/platform/oidc', body),
    agentDefaults: () => request<AgentDefaults>('GET', '/api/v1/platform/agent-defaults'),
    saveAgentDefaults: (body: AgentDefaults) => request<AgentDefaults>('PUT', '/api/v1/platform/agent-defaults', body),
  },
  tenants: {
    list: (p: ListParams & { status?: Tenant['status'] } = {}) => request<Page<TenantListItem>>('GET', `/api/v1/tenants${query({ ...p })}`),
    get: (tenant: string) => request<Tenant>('GET', t(tenant)),
    create: (body: { slug: string; name: string; quotas?: Partial<Quotas> }) => request<Tenant>('POST', '/api/v1/tenants', body),
    update: (tenant: string, body: { name?: string; quotas?: Partial<Quotas> }) => request<Tenant>('PATCH', t(tenant), body),
    suspend: (tenant: string, reason?: string) => request<Tenant>('POST', `${t(tenant)}/suspend`, reason ? { reason } : {}),
    resume: (tenant: string) => request<Tenant>('POST', `${t(tenant)}/resume`, {}),
    remove: (tenant: string, confirm: string) => request<{ deleted: true }>('DELETE', `${t(tenant)}?confirm=${encodeURIComponent(confirm)}`),
  },
  members: {
    list: (tenant: string, p: ListParams & { role?: TenantRole } = {}) => request<Page<Member>>('GET', `${t(tenant)}/members${query({ ...p })}`),
    add: (tenant: string, body: { email: string; role: TenantRole; displayName?: string }) => request<Member>('POST', `${t(tenant)}/members`, body),
    changeRole: (tenant: string, userId: string, role: TenantRole) => request<Member>('PATCH', `${t(tenant)}/members/${userId}`, { role }),
    remove: (tenant: string, userId: string) => request<{ removed: true }>('DELETE', `${t(tenant)}/members/${userId}`),
  },
  tokens: {
    list: (tenant: string, p: ListParams & { status?: 'active' | 'revoked' | 'expired' } = {}) =>
      request<Page<ApiToken>>('GET', `${t(tenant)}/tokens${query({ ...p })}`),
    create: (tenant: string, body: { name: string; role: TenantRole; expiresInDays?: number }) =>
      request<{ token: string; info: ApiToken }>('POST', `${t(tenant)}/tokens`, body),
    revoke: (tenant: string, id: string) => request<ApiToken>('DELETE', `${t(tenant)}/tokens/${id}`),
  },
  skills: () => request<{ items: Skill[] }>('GET', '/api/v1/skills'),
  credentials: {
    list: (tenant: string, includeRevoked: boolean, p: ListParams = {}) =>
      request<Page<Credential>>('GET', `${t(tenant)}/credentials${query({ ...p, includeRevoked: String(includeRevoked) })}`),
    create: (tenant: string, body: { name: string; type: CredentialType; value: string; expiresAt?: string }) =>
      request<Credential>('POST', `${t(tenant)}/credentials`, body),
    connectSkill: (tenant: string, skill: string, body: { values: Record<string, string | string[]>; prefix?: string; expiresAt?: string }) =>
      request<{ items: Credential[] }>('POST', `${t(tenant)}/credentials/skills/${encodeURIComponent(skill)}`, body),
    replaceValue: (tenant: string, id: string, value: string) => request<Credential>('PUT', `${t(tenant)}/credentials/${id}/value`, { value }),
    revoke: (tenant: string, id: string) => request<Credential>('POST', `${t(tenant)}/credentials/${id}/revoke`),
  },
  providerKinds: () => request<{ items: ProviderKind[] }>('GET', '/api/v1/provider-kinds'),
  providers: {
    list: (tenant: string) => request<{ items: Provider[] }>('GET', `${t(tenant)}/providers`),
    create: (tenant: string, body: { kind: string; name: string; baseUrl?: string; credentialId?: string; defaultModel?: string }) =>
      request<Provider>('POST', `${t(tenant)}/providers`, body),
    update: (tenant: string, id: string, body: { enabled?: boolean; defaultModel?: string | null }) =>
      request<Provider>('PATCH', `${t(tenant)}/providers/${id}`, body),
    remove: (tenant: string, id: string) => request<{ deleted: true }>('DELETE', `${t(tenant)}/providers/${id}`),
    test: (tenant: string, id: string) => request<ConnectionTest>('POST', `${t(tenant)}/providers/${id}/test`),
    routes: (tenant: string) => request<{ items: ModelRoute[] }>('GET', `${t(tenant)}/model-routes`),
    /** Sets one route's ordered targets; [] removes it. `scopeName` only for agent and skill routes. */
    setRoute: (tenant: string, body: { scope: RouteScope; scopeName?: string; targets: RouteTarget[] }) =>
      request<ModelRoute>('PUT', `${t(tenant)}/model-routes`, body),
  },
};

/** The message to show for any thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The platform's default LLM provider, for tenants without their own (onboarding step 3). */
export type DefaultProviderInput = Schemas['DefaultProviderInput'];

// ---- Instances (issue 6) ----

export type InstanceStatus = Instance['status'];
/** Statuses the reconciler is still working on: the console polls while an instance is in one. */
export const TRANSITIONAL: readonly InstanceStatus[] = ['provisioning', 'upgrading', 'destroying'];
export type ExecutorHealth = InstanceHealth['executors'][number];
/** null on an instance whose health has not been checked yet. */
export type InstanceHealth = NonNullable<Schemas['InstanceHealth']>;
export type Instance = Schemas['Instance'];
export type InstanceEvent = Schemas['InstanceEvent'];
export type LogLine = Answer<'/api/v1/tenants/{tenant}/instances/{instanceId}/logs', 'get'>['items'][number];

// ---- Tool policy and broker governance (issue 5) ----

export type BaselinePolicy = Schemas['BaselinePolicy'];
export type PolicyRestriction = Schemas['PolicyRestriction'];
export type TenantPolicy = Schemas['TenantPolicy'];
export type PolicyDecision = Schemas['PolicyDecision'];
export type ToolContext = Schemas['PolicyExplainInput']['context'];
export type EffectiveTools = Schemas['EffectiveTools'];
export const TOOL_RISKS = ['low', 'medium', 'high', 'critical'] as const satisfies readonly Tool['risk'][];
type ToolRisksListed = Check<Lists<typeof TOOL_RISKS, Tool['risk']>>;
export type Tool = Schemas['Tool'];
export type BrokerLimit = Schemas['BrokerLimit'];
export type EgressHost = Schemas['EgressHost'];
export type SkillEndpoint = Schemas['SkillEndpoint'];
export type UsageRow = Schemas['UsageRow'];
export type ModelPrice = Schemas['ModelPrice'];

// ---- Audit ----

export type AuditEvent = Schemas['AuditEvent'];
/** The query of GET /api/v1/platform/audit (the tenant's audit takes the same, less tenantId). */
export type AuditFilters = NonNullable<paths['/api/v1/platform/audit']['get']['parameters']['query']>;
export type AuditPage = Answer<'/api/v1/platform/audit', 'get'>;
export type AuditVerification = Answer<'/api/v1/platform/audit/verify', 'get'>;

/** A control-plane replica sharing the database (GET /api/v1/platform/replicas). */
export type Replica = Schemas['Replica'];

/** GET /api/v1/platform/default-provider answers null until one is set. */
export type DefaultProvider = NonNullable<Schemas['DefaultProvider']>;

// ---- Chat (issue 7) ----

export type ChatSession = Schemas['ChatSession'];
export type ChatMessage = Schemas['ChatMessage'];

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

const inst = (tenant: string, id: string) => `${t(tenant)}/instances/${encodeURIComponent(id)}`;

// ---- Gateway configuration versions (docs/adr/0013) ----

export type GatewayConfigVersion = Schemas['GatewayConfigVersion'];
export type GatewayConfigRules = Schemas['GatewayConfigRules'];
export type GatewaySettings = Schemas['GatewayConfigChange']['settings'];

const gc = (tenant: string) => `${t(tenant)}/gateway-config`;

/** The endpoints of the APIs that landed after the first console (instances, governance, usage, audit, chat). */
export const api2 = {
  instances: {
    list: (tenant: string, p: ListParams & { status?: InstanceStatus } = {}) => request<Page<Instance>>('GET', `${t(tenant)}/instances${query({ ...p })}`),
    get: (tenant: string, id: string) => request<Instance>('GET', inst(tenant, id)),
    deploy: (tenant: string, body: { name: string; runtimeVersion?: string; executors?: number; start?: boolean }) =>
      request<Instance>('POST', `${t(tenant)}/instances`, body),
    op: (tenant: string, id: string, op: 'stop' | 'start' | 'restart' | 'suspend') => request<Instance>('POST', `${inst(tenant, id)}/${op}`),
    upgrade: (tenant: string, id: string, runtimeVersion: string) => request<Instance>('POST', `${inst(tenant, id)}/upgrade`, { runtimeVersion }),
    destroy: (tenant: string, id: string, deleteState: boolean) => request<Instance>('DELETE', `${inst(tenant, id)}?deleteState=${String(deleteState)}`),
    events: (tenant: string, id: string) => request<{ items: InstanceEvent[] }>('GET', `${inst(tenant, id)}/events`),
    health: (tenant: string, id: string) =>
      request<{ status: InstanceStatus; running: boolean; health: InstanceHealth | null; checkedAt: string }>('GET', `${inst(tenant, id)}/health`),
    logs: (tenant: string, id: string, tail = 200) => request<{ items: LogLine[] }>('GET', `${inst(tenant, id)}/logs?tail=${tail}`),
    /** The URL of the SSE log stream (EventSource, same-origin cookie). */
    followUrl: (tenant: string, id: string, tail = 200) => `${inst(tenant, id)}/logs?tail=${tail}&follow=true`,
  },
  policy: {
    baseline: () => request<{ policies: BaselinePolicy[] }>('GET', '/api/v1/policy/baseline'),
    tools: () => request<{ items: Tool[] }>('GET', '/api/v1/policy/tools'),
    saveTool: (name: string, body: Omit<Tool, 'name'>) => request<Tool>('PUT', `/api/v1/policy/tools/${encodeURIComponent(name)}`, body),
    get: (tenant: string) => request<TenantPolicy>('GET', `${t(tenant)}/policy`),
    save: (tenant: string, body: { execPolicy: 'deny' | 'ask'; policies: PolicyRestriction[] }) => request<TenantPolicy>('PUT', `${t(tenant)}/policy`, body),
    explain: (tenant: string, body: { tool: string; agent: string; context: ToolContext }) =>
      request<PolicyDecision>('POST', `${t(tenant)}/policy/explain`, body),
    effectiveTools: (tenant: string, agent: string) => request<EffectiveTools>('GET', `${t(tenant)}/policy/effective-tools?agent=${encodeURIComponent(agent)}`),
  },
  broker: {
    limits: (tenant: string) => request<{ items: BrokerLimit[] }>('GET', `${t(tenant)}/limits`),
    saveLimits: (tenant: string, items: BrokerLimit[]) => request<{ items: BrokerLimit[] }>('PUT', `${t(tenant)}/limits`, { items }),
    egress: (tenant: string) => request<{ items: EgressHost[] }>('GET', `${t(tenant)}/egress`),
    saveEgress: (tenant: string, items: EgressHost[]) => request<{ items: EgressHost[] }>('PUT', `${t(tenant)}/egress`, { items }),
    skillEndpoints: (tenant: string) => request<{ items: SkillEndpoint[] }>('GET', `${t(tenant)}/skill-endpoints`),
    putSkillEndpoint: (
      tenant: string,
      name: string,
      body: { baseUrl: string; credentialId: string | null; authStyle: 'bearer' | 'header'; headerName: string | null },
    ) => request<SkillEndpoint>('PUT', `${t(tenant)}/skill-endpoints/${encodeURIComponent(name)}`, body),
    removeSkillEndpoint: (tenant: string, name: string) => request<{ removed: true }>('DELETE', `${t(tenant)}/skill-endpoints/${encodeURIComponent(name)}`),
    usage: (tenant: string, days: number) => request<{ days: number; items: UsageRow[] }>('GET', `${t(tenant)}/usage?days=${days}`),
    prices: () => request<{ items: ModelPrice[] }>('GET', '/api/v1/platform/prices'),
    setPrice: (model: string, body: { inputUsdPerMtok: number; outputUsdPerMtok: number }) =>
      request<ModelPrice>('PUT', `/api/v1/platform/prices/${encodeURIComponent(model)}`, body),
  },
  replicas: {
    list: () => request<{ items: Replica[] }>('GET', '/api/v1/platform/replicas'),
  },
  gatewayConfig: {
    list: (tenant: string, p: { cursor?: string | undefined } = {}) => request<Page<GatewayConfigVersion>>('GET', `${gc(tenant)}/versions${query({ ...p })}`),
    propose: (tenant: string, body: { settings: GatewaySettings; reason: string }) => request<GatewayConfigVersion>('POST', `${gc(tenant)}/versions`, body),
    approve: (tenant: string, n: number) => request<GatewayConfigVersion>('POST', `${gc(tenant)}/versions/${n}/approve`, { comment: '' }),
    reject: (tenant: string, n: number, reason: string) => request<GatewayConfigVersion>('POST', `${gc(tenant)}/versions/${n}/reject`, { reason }),
    rollback: (tenant: string, n: number, reason: string) => request<GatewayConfigVersion>('POST', `${gc(tenant)}/versions/${n}/rollback`, { reason }),
    rules: (tenant: string) => request<GatewayConfigRules>('GET', `${gc(tenant)}/rules`),
  },
  audit: {
    tenant: (tenant: string, f: AuditFilters) => request<AuditPage>('GET', `${t(tenant)}/audit${query({ ...f, tenantId: undefined })}`),
    platform: (f: AuditFilters) => request<AuditPage>('GET', `/api/v1/platform/audit${query({ ...f })}`),
    verify: () => request<AuditVerification>('GET', '/api/v1/platform/audit/verify'),
  },
  defaultProvider: {
    get: () => request<DefaultProvider | null>('GET', '/api/v1/platform/default-provider'),
    save: (body: DefaultProviderInput) => request<{ provider: DefaultProvider; test: ConnectionTest }>('PUT', '/api/v1/platform/default-provider', body),
  },
  chat: {
    sessions: (tenant: string) => request<{ items: ChatSession[] }>('GET', `${t(tenant)}/chat/sessions`),
    messages: (tenant: string, sessionId: string) =>
      request<{ items: ChatMessage[] }>('GET', `${t(tenant)}/chat/sessions/${encodeURIComponent(sessionId)}/messages`),
    /**
     * Sends one message with stream=true and calls `onEvent` for each server-sent event (the OpenAI
     * chat.completion.chunk objects, and `clawplane.progress` events while a stopped instance wakes: the
     * console opts in to them with X-Clawplane-Progress; OpenAI clients get SSE comments instead).
     * Resolves with the session id the server answered in X-Clawplane-Session.
     */
    stream: async (
      tenant: string,
      body: { model: string; messages: { role: 'user' | 'assistant' | 'system'; content: string }[] },
      opts: { session?: string; instance?: string; signal?: AbortSignal },
      onEvent: (event: string, data: string) => void,
    ): Promise<{ session: string | null }> => {
      const headers: Record<string, string> = { accept: 'text/event-stream', 'content-type': 'application/json', 'x-clawplane-progress': 'events' };
      if (csrfToken) headers['x-csrf-token'] = csrfToken;
      if (opts.session) headers['x-clawplane-session'] = opts.session;
      if (opts.instance) headers['x-clawplane-instance'] = opts.instance;
      let res: Response;
      try {
        res = await fetch(`${t(tenant)}/chat/completions`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ ...body, stream: true }),
          credentials: 'same-origin',
          signal: opts.signal ?? null,
        });
      } catch (err) {
        throw new ApiError(0, 'network', `Cannot reach the Clawplane server (${messageOf(err)}).`);
      }
      if (!res.ok || !res.body) {
        let e: { code?: string; message?: string; requestId?: string } = {};
        try {
          // This route answers errors in OpenAI's shape: {error: {message, code, request_id}}.
          const b = (await res.json()) as typeof e & { error?: { code?: string; message?: string; request_id?: string } };
          e = b.error ? { code: b.error.code, message: b.error.message, requestId: b.error.request_id } : b;
        } catch {
          /* not JSON */
        }
        if (res.status === 401) for (const fn of unauthenticatedListeners) fn();
        throw new ApiError(res.status, e.code ?? `http_${res.status}`, e.message ?? `The server answered ${res.status} ${res.statusText}.`, e.requestId);
      }
      await readSse(res.body, onEvent);
      return { session: res.headers.get('x-clawplane-session') };
    },
  },
};

/** Reads a text/event-stream body, calling `onEvent(event, data)` per event ('message' when unnamed). */
export async function readSse(body: ReadableStream<Uint8Array>, onEvent: (event: string, data: string) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(event, data.join('\n'));
    }
  }
}

// ---- Tasks (issue 8) ----

export const TASK_STATUSES = [
  'queued',
  'dispatched',
  'executing',
  'waiting_approval',
  'delegated',
  'completed',
  'failed',
  'cancelled',
  'expired',
] as const satisfies readonly TaskStatus[];
type TaskStatusesListed = Check<Lists<typeof TASK_STATUSES, TaskStatus>>;
export type TaskStatus = Task['status'];
export const TASK_TERMINAL: readonly TaskStatus[] = ['completed', 'failed', 'cancelled', 'expired'];
export const PRIORITIES = ['low', 'normal', 'high', 'urgent'] as const satisfies readonly Priority[];
type PrioritiesListed = Check<Lists<typeof PRIORITIES, Priority>>;
export type Priority = Task['priority'];
export type Task = Schemas['Task'];
export type TaskApproval = Schemas['TaskApproval'];
export type TraceEvent = Schemas['TaskTraceEvent'];
export const AGENT_TYPES = ['chat', 'coding', 'research', 'shell', 'browser'] as const satisfies readonly AgentType[];
type AgentTypesListed = Check<Lists<typeof AGENT_TYPES, AgentType>>;
export type AgentType = Agent['agentType'];
/** Agent types the server classes as high risk (they run in the tenant's own tasks-high-risk sandbox). */
export const HIGH_RISK_AGENT_TYPES: readonly AgentType[] = ['shell', 'browser'];
export type Agent = Schemas['Agent'];
export type AgentInput = JsonBody<'/api/v1/tenants/{tenant}/agents', 'post'>;

export type ExecutorPool = Schemas['ExecutorPool'];

/** Executor pools (docs/adr/0014-executor-pools.md): per agent type, shards, pause/drain/resume. */
export const poolsApi = {
  list: (tenant: string) => request<{ items: ExecutorPool[] }>('GET', `${t(tenant)}/pools`),
  setState: (tenant: string, id: string, op: 'pause' | 'drain' | 'resume') =>
    request<ExecutorPool>('POST', `${t(tenant)}/pools/${encodeURIComponent(id)}/${op}`),
};

export const tasksApi = {
  list: (tenant: string, f: { status?: string; agent?: string; priority?: string; cursor?: string; limit?: number }) =>
    request<{ items: Task[]; nextCursor: string | null }>('GET', `${t(tenant)}/tasks${query(f)}`),
  get: (tenant: string, id: string) => request<Task>('GET', `${t(tenant)}/tasks/${encodeURIComponent(id)}`),
  create: (tenant: string, body: { input: string; agent?: string; capability?: string; priority: Priority }) =>
    request<Task>('POST', `${t(tenant)}/tasks`, body),
  approvals: (tenant: string, id: string) => request<{ items: TaskApproval[] }>('GET', `${t(tenant)}/tasks/${encodeURIComponent(id)}/approvals`),
  decide: (tenant: string, id: string, op: 'approve' | 'reject', body: { comment?: string; approvalId?: string }) =>
    request<{ task: Task; approvals: TaskApproval[] }>('POST', `${t(tenant)}/tasks/${encodeURIComponent(id)}/${op}`, body),
  cancel: (tenant: string, id: string, reason?: string) =>
    request<Task>('POST', `${t(tenant)}/tasks/${encodeURIComponent(id)}/cancel`, reason ? { reason } : {}),
  inbox: (tenant: string) => request<{ items: (TaskApproval & { taskInput: string })[] }>('GET', `${t(tenant)}/approvals`),
  agents: (tenant: string) => request<{ items: Agent[] }>('GET', `${t(tenant)}/agents`),
  createAgent: (tenant: string, body: AgentInput) => request<Agent>('POST', `${t(tenant)}/agents`, body),
  updateAgent: (tenant: string, id: string, body: Partial<Omit<AgentInput, 'name'>>) =>
    request<Agent>('PATCH', `${t(tenant)}/agents/${encodeURIComponent(id)}`, body),
  removeAgent: (tenant: string, id: string) => request<undefined>('DELETE', `${t(tenant)}/agents/${encodeURIComponent(id)}`),
  /** Where approval requests and decisions are posted; the URL only (the signing key is shown once, when set). */
  webhook: (tenant: string) => request<{ url: string | null }>('GET', `${t(tenant)}/approval-webhook`),
  setWebhook: (tenant: string, url: string) => request<{ url: string; signingKey: string }>('PUT', `${t(tenant)}/approval-webhook`, { url }),
  /** The task's trace as server-sent events (named `<step>.<kind>`, then `end`), read with fetch: EventSource cannot listen to every name. */
  follow: async (tenant: string, id: string, signal: AbortSignal, onEvent: (event: string, data: string) => void): Promise<void> => {
    const res = await fetch(`${t(tenant)}/tasks/${encodeURIComponent(id)}/events`, {
      headers: { accept: 'text/event-stream' },
      credentials: 'same-origin',
      signal,
    });
    if (!res.ok || !res.body) {
      const e = ((await res.json().catch(() => ({}))) ?? {}) as { code?: string; message?: string };
      throw new ApiError(res.status, e.code ?? `http_${res.status}`, e.message ?? `The server answered ${res.status}.`);
    }
    await readSse(res.body, onEvent);
  },
};

// Knowledge: agent memory and findings, searched by words and meaning.
export type Memory = Schemas['Memory'];
export type Finding = Schemas['Finding'];
export type MemoryInput = JsonBody<'/api/v1/tenants/{tenant}/memories', 'post'>;
export type FindingInput = JsonBody<'/api/v1/tenants/{tenant}/findings', 'post'>;
export type SearchMode = 'hybrid' | 'words' | 'meaning';
type Ranked = { mode: SearchMode | null; note: string | null; nextCursor: string | null };
export const knowledgeApi = {
  memories: (tenant: string, f: { q?: string; agent?: string; mode?: SearchMode; cursor?: string; limit?: number }) =>
    request<{ items: Memory[] } & Ranked>('GET', `${t(tenant)}/memories${query(f)}`),
  createMemory: (tenant: string, body: MemoryInput) => request<Memory>('POST', `${t(tenant)}/memories`, body),
  updateMemory: (tenant: string, id: number, body: { content?: string; importance?: number; expiresAt?: string | null }) =>
    request<Memory>('PATCH', `${t(tenant)}/memories/${id}`, body),
  removeMemory: (tenant: string, id: number) => request<undefined>('DELETE', `${t(tenant)}/memories/${id}`),
  findings: (tenant: string, f: { q?: string; tag?: string; mode?: SearchMode; cursor?: string; limit?: number }) =>
    request<{ items: Finding[] } & Ranked>('GET', `${t(tenant)}/findings${query(f)}`),
  createFinding: (tenant: string, body: FindingInput) => request<Finding>('POST', `${t(tenant)}/findings`, body),
  updateFinding: (tenant: string, id: string, body: { title?: string; body?: string; confidence?: number }) =>
    request<Finding>('PATCH', `${t(tenant)}/findings/${encodeURIComponent(id)}`, body),
  removeFinding: (tenant: string, id: string) => request<undefined>('DELETE', `${t(tenant)}/findings/${encodeURIComponent(id)}`),
};

// Lanes: projects, scheduled pipelines of agent steps, and their runs (docs/lanes.md).
export type Project = Schemas['Project'];
export type Lane = Schemas['Lane'];
export type LaneRun = Schemas['LaneRun'];
export type LaneRunStep = Schemas['LaneRunStep'];
export type ProjectInput = JsonBody<'/api/v1/tenants/{tenant}/projects', 'post'>;
export type LaneInput = JsonBody<'/api/v1/tenants/{tenant}/lanes', 'post'>;
export type LaneKind = Lane['kind'];
export const LANE_KINDS = ['health', 'analysis', 'content', 'browser', 'custom'] as const satisfies readonly LaneKind[];
type LaneKindsListed = Check<Lists<typeof LANE_KINDS, LaneKind>>;
export const LANE_RUN_ENDED: readonly LaneRun['status'][] = ['succeeded', 'failed', 'cancelled'];
export const lanesApi = {
  projects: (tenant: string) => request<{ items: Project[] }>('GET', `${t(tenant)}/projects`),
  createProject: (tenant: string, body: ProjectInput) => request<Project>('POST', `${t(tenant)}/projects`, body),
  removeProject: (tenant: string, id: string) => request<undefined>('DELETE', `${t(tenant)}/projects/${encodeURIComponent(id)}`),
  lanes: (tenant: string) => request<{ items: Lane[] }>('GET', `${t(tenant)}/lanes`),
  createLane: (tenant: string, body: LaneInput) => request<Lane>('POST', `${t(tenant)}/lanes`, body),
  updateLane: (tenant: string, id: string, body: Partial<Omit<LaneInput, 'name'>>) =>
    request<Lane>('PATCH', `${t(tenant)}/lanes/${encodeURIComponent(id)}`, body),
  removeLane: (tenant: string, id: string) => request<undefined>('DELETE', `${t(tenant)}/lanes/${encodeURIComponent(id)}`),
  runNow: (tenant: string, id: string) => request<LaneRun>('POST', `${t(tenant)}/lanes/${encodeURIComponent(id)}/runs`),
  runs: (tenant: string, f: { laneId?: string; status?: string; limit?: number }) => request<{ items: LaneRun[] }>('GET', `${t(tenant)}/lane-runs${query(f)}`),
  decide: (tenant: string, runId: string, step: number, op: 'approve' | 'reject', comment?: string) =>
    request<LaneRun>('POST', `${t(tenant)}/lane-runs/${encodeURIComponent(runId)}/steps/${step}/${op}`, comment ? { comment } : {}),
  cancel: (tenant: string, runId: string) => request<LaneRun>('POST', `${t(tenant)}/lane-runs/${encodeURIComponent(runId)}/cancel`, {}),
  setDoctorLane: (tenant: string, enabled: boolean) => request<Lane>('PUT', `${t(tenant)}/doctor-lane`, { enabled }),
};
