import { createRoute, z } from '@hono/zod-openapi';
import type { App, RouteDeps } from '../app.ts';
import { allowPlatform } from '../auth.ts';
import { errorResponses, json, jsonBody } from '../schemas.ts';
import { AgentDefaultsSchema } from './onboarding.ts';
import { ClawplaneError } from '../../errors.ts';
import { PROVIDER_KINDS, type ConnectionTestResult } from '../../vault/providers.ts';

export const OidcSettingsInput = z
  .strictObject({
    enabled: z.boolean().default(true),
    issuer: z.url().max(500),
    clientId: z.string().min(1).max(500),
    clientSecret: z.string().min(1).max(2000).optional().openapi({ description: 'Write-only; omit to keep the stored one' }),
    displayName: z.string().min(1).max(100).default('Single sign-on'),
    scopes: z.string().max(500).default('openid email profile'),
    tenantClaim: z.string().min(1).max(100).default('clawplane_tenants'),
    groupsClaim: z
      .string()
      .min(1)
      .max(100)
      .default('groups')
      .openapi({ description: "Claim listing the user's groups; tenants map groups to roles (a Tenant resource's spec.members)" }),
    allowInsecureHttp: z.boolean().default(false),
  })
  .openapi('OidcSettingsInput');

const OidcSettingsView = z
  .object({
    enabled: z.boolean(),
    issuer: z.string(),
    clientId: z.string(),
    clientSecretSet: z.boolean(),
    displayName: z.string(),
    scopes: z.string(),
    tenantClaim: z.string(),
    groupsClaim: z.string(),
    allowInsecureHttp: z.boolean(),
    redirectUri: z.string(),
  })
  .openapi('OidcSettings');

export const DefaultProviderInput = z
  .strictObject({
    kind: z.enum(PROVIDER_KINDS),
    baseUrl: z.url().max(500).optional().openapi({ description: "Omit for the provider's public API" }),
    apiKey: z.string().min(1).max(4000).optional().openapi({ description: 'Write-only; omit to keep the stored key' }),
    defaultModel: z.string().min(1).max(200),
  })
  .openapi('DefaultProviderInput');

export const ConnectionTest = z
  .object({
    ok: z.boolean(),
    modelCount: z.number().optional(),
    models: z.array(z.string()).optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    latencyMs: z.number(),
  })
  .openapi('ConnectionTest');

/** A provider that failed its connection test is not saved; the error says why (never with the key). */
export class ProviderTestFailedError extends ClawplaneError {
  constructor(test: ConnectionTestResult) {
    super('provider_test_failed', 400, `The provider connection test failed, so nothing was saved: ${test.ok ? '' : test.error.message}`, {
      details: { test },
    });
  }
}

const DefaultProviderView = z
  .object({ kind: z.enum(PROVIDER_KINDS), name: z.string(), baseUrl: z.string(), defaultModel: z.string(), keySet: z.boolean() })
  .openapi('DefaultProvider');

export async function saveOidc(deps: RouteDeps<'oidc'>, body: z.infer<typeof OidcSettingsInput>, by: { actor: string; requestId: string }): Promise<void> {
  const { clientSecret, ...settings } = body;
  await deps.oidc.save(settings, clientSecret, by);
}

/** Platform settings a platform admin edits: OIDC and default agent settings. */
export function registerPlatform(app: App, deps: RouteDeps<'oidc' | 'onboarding' | 'platformProvider'>): void {
  const { oidc, onboarding } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/oidc',
      tags: ['platform'],
      summary: 'OIDC settings (the client secret is never returned)',
      responses: { 200: json(OidcSettingsView.nullable()), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      return c.json((await oidc.settings()) ?? null, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/platform/oidc',
      tags: ['platform'],
      summary: 'Save OIDC settings after checking the issuer answers',
      request: { body: jsonBody(OidcSettingsInput) },
      responses: { 200: json(OidcSettingsView), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      await saveOidc(deps, c.req.valid('json'), by);
      const s = await oidc.settings();
      if (!s) throw new Error('OIDC settings vanished after saving');
      return c.json(s, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/default-provider',
      tags: ['platform'],
      summary: "The platform's default LLM provider (never its key)",
      responses: { 200: json(DefaultProviderView.nullable()), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      return c.json((await deps.platformProvider.get()) ?? null, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/platform/default-provider',
      tags: ['platform'],
      summary: 'Set the default LLM provider for tenants without their own; saved only if its connection test passes',
      request: { body: jsonBody(DefaultProviderInput) },
      responses: { 200: json(z.object({ provider: DefaultProviderView, test: ConnectionTest })), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      const r = await deps.platformProvider.set(c.req.valid('json'), by);
      if (!r.saved) throw new ProviderTestFailedError(r.test);
      const provider = await deps.platformProvider.get();
      if (!provider) throw new Error('default provider vanished after saving');
      return c.json({ provider, test: r.test }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/agent-defaults',
      tags: ['platform'],
      summary: 'Default agent settings',
      responses: { 200: json(AgentDefaultsSchema), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      return c.json(await onboarding.agentDefaults(), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/platform/agent-defaults',
      tags: ['platform'],
      summary: 'Change the default agent settings',
      request: { body: jsonBody(AgentDefaultsSchema) },
      responses: { 200: json(AgentDefaultsSchema), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      const d = c.req.valid('json');
      await onboarding.setAgentDefaults(d, by);
      return c.json(d, 200);
    },
  );
}
