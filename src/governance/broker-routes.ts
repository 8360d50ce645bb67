import { Hono, type Context } from 'hono';
import { z } from 'zod';
import type { SandboxIdentity } from '../broker/identity.ts';
import { ClawplaneError } from '../errors.ts';
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
export function governanceBrokerRoutes(deps: { gatewayConfig: GatewayConfigService; resolve: (token: string) => Promise<SandboxIdentity | undefined> }): Hono<{ Variables: { caller: SandboxIdentity } }> {
  const app = new Hono<{ Variables: { caller: SandboxIdentity } }>();
  const problem = (c: Context, status: number, code: string, message: string) => c.json({ code, message }, status as 400);
  app.onError((err, c) => {
    if (err instanceof ClawplaneError) return problem(c, err.status, err.code, err.message);
    if (err instanceof z.ZodError) return problem(c, 400, 'validation_failed', `The request is invalid: ${err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.code === 'unrecognized_keys' ? `unknown field(s): ${i.keys.join(', ')}` : i.message}`).join('; ')}`);
    throw err;
  });
  app.use('/governance/*', async (c, next) => {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    const caller = m?.[1] ? await deps.resolve(m[1]) : undefined;
    if (!caller) return problem(c, 401, 'unauthenticated', "Send this sandbox's broker token as \"Authorization: Bearer <token>\"; it is unknown, expired or revoked.");
    c.set('caller', caller);
    await next();
  });
  const view = (v: { number: number; settings: unknown; status: string; statusReason: string; reason: string; kinds: string[]; createdAt: string }) => ({ number: v.number, settings: v.settings, status: v.status, statusReason: v.statusReason, reason: v.reason, kinds: v.kinds, createdAt: v.createdAt });

  app.get('/governance/config', async (c) => {
    const caller = c.get('caller');
    const page = await deps.gatewayConfig.list(caller.tenantId, { limit: 50, sort: '-number' });
    const current = page.items.find((v) => v.status === 'good' || v.status === 'approved');
    if (!current) return problem(c, 404, 'not_found', 'No configuration version yet: the first start of a gateway records one.');
    return c.json(view(current));
  });
  app.post('/governance/proposals', async (c) => {
    const caller = c.get('caller');
    let raw: unknown;
    try {
      raw = await c.req.json();
    } catch {
      throw new ClawplaneError('bad_json', 400, 'The request body is not valid JSON.');
    }
    const input = ProposalInput.parse(raw);
    const actor = `sandbox:${caller.id}`;
    const v = await deps.gatewayConfig.propose(caller.tenantId, input, { actor, person: actor }, { review: 'always' });
    return c.json(view(v), 201);
  });
  app.get('/governance/proposals/:number{[1-9][0-9]{0,8}}', async (c) => {
    const caller = c.get('caller');
    return c.json(view(await deps.gatewayConfig.get(caller.tenantId, c.req.param('number'))));
  });
  app.all('/governance/*', (c) => problem(c, 404, 'not_found', `The broker does not serve ${c.req.method} ${c.req.path}.`));
  return app;
}
