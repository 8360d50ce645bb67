import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import { renderOpenclawConfig, toolPolicyFor } from '../src/runtime/config.ts';
import { gatewayToolRestrictions } from '../src/server/services.ts';
import { startTestServer } from './helpers/server.ts';

// The tenant's Cedar policy narrows the tools rendered into its gateways' openclaw.json (issue 6 item 2,
// defence in depth). `openclaw config validate` of such a config runs in test/runtime.test.ts.
describe("a tenant's tool policy in its gateway config", async () => {
  const server = await startTestServer();
  const { tenants, policy } = server.services;
  const t = await tenants.create({ slug: 'tools', name: 'Tools' }, { actor: 'test' });
  const render = async () => {
    const r = await gatewayToolRestrictions(policy, t.id, 'main');
    const cfg = renderOpenclawConfig({
      gatewayPort: 1,
      egressPort: 2,
      stateDir: '/s',
      logFile: '/l',
      agents: [{ id: 'main', name: 'main' }],
      models: ['m'],
      tools: toolPolicyFor('ask', r),
    }) as { tools: { deny: string[]; exec: { mode: string } } };
    return cfg.tools;
  };

  test('critical tools are never configured; a tenant forbid removes a tool; a denied exec is rendered deny', async () => {
    const before = await render();
    assert.ok(before.deny.includes('gateway'), 'the baseline forbids the critical gateway tool');
    assert.ok(before.deny.includes('group:runtime'), 'the hardened default stays');
    assert.ok(!before.deny.includes('message'), 'an allowed tool is not removed');
    await policy.setTenantPolicy(
      t.id,
      {
        execPolicy: 'ask',
        policies: [
          { id: 'no-messages', description: 'no outgoing messages', cedar: 'forbid (principal, action, resource) when { resource.name == "message" };' },
        ],
      },
      { actor: 'test' },
    );
    const after = await render();
    assert.ok(after.deny.includes('message'), 'the tenant forbid is rendered');
    assert.equal(after.exec.mode, 'ask', 'exec needing approval is rendered ask');
    await policy.setTenantPolicy(t.id, { execPolicy: 'deny', policies: [] }, { actor: 'test' });
    assert.equal((await render()).exec.mode, 'deny', "the tenant's exec deny wins over the platform's ask default");
  });

  test('the knowledge tools follow the policy: rendered deny (which wins over alsoAllow in OpenClaw) and refused by the broker', async () => {
    const withPlugin = async () => {
      const r = await gatewayToolRestrictions(policy, t.id, 'main');
      return (
        renderOpenclawConfig({
          gatewayPort: 1,
          egressPort: 2,
          stateDir: '/s',
          logFile: '/l',
          agents: [{ id: 'main', name: 'main' }],
          models: ['m'],
          tools: toolPolicyFor('deny', r),
          knowledgePluginDir: '/conf/plugins/clawplane-knowledge',
        }) as { tools: { deny: string[]; alsoAllow: string[] } }
      ).tools;
    };
    const open = await withPlugin();
    assert.ok(!open.deny.includes('memory_store') && open.alsoAllow.includes('memory_store'), 'offered by default');
    const reg = await server.services.broker.registerSandbox({
      tenantId: t.id,
      instanceId: '00000000-0000-4000-8000-000000000001',
      sandboxId: 'sbx-tools-knowledge',
    });
    try {
      const call = (method: string, p: string, body?: unknown) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const payload = body === undefined ? undefined : JSON.stringify(body);
          const req = http.request(
            {
              socketPath: reg.socketPath,
              method,
              path: p,
              agent: false,
              headers: { authorization: `Bearer ${reg.token}`, ...(payload ? { 'content-type': 'application/json' } : {}) },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
            },
          );
          req.on('error', reject);
          req.end(payload);
        });
      assert.equal((await call('POST', '/knowledge/memories', { content: 'allowed while the policy permits it' })).status, 201);
      await policy.setTenantPolicy(
        t.id,
        {
          execPolicy: 'deny',
          policies: [
            {
              id: 'no-memory-writes',
              description: 'agents do not write memories',
              cedar: 'forbid (principal, action, resource) when { resource.name == "memory_store" };',
            },
          ],
        },
        { actor: 'test' },
      );
      const closed = await withPlugin();
      assert.ok(closed.deny.includes('memory_store'), 'the forbid is rendered');
      assert.ok(!closed.deny.includes('memory_recall'), 'only what it names');
      const refused = await call('POST', '/knowledge/memories', { content: 'refused now' });
      assert.equal(refused.status, 403, refused.body);
      assert.match(refused.body, /policy_denied.*memory_store.*no-memory-writes/);
      assert.equal((await call('GET', '/knowledge/memories?q=allowed')).status, 200, 'recall is still allowed');
    } finally {
      await reg.close();
    }
  });
});
