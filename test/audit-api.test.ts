import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

interface Page {
  items: { seq: number; action: string; tenantId: string | null; detail: Record<string, unknown> }[];
  nextBefore: number | null;
}

describe('audit log API', async () => {
  const server = await startTestServer();
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);

  test("a tenant admin sees only its own tenant's events, newest first, filtered and paged", async () => {
    await a.client.json('POST', `/api/v1/tenants/${a.slug}/members`, { email: 'x1@a.test', role: 'viewer' }, 201);
    await a.client.json('POST', `/api/v1/tenants/${a.slug}/members`, { email: 'x2@a.test', role: 'viewer' }, 201);
    const page = await a.client.json<Page>('GET', `/api/v1/tenants/${a.slug}/audit?limit=2`);
    assert.equal(page.items.length, 2);
    assert.ok(page.items.every((e) => e.tenantId === a.id));
    assert.ok((page.items[0]?.seq ?? 0) > (page.items[1]?.seq ?? 0), 'newest first');
    assert.ok(page.nextBefore);
    const next = await a.client.json<Page>('GET', `/api/v1/tenants/${a.slug}/audit?limit=2&before=${page.nextBefore}`);
    assert.ok(next.items.every((e) => e.seq < (page.nextBefore ?? 0)));
    const members = await a.client.json<Page>('GET', `/api/v1/tenants/${a.slug}/audit?action=member.`);
    assert.ok(members.items.length >= 3 && members.items.every((e) => e.action.startsWith('member.')));
    const all = await a.client.json<Page>('GET', `/api/v1/tenants/${a.slug}/audit?limit=500`);
    assert.ok(!all.items.some((e) => e.tenantId === b.id), "never B's events");
    // The LIKE prefix is escaped: a wildcard in the filter matches nothing.
    assert.equal((await a.client.json<Page>('GET', `/api/v1/tenants/${a.slug}/audit?action=%25`)).items.length, 0);
  });

  test('members below tenant admin cannot read the audit log; platform admins see everything and the chain status', async () => {
    const viewer = new ApiClient(server.url, {
      bearer: (await server.services.tokens.create(a.id, { name: 'v', role: 'viewer', createdBy: a.ownerId }, { actor: 'test' })).token,
    });
    assert.equal((await viewer.call('GET', `/api/v1/tenants/${a.slug}/audit`)).status, 403);
    assert.equal((await a.client.call('GET', '/api/v1/platform/audit')).status, 403);
    const all = await admin.json<Page>('GET', '/api/v1/platform/audit?limit=500');
    assert.ok(all.items.some((e) => e.tenantId === a.id) && all.items.some((e) => e.tenantId === b.id) && all.items.some((e) => e.tenantId === null));
    const onlyB = await admin.json<Page>('GET', `/api/v1/platform/audit?tenantId=${b.id}`);
    assert.ok(onlyB.items.length > 0 && onlyB.items.every((e) => e.tenantId === b.id));
    const v = await admin.json<{ ok: boolean; checked: number }>('GET', '/api/v1/platform/audit/verify');
    assert.equal(v.ok, true);
    assert.ok(v.checked >= all.items.length);
    assert.equal((await admin.call('GET', '/api/v1/platform/audit?since=yesterday')).status, 400);
  });
});
