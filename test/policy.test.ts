/**
 * Tool policy (issue 5, item 5): decisions with the determining policy ids and an explanation, tenant
 * restrictions that can only take away (a permit is refused; a forbid wins), agent/channel scopes, tool
 * scopes, the requires-approval outcome, the effective tool lists, and the HTTP API. A fast-check
 * property shows random tenant forbid sets never turn a baseline deny into an allow.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ValidationError } from '../src/errors.ts';
import { compileBaseline, compileTenantPolicies } from '../src/policy/compile.ts';
import { PolicyEngine } from '../src/policy/engine.ts';
import { PolicyService } from '../src/policy/service.ts';
import { TenantService } from '../src/tenancy/tenants.ts';
import type { Outcome, PolicySource, Tool, ToolContext } from '../src/policy/types.ts';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { testDatabase } from './helpers/db.ts';
import { startTestServer } from './helpers/server.ts';

const by = { actor: 'test' };

describe('policy decisions (service, real database)', async () => {
  const { db } = await testDatabase();
  const tenants = new TenantService(db);
  const acme = await tenants.create({ slug: 'acme', name: 'Acme' }, by);
  const other = await tenants.create({ slug: 'other', name: 'Other' }, by);
  const policy = new PolicyService(db);
  const decide = (tool: string, context: ToolContext = {}, agent = 'main', tenantId = acme.id) => policy.decide(tenantId, { agent, tool, context });

  test('baseline: low risk allowed, critical denied, exec denied by default; each names its policy', async () => {
    const read = await decide('read');
    assert.equal(read.outcome, 'allow');
    assert.deepEqual(read.policyIds, ['baseline/permit-standard-risk']);
    assert.match(read.explanation, /^Allowed: baseline\/permit-standard-risk .* permits agent "main" using low-risk tool "read"/);

    const gw = await decide('gateway');
    assert.equal(gw.outcome, 'deny');
    assert.deepEqual(gw.policyIds, ['baseline/forbid-critical']);
    assert.match(gw.explanation, /Denied: baseline\/forbid-critical \("Critical-risk tools are never used by agents"\) forbids/);

    const exec = await decide('exec');
    assert.equal(exec.outcome, 'deny');
    assert.deepEqual(exec.policyIds, ['baseline/forbid-exec']);

    const unknown = await decide('rm_rf');
    assert.equal(unknown.outcome, 'deny');
    assert.match(unknown.explanation, /not in the tool registry/);
  });

  test('requires approval: exec with governance "ask" needs a person, and names both the rule and the permit', async () => {
    await policy.setTenantPolicy(acme.id, { execPolicy: 'ask', policies: [] }, by);
    const exec = await decide('exec', { taskId: 't-1' });
    assert.equal(exec.outcome, 'requires_approval');
    assert.deepEqual(exec.policyIds, ['baseline/approve-exec', 'baseline/permit-standard-risk']);
    assert.match(exec.explanation, /Needs a person's approval: baseline\/approve-exec/);
    // The other tenant's governance is its own.
    assert.equal((await decide('exec', {}, 'main', other.id)).outcome, 'deny');
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, by);
    assert.equal((await decide('exec')).outcome, 'deny');
  });

  test('a tenant permit is refused with a clear message, wherever it hides', async () => {
    const attempts: PolicySource[][] = [
      [{ id: 'allow-gw', description: '', cedar: 'permit (principal, action, resource);' }],
      [
        { id: 'ok', description: '', cedar: 'forbid (principal, action, resource) when { resource.name == "browser" };' },
        { id: 'sneaky', description: '', cedar: '@id("forbid-looking") permit (principal, action, resource) when { resource.risk == "critical" };' },
      ],
    ];
    for (const policies of attempts) {
      await assert.rejects(policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies }, by), (err: unknown) => {
        assert.ok(err instanceof ValidationError);
        assert.equal(err.status, 400);
        assert.match(err.message, /Tenant restrictions may only forbid: policy "(allow-gw|sneaky)" is a permit/);
        return true;
      });
    }
    const bad: [string, RegExp][] = [
      ['forbid (principal, action, resource); forbid (principal, action, resource);', /exactly one Cedar policy/],
      ['forbid (principal, action, resource) when { resource.colour == "red" };', /attribute `colour` on entity type `Tool` not found/],
      ['forbid (principal, action, resource) when { context.repo == "x" };', /optional attribute `repo`/],
      ['forbid (principal, action, resource', /not valid Cedar/],
      ['forbid (principal == ?principal, action, resource);', /template/],
      ['@approval("maybe") forbid (principal, action, resource);', /only value of @approval is "required"/],
    ];
    for (const [cedar, re] of bad) {
      await assert.rejects(policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [{ id: 'x', description: '', cedar }] }, by), (err: unknown) => {
        assert.ok(err instanceof ValidationError, String(err));
        assert.match(err.message, re);
        return true;
      });
    }
    // Nothing was stored.
    assert.equal((await policy.getTenantPolicy(acme.id)).policies.length, 0);
  });

  test('a tenant forbid wins over the baseline permit, takes effect at once, and stays in its tenant', async () => {
    assert.equal((await decide('web_fetch')).outcome, 'allow');
    await policy.setTenantPolicy(
      acme.id,
      {
        execPolicy: 'deny',
        policies: [{ id: 'no-web', description: 'No web access', cedar: 'forbid (principal, action, resource) when { resource.group == "web" };' }],
      },
      by,
    );
    const d = await decide('web_fetch');
    assert.equal(d.outcome, 'deny');
    assert.deepEqual(d.policyIds, ['tenant/no-web']);
    assert.match(d.explanation, /tenant\/no-web \("No web access"\) forbids/);
    assert.equal((await decide('web_fetch', {}, 'main', other.id)).outcome, 'allow');
    const audit = await db.query<{ action: string; detail: { policyIds: string[] } }>(
      "SELECT action, detail FROM audit_events WHERE tenant_id = $1 AND action = 'policy.tenant.update' ORDER BY seq DESC LIMIT 1",
      [acme.id],
    );
    assert.deepEqual(audit.rows[0]?.detail.policyIds, ['tenant/no-web']);
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, by);
    assert.equal((await decide('web_fetch')).outcome, 'allow');
  });

  test('agent and channel scopes narrow a restriction to one agent or one channel', async () => {
    await policy.setTenantPolicy(
      acme.id,
      {
        execPolicy: 'deny',
        policies: [
          {
            id: 'support-no-browser',
            description: '',
            cedar: 'forbid (principal, action, resource) when { resource.name == "browser" };',
            scope: { agent: 'support' },
          },
          {
            id: 'public-no-high',
            description: '',
            cedar: 'forbid (principal, action, resource) when { resource.risk == "high" };',
            scope: { channel: 'public' },
          },
          {
            id: 'ops-only-message',
            description: '',
            cedar: 'forbid (principal, action, resource) when { resource.name == "message" } unless { context has channel && context.channel == "ops" };',
          },
        ],
      },
      by,
    );
    assert.deepEqual((await decide('browser', {}, 'support')).policyIds, ['tenant/support-no-browser']);
    assert.equal((await decide('browser', {}, 'main')).outcome, 'allow');
    assert.deepEqual((await decide('browser', { channel: 'public' }, 'main')).policyIds, ['tenant/public-no-high']);
    assert.equal((await decide('browser', { channel: 'slack' }, 'main')).outcome, 'allow');
    assert.equal((await decide('message', { channel: 'ops' })).outcome, 'allow');
    assert.deepEqual((await decide('message', { channel: 'web' })).policyIds, ['tenant/ops-only-message']);
    assert.equal((await decide('message')).outcome, 'deny');
    const stored = await policy.getTenantPolicy(acme.id);
    assert.deepEqual(stored.policies[0]?.scope, { agent: 'support' });
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, by);
  });

  test('tool scopes: a repo-scoped tool is used only on its repos, and missing context fails closed', async () => {
    await policy.tools.upsert(
      { name: 'github.push', risk: 'high', group: 'skill', description: 'Push commits', channels: [], repos: ['acme/app'], hosts: [] },
      by,
    );
    await policy.tools.upsert({ name: 'payments.transfer', risk: 'critical', group: 'skill', description: '', channels: [], repos: [], hosts: [] }, by);
    assert.equal((await decide('github.push', { repo: 'acme/app' })).outcome, 'allow');
    assert.deepEqual((await decide('github.push', { repo: 'evil/app' })).policyIds, ['baseline/tool-repo-scope']);
    assert.deepEqual((await decide('github.push')).policyIds, ['baseline/tool-repo-scope']);
    assert.deepEqual((await decide('payments.transfer')).policyIds, ['baseline/forbid-critical']);
  });

  test('a tenant approval rule turns an allow into requires_approval, never a deny into anything else', async () => {
    await policy.setTenantPolicy(
      acme.id,
      {
        execPolicy: 'deny',
        policies: [
          {
            id: 'ask-push',
            description: 'A person approves every push',
            cedar: '@approval("required") forbid (principal, action, resource) when { resource.name == "github.push" || resource.risk == "critical" };',
          },
        ],
      },
      by,
    );
    const push = await decide('github.push', { repo: 'acme/app' });
    assert.equal(push.outcome, 'requires_approval');
    assert.deepEqual(push.policyIds, ['tenant/ask-push', 'baseline/permit-standard-risk']);
    assert.equal((await decide('github.push', { repo: 'evil/app' })).outcome, 'deny');
    const transfer = await decide('payments.transfer');
    assert.equal(transfer.outcome, 'deny');
    assert.deepEqual(transfer.policyIds, ['baseline/forbid-critical']);
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, by);
  });

  test('effective tool lists for config rendering: deny critical and exec, ask for exec under "ask", scoped tools allowed', async () => {
    const l = await policy.effectiveToolLists(acme.id);
    for (const t of ['read', 'web_fetch', 'github.push', 'browser']) assert.ok(l.allow.includes(t), t);
    for (const t of ['gateway', 'exec', 'process', 'payments.transfer']) assert.ok(l.deny.includes(t), t);
    assert.deepEqual(l.requiresApproval, []);
    await policy.setTenantPolicy(
      acme.id,
      {
        execPolicy: 'ask',
        policies: [
          {
            id: 'no-browser',
            description: '',
            cedar: 'forbid (principal, action, resource) when { resource.name == "browser" };',
            scope: { agent: 'support' },
          },
        ],
      },
      by,
    );
    const support = await policy.effectiveToolLists(acme.id, 'support');
    assert.deepEqual(support.requiresApproval.sort(), ['exec', 'process']);
    assert.ok(support.deny.includes('browser'));
    assert.ok((await policy.effectiveToolLists(acme.id, 'main')).allow.includes('browser'));
    await policy.setTenantPolicy(acme.id, { execPolicy: 'deny', policies: [] }, by);
  });

  test('the baseline can be replaced (validated), and every tenant set is rebuilt', async () => {
    const original = await policy.getBaseline();
    assert.ok(original.some((p) => p.id === 'forbid-critical' && p.effect === 'forbid'));
    assert.throws(
      () => compileBaseline([{ id: 'x', description: '', cedar: 'permit (principal, action, resource) when { resource.nope };' }]),
      ValidationError,
    );
    await policy.setBaseline(
      [{ id: 'only-read', description: 'read only', cedar: 'permit (principal, action, resource) when { resource.name == "read" };' }],
      by,
    );
    assert.equal((await decide('read')).outcome, 'allow');
    const web = await decide('web_fetch');
    assert.equal(web.outcome, 'deny');
    assert.match(web.explanation, /no policy permits/);
    await policy.setBaseline(
      original.map((p) => ({ id: p.id, description: p.description, cedar: p.cedar })),
      by,
    );
    assert.equal((await decide('web_fetch')).outcome, 'allow');
    assert.equal((await decide('gateway')).outcome, 'deny');
  });

  test('stored restrictions that no longer validate fail closed with an explanation', async () => {
    await db.query(
      `INSERT INTO tenant_tool_policies (tenant_id, policies) VALUES ($1, $2)
       ON CONFLICT (tenant_id) DO UPDATE SET policies = EXCLUDED.policies`,
      [other.id, JSON.stringify([{ id: 'old', description: '', cedar: 'forbid (principal, action, resource) when { resource.retired == true };' }])],
    );
    policy.invalidate(other.id);
    const d = await decide('read', {}, 'main', other.id);
    assert.deepEqual([d.outcome, d.policyIds], ['deny', ['tenant/invalid-restrictions']]);
    assert.match(d.explanation, /no longer validate/);
    await policy.setTenantPolicy(other.id, { execPolicy: 'deny', policies: [] }, by);
    assert.equal((await decide('read', {}, 'main', other.id)).outcome, 'allow');
  });

  test('fast-check: random tenant forbid sets never turn a baseline deny into allow (nor an approval into allow)', async () => {
    const baseline = compileBaseline((await policy.getBaseline()).map((p) => ({ id: p.id, description: p.description, cedar: p.cedar })));
    const tools: Tool[] = await policy.tools.list();
    const engine = new PolicyEngine();
    const base = engine.load('prop-base', baseline);
    const str = fc.constantFrom('ops', 'public', 'acme/app', 'evil/app', 'api.example.com', 'read', 'exec', 'browser', 'high', 'critical', 'web', 'runtime');
    const atom = fc.oneof(
      str.map((s) => `resource.name == "${s}"`),
      fc.constantFrom(...tools.map((t) => t.group)).map((g) => `resource.group == "${g}"`),
      fc.constantFrom('low', 'medium', 'high', 'critical').map((r) => `resource.risk == "${r}"`),
      fc.constantFrom('channel', 'repo', 'host').chain((k) => str.map((s) => `(context has ${k} && context.${k} == "${s}")`)),
      fc.constantFrom('main', 'support').map((a) => `principal == Agent::"${a}"`),
      fc.constantFrom('true', 'false', 'principal.tenant.execPolicy == "ask"', 'resource.repos.contains("acme/app")'),
    );
    const cond = fc.array(fc.tuple(atom, fc.boolean()), { minLength: 1, maxLength: 3 }).map((xs) => xs.map(([a, neg]) => (neg ? `!(${a})` : a)).join(' && '));
    const forbid = fc.record({
      cond,
      kind: fc.constantFrom('when', 'unless'),
      approval: fc.boolean(),
      scope: fc.option(
        fc.record({
          agent: fc.option(fc.constantFrom('main', 'support'), { nil: undefined }),
          channel: fc.option(fc.constantFrom('ops', 'public'), { nil: undefined }),
        }),
        { nil: undefined },
      ),
    });
    const ctx = fc.record(
      {
        channel: fc.constantFrom('ops', 'public', 'web'),
        repo: fc.constantFrom('acme/app', 'evil/app'),
        host: fc.constantFrom('api.example.com', 'evil.test'),
      },
      { requiredKeys: [] },
    );
    let n = 0;
    const rank: Record<Outcome, number> = { deny: 0, requires_approval: 1, allow: 2 };
    fc.assert(
      fc.property(
        fc.array(forbid, { maxLength: 6 }),
        fc.constantFrom(...tools),
        fc.constantFrom('main', 'support'),
        ctx,
        fc.constantFrom<'deny' | 'ask'>('deny', 'ask'),
        (forbids, tool, agent, context, execPolicy) => {
          const sources: PolicySource[] = forbids.map((f, i) => {
            const s: PolicySource = {
              id: `p${i}`,
              description: '',
              cedar: `${f.approval ? '@approval("required") ' : ''}forbid (principal, action, resource) ${f.kind} { ${f.cond} };`,
            };
            if (f.scope) {
              s.scope = {};
              if (f.scope.agent !== undefined) s.scope.agent = f.scope.agent;
              if (f.scope.channel !== undefined) s.scope.channel = f.scope.channel;
            }
            return s;
          });
          const set = engine.load(`prop-${n++ % 4}`, [...baseline, ...compileTenantPolicies(sources)]);
          const req = { tenantId: acme.id, execPolicy, agent, tool, context };
          const before = engine.decide(base, req).outcome;
          const after = engine.decide(set, req).outcome;
          return rank[after] <= rank[before] || (console.error({ sources, tool: tool.name, agent, context, execPolicy, before, after }), false);
        },
      ),
      { numRuns: 1500 },
    );
  });

  test('fast-check: any policy text containing a permit is refused for tenants', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('', '@approval("required") ', '@id("forbid") ', '@contextual("true") '),
        fc.constantFrom('true', 'resource.risk == "critical"', 'false'),
        (ann, c) => {
          try {
            compileTenantPolicies([{ id: 'p', description: '', cedar: `${ann}permit (principal, action, resource) when { ${c} };` }]);
            return false;
          } catch (err) {
            return err instanceof ValidationError;
          }
        },
      ),
    );
  });
});

describe('policy API', async () => {
  const server = await startTestServer();
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  const base = `/api/v1/tenants/${a.slug}/policy`;

  test('everyone signed in reads the baseline and the tool registry; only a platform admin replaces the baseline', async () => {
    const baseline = await a.client.json<{ policies: { id: string; effect: string; cedar: string }[] }>('GET', '/api/v1/policy/baseline');
    assert.ok(baseline.policies.some((p) => p.id === 'permit-standard-risk' && p.effect === 'permit'));
    const tools = await a.client.json<{ items: { name: string; risk: string }[] }>('GET', '/api/v1/policy/tools');
    assert.equal(tools.items.find((t) => t.name === 'gateway')?.risk, 'critical');
    const res = await a.client.call('PUT', '/api/v1/policy/baseline', { policies: [{ id: 'all', cedar: 'permit (principal, action, resource);' }] });
    assert.equal(res.status, 403);
    assert.equal((await new ApiClient(server.url).call('GET', '/api/v1/policy/baseline')).status, 401);
    const bad = await admin.call('PUT', '/api/v1/policy/baseline', {
      policies: [{ id: 'bad', cedar: 'permit (principal, action, resource) when { resource.nope == 1 };' }],
    });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /attribute `nope`/);
    const saved = await admin.json<{ policies: unknown[] }>('PUT', '/api/v1/policy/baseline', {
      policies: baseline.policies.map((p) => ({ id: p.id, cedar: p.cedar })),
    });
    assert.equal(saved.policies.length, baseline.policies.length);
    assert.equal((await admin.call('PUT', '/api/v1/policy/tools/github.push', { risk: 'high', group: 'skill', repos: ['acme/app'] })).status, 200);
    assert.equal((await a.client.call('PUT', '/api/v1/policy/tools/github.push', { risk: 'low', group: 'skill' })).status, 403);
  });

  test('a tenant admin adds forbids; a permit is a 400 that says why; a viewer cannot change anything', async () => {
    const permit = await a.client.call('PUT', base, { policies: [{ id: 'let-me', cedar: 'permit (principal, action, resource);' }] });
    assert.equal(permit.status, 400);
    const body = (await permit.json()) as { code: string; message: string };
    assert.equal(body.code, 'validation_failed');
    assert.match(body.message, /may only forbid: policy "let-me" is a permit/);

    const put = await a.client.json<{ execPolicy: string; version: number; policies: unknown[] }>('PUT', base, {
      execPolicy: 'ask',
      policies: [
        {
          id: 'no-browser',
          description: 'No browser in public',
          cedar: 'forbid (principal, action, resource) when { resource.name == "browser" };',
          scope: { channel: 'public' },
        },
      ],
    });
    assert.deepEqual([put.execPolicy, put.version, put.policies.length], ['ask', 1, 1]);

    const viewer = new ApiClient(server.url, {
      bearer: (await server.services.tokens.create(a.id, { name: 'v', role: 'viewer', createdBy: a.ownerId }, by)).token,
    });
    assert.equal((await viewer.call('PUT', base, { policies: [] })).status, 403);
    assert.equal((await viewer.json<{ execPolicy: string }>('GET', base)).execPolicy, 'ask');

    // Explain: what the Governance page shows.
    const d = await viewer.json<{ outcome: string; policyIds: string[]; explanation: string }>('POST', `${base}/explain`, {
      tool: 'browser',
      context: { channel: 'public' },
    });
    assert.deepEqual([d.outcome, d.policyIds], ['deny', ['tenant/no-browser']]);
    assert.match(d.explanation, /No browser in public/);
    const e = await viewer.json<{ outcome: string; policyIds: string[] }>('POST', `${base}/explain`, { tool: 'exec', agent: 'main' });
    assert.equal(e.outcome, 'requires_approval');
    assert.equal((await viewer.call('POST', `${base}/explain`, { tool: 'exec', extra: 1 })).status, 400);

    const lists = await viewer.json<{ allow: string[]; deny: string[]; requiresApproval: string[] }>('GET', `${base}/effective-tools?agent=main`);
    assert.ok(lists.deny.includes('gateway') && lists.requiresApproval.includes('exec') && lists.allow.includes('read'));
  });

  test('people list grants and pending approvals, and a tenant admin revokes a grant', async () => {
    const caller = { id: 'start-1', tenantId: a.id, instanceId: 'inst-1', sandboxId: 'sb-1' };
    const g = await server.services.grants.request(caller, { tool: 'web_fetch', agent: 'main', context: { host: 'example.com' } });
    assert.equal(g.outcome, 'granted');
    if (g.outcome !== 'granted') return;
    const p = await server.services.grants.request(caller, { tool: 'exec', agent: 'main', context: { taskId: 'task-1' } });
    assert.equal(p.outcome, 'requires_approval'); // execPolicy is "ask" since the previous test
    const listed = await a.client.json<{ items: { jti: string; scope: string; revokedAt: string | null }[] }>('GET', `/api/v1/tenants/${a.slug}/grants`);
    assert.equal(listed.items.find((i) => i.jti === g.jti)?.scope, 'tool:web_fetch host:example.com');
    assert.ok(!JSON.stringify(listed).includes(g.token));
    const approvals = await a.client.json<{ items: { tool: string; context: { taskId?: string } }[] }>('GET', `/api/v1/tenants/${a.slug}/tool-approvals`);
    assert.deepEqual(
      approvals.items.map((i) => [i.tool, i.context.taskId]),
      [['exec', 'task-1']],
    );
    const viewer = new ApiClient(server.url, {
      bearer: (await server.services.tokens.create(a.id, { name: 'v2', role: 'viewer', createdBy: a.ownerId }, by)).token,
    });
    assert.equal((await viewer.call('POST', `/api/v1/tenants/${a.slug}/grants/${g.jti}/revoke`)).status, 403);
    await a.client.json('POST', `/api/v1/tenants/${a.slug}/grants/${g.jti}/revoke`);
    assert.equal((await a.client.call('POST', `/api/v1/tenants/${a.slug}/grants/${g.jti}/revoke`)).status, 404);
    await assert.rejects(server.services.grants.verifyGrant(g.token, { tool: 'web_fetch' }), /revoked/);
  });
});
