/**
 * The console's typed client of /api/v1 (same origin, cookie session). Shapes mirror the server's zod
 * schemas (GET /api/v1/openapi.json is the source of truth). Every write carries the session's
 * X-CSRF-Token, which the server hands out with sign-in, onboarding and /auth/me.
 */

export type TenantRole = 'tenant_admin' | 'member' | 'viewer';
export const TENANT_ROLES: readonly TenantRole[] = ['tenant_admin', 'member', 'viewer'];

export type OnboardingStep = 'admin' | 'oidc' | 'provider' | 'defaults';
export interface OnboardingState {
  complete: boolean;
  steps: { name: OnboardingStep; status: 'pending' | 'done' | 'skipped' }[];
  next: OnboardingStep | null;
  hint: string;
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
export interface Me {
  user: User;
  csrfToken: string;
}

export interface AuthProviders {
  local: boolean;
  oidc: { enabled: boolean; displayName: string };
}

export interface Quotas {
  maxInstances: number;
  maxConcurrentTasks: number;
  maxStorageBytes: number;
  dailyTokenBudget: number | null;
  dailyCostBudgetUsd: number | null;
}
export interface Tenant {
  id: string;
  slug: string;
  name: string;
  status: 'active' | 'suspended';
  quotas: Quotas;
  createdAt: string;
  updatedAt: string;
}

export interface Member {
  userId: string;
  email: string;
  displayName: string;
  role: TenantRole;
  source: 'manual' | 'oidc';
  createdAt: string;
}

export interface ApiToken {
  id: string;
  tenantId: string;
  name: string;
  role: TenantRole;
  /** The first characters of the token, to recognise it; never the token. */
  display: string;
  createdBy: string | null;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

export type CredentialType = 'api_key' | 'oauth_token' | 'bot_token' | 'pat' | 'secret';
export const CREDENTIAL_TYPES: readonly CredentialType[] = ['api_key', 'oauth_token', 'bot_token', 'pat', 'secret'];
export interface Credential {
  id: string;
  tenantId: string;
  name: string;
  type: CredentialType;
  skill: string | null;
  status: 'active' | 'expired' | 'revoked';
  metadata: Record<string, unknown>;
  /** The last 4 characters of the value; '' when the value is too short to hint at. */
  last4: string;
  version: number;
  expiresAt: string | null;
  expiresSoon: boolean;
  lastUsedAt: string | null;
  revokedAt: string | null;
  createdBy: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface SkillField {
  name: string;
  label: string;
  type: 'secret' | 'text' | 'list';
  secret: boolean;
  credentialType?: CredentialType;
  required: boolean;
  help?: string;
  pattern?: string;
  patternHint?: string;
}
export interface Skill {
  id: string;
  label: string;
  description: string;
  fields: SkillField[];
}

export interface ProviderKind {
  kind: string;
  label: string;
  defaultBaseUrl: string | null;
  keyRequired: boolean;
}
export interface Provider {
  id: string;
  tenantId: string;
  kind: string;
  name: string;
  baseUrl: string;
  credentialId: string | null;
  defaultModel: string | null;
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
}
export interface ConnectionTest {
  ok: boolean;
  modelCount?: number;
  models?: string[];
  error?: { code: string; message: string };
  latencyMs: number;
}

export interface OidcSettingsInput {
  enabled: boolean;
  issuer: string;
  clientId: string;
  clientSecret?: string;
  displayName: string;
  scopes: string;
  tenantClaim: string;
  allowInsecureHttp: boolean;
}
export interface OidcSettings extends Omit<OidcSettingsInput, 'clientSecret'> {
  clientSecretSet: boolean;
  redirectUri: string;
}

export interface AgentDefaults {
  agentName: string;
  defaultModel: string | null;
  execPolicy: 'deny' | 'ask';
  idleTimeoutMinutes: number;
}

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
    list: () => request<{ items: Tenant[] }>('GET', '/api/v1/tenants'),
    get: (tenant: string) => request<Tenant>('GET', t(tenant)),
    create: (body: { slug: string; name: string; quotas?: Partial<Quotas> }) => request<Tenant>('POST', '/api/v1/tenants', body),
    update: (tenant: string, body: { name?: string; quotas?: Partial<Quotas> }) => request<Tenant>('PATCH', t(tenant), body),
    suspend: (tenant: string, reason?: string) => request<Tenant>('POST', `${t(tenant)}/suspend`, reason ? { reason } : {}),
    resume: (tenant: string) => request<Tenant>('POST', `${t(tenant)}/resume`, {}),
    remove: (tenant: string, confirm: string) => request<{ deleted: true }>('DELETE', `${t(tenant)}?confirm=${encodeURIComponent(confirm)}`),
  },
  members: {
    list: (tenant: string) => request<{ items: Member[] }>('GET', `${t(tenant)}/members`),
    add: (tenant: string, body: { email: string; role: TenantRole; displayName?: string }) => request<Member>('POST', `${t(tenant)}/members`, body),
    changeRole: (tenant: string, userId: string, role: TenantRole) => request<Member>('PATCH', `${t(tenant)}/members/${userId}`, { role }),
    remove: (tenant: string, userId: string) => request<{ removed: true }>('DELETE', `${t(tenant)}/members/${userId}`),
  },
  tokens: {
    list: (tenant: string) => request<{ items: ApiToken[] }>('GET', `${t(tenant)}/tokens`),
    create: (tenant: string, body: { name: string; role: TenantRole; expiresInDays?: number }) => request<{ token: string; info: ApiToken }>('POST', `${t(tenant)}/tokens`, body),
    revoke: (tenant: string, id: string) => request<ApiToken>('DELETE', `${t(tenant)}/tokens/${id}`),
  },
  skills: () => request<{ items: Skill[] }>('GET', '/api/v1/skills'),
  credentials: {
    list: (tenant: string, includeRevoked: boolean) => request<{ items: Credential[] }>('GET', `${t(tenant)}/credentials?includeRevoked=${String(includeRevoked)}`),
    create: (tenant: string, body: { name: string; type: CredentialType; value: string; expiresAt?: string }) => request<Credential>('POST', `${t(tenant)}/credentials`, body),
    connectSkill: (tenant: string, skill: string, body: { values: Record<string, string | string[]>; prefix?: string; expiresAt?: string }) =>
      request<{ items: Credential[] }>('POST', `${t(tenant)}/credentials/skills/${encodeURIComponent(skill)}`, body),
    replaceValue: (tenant: string, id: string, value: string) => request<Credential>('PUT', `${t(tenant)}/credentials/${id}/value`, { value }),
    revoke: (tenant: string, id: string) => request<Credential>('POST', `${t(tenant)}/credentials/${id}/revoke`),
  },
  providerKinds: () => request<{ items: ProviderKind[] }>('GET', '/api/v1/provider-kinds'),
  providers: {
    list: (tenant: string) => request<{ items: Provider[] }>('GET', `${t(tenant)}/providers`),
    create: (tenant: string, body: { kind: string; name: string; baseUrl?: string; credentialId?: string; defaultModel?: string }) => request<Provider>('POST', `${t(tenant)}/providers`, body),
    update: (tenant: string, id: string, body: { enabled?: boolean; defaultModel?: string | null }) => request<Provider>('PATCH', `${t(tenant)}/providers/${id}`, body),
    remove: (tenant: string, id: string) => request<{ deleted: true }>('DELETE', `${t(tenant)}/providers/${id}`),
    test: (tenant: string, id: string) => request<ConnectionTest>('POST', `${t(tenant)}/providers/${id}/test`),
  },
};

/** The message to show for any thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The platform's default LLM provider, for tenants without their own (onboarding step 3). */
export interface DefaultProviderInput {
  kind: string;
  baseUrl?: string;
  apiKey?: string;
  defaultModel: string;
}
