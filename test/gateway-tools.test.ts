import assert from 'node:assert/strict';
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
    const cfg = renderOpenclawConfig({ gatewayPort: 1, egressPort: 2, stateDir: '/s', logFile: '/l', agents: [{ id: 'main', name: 'main' }], models: ['m'], tools: toolPolicyFor('ask', r) }) as { tools: { deny: string[]; exec: { mode: string } } };
    return cfg.tools;
  };

  test('critical tools are never configured; a tenant forbid removes a tool; a denied exec is rendered deny', async () => {
    const before = await render();
    assert.ok(before.deny.includes('gateway'), 'the baseline forbids the critical gateway tool');
    assert.ok(before.deny.includes('group:runtime'), 'the hardened default stays');
    assert.ok(!before.deny.includes('message'), 'an allowed tool is not removed');
    await policy.setTenantPolicy(t.id, { execPolicy: 'ask', policies: [{ id: 'no-messages', description: 'no outgoing messages', cedar: 'forbid (principal, action, resource) when { resource.name == "message" };' }] }, { actor: 'test' });
    const after = await render();
    assert.ok(after.deny.includes('message'), 'the tenant forbid is rendered');
    assert.equal(after.exec.mode, 'ask', 'exec needing approval is rendered ask');
    await policy.setTenantPolicy(t.id, { execPolicy: 'deny', policies: [] }, { actor: 'test' });
    assert.equal((await render()).exec.mode, 'deny', "the tenant's exec deny wins over the platform's ask default");
  });
});
