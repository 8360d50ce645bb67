import { createRoute, z } from '@hono/zod-openapi';
import type { App, AppDeps } from '../app.ts';
import { allowPlatform } from '../auth.ts';
import { errorResponses, json, jsonBody } from '../schemas.ts';
import { AgentDefaultsSchema } from './onboarding.ts';

export const OidcSettingsInput = z
  .strictObject({
    enabled: z.boolean().default(true),
    issuer: z.url().max(500),
    clientId: z.string().min(1).max(500),
    clientSecret: z.string().min(1).max(2000).optional().openapi({ description: 'Write-only; omit to keep the stored one' }),
    displayName: z.string().min(1).max(100).default('Single sign-on'),
    scopes: z.string().max(500).default('openid email profile'),
    tenantClaim: z.string().min(1).max(100).default('clawplane_tenants'),
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
    allowInsecureHttp: z.boolean(),
    redirectUri: z.string(),
  })
  .openapi('OidcSettings');

export async function saveOidc(deps: AppDeps, body: z.infer<typeof OidcSettingsInput>, by: { actor: string; requestId: string }): Promise<void> {
  const { clientSecret, ...settings } = body;
  await deps.services.oidc.save(settings, clientSecret, by);
}

/** Platform settings a platform admin edits: OIDC and default agent settings. */
export function registerPlatform(app: App, deps: AppDeps): void {
  const { oidc, onboarding } = deps.services;

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
    createRoute({ method: 'get', path: '/api/v1/platform/agent-defaults', tags: ['platform'], summary: 'Default agent settings', responses: { 200: json(AgentDefaultsSchema), ...errorResponses } }),
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
