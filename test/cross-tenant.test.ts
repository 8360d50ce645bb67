/**
 * The cross-tenant harness (issue 3), reused by every later issue: it enumerates every route in the
 * OpenAPI document and calls each tenant-owned one as tenant A's admin with tenant B's slug, id and
 * resource ids. Every such call must answer 404 and leak nothing. A new route fails this file until it
 * is classified below (and given a valid body fixture), so no route can be added uncovered.
 * Then fast-check fuzzes every body: unknown fields (mass assignment) are refused, and nothing is a 500.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { ApiClient, onboard, twoTenants, type TenantFixture } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

/** How to fill each path parameter with tenant B's (or any tenant's) resources. */
const PARAMS: Record<string, (t: TenantFixture) => string> = {
  tenant: (t) => t.slug,
  userId: (t) => t.ownerId,
  tokenId: (t) => t.tokenId,
  credentialId: (t) => t.credentialId,
  providerId: (t) => t.providerId,
  skill: () => 'slack',
  tool: () => 'read',
  jti: (t) => t.grantJti,
  instanceId: (t) => t.instanceId,
  sessionId: (t) => t.sessionId,
  backupId: (t) => t.backupId,
  agentId: (t) => t.agentId,
  taskId: (t) => t.taskId,
  memoryId: (t) => String(t.memoryId),
  findingId: (t) => t.findingId,
  name: () => 'github',
  model: () => 'gpt-4o',
  projectId: (t) => t.projectId,
  laneId: (t) => t.laneId,
  runId: (t) => t.runId,
  step: () => '0',
  poolId: (t) => t.poolId,
  ruleId: (t) => t.swarmRuleId,
  version: (t) => configVersionIds.get(t.id) ?? 'missing',
  kind: () => 'telegram',
};

/** Each tenant's gateway configuration version id (filled once the tenants exist). */
const configVersionIds = new Map<string, string>();

/**
 * Path parameters that name something global, not a tenant's resource (a skill of the registry): a
 * route whose only sub-ids are these has no "A's tenant, B's resource" case to try.
 */
const GLOBAL_PARAMS = new Set(['skill', 'tool', 'name', 'step', 'kind']);

/** A valid body for each route that takes one, so a 404 is never masked by a 400. */
const BODIES: Record<string, unknown> = {
  'POST /api/v1/tenants/{tenant}/members': { email: 'new@x.test', role: 'viewer' },
  'PATCH /api/v1/tenants/{tenant}/members/{userId}': { role: 'member' },
  'POST /api/v1/tenants/{tenant}/tokens': { name: 'n', role: 'viewer' },
  'PATCH /api/v1/tenants/{tenant}': { name: 'renamed' },
  'POST /api/v1/tenants/{tenant}/suspend': {},
  'POST /api/v1/tenants/{tenant}/resume': {},
  'POST /api/v1/tenants': { slug: 'fuzz-x', name: 'x' },
  'POST /api/v1/auth/login': { email: 'a@b.test', password: 'x' },
  'POST /api/v1/onboarding/admin': { email: 'a@b.test', password: 'long enough password', setupCode: 'x' },
  'POST /api/v1/onboarding/oidc': { skip: true },
  'POST /api/v1/onboarding/provider': { skip: true },
  'POST /api/v1/onboarding/defaults': {},
  'PUT /api/v1/platform/oidc': { issuer: 'https://idp.example.test', clientId: 'c', clientSecret: 's' },
  'PUT /api/v1/platform/agent-defaults': {},
  'POST /api/v1/platform/grant-keys/rotate': {},
  'POST /api/v1/auth/logout': undefined,
  'POST /api/v1/tenants/{tenant}/credentials': { name: 'fuzz-key', type: 'api_key', value: 'sk-fuzz-0123456789abcdef' },
  'POST /api/v1/tenants/{tenant}/credentials/skills/{skill}': { values: { bot_token: 'xoxb-fake-fixture-not-a-token' } },
  'PUT /api/v1/tenants/{tenant}/credentials/{credentialId}/value': { value: 'sk-fuzz-replaced-0123456789' },
  'POST /api/v1/tenants/{tenant}/providers': { kind: 'mistral', name: 'fuzz-provider' },
  'PATCH /api/v1/tenants/{tenant}/providers/{providerId}': { defaultModel: 'gpt-4o-mini' },
  'PUT /api/v1/tenants/{tenant}/model-routes': { scope: 'agent', scopeName: 'fuzz-agent', targets: [] },
  'PUT /api/v1/tenants/{tenant}/policy': {
    execPolicy: 'deny',
    policies: [{ id: 'no-browser', cedar: 'forbid (principal, action, resource) when { resource.name == "browser" };' }],
  },
  'POST /api/v1/tenants/{tenant}/policy/explain': { tool: 'read', agent: 'main', context: {} },
  'POST /api/v1/tenants/{tenant}/grants/{jti}/revoke': undefined,
  'POST /api/v1/tenants/{tenant}/instances': { name: 'fuzz-instance', start: false },
  'POST /api/v1/tenants/{tenant}/instances/{instanceId}/upgrade': { runtimeVersion: 'openclaw@2026.9.7' },
  'POST /api/v1/tenants/{tenant}/chat/completions': { model: 'agent/main', messages: [{ role: 'user', content: 'hi' }] },
  'POST /api/v1/tenants/{tenant}/responses': { model: 'agent/main', input: 'hi' },
  'POST /api/v1/tenants/{tenant}/hooks/agent': { message: 'hi' },
  'POST /api/v1/tenants/{tenant}/hooks/wake': { text: 'hi' },
  'POST /api/v1/tenants/{tenant}/backups/{backupId}/restore': { name: 'restored' },
  'POST /api/v1/tenants/{tenant}/tasks': { capability: 'summarise', input: 'fuzz task' },
  'POST /api/v1/tenants/{tenant}/tasks/{taskId}/approve': { comment: "approving another tenant's task" },
  'POST /api/v1/tenants/{tenant}/tasks/{taskId}/reject': { comment: 'x' },
  'POST /api/v1/tenants/{tenant}/tasks/{taskId}/cancel': { reason: 'x' },
  'PUT /api/v1/tenants/{tenant}/approval-webhook': { url: 'https://hooks.example.test/clawplane' },
  'POST /api/v1/tenants/{tenant}/agents': { name: 'fuzz-agent', capabilities: ['fuzz'] },
  'PATCH /api/v1/tenants/{tenant}/agents/{agentId}': { trustLevel: 3 },
  'POST /api/v1/tenants/{tenant}/memories': { agent: 'fixture', content: 'a memory for another tenant' },
  'PATCH /api/v1/tenants/{tenant}/memories/{memoryId}': { content: 'overwritten by another tenant' },
  'POST /api/v1/tenants/{tenant}/findings': { title: 'a finding for another tenant' },
  'PATCH /api/v1/tenants/{tenant}/findings/{findingId}': { title: 'overwritten by another tenant' },
  'PUT /api/v1/policy/baseline': { policies: [{ id: 'read-only', cedar: 'permit (principal, action, resource) when { resource.name == "read" };' }] },
  'PUT /api/v1/policy/tools/{tool}': { risk: 'low', group: 'fs' },
  'PUT /api/v1/tenants/{tenant}/limits': { items: [{ agent: '', dailyTokens: 10, dailyCostUsd: null, requestsPerMinute: null, maxCallsPerTask: null }] },
  'PUT /api/v1/tenants/{tenant}/egress': { items: [{ host: 'api.github.com' }] },
  'PUT /api/v1/tenants/{tenant}/skill-endpoints/{name}': { baseUrl: 'https://api.github.com' },
  'PUT /api/v1/platform/prices/{model}': { inputUsdPerMtok: 1, outputUsdPerMtok: 2 },
  'PUT /api/v1/platform/default-provider': { kind: 'openai', apiKey: 'sk-fuzz-0123456789', defaultModel: 'gpt-4o' },
  'PUT /api/v1/platform/lane-settings': { maxRunsPerDay: 50 },
  'PUT /api/v1/tenants/{tenant}/lane-settings': { timeZone: 'Europe/Berlin' },
  'POST /api/v1/tenants/{tenant}/projects': { name: 'fuzz-project', laneKinds: ['analysis'] },
  'PATCH /api/v1/tenants/{tenant}/projects/{projectId}': { description: 'changed by another tenant' },
  'POST /api/v1/tenants/{tenant}/lanes': { name: 'fuzz-lane', project: 'fixture', kind: 'analysis', steps: [{ name: 'one', capability: 'fuzz', input: 'x' }] },
  'PATCH /api/v1/tenants/{tenant}/lanes/{laneId}': { enabled: true },
  'PUT /api/v1/tenants/{tenant}/doctor-lane': { enabled: true },
  'POST /api/v1/tenants/{tenant}/lane-runs/{runId}/steps/{step}/approve': { comment: "approving another tenant's step" },
  'POST /api/v1/tenants/{tenant}/lane-runs/{runId}/steps/{step}/reject': { comment: 'x' },
  'POST /api/v1/tenants/{tenant}/lane-runs/{runId}/cancel': { reason: "cancelling another tenant's run" },
  'POST /api/v1/tenants/{tenant}/gateway-config/versions': { settings: { heartbeatEvery: '6h' }, reason: 'fuzz' },
  'POST /api/v1/tenants/{tenant}/gateway-config/versions/{version}/approve': { comment: "approving another tenant's change" },
  'POST /api/v1/tenants/{tenant}/gateway-config/versions/{version}/reject': { reason: 'x' },
  'POST /api/v1/tenants/{tenant}/gateway-config/versions/{version}/rollback': { reason: 'x' },
  'PUT /api/v1/tenants/{tenant}/gateway-config/rules': { review: ['heartbeat'] },
  'POST /api/v1/tenants/{tenant}/pools': { agentType: 'coding' },
  'PATCH /api/v1/tenants/{tenant}/pools/{poolId}': { maxExecutors: 2 },
  'PUT /api/v1/tenants/{tenant}/approval-channels/{kind}': { credentialId: '00000000-0000-4000-8000-000000000000', target: '42' },
  'POST /api/v1/tenants/{tenant}/swarm-rules': {
    name: 'fuzz-swarm',
    capability: 'fuzz-swarm',
    steps: [
      { agentType: 'chat', capability: 'a' },
      { agentType: 'shell', capability: 'b' },
    ],
  },
};

/**
 * Routes outside /tenants/{tenant}: what tenant A's admin token gets there. Platform routes are 403,
 * public ones answer, user-only ones refuse a token.
 */
const NOT_TENANT_SCOPED: Record<string, number[]> = {
  'GET /healthz': [200],
  'GET /readyz': [200],
  'GET /api/v1/onboarding': [200],
  'POST /api/v1/onboarding/admin': [409],
  'POST /api/v1/onboarding/oidc': [403, 409],
  'POST /api/v1/onboarding/provider': [403, 409],
  'POST /api/v1/onboarding/defaults': [403, 409],
  'GET /api/v1/auth/providers': [200],
  'POST /api/v1/auth/login': [401],
  'POST /api/v1/auth/logout': [403],
  'GET /api/v1/auth/me': [403],
  'GET /api/v1/auth/oidc/start': [409],
  'GET /api/v1/auth/oidc/callback': [400],
  'GET /api/v1/platform/oidc': [403],
  'PUT /api/v1/platform/oidc': [403],
  'GET /api/v1/platform/agent-defaults': [403],
  'PUT /api/v1/platform/agent-defaults': [403],
  'POST /api/v1/tenants': [403],
  'GET /api/v1/tenants': [200],
  'GET /api/v1/skills': [200],
  'GET /api/v1/provider-kinds': [200],
  'GET /api/v1/policy/baseline': [200],
  'PUT /api/v1/policy/baseline': [403],
  'GET /api/v1/policy/tools': [200],
  'PUT /api/v1/policy/tools/{tool}': [403],
  'GET /api/v1/platform/prices': [200],
  'PUT /api/v1/platform/prices/{model}': [403],
  'GET /api/v1/platform/default-provider': [403],
  'PUT /api/v1/platform/default-provider': [403],
  'GET /api/v1/platform/audit': [403],
  'GET /api/v1/platform/replicas': [403],
  'GET /api/v1/platform/grant-keys': [403],
  'POST /api/v1/platform/grant-keys/rotate': [403],
  'GET /api/v1/platform/audit/verify': [403],
  'GET /api/v1/platform/doctor': [403],
  'GET /api/v1/platform/usage/daily': [403],
  'GET /api/v1/platform/lane-settings': [403],
  'PUT /api/v1/platform/lane-settings': [403],
};

/** Tenant-scoped routes whose query string is required. */
const QUERIES: Record<string, string> = {
  'DELETE /api/v1/tenants/{tenant}': '?confirm=tenant-b',
};

/**
 * Every way to reach or wake a tenant's gateway, and every call that starts an instance: a suspended
 * tenant's member gets 409 tenant_suspended from each (the WebSocket is tried separately).
 */
const REACHES_GATEWAY = [
  'POST /api/v1/tenants/{tenant}/chat/completions',
  'POST /api/v1/tenants/{tenant}/responses',
  'POST /api/v1/tenants/{tenant}/hooks/agent',
  'POST /api/v1/tenants/{tenant}/hooks/wake',
  'POST /api/v1/tenants/{tenant}/tasks',
  'POST /api/v1/tenants/{tenant}/instances',
  'POST /api/v1/tenants/{tenant}/instances/{instanceId}/start',
  'POST /api/v1/tenants/{tenant}/instances/{instanceId}/restart',
  'POST /api/v1/tenants/{tenant}/backups/{backupId}/restore',
  'POST /api/v1/tenants/{tenant}/lanes/{laneId}/runs',
];

/** Opens the gateway WebSocket; resolves with the HTTP status of a refused upgrade (101 when it opened). */
function openGatewaySocket(url: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), { headers: { authorization: `Bearer ${token}` } });
    ws.on('open', () => {
      ws.terminate();
      resolve({ status: 101, body: '' });
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on('error', reject);
  });
}

interface Operation {
  key: string;
  method: string;
  path: string;
  hasBody: boolean;
}

describe('cross-tenant harness', async () => {
  const server = await startTestServer();
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  for (const t of [a, b])
    configVersionIds.set(
      t.id,
      (
        await server.services.gatewayConfig.propose(
          t.id,
          { settings: { heartbeatEvery: '12h' }, reason: `fixture of ${t.slug}` },
          { actor: 'test', person: 'test' },
        )
      ).id,
    );
  const doc = (await (await fetch(`${server.url}/api/v1/openapi.json`)).json()) as { paths: Record<string, Record<string, { requestBody?: unknown }>> };
  const ops: Operation[] = Object.entries(doc.paths).flatMap(([p, methods]) =>
    Object.entries(methods).map(([m, op]) => ({ key: `${m.toUpperCase()} ${p}`, method: m.toUpperCase(), path: p, hasBody: op.requestBody !== undefined })),
  );
  const fill = (p: string, t: TenantFixture, others: TenantFixture = t) =>
    p.replace(/\{(\w+)\}/g, (_, name: string) => {
      const f = PARAMS[name];
      if (!f) throw new Error(`The harness does not know path parameter {${name}}: add it to PARAMS in test/cross-tenant.test.ts`);
      return encodeURIComponent(name === 'tenant' ? f(t) : f(others));
    });

  test('every route is classified, and every body route has a fixture', () => {
    assert.ok(ops.length >= 20, `found ${ops.length} operations`);
    for (const op of ops) {
      const tenantScoped = op.path.startsWith('/api/v1/tenants/{tenant}');
      assert.ok(tenantScoped || op.key in NOT_TENANT_SCOPED, `${op.key} is neither tenant-scoped nor listed in NOT_TENANT_SCOPED: classify it`);
      if (op.hasBody) assert.ok(op.key in BODIES, `${op.key} takes a body: add a valid one to BODIES`);
      for (const m of op.path.matchAll(/\{(\w+)\}/g)) assert.ok(m[1] && m[1] in PARAMS, `${op.key}: add {${m[1]}} to PARAMS`);
    }
  });

  test("tenant A's admin gets 404 for every tenant-owned route with tenant B's slug, id or resource ids", async () => {
    const leaks = [
      b.id,
      b.ownerId,
      b.tokenId,
      b.credentialId,
      b.providerId,
      b.grantJti,
      b.instanceId,
      b.sessionId,
      b.backupId,
      b.agentId,
      b.taskId,
      b.findingId,
      b.projectId,
      b.laneId,
      b.runId,
      b.poolId,
      b.swarmRuleId,
      'lane fixture of tenant-b',
      'memory of tenant-b',
      'finding of tenant-b',
      'fixture task of tenant-b',
      'TENANT-B',
      'sk-fixture-tenant-b',
      'hello from tenant-b',
    ];
    for (const op of ops.filter((o) => o.path.startsWith('/api/v1/tenants/{tenant}'))) {
      const q = QUERIES[op.key] ?? '';
      const attempts = [
        fill(op.path, b) + q, // B's slug and B's ids
        fill(op.path, { ...b, slug: b.id }) + q, // B's id instead of its slug
      ];
      const subIds = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] ?? '').filter((n) => n !== 'tenant');
      if (subIds.some((n) => !GLOBAL_PARAMS.has(n))) attempts.push(fill(op.path, a, b) + q); // A's own tenant, B's resource ids
      for (const url of attempts) {
        const res = await a.client.call(op.method, url, BODIES[op.key]);
        const text = await res.text();
        assert.equal(res.status, 404, `${op.method} ${url} answered ${res.status}: ${text}`);
        for (const s of leaks) assert.ok(!text.includes(s), `${op.method} ${url} leaked ${s}`);
      }
    }
    // B is untouched.
    const bTenant = await b.client.json<{ name: string; status: string }>('GET', `/api/v1/tenants/${b.slug}`);
    assert.deepEqual([bTenant.name, bTenant.status], ['TENANT-B', 'active']);
    const bMembers = await b.client.json<{ items: unknown[] }>('GET', `/api/v1/tenants/${b.slug}/members`);
    assert.equal(bMembers.items.length, 1);
    const bTokens = await b.client.json<{ items: { revokedAt: string | null }[] }>('GET', `/api/v1/tenants/${b.slug}/tokens`);
    assert.ok(bTokens.items.every((t) => t.revokedAt === null));
    const bCredential = await b.client.json<{ status: string; version: number }>('GET', `/api/v1/tenants/${b.slug}/credentials/${b.credentialId}`);
    assert.deepEqual([bCredential.status, bCredential.version], ['active', 1]);
    const bGrants = await b.client.json<{ items: { jti: string; revokedAt: string | null }[] }>('GET', `/api/v1/tenants/${b.slug}/grants`);
    assert.equal(bGrants.items.find((g) => g.jti === b.grantJti)?.revokedAt, null);
    const bInstance = await b.client.json<{ desiredState: string; runtimeVersion: string }>('GET', `/api/v1/tenants/${b.slug}/instances/${b.instanceId}`);
    assert.deepEqual([bInstance.desiredState, bInstance.runtimeVersion], ['stopped', '2026.9.6']);
    const bTask = await b.client.json<{ status: string; createdBy: string }>('GET', `/api/v1/tenants/${b.slug}/tasks/${b.taskId}`);
    assert.equal(bTask.createdBy, 'test', "B's task was not touched");
    assert.notEqual(bTask.status, 'cancelled');
    const bAgent = await b.client.json<{ trustLevel: number }>('GET', `/api/v1/tenants/${b.slug}/agents/${b.agentId}`);
    assert.equal(bAgent.trustLevel, 1);
    const bAudit = await server.db.query('SELECT 1 FROM audit_events WHERE target = $1 AND action <> $2', [`task:${b.taskId}`, 'task.create']);
    assert.equal(bAudit.rowCount, 0, "nobody approved, rejected or cancelled B's task");
    const bProvider = await b.client.json<{ defaultModel: string; credentialId: string }>('GET', `/api/v1/tenants/${b.slug}/providers/${b.providerId}`);
    assert.deepEqual([bProvider.defaultModel, bProvider.credentialId], ['gpt-4o', b.credentialId]);
    const bSession = await b.client.json<{ items: { content: string }[] }>('GET', `/api/v1/tenants/${b.slug}/chat/sessions/${b.sessionId}/messages`);
    assert.deepEqual(
      bSession.items.map((m) => m.content),
      ['hello from tenant-b'],
    );
    assert.equal((await b.client.json<{ items: unknown[] }>('GET', `/api/v1/tenants/${b.slug}/backups`)).items.length, 1);
    const bMemory = await b.client.json<{ content: string }>('GET', `/api/v1/tenants/${b.slug}/memories/${b.memoryId}`);
    assert.equal(bMemory.content, 'memory of tenant-b');
    assert.equal((await b.client.json<{ items: unknown[] }>('GET', `/api/v1/tenants/${b.slug}/memories`)).items.length, 1, 'nothing was added to B');
    const bFinding = await b.client.json<{ title: string }>('GET', `/api/v1/tenants/${b.slug}/findings/${b.findingId}`);
    assert.equal(bFinding.title, 'finding of tenant-b');
    assert.equal((await b.client.json<{ items: unknown[] }>('GET', `/api/v1/tenants/${b.slug}/findings`)).items.length, 1);
    const bLane = await b.client.json<{ enabled: boolean }>('GET', `/api/v1/tenants/${b.slug}/lanes/${b.laneId}`);
    assert.equal(bLane.enabled, false, "B's lane was not enabled");
    const bRun = await b.client.json<{ status: string; steps: { decidedBy: string | null }[] }>('GET', `/api/v1/tenants/${b.slug}/lane-runs/${b.runId}`);
    assert.deepEqual([bRun.status, bRun.steps[0]?.decidedBy], ['waiting_approval', null], "nobody decided B's parked step");
    assert.equal((await b.client.json<{ items: unknown[] }>('GET', `/api/v1/tenants/${b.slug}/lane-runs`)).items.length, 1, 'no run was started for B');
    assert.deepEqual(
      (await b.client.json<{ items: { name: string }[] }>('GET', `/api/v1/tenants/${b.slug}/lanes`)).items.map((l) => l.name),
      ['fixture'],
      'no doctor lane was enabled for B',
    );
    assert.equal((await b.client.json<{ timeZone: string }>('GET', `/api/v1/tenants/${b.slug}/lane-settings`)).timeZone, 'UTC');
    const bPools = await b.client.json<{ items: { id: string; state: string; maxExecutors: number }[] }>('GET', `/api/v1/tenants/${b.slug}/pools`);
    assert.deepEqual(
      bPools.items.map((p) => [p.id, p.state, p.maxExecutors]),
      [[b.poolId, 'active', 1]],
      "B's pool was not changed, paused or removed",
    );
    const bRules = await b.client.json<{ items: { id: string }[] }>('GET', `/api/v1/tenants/${b.slug}/swarm-rules`);
    assert.deepEqual(
      bRules.items.map((r) => r.id),
      [b.swarmRuleId],
      "B's swarm rule was not removed and none was added",
    );
  });

  test('routes outside a tenant answer a tenant token as classified', async () => {
    for (const op of ops.filter((o) => !o.path.startsWith('/api/v1/tenants/{tenant}'))) {
      const want = NOT_TENANT_SCOPED[op.key] ?? [];
      const res = await a.client.call(op.method, fill(op.path, a), BODIES[op.key]);
      assert.ok(want.includes(res.status), `${op.key} answered ${res.status}, expected one of ${want.join('/')}: ${await res.text()}`);
    }
  });

  test('a user who is a member of A only gets 404 from B (sessions, not just tokens)', async () => {
    // Platform admins are not members: the breakglass admin can manage B but not read its tokens.
    assert.equal((await admin.call('GET', `/api/v1/tenants/${b.slug}/tokens`)).status, 403);
    const viewerOfA = new ApiClient(server.url, {
      bearer: (await server.services.tokens.create(a.id, { name: 'v', role: 'viewer', createdBy: a.ownerId }, { actor: 'test' })).token,
    });
    for (const p of [`/api/v1/tenants/${b.slug}`, `/api/v1/tenants/${b.id}/members`, `/api/v1/tenants/${b.slug}/tokens`]) {
      assert.equal((await viewerOfA.call('GET', p)).status, 404, p);
    }
  });

  test('fuzz: unknown fields such as tenantId, role, ownerId are refused on every body (no mass assignment)', async () => {
    const bodyOps = ops.filter((o) => o.hasBody && o.key in BODIES && BODIES[o.key] !== undefined);
    const extraKey = fc.constantFrom('tenantId', 'tenant_id', 'ownerId', 'role', 'id', 'platformAdmin', 'isAdmin', 'createdBy', 'status', 'breakglass');
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...bodyOps), extraKey, fc.jsonValue(), async (op, key, value) => {
        const base = BODIES[op.key] as Record<string, unknown>;
        fc.pre(!(key in base) && !(op.key.includes('members') && key === 'role') && !(op.key.includes('tokens') && key === 'role'));
        const who = op.path.startsWith('/api/v1/tenants/{tenant}') ? a.client : admin;
        const res = await who.call(op.method, fill(op.path, a) + (QUERIES[op.key] ?? ''), { ...base, [key]: value });
        const text = await res.text();
        // 400 from the strict schema; 403/409 where authorization or state refuses first. Never a 2xx or 5xx.
        return [400, 403, 409].includes(res.status) || (console.error(op.key, key, res.status, text), false);
      }),
      { numRuns: 300 },
    );
  });

  test('fuzz: arbitrary JSON bodies never produce a 500', async () => {
    const bodyOps = ops.filter((o) => o.hasBody);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...bodyOps), fc.jsonValue({ maxDepth: 3 }), fc.boolean(), async (op, value, asAdmin) => {
        const who = asAdmin ? admin : a.client;
        const res = await who.call(op.method, fill(op.path, a) + (QUERIES[op.key] ?? ''), value);
        await res.text();
        return res.status < 500 || (console.error(op.key, JSON.stringify(value), res.status), false);
      }),
      { numRuns: 400 },
    );
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.doesNotMatch(m, /clawplane_http_requests_total\{[^}]*status="5\d\d"/);
  });

  test('a suspended tenant is refused on every way to its gateway (HTTP, WebSocket, tasks, start), and nothing wakes', async () => {
    const member = (await server.services.tokens.create(b.id, { name: 'member', role: 'member', createdBy: b.ownerId }, { actor: 'test' })).token;
    const viewer = (await server.services.tokens.create(b.id, { name: 'viewer', role: 'viewer', createdBy: b.ownerId }, { actor: 'test' })).token;
    const asMember = new ApiClient(server.url, { bearer: member });
    for (const key of REACHES_GATEWAY)
      assert.ok(
        ops.some((o) => o.key === key),
        `${key} is not in the OpenAPI document any more: update REACHES_GATEWAY`,
      );
    const auditBefore = Number((await server.db.query<{ n: string }>('SELECT max(seq) AS n FROM audit_events')).rows[0]?.n ?? 0);
    assert.equal((await admin.call('POST', `/api/v1/tenants/${b.slug}/suspend`, {})).status, 200);
    try {
      for (const op of ops.filter((o) => o.path.startsWith('/api/v1/tenants/{tenant}'))) {
        // The tenant's admin on the ways in (a restore needs one); a member elsewhere (who cannot revoke the tokens used here).
        const who = REACHES_GATEWAY.includes(op.key) ? b.client : asMember;
        const res = await who.call(op.method, fill(op.path, b) + (QUERIES[op.key] ?? ''), BODIES[op.key]);
        const text = await res.text();
        assert.ok(res.status < 500, `${op.key} answered ${res.status}: ${text}`);
        if (REACHES_GATEWAY.includes(op.key)) {
          assert.equal(res.status, 409, `${op.key} answered ${res.status} for a suspended tenant: ${text}`);
          // The OpenAI-compatible routes carry the code inside OpenAI's error shape.
          const e = JSON.parse(text) as { code?: string; error?: { code: string } };
          assert.equal(e.code ?? e.error?.code, 'tenant_suspended', `${op.key}: ${text}`);
        }
      }
      // The socket is refused before the upgrade, for every role that may otherwise open it.
      for (const token of [member, viewer, b.client.bearer ?? '']) {
        const ws = await openGatewaySocket(`${server.url}/api/v1/tenants/${b.slug}/gateway/ws`, token);
        assert.equal(ws.status, 409, `the gateway socket answered ${ws.status}: ${ws.body}`);
      }
      // (The upgrade adaptor answers a refused upgrade without a body: the same route without Upgrade shows the reason.)
      const plain = await asMember.call('GET', `/api/v1/tenants/${b.slug}/gateway/ws`);
      assert.equal(plain.status, 409);
      assert.equal(((await plain.json()) as { code: string }).code, 'tenant_suspended');
      // Work the platform does on the tenant's behalf (a task queued before the suspension) is refused too.
      await assert.rejects(server.services.gate.admitSystem(b.id, 'task', { actor: 'system:tasks' }), { code: 'tenant_suspended' });
      await assert.rejects(server.services.instances.start(b.id, b.instanceId, { actor: 'cli' }), { code: 'tenant_suspended' });
      // Nothing reaches a gateway without the gate's decision, not even a value shaped like one.
      const row = await server.services.instances.get(b.id, b.instanceId);
      await assert.rejects(server.services.ingress.connect({ tenantId: b.id, channel: 'chat', by: { actor: 'forged' } } as never, row), /GatewayAccess/);
      // Nothing woke: no start in the audit, every instance of B stays stopped.
      const woke = await server.db.query(
        "SELECT action, actor FROM audit_events WHERE seq > $1 AND tenant_id = $2 AND action IN ('instance.start', 'instance.restart', 'instance.deploy') AND decision = 'success'",
        [auditBefore, b.id],
      );
      assert.deepEqual(woke.rows, []);
      const instances = await server.db.query<{ desired_state: string; status: string }>('SELECT desired_state, status FROM instances WHERE tenant_id = $1', [
        b.id,
      ]);
      assert.ok(
        instances.rows.length > 0 && instances.rows.every((r) => r.desired_state === 'stopped' && r.status === 'stopped'),
        JSON.stringify(instances.rows),
      );
    } finally {
      assert.equal((await admin.call('POST', `/api/v1/tenants/${b.slug}/resume`, {})).status, 200);
    }
    // Resumed, the same member is let through the gate again (the refusals above were the suspension's).
    assert.equal(
      (
        await server.services.gate.admit({
          principal: { kind: 'token', tokenId: 't', tenantId: b.id, role: 'member', createdBy: null },
          tenant: { id: b.id, slug: b.slug, status: 'active' },
          role: 'member',
          requestId: 'r',
          channel: 'chat',
        })
      ).tenantId,
      b.id,
    );
  });
});
