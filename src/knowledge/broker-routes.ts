import type { Hono } from 'hono';
import { z } from 'zod';
import type { SandboxIdentity } from '../broker/identity.ts';
import { jsonBody, notFound, problem, sandboxApp, type SandboxEnv } from '../broker/sandbox-app.ts';
import { NotFoundError } from '../errors.ts';
import { findingInput } from './findings.ts';
import type { FindingService } from './findings.ts';
import { memoryInput, type MemoryService } from './memories.ts';
import { SEARCH_MODES } from './search.ts';

/** The knowledge plugin's tool each route serves (src/sandbox/gateway-plugin/knowledge.ts). */
function toolOf(method: string, path: string): string | undefined {
  if (path.startsWith('/knowledge/memories')) return method === 'GET' ? 'memory_recall' : 'memory_store';
  if (path.startsWith('/knowledge/findings')) return method === 'GET' ? 'finding_search' : 'finding_record';
  return undefined;
}

const SearchQuery = z.object({
  q: z.string().trim().min(1).max(500).optional(),
  agent: z.string().min(1).max(64).optional(),
  mode: z.enum(SEARCH_MODES).default('hybrid'),
  limit: z.coerce.number().int().min(1).max(50).default(10),
});

/**
 * The knowledge API as the tenant's agents reach it from their sandbox (docs/adr/0007): the broker is the
 * sandbox's only way out, and its token the only identity. Everything is scoped to the token's tenant;
 * there is no tenant in any path or body, so another tenant's memories cannot even be named. Writes are
 * audited with the sandbox start as the actor.
 *
 * - GET  /knowledge/memories?q=&agent=&limit=   recall (hybrid search) or the newest
 * - POST /knowledge/memories                    { content, kind?, key?, agent?, importance?, expiresAt? }
 *   Without `agent`, the header x-openclaw-agent (the gateway agent the knowledge plugin runs for) names
 *   the owner when the tenant has an agent of that name; otherwise the memory is shared by its agents.
 * - DELETE /knowledge/memories/{id}
 * - GET  /knowledge/findings?q=&limit=
 * - POST /knowledge/findings                    { title, body?, sources?, tags?, confidence? }
 */
export function knowledgeBrokerRoutes(deps: {
  memories: MemoryService;
  findings: FindingService;
  resolve: (token: string) => Promise<SandboxIdentity | undefined>;
  /** The tenant's tool policy (Cedar) on the tool a route serves; absent: no check (tests of the routes alone). */
  decide?: (tenantId: string, agent: string, tool: string) => Promise<{ outcome: string; explanation: string }>;
}): Hono<SandboxEnv> {
  const app = sandboxApp('/knowledge/', deps.resolve);
  app.use('/knowledge/*', async (c, next) => {
    const caller = c.get('caller');
    // Each route is one of the knowledge plugin's tools; the tenant's policy decides it here too (the
    // rendered config already leaves a denied tool out: this holds for any other client in the sandbox).
    const tool = toolOf(c.req.method, c.req.path);
    if (tool && deps.decide) {
      const agent = c.req.header('x-openclaw-agent') ?? 'main';
      const d = await deps.decide(caller.tenantId, /^[A-Za-z0-9._-]{1,64}$/.test(agent) ? agent : 'main', tool);
      if (d.outcome !== 'allow') return problem(c, 403, 'policy_denied', `${tool}: ${d.explanation}`);
    }
    await next();
  });
  const by = (caller: SandboxIdentity) => ({ actor: `sandbox:${caller.id}` });
  const ctx = (caller: SandboxIdentity, agent = '') => ({ actor: `sandbox:${caller.id}`, agent, taskId: null });

  app.get('/knowledge/memories', async (c) => {
    const caller = c.get('caller');
    const o = SearchQuery.parse(c.req.query());
    if (!o.q) return c.json(await deps.memories.list(caller.tenantId, { ...(o.agent ? { agent: o.agent } : {}), limit: o.limit }, ctx(caller, o.agent)));
    return c.json(
      await deps.memories.list(caller.tenantId, { q: o.q, mode: o.mode, limit: o.limit, ...(o.agent ? { agent: o.agent } : {}) }, ctx(caller, o.agent)),
    );
  });
  app.post('/knowledge/memories', async (c) => {
    const caller = c.get('caller');
    const input = memoryInput.parse(await jsonBody(c));
    const hint = c.req.header('x-openclaw-agent');
    let r;
    if (input.agent === undefined && hint && /^[A-Za-z0-9._-]{1,64}$/.test(hint)) {
      try {
        r = await deps.memories.create(caller.tenantId, { ...input, agent: hint }, by(caller));
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    r ??= await deps.memories.create(caller.tenantId, input, by(caller));
    return c.json(r.memory, r.created ? 201 : 200);
  });
  app.delete('/knowledge/memories/:id{[0-9]{1,15}}', async (c) => {
    const caller = c.get('caller');
    await deps.memories.remove(caller.tenantId, Number(c.req.param('id')), by(caller));
    return c.body(null, 204);
  });
  app.get('/knowledge/findings', async (c) => {
    const caller = c.get('caller');
    const o = SearchQuery.parse(c.req.query());
    return c.json(await deps.findings.list(caller.tenantId, { ...(o.q ? { q: o.q, mode: o.mode } : {}), limit: o.limit }, ctx(caller)));
  });
  app.post('/knowledge/findings', async (c) => {
    const caller = c.get('caller');
    return c.json(await deps.findings.create(caller.tenantId, findingInput.parse(await jsonBody(c)), by(caller)), 201);
  });
  return notFound(app, '/knowledge/');
}
