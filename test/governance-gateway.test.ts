/**
 * Apply, check, roll back on a real OpenClaw gateway (docs/adr/0013-gateway-config-versions.md): a configuration
 * change that breaks the gateway (memory-core settings the plugin's schema refuses, so OpenClaw will not start)
 * is applied by a restart, fails its check, and Clawplane goes back to the last known good version by itself;
 * chat works again, and the history shows both versions with the reason. One gateway, the shared fixture.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Instance } from '../src/instances/instances.ts';
import { startGatewayFixture } from './helpers/gateway.ts';

interface Version {
  number: number;
  status: string;
  statusReason: string;
  reason: string;
  author: string;
  kinds: string[];
  diff: { path: string; op: string }[];
}

describe('gateway configuration on a real gateway', { timeout: 900_000 }, async () => {
  const f = await startGatewayFixture({ file: import.meta.url });
  const { a, admin, server } = f;
  await admin.json('PATCH', `/api/v1/tenants/${a.slug}`, { quotas: { maxInstances: 2 } });
  const base = `/api/v1/tenants/${a.slug}/gateway-config`;
  const chat = async (text: string) => {
    const res = await a.client.call('POST', `/api/v1/tenants/${a.slug}/chat/completions`, { model: 'agent/main', messages: [{ role: 'user', content: text }], session: 'governance' });
    const body = await res.text();
    return { status: res.status, body };
  };
  let inst = '';

  test('the first start records version 1 and makes it the last known good; chat works', async () => {
    inst = (await a.client.json<Instance>('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'main' }, 202)).id;
    await f.waitStatus(a, inst, 'running');
    const c = await chat('hello');
    assert.equal(c.status, 200, c.body);
    assert.match(c.body, /Hello from fake-model/);
    const v1 = await a.client.json<Version>('GET', `${base}/versions/1`);
    assert.deepEqual([v1.status, v1.author, v1.reason], ['good', 'system', 'first configuration']);
  });

  test('a change that breaks the gateway is rolled back to the last known good version by itself; chat works again', async () => {
    const v2 = await a.client.json<Version>('POST', `${base}/versions`, { settings: { memory: { notASetting: true } }, reason: 'tune memory search' }, 201);
    assert.equal(v2.number, 2);
    assert.equal(v2.status, 'approved');
    assert.deepEqual(v2.kinds, ['plugins']);
    assert.deepEqual(v2.diff.map((d) => `${d.op} ${d.path}`), ['added plugins.entries.memory-core.config.notASetting']);
    // Restarted onto version 2, failed its check, started again on version 1.
    const back = await f.waitStatus(a, inst, 'running', /rolled back to configuration version 1 after version 2 failed/);
    assert.match(back.statusReason, /crashed \d+ times before becoming ready|not ready within/);
    const c = await chat('are you back?');
    assert.equal(c.status, 200, c.body);
    assert.match(c.body, /Hello from fake-model/);
    // The history shows both, with the reason.
    const page = await a.client.json<{ items: Version[] }>('GET', `${base}/versions`);
    assert.deepEqual(page.items.map((v) => [v.number, v.status]), [[2, 'failed'], [1, 'good']]);
    assert.match(page.items[0]?.statusReason ?? '', new RegExp(`failed its check on instance ${inst}: .*; rolled back to version 1`));
    assert.equal(page.items[0]?.reason, 'tune memory search');
    // The tenant's admins are told through the audit log, with the reason.
    const audit = await a.client.json<{ items: { action: string; decision: string; detail: { failed?: number; to?: number; reason?: string } }[] }>('GET', `/api/v1/tenants/${a.slug}/audit?action=gateway_config.rolled_back`);
    const row = audit.items.find((e) => e.action === 'gateway_config.rolled_back');
    assert.ok(row, JSON.stringify(audit.items.map((e) => e.action)));
    assert.deepEqual([row.decision, row.detail.failed, row.detail.to], ['failure', 2, 1]);
    // The gateway's own config is version 1's again (what runs is what the history says).
    const running = await server.services.instances.byId(inst);
    assert.equal((await server.db.query<{ config_version: number }>('SELECT config_version FROM instances WHERE id = $1', [inst])).rows[0]?.config_version, 1);
    assert.equal(running?.status, 'running');
    // The canary provider key is nowhere in the history.
    assert.ok(!JSON.stringify(page).includes(f.canary));
  });
});
