import { createRoute, z } from '@hono/zod-openapi';
import { upgradeWebSocket } from '@hono/node-server';
import type WebSocket from 'ws';
import { ClawplaneError, ForbiddenError } from '../../errors.ts';
import { deliverHook, hookAgentInput, hookWakeInput, type HookKind } from '../../ingress/hooks.ts';
import { bridgeGatewaySocket } from '../../ingress/ws.ts';
import type { Context } from 'hono';
import type { GatewayChannel } from '../../ingress/access.ts';
import type { App, RouteDeps } from '../app.ts';
import type { AppEnv } from '../env.ts';
import { allow, connectionRecheck } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const SessionParams = TenantParam.extend({
  sessionId: z
    .string()
    .min(1)
    .max(100)
    .openapi({ param: { name: 'sessionId', in: 'path' } }),
});

const MessageSchema = z
  .object({
    id: z.number().int(),
    sessionId: z.string(),
    instanceId: z.string(),
    agent: z.string(),
    role: z.enum(['user', 'assistant', 'system']),
    content: z.string(),
    actor: z.string(),
    createdAt: z.string(),
  })
  .openapi('ChatMessage');

const SessionSchema = z
  .object({
    sessionId: z.string(),
    agent: z.string(),
    instanceId: z.string(),
    messages: z.number().int(),
    firstAt: z.string(),
    lastAt: z.string(),
    title: z.string(),
  })
  .openapi('ChatSession');

export const InstanceHeader = z.object({
  'x-clawplane-instance': z
    .string()
    .max(64)
    .optional()
    .openapi({ param: { name: 'x-clawplane-instance', in: 'header' }, description: 'Instance id or name; default: "main", or the only instance' }),
  'x-clawplane-session': z
    .string()
    .max(100)
    .optional()
    .openapi({ param: { name: 'x-clawplane-session', in: 'header' }, description: 'Conversation to continue (or the body field "session")' }),
});

class UpgradeRequiredError extends ClawplaneError {
  constructor() {
    super(
      'upgrade_required',
      426,
      'This endpoint is a WebSocket: connect with "Upgrade: websocket" and speak the OpenClaw gateway protocol (send a connect request first; Clawplane supplies the credentials).',
    );
  }
}

/**
 * The chat archive, webhooks and the gateway WebSocket (issue 7); the OpenAI-compatible routes are in
 * openai.ts. Chat, hooks and the socket pass the gateway gate
 * (ingress/access.ts: tenant active, tenant.operate; the socket: tenant.read, then the role's method
 * allow-list); the archive needs tenant.read.
 */
export function registerChat(
  app: App,
  deps: RouteDeps<'archive' | 'gate' | 'ingress' | 'instances' | 'sessions' | 'tenants' | 'tokens', 'publicOrigin' | 'secureCookies'>,
): void {
  const { ingress, archive, gate } = deps;
  const admit = (c: Context<AppEnv>, channel: GatewayChannel) =>
    gate.admit({ principal: c.get('principal'), tenant: c.get('tenant'), role: c.get('role'), requestId: c.get('requestId'), channel });

  const HookHeaders = z.object({
    'x-clawplane-instance': InstanceHeader.shape['x-clawplane-instance'],
    'idempotency-key': z
      .string()
      .min(1)
      .max(200)
      .optional()
      .openapi({
        param: { name: 'idempotency-key', in: 'header' },
        description: "Reuse it with the same payload to retry without running the agent twice (OpenClaw's replay cache)",
      }),
  });
  const HookAnswer = z.record(z.string(), z.unknown()).openapi('HookAnswer');
  const hook = (kind: HookKind, input: typeof hookAgentInput | typeof hookWakeInput, summary: string) =>
    app.openapi(
      createRoute({
        method: 'post',
        path: `/api/v1/tenants/{tenant}/hooks/${kind}`,
        tags: ['chat'],
        summary,
        request: { params: TenantParam, headers: HookHeaders, body: jsonBody(input) },
        responses: {
          200: {
            description: "OpenClaw's answer, passed on (e.g. {ok, runId}); the gateway's 4xx answers are passed on too. Header: X-Clawplane-Instance.",
            content: { 'application/json': { schema: HookAnswer } },
          },
          ...errorResponses,
        },
      }),
      async (c) => {
        const access = await admit(c, 'hook');
        const h = c.req.valid('header');
        const send = () =>
          deliverHook(ingress, {
            access,
            instanceRef: h['x-clawplane-instance'],
            kind,
            body: c.req.valid('json'),
            idempotencyKey: h['idempotency-key'],
            hooksToken: (id) => deps.instances.hooksToken(id),
          });
        let r = await send();
        let body = parseJson(r.body);
        // OpenClaw answers 503 when an agent run does not start within its 15 s admission window (a gateway
        // that just woke, or a busy one) and aborts that run before it starts: sending it again is safe.
        if (r.status === 503 && admissionTimedOut(body)) {
          r = await send();
          body = parseJson(r.body);
          if (r.status === 503 && admissionTimedOut(body))
            throw new ClawplaneError(
              'gateway_busy',
              503,
              'The gateway did not start the agent run within its admission window twice (it is busy): retry later with the same Idempotency-Key.',
            );
        }
        // The gateway answers JSON; anything else (or a 5xx of its own) is reported as ours, never passed raw.
        // Started before webhooks were configured: a restart renders the hooks settings.
        if (r.status === 404)
          throw new ClawplaneError(
            'hooks_not_enabled',
            409,
            'The gateway of this instance has no webhook endpoints yet: restart the instance (POST …/instances/{id}/restart), then retry.',
          );
        if (r.status === 401 || r.status === 403)
          throw new ClawplaneError(
            'gateway_hook_failed',
            502,
            'The gateway refused the hook credentials Clawplane holds for it: restart the instance, then retry.',
          );
        if (body === undefined || r.status >= 500)
          throw new ClawplaneError(
            'gateway_hook_failed',
            502,
            `The gateway answered the hook with ${r.status}. Check the instance's logs; retry with the same Idempotency-Key.`,
          );
        return new Response(JSON.stringify(body), {
          status: r.status,
          headers: { 'content-type': 'application/json', 'x-clawplane-instance': r.instanceId },
        }) as never;
      },
    );
  hook(
    'agent',
    hookAgentInput,
    "Inbound webhook: an agent turn on the tenant's gateway (OpenClaw /hooks/agent); wakes a stopped instance and holds the call until it is ready",
  );
  hook(
    'wake',
    hookWakeInput,
    "Inbound webhook: a system event for the agent's main session (OpenClaw /hooks/wake); wakes a stopped instance and holds the call until it is ready",
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/chat/sessions',
      tags: ['chat'],
      summary: 'Conversations that went through the chat API, most recent first',
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(SessionSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await archive.sessions(tenant.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/chat/sessions/{sessionId}/messages',
      tags: ['chat'],
      summary: "A conversation's messages, oldest first",
      request: { params: SessionParams },
      responses: { 200: json(z.object({ items: z.array(MessageSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const { sessionId } = c.req.valid('param');
      const items = await archive.history(tenant.id, sessionId);
      if (items.length === 0) throw new ClawplaneError('not_found', 404, 'Session was not found.');
      return c.json({ items }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/chat/search',
      tags: ['chat'],
      summary: 'Full-text search over the tenant\'s archived messages (words, "phrases", -excluded, OR)',
      request: {
        params: TenantParam,
        query: z.object({
          q: z
            .string()
            .min(1)
            .max(500)
            .openapi({ param: { name: 'q', in: 'query' } }),
          limit: z.coerce
            .number()
            .int()
            .min(1)
            .max(200)
            .default(50)
            .openapi({ param: { name: 'limit', in: 'query' } }),
        }),
      },
      responses: { 200: json(z.object({ items: z.array(MessageSchema.extend({ snippet: z.string(), rank: z.number() })) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const q = c.req.valid('query');
      return c.json({ items: await archive.search(tenant.id, q.q, q.limit) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/gateway/ws',
      tags: ['chat'],
      summary: "WebSocket to the tenant's gateway (OpenClaw protocol v4) with a per-role method allow-list; wakes a stopped instance",
      request: {
        params: TenantParam,
        query: z.object({
          instance: z
            .string()
            .max(64)
            .optional()
            .openapi({ param: { name: 'instance', in: 'query' }, description: 'Instance id or name' }),
        }),
      },
      responses: { 101: { description: 'Switching protocols' }, 426: { description: 'Not a WebSocket upgrade' }, ...errorResponses },
    }),
    async (c, next) => {
      const { principal } = allow(c, 'tenant.read');
      const role = c.get('role');
      if (!role) throw new ForbiddenError('Only members of the tenant may open its gateway socket.');
      // Before the upgrade: a refused socket is an HTTP error (e.g. 409 tenant_suspended), and nothing wakes.
      const access = await admit(c, 'socket');
      // A browser sends cookies on cross-site WebSocket upgrades: only our own origin may use a session.
      if (principal.kind === 'user' && c.req.header('origin') !== deps.publicOrigin)
        throw new ForbiddenError(`WebSocket upgrades with a session cookie must come from ${deps.publicOrigin}.`);
      if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') throw new UpgradeRequiredError();
      const row = await ingress.resolveInstance(access.tenantId, c.req.valid('query').instance);
      const log = c.get('log');
      const recheck = connectionRecheck(c, deps);
      const handler = upgradeWebSocket(() => ({
        onOpen: (_e, ws) => bridgeGatewaySocket(ws.raw as WebSocket, { ingress, access, row, role, log, recheck }),
      }));
      // The helper is typed for a plain Hono context; ours carries more variables, which it ignores.
      return (await handler(c as unknown as Parameters<typeof handler>[0], next)) as never;
    },
  );
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** OpenClaw's hooks answer when a run was not admitted in time (HOOK_AGENT_START_ADMISSION_TIMEOUT_ERROR). */
function admissionTimedOut(body: unknown): boolean {
  return typeof body === 'object' && body !== null && /admission timeout/.test(String((body as { error?: unknown }).error ?? ''));
}
