import type { Hono } from 'hono';
import { z } from 'zod';
import type { SandboxIdentity } from '../broker/identity.ts';
import { jsonBody, notFound, problem, sandboxApp, type SandboxEnv } from '../broker/sandbox-app.ts';
import { GatewaySettingsSchema } from './settings.ts';
import type { GatewayConfigService } from './versions.ts';

const ProposalInput = z.strictObject({ settings: GatewaySettingsSchema, reason: z.string().trim().min(1).max(500) });

/**
 * Configuration changes as an agent proposes them from its sandbox (docs/adr/0013-gateway-config-versions.md):
 * the broker token is the only identity and names the tenant, so an agent can only propose for its own
 * tenant's gateways. A proposal always waits for a tenant admin's review, whatever the tenant's rules say; the
 * agent can read what its gateway is configured with and where its proposals stand, never decide them.
 *
 * - GET  /governance/config                  the version the tenant's gateways run (settings, status)
 * - POST /governance/proposals               { settings, reason } → 201, status pending
 * - GET  /governance/proposals/{number}      one version's status (pending, approved, rejected, ...)
 */
export function governanceBrokerRoutes(deps: {
  gatewayConfig: GatewayConfigService;
  resolve: (token: string) => Promise<SandboxIdentity | undefined>;
}): Hono<SandboxEnv> {
  const app = sandboxApp('/governance/', deps.resolve);
  const view = (v: { number: number; settings: unknown; status: string; statusReason: string; reason: string; kinds: string[]; createdAt: string }) => ({
    number: v.number,
    settings: v.settings,
    status: v.status,
    statusReason: v.statusReason,
    reason: v.reason,
    kinds: v.kinds,
    createdAt: v.createdAt,
  });

  app.get('/governance/config', async (c) => {
    const caller = c.get('caller');
    const page = await deps.gatewayConfig.list(caller.tenantId, { limit: 50, sort: '-number' });
    const current = page.items.find((v) => v.status === 'good' || v.status === 'approved');
    if (!current) return problem(c, 404, 'not_found', 'No configuration version yet: the first start of a gateway records one.');
    return c.json(view(current));
  });
  app.post('/governance/proposals', async (c) => {
    const caller = c.get('caller');
    const input = ProposalInput.parse(await jsonBody(c));
    const actor = `sandbox:${caller.id}`;
    const v = await deps.gatewayConfig.propose(caller.tenantId, input, { actor, person: actor }, { review: 'always' });
    return c.json(view(v), 201);
  });
  app.get('/governance/proposals/:number{[1-9][0-9]{0,8}}', async (c) => {
    const caller = c.get('caller');
    return c.json(view(await deps.gatewayConfig.get(caller.tenantId, c.req.param('number'))));
  });
  return notFound(app, '/governance/');
}
