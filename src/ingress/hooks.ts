/**
 * Inbound webhooks routed to a tenant (issue 7, wake on demand): an external service calls Clawplane
 * with a tenant token, Clawplane wakes the tenant's instance when it is stopped, holds the request until
 * the gateway is ready and forwards it to OpenClaw's own hook endpoints (`/hooks/agent`: an agent turn;
 * `/hooks/wake`: a system event for the main session) with the gateway's hooks token, which no client
 * ever sees (`InstanceService.hooksToken`, a sealed platform secret per instance).
 *
 * The bodies are OpenClaw's hook payloads, narrowed: no caller-chosen session key (the gateway is
 * configured with `allowRequestSessionKey: false`) and no channel delivery coordinates (channels are
 * off in the sandbox).
 */
import { z } from 'zod';
import type { GatewayAccess } from './access.ts';
import { gatewayRequest, readAll } from './gateway.ts';
import { UpstreamError, type IngressService } from './ingress.ts';

const AgentId = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'an agent id such as "main"');

export const hookAgentInput = z.strictObject({
  message: z.string().min(1).max(100_000).describe('What the agent is asked to do (treated as untrusted data by OpenClaw)'),
  name: z.string().min(1).max(200).optional().describe('A label for the hook run, e.g. "GitHub push"'),
  agentId: AgentId.optional().describe("The agent; default: the gateway's default agent"),
  deliver: z.boolean().optional().describe('Announce the completion on the main session (OpenClaw default true)'),
  timeoutSeconds: z.number().int().min(1).max(3600).optional(),
  waitForCompletion: z.boolean().optional().describe('Answer when the run settled, not at admission'),
});

export const hookWakeInput = z.strictObject({
  text: z.string().min(1).max(10_000).describe('A short notification for the main session'),
  mode: z.enum(['now', 'next-heartbeat']).optional(),
  agentId: AgentId.optional(),
});

export type HookKind = 'agent' | 'wake';

export interface HookResult {
  status: number;
  body: string;
  instanceId: string;
}

/** Forwards one hook call; resolves with the gateway's status and JSON answer. */
export async function deliverHook(
  ingress: IngressService,
  o: {
    access: GatewayAccess;
    instanceRef?: string | undefined;
    kind: HookKind;
    body: unknown;
    idempotencyKey?: string | undefined;
    hooksToken: (instanceId: string) => Promise<string>;
  },
): Promise<HookResult> {
  const row = await ingress.resolveInstance(o.access.tenantId, o.instanceRef);
  const done = ingress.activity.begin(row.id);
  try {
    const gw = await ingress.connect(o.access, row);
    const call = gatewayRequest({
      transport: gw.transport,
      token: await o.hooksToken(gw.row.id),
      method: 'POST',
      path: `/hooks/${o.kind}`,
      headers: { 'content-type': 'application/json', ...(o.idempotencyKey ? { 'idempotency-key': o.idempotencyKey } : {}) },
      body: JSON.stringify(o.body),
    });
    let res;
    try {
      res = await call.response;
    } catch (err) {
      throw new UpstreamError(`The gateway of instance "${gw.row.name}" did not take the hook call`, err);
    }
    const text = await readAll(res, 1 << 20);
    return { status: res.statusCode ?? 502, body: text, instanceId: gw.row.id };
  } finally {
    done();
  }
}
