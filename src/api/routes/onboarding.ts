import { createRoute, z } from '@hono/zod-openapi';
import { ONBOARDING_STEPS } from '../../identity/onboarding.ts';
import { passwordProblem } from '../../identity/passwords.ts';
import { ConflictError, ValidationError } from '../../errors.ts';
import type { App, RouteDeps } from '../app.ts';
import { allowPlatform } from '../auth.ts';
import { Email, errorResponses, json, jsonBody } from '../schemas.ts';
import { startSession } from './auth.ts';
import { ConnectionTest, DefaultProviderInput, OidcSettingsInput, ProviderTestFailedError, saveOidc } from './platform.ts';

const State = z
  .object({
    complete: z.boolean(),
    steps: z.array(z.object({ name: z.enum(ONBOARDING_STEPS), status: z.enum(['pending', 'done', 'skipped']) })),
    next: z.enum(ONBOARDING_STEPS).nullable(),
    hint: z.string(),
  })
  .openapi('OnboardingState');

export const AgentDefaultsSchema = z
  .strictObject({
    agentName: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,31}$/, 'lowercase letters, digits and hyphens, starting with a letter')
      .default('main'),
    defaultModel: z.string().min(1).max(200).nullable().default(null),
    execPolicy: z.enum(['deny', 'ask']).default('deny').openapi({ description: 'Shell commands: denied, or only after a human approves' }),
    idleTimeoutMinutes: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 60)
      .default(30),
  })
  .openapi('AgentDefaults');

/** First-boot onboarding (issue 3): admin → OIDC (skippable) → LLM provider → default agent settings. */
export function registerOnboarding(app: App, deps: RouteDeps<'oidc' | 'onboarding' | 'platformProvider' | 'sessions' | 'users', 'secureCookies'>): void {
  const { onboarding, users } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/onboarding',
      tags: ['onboarding'],
      summary: 'Onboarding state and the next step',
      responses: { 200: json(State) },
    }),
    async (c) => c.json(await onboarding.state(), 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/onboarding/admin',
      tags: ['onboarding'],
      summary: 'Step 1: create the breakglass admin (needs the setup code from the data directory); signs you in',
      request: {
        body: jsonBody(
          z.strictObject({
            email: Email,
            password: z.string().min(1).max(256).openapi({ description: 'At least 12 characters' }),
            displayName: z.string().max(100).optional(),
            setupCode: z.string().min(1).max(100),
          }),
        ),
      },
      responses: { 200: json(z.object({ state: State, csrfToken: z.string() })), ...errorResponses },
    }),
    async (c) => {
      const body = c.req.valid('json');
      await onboarding.expect('admin');
      if (await users.breakglassExists()) throw new ConflictError('The breakglass admin already exists. Sign in instead.', 'admin_exists');
      const problem = passwordProblem(body.password);
      if (problem) throw new ValidationError(`The password ${problem}.`, [{ path: 'body.password', message: problem }]);
      await onboarding.checkSetupCode(body.setupCode);
      const by = { actor: 'onboarding', requestId: c.get('requestId') };
      const id = await users.createBreakglass(body, by);
      const state = await onboarding.finishAdminStep({ actor: `user:${id}`, requestId: by.requestId });
      const { csrfToken } = await startSession(c, deps, id);
      return c.json({ state, csrfToken }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/onboarding/oidc',
      tags: ['onboarding'],
      summary: 'Step 2: configure single sign-on, or {"skip": true}',
      request: { body: jsonBody(z.union([z.strictObject({ skip: z.literal(true) }), OidcSettingsInput])) },
      responses: { 200: json(State), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      await onboarding.expect('oidc');
      const body = c.req.valid('json');
      if ('skip' in body) return c.json(await onboarding.mark('oidc', 'skipped', by), 200);
      await saveOidc(deps, body, by);
      return c.json(await onboarding.mark('oidc', 'done', by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/onboarding/provider',
      tags: ['onboarding'],
      summary: 'Step 3: the platform\'s default LLM provider, saved only if its connection test passes; {"skip": true} leaves it for later',
      request: { body: jsonBody(z.union([z.strictObject({ skip: z.literal(true) }), DefaultProviderInput])) },
      responses: { 200: json(z.object({ state: State, test: ConnectionTest.optional() })), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      await onboarding.expect('provider');
      const body = c.req.valid('json');
      if ('skip' in body) return c.json({ state: await onboarding.mark('provider', 'skipped', by) }, 200);
      const r = await deps.platformProvider.set(body, by);
      if (!r.saved) throw new ProviderTestFailedError(r.test);
      return c.json({ state: await onboarding.mark('provider', 'done', by), test: r.test }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/onboarding/defaults',
      tags: ['onboarding'],
      summary: 'Step 4: default agent settings; completes onboarding',
      request: { body: jsonBody(AgentDefaultsSchema) },
      responses: { 200: json(State), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      await onboarding.expect('defaults');
      await onboarding.setAgentDefaults(c.req.valid('json'), by);
      return c.json(await onboarding.mark('defaults', 'done', by), 200);
    },
  );
}
