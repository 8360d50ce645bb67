import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { Readable } from 'node:stream';
import { NotFoundError } from '../../errors.ts';
import type { ChatResult } from '../../ingress/ingress.ts';
import { chatInput, responsesInput } from '../../ingress/openai-input.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { jsonBody, TenantParam } from '../schemas.ts';
import { InstanceHeader } from './chat.ts';

/** OpenAI's error body, which these routes answer instead of Clawplane's own (api/openai-errors.ts). */
const OpenAiError = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string().openapi({ example: 'invalid_request_error' }),
      code: z.string().openapi({ description: "Clawplane's error code", example: 'validation_failed' }),
      param: z.string().nullable(),
      request_id: z.string(),
      details: z
        .record(z.string(), z.unknown())
        .optional()
        .openapi({ description: "Clawplane's details, e.g. {issues: [{path, message}]} naming each bad field" }),
    }),
  })
  .openapi('OpenAiError');
const errors = Object.fromEntries(
  (
    [
      [400, 'Invalid request'],
      [401, 'Not signed in'],
      [403, 'Not allowed'],
      [404, 'Not found (also: belongs to another tenant)'],
      [409, 'Conflict with the current state'],
    ] as const
  ).map(([s, d]) => [s, { description: d, content: { 'application/json': { schema: OpenAiError } } }]),
) as Record<400 | 401 | 403 | 404 | 409, { description: string; content: { 'application/json': { schema: typeof OpenAiError } } }>;

const TurnHeaders = InstanceHeader.extend({
  'x-clawplane-progress': z
    .enum(['events', 'comments'])
    .optional()
    .openapi({
      param: { name: 'x-clawplane-progress', in: 'header' },
      description:
        'While a stopped instance wakes, a stream carries SSE comments (": waking", ": ready"), which clients skip; "events" sends named `clawplane.progress` events instead (the console uses them)',
    }),
});
const TurnQuery = z.object({
  progress: z
    .enum(['events', 'comments'])
    .optional()
    .openapi({ param: { name: 'progress', in: 'query' }, description: 'Same as the X-Clawplane-Progress header' }),
});

const ModelSchema = z
  .object({ id: z.string().openapi({ example: 'agent/main' }), object: z.literal('model'), created: z.number().int(), owned_by: z.string() })
  .openapi('OpenAiModel');

const toResponse = (r: ChatResult) =>
  new Response(typeof r.body === 'string' ? r.body : (Readable.toWeb(r.body) as ReadableStream<Uint8Array>), { status: r.status, headers: r.headers });

/**
 * The tenant's OpenAI-compatible surface (docs/openai-compatible.md): base URL /api/v1/tenants/{tenant},
 * so the openai SDK, the AI SDK and LangChain work unchanged. Errors here are in OpenAI's shape.
 */
export function registerOpenAi(app: App, deps: RouteDeps<'gate' | 'ingress' | 'onboarding' | 'tenants'>): void {
  const { ingress, onboarding, tenants, gate } = deps;
  const admit = (c: Context<AppEnv>) =>
    gate.admit({ principal: c.get('principal'), tenant: c.get('tenant'), role: c.get('role'), requestId: c.get('requestId'), channel: 'chat' });

  // The agents a tenant may address: its gateways serve the platform's default agent (the reconciler
  // renders that one agent into every gateway's config), named as the chat route names it.
  const models = async (tenantId: string) => {
    const [defaults, t] = await Promise.all([onboarding.agentDefaults(), tenants.get(tenantId)]);
    return [{ id: `agent/${defaults.agentName}`, object: 'model' as const, created: Math.floor(Date.parse(t.createdAt) / 1000), owned_by: 'clawplane' }];
  };

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/chat/completions',
      tags: ['openai'],
      summary: 'OpenAI Chat Completions with an agent of the tenant\'s gateway (model "agent/<name>"); wakes a stopped instance; SSE with stream=true',
      request: { params: TenantParam, query: TurnQuery, headers: TurnHeaders, body: jsonBody(chatInput) },
      responses: {
        200: {
          description:
            'An OpenAI chat.completion, or with stream=true text/event-stream of chat.completion.chunk (": waking" comments while a stopped instance starts). Headers: X-Clawplane-Session, X-Clawplane-Instance, X-Request-Id.',
          content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const access = await admit(c);
      const h = c.req.valid('header');
      const r = await ingress.chat({
        access,
        instanceRef: h['x-clawplane-instance'],
        sessionId: h['x-clawplane-session'],
        progress: h['x-clawplane-progress'] ?? c.req.valid('query').progress,
        input: c.req.valid('json'),
        signal: c.req.raw.signal,
      });
      return toResponse(r) as never;
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/responses',
      tags: ['openai'],
      summary:
        'OpenAI Responses with an agent of the tenant\'s gateway (OpenClaw\'s /v1/responses; model "agent/<name>"); wakes a stopped instance; SSE with stream=true',
      request: { params: TenantParam, query: TurnQuery, headers: TurnHeaders, body: jsonBody(responsesInput) },
      responses: {
        200: {
          description:
            'An OpenAI response object, or with stream=true text/event-stream of response.* events (": waking" comments while a stopped instance starts). Headers: X-Clawplane-Session, X-Clawplane-Instance, X-Request-Id.',
          content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const access = await admit(c);
      const h = c.req.valid('header');
      const r = await ingress.responses({
        access,
        instanceRef: h['x-clawplane-instance'],
        sessionId: h['x-clawplane-session'],
        progress: h['x-clawplane-progress'] ?? c.req.valid('query').progress,
        input: c.req.valid('json'),
        signal: c.req.raw.signal,
      });
      return toResponse(r) as never;
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/models',
      tags: ['openai'],
      summary: 'The agents this tenant may address, as OpenAI models ("agent/<name>")',
      request: { params: TenantParam },
      responses: {
        200: {
          description: 'OpenAI model list',
          content: { 'application/json': { schema: z.object({ object: z.literal('list'), data: z.array(ModelSchema) }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ object: 'list' as const, data: await models(tenant.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/models/{model}',
      tags: ['openai'],
      summary: 'One agent as an OpenAI model (the id URL-encoded: agent%2Fmain)',
      request: {
        params: TenantParam.extend({
          model: z
            .string()
            .min(1)
            .max(200)
            .openapi({ param: { name: 'model', in: 'path' } }),
        }),
      },
      responses: { 200: { description: 'OpenAI model', content: { 'application/json': { schema: ModelSchema } } }, ...errors },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const id = c.req.valid('param').model;
      const m = (await models(tenant.id)).find((x) => x.id === id || x.id === id.replace(/^openclaw\//, 'agent/'));
      if (!m) throw new NotFoundError(`Model "${id}"`, 'GET …/models lists the agents this tenant may address, as "agent/<name>".');
      return c.json(m, 200);
    },
  );
}
