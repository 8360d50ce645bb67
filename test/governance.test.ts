/**
 * Versioned gateway configuration through the API (docs/adr/0013-gateway-config-versions.md): numbered,
 * immutable versions with author, reason and a structural diff; paging, show, diff any two; review rules with
 * two tenant admins (the proposer cannot approve, a rejected change never applies); the heartbeat cap; the
 * check's outcome (good, failed → last known good) as the reconciler reports it; secrets never in a version,
 * a diff, an audit row or an API body. The real-gateway rollback is in test/governance-gateway.test.ts.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import { applyWay, reloadKind } from '../src/governance/reload-plan.ts';
import { redactSecrets, diffConfigs } from '../src/governance/settings.ts';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

interface Version {
  id: string;
  number: number;
  parent: number | null;
  settings: Record<string, unknown>;
  config: { agents: { defaults: { heartbeat: { every: string }; model: { primary: string } } }; tools: { deny: string[] } };
  diff: { path: string; op: string; from?: unknown; to?: unknown }[];
  kinds: string[];
  author: string;
  reason: string;
  status: string;
  statusReason: string;
  decidedBy: string | null;
}

const CANARY = 'sk-canary-governance-7f3e9a1c5b2d4e6f';

/** One request to a broker socket, as a sandbox's supervisor sends it. */
function brokerCall(
  socketPath: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        socketPath,
        method,
        path,
        agent: false,
        headers: { authorization: `Bearer ${token}`, ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('gateway configuration versions', async () => {
  // No reconciler here: nothing starts (the restart a change asks for shows as the instance's generation).
  const server = await startTestServer({ CLAWPLANE_ROLES: 'api,broker' });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const base = `/api/v1/tenants/${a.slug}/gateway-config`;
  const svc = server.services.gatewayConfig;
  // A second tenant admin of A, and a second token of A's owner (the same person).
  const second = await admin.json<{ userId: string }>(
    'POST',
    `/api/v1/tenants/${a.slug}/members`,
    { email: 'second@tenant-a.test', role: 'tenant_admin' },
    201,
  );
  const secondAdmin = new ApiClient(server.url, {
    bearer: (await server.services.tokens.create(a.id, { name: 'second', role: 'tenant_admin', createdBy: second.userId }, { actor: 'test' })).token,
  });
  const ownerAgain = new ApiClient(server.url, {
    bearer: (await server.services.tokens.create(a.id, { name: 'owner-2', role: 'tenant_admin', createdBy: a.ownerId }, { actor: 'test' })).token,
  });
  // A canary credential the tenant holds: it must appear in no version, diff, audit row or API body.
  await a.client.json('POST', `/api/v1/tenants/${a.slug}/credentials`, { name: 'canary', type: 'api_key', value: CANARY }, 201);
  const bodies: string[] = [];
  const call = async <T>(c: ApiClient, method: string, p: string, body?: unknown, expect = 200): Promise<T> => {
    const res = await c.call(method, p, body);
    const text = await res.text();
    bodies.push(text);
    assert.equal(res.status, expect, `${method} ${p}: ${text}`);
    return JSON.parse(text) as T;
  };

  test('a change is a numbered version with author, reason, kinds and a diff; the first one is recorded as its parent', async () => {
    const v = await call<Version>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '2h', models: ['gpt-4o-mini'] }, reason: 'wake twice a day' },
      201,
    );
    assert.equal(v.number, 2);
    assert.equal(v.parent, 1);
    assert.equal(v.status, 'approved');
    assert.equal(v.author, `token:${a.tokenId}`);
    assert.equal(v.reason, 'wake twice a day');
    assert.deepEqual(v.kinds, ['heartbeat', 'models']);
    assert.equal(v.config.agents.defaults.heartbeat.every, '2h');
    const paths = v.diff.map((d) => d.path);
    assert.ok(paths.includes('agents.defaults.heartbeat.every'), paths.join(', '));
    assert.deepEqual(
      v.diff.find((d) => d.path === 'agents.defaults.heartbeat.every'),
      { path: 'agents.defaults.heartbeat.every', op: 'changed', from: '0m', to: '2h' },
    );
    assert.deepEqual(
      v.diff.find((d) => d.path === 'agents.defaults.model.primary'),
      { path: 'agents.defaults.model.primary', op: 'changed', from: 'clawplane/default', to: 'clawplane/gpt-4o-mini' },
    );
    const first = await call<Version>(a.client, 'GET', `${base}/versions/1`);
    // Never started, so never applied: superseded by the change made on top of it.
    assert.deepEqual([first.author, first.reason, first.kinds, first.status], ['system', 'first configuration', ['initial'], 'superseded']);
    // The same settings again change nothing: no new version.
    const again = await a.client.call('POST', `${base}/versions`, { settings: { heartbeatEvery: '2h', models: ['gpt-4o-mini'] }, reason: 'again' });
    assert.equal(again.status, 409);
    assert.equal(((await again.json()) as { code: string }).code, 'no_change');
    // Every version is audited.
    const audit = await server.db.query<{ target: string; actor: string }>(
      `SELECT target, actor FROM audit_events WHERE tenant_id = $1 AND action = 'gateway_config.version_created' ORDER BY seq`,
      [a.id],
    );
    assert.deepEqual(
      audit.rows.map((r) => r.target),
      ['gateway_config:1', 'gateway_config:2'],
    );
  });

  test('a tool policy change is a version of kind tools by whoever changed the policy; diff any two', async () => {
    await call(a.client, 'PUT', `/api/v1/tenants/${a.slug}/policy`, {
      execPolicy: 'deny',
      policies: [{ id: 'no-message', cedar: 'forbid (principal, action, resource) when { resource.name == "message" };' }],
    });
    const page = await call<{ items: Version[] }>(a.client, 'GET', `${base}/versions?limit=1`);
    const v = page.items[0];
    assert.ok(v);
    assert.equal(v.number, 3);
    assert.deepEqual(v.kinds, ['tools']);
    assert.equal(v.author, `token:${a.tokenId}`);
    assert.match(v.reason, /tool policy changed/);
    assert.ok(v.config.tools.deny.includes('message'));
    const d = await call<{ from: number; to: number; diff: { path: string }[] }>(a.client, 'GET', `${base}/diff?from=1&to=3`);
    assert.deepEqual([d.from, d.to], [1, 3]);
    const paths = d.diff.map((x) => x.path);
    assert.ok(paths.includes('agents.defaults.heartbeat.every') && paths.some((p) => p.startsWith('tools.deny')), paths.join(', '));
    // By id as well as by number.
    const byId = await call<{ diff: unknown[] }>(a.client, 'GET', `${base}/diff?from=${v.id}&to=1`);
    assert.equal(byId.diff.length, d.diff.length);
  });

  test('the list pages with the shared keyset cursor, newest first', async () => {
    const p1 = await call<{ items: Version[]; nextCursor: string | null }>(a.client, 'GET', `${base}/versions?limit=2`);
    assert.deepEqual(
      p1.items.map((v) => v.number),
      [3, 2],
    );
    assert.ok(p1.nextCursor);
    const p2 = await call<{ items: Version[]; nextCursor: string | null }>(a.client, 'GET', `${base}/versions?limit=2&cursor=${p1.nextCursor}`);
    assert.deepEqual(
      p2.items.map((v) => v.number),
      [1],
    );
    assert.equal(p2.nextCursor, null);
    const asc = await call<{ items: Version[] }>(a.client, 'GET', `${base}/versions?sort=number`);
    assert.deepEqual(
      asc.items.map((v) => v.number),
      [1, 2, 3],
    );
    // Tenant B has its own history (none yet).
    assert.deepEqual((await call<{ items: Version[] }>(b.client, 'GET', `/api/v1/tenants/${b.slug}/gateway-config/versions`)).items, []);
  });

  test('bad input is a 400 naming the field; an unknown version a 404', async () => {
    const cases: [string, string, unknown, string][] = [
      ['POST', `${base}/versions`, { settings: { heartbeatEvery: 'banana' }, reason: 'x' }, 'body.settings.heartbeatEvery'],
      ['POST', `${base}/versions`, { settings: {}, reason: '' }, 'body.reason'],
      ['POST', `${base}/versions`, { settings: { plugins: ['x'] }, reason: 'x' }, 'body.settings'],
      ['POST', `${base}/versions`, { settings: { memory: { dreaming: { enabled: true } } }, reason: 'x' }, 'body.settings.memory.dreaming'],
      ['POST', `${base}/versions`, { settings: { memory: { apiKey: CANARY } }, reason: 'x' }, 'body.settings.memory.apiKey'],
      ['POST', `${base}/versions`, { settings: { models: [] }, reason: 'x' }, 'body.settings.models'],
      ['GET', `${base}/versions/abc`, undefined, 'path.version'],
      ['GET', `${base}/diff?from=1`, undefined, 'query.to'],
      ['GET', `${base}/versions?cursor=zzz`, undefined, 'query.cursor'],
      ['PUT', `${base}/rules`, { review: ['tools'] }, 'body.review'],
      ['PUT', `${base}/rules`, { review: [], heartbeatMinMinutes: 0 }, 'body.heartbeatMinMinutes'],
    ];
    for (const [method, p, body, field] of cases) {
      const e = await call<{ code: string; details?: { issues?: { path: string }[] }; issues?: { path: string }[] }>(a.client, method, p, body, 400);
      const issues = e.details?.issues ?? e.issues ?? [];
      assert.ok(
        issues.some((i) => i.path.startsWith(field)),
        `${method} ${p} ${JSON.stringify(body)}: ${JSON.stringify(e)}`,
      );
    }
    await call(a.client, 'GET', `${base}/versions/999`, undefined, 404);
  });

  test('versions are immutable in the database: only their status moves', async () => {
    await assert.rejects(server.db.query(`UPDATE gateway_config_versions SET reason = 'rewritten' WHERE tenant_id = $1 AND number = 2`, [a.id]), /immutable/);
    await assert.rejects(server.db.query(`UPDATE gateway_config_versions SET config = '{}' WHERE tenant_id = $1 AND number = 2`, [a.id]), /immutable/);
    assert.equal((await call<Version>(a.client, 'GET', `${base}/versions/2`)).reason, 'wake twice a day');
  });

  test('review rules: a change waits as pending; its proposer cannot approve it (not with another token either); another admin can, and it applies', async () => {
    await call(a.client, 'PUT', `${base}/rules`, { review: ['heartbeat'] });
    const running = { id: a.instanceId };
    await server.db.query(`UPDATE instances SET desired_state = 'running', status = 'running' WHERE id = $1`, [running.id]);
    const gen = async () =>
      Number((await server.db.query<{ generation: number }>('SELECT generation FROM instances WHERE id = $1', [running.id])).rows[0]?.generation);
    const before = await gen();
    const p = await call<Version>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '4h', models: ['gpt-4o-mini'] }, reason: 'less often' },
      201,
    );
    assert.equal(p.status, 'pending');
    assert.match(p.statusReason, /waiting for a second admin \(heartbeat under review\)/);
    assert.equal(await gen(), before, 'a pending change restarts nothing');
    // What a start would use is still the version before.
    assert.equal((await svc.forStart(a.id)).input.heartbeatEvery, '2h');
    const own = await call<{ code: string; message: string }>(a.client, 'POST', `${base}/versions/${p.number}/approve`, {}, 403);
    assert.match(own.message, /another tenant admin must approve/);
    await call(ownerAgain, 'POST', `${base}/versions/${p.number}/approve`, {}, 403);
    const ok = await call<Version>(secondAdmin, 'POST', `${base}/versions/${p.id}/approve`, { comment: 'fine' });
    assert.equal(ok.status, 'approved');
    assert.equal(ok.decidedBy?.startsWith('token:'), true);
    assert.equal(await gen(), before + 1, 'the approved change restarts the running gateway onto it');
    assert.equal((await svc.forStart(a.id)).input.heartbeatEvery, '4h');
    await call(secondAdmin, 'POST', `${base}/versions/${p.number}/approve`, {}, 409);
    // A change of a kind not under review applies at once.
    const m = await call<Version>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '4h', models: ['gpt-4o'] }, reason: 'bigger model' },
      201,
    );
    assert.equal(m.status, 'approved');
  });

  test('a rejected change never applies; a stale pending one cannot be approved', async () => {
    const p = await call<Version>(a.client, 'POST', `${base}/versions`, { settings: { heartbeatEvery: '1h', models: ['gpt-4o'] }, reason: 'more often' }, 201);
    assert.equal(p.status, 'pending');
    const r = await call<Version>(secondAdmin, 'POST', `${base}/versions/${p.number}/reject`, { reason: 'too much spend' });
    assert.equal(r.status, 'rejected');
    assert.match(r.statusReason, /too much spend/);
    await call(secondAdmin, 'POST', `${base}/versions/${p.number}/approve`, {}, 409);
    assert.equal((await svc.forStart(a.id)).input.heartbeatEvery, '4h');
    assert.equal((await call<{ items: Version[] }>(a.client, 'GET', `${base}/versions?status=rejected`)).items.length, 1);
    // Pending, then another change applies first: approving the old proposal would undo it.
    const stale = await call<Version>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '3h', models: ['gpt-4o'] }, reason: 'three hours' },
      201,
    );
    await call(a.client, 'POST', `${base}/versions`, { settings: { heartbeatEvery: '4h', models: ['gpt-4o', 'gpt-4o-mini'] }, reason: 'two models' }, 201);
    const e = await call<{ code: string }>(secondAdmin, 'POST', `${base}/versions/${stale.number}/approve`, {}, 409);
    assert.equal(e.code, 'stale_version');
    const audit = await server.db.query<{ action: string }>(
      `SELECT action FROM audit_events WHERE tenant_id = $1 AND action IN ('gateway_config.approved', 'gateway_config.rejected') ORDER BY seq`,
      [a.id],
    );
    assert.deepEqual(
      audit.rows.map((x) => x.action),
      ['gateway_config.approved', 'gateway_config.rejected'],
    );
    await call(a.client, 'PUT', `${base}/rules`, { review: [] });
  });

  test("the heartbeat cap: a faster heartbeat is refused with the cap's name, and the rendered config never goes below it", async () => {
    await call(a.client, 'PUT', `${base}/rules`, { review: [], heartbeatMinMinutes: 60 });
    const e = await call<{ message: string; details?: { issues?: { path: string; message: string }[] } }>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '30m' }, reason: 'faster' },
      400,
    );
    assert.match(e.message, /heartbeat_min_minutes/);
    await call(a.client, 'POST', `${base}/versions`, { settings: { heartbeatEvery: '1h', models: ['gpt-4o'] }, reason: 'hourly' }, 201);
    // A cap raised later binds the versions made before it.
    await call(a.client, 'PUT', `${base}/rules`, { review: [], heartbeatMinMinutes: 180 });
    const start = await svc.forStart(a.id);
    assert.equal(start.input.heartbeatEvery, '180m');
    await call(a.client, 'PUT', `${base}/rules`, { review: [], heartbeatMinMinutes: null });
  });

  test('the check: a healthy start makes a version good; a failed one falls back to the last known good, once, with the reason', async () => {
    const inst = { id: a.instanceId };
    const good = await svc.forStart(a.id);
    // Two replicas reporting the same outcome: one transition, one audit row.
    await Promise.all([svc.applied(a.id, inst.id, good.version), svc.applied(a.id, inst.id, good.version)]);
    assert.equal((await svc.get(a.id, String(good.version))).status, 'good');
    const applied = await server.db.query(`SELECT 1 FROM audit_events WHERE tenant_id = $1 AND action = 'gateway_config.applied' AND target = $2`, [
      a.id,
      `gateway_config:${good.version}`,
    ]);
    assert.equal(applied.rowCount, 1);
    const bad = await call<Version>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '5h', memory: { unknownSetting: 1 } }, reason: 'tune memory' },
      201,
    );
    const [f1, f2] = await Promise.all([
      svc.failed(a.id, inst.id, bad.number, 'gateway e0 crashed 2 times before becoming ready'),
      svc.failed(a.id, inst.id, bad.number, 'gateway e0 crashed 2 times before becoming ready'),
    ]);
    assert.deepEqual([f1, f2].filter(Boolean), [{ fallback: good.version }]);
    const failed = await call<Version>(a.client, 'GET', `${base}/versions/${bad.number}`);
    assert.equal(failed.status, 'failed');
    assert.match(failed.statusReason, new RegExp(`crashed 2 times.*rolled back to version ${good.version}`));
    assert.equal((await svc.forStart(a.id)).version, good.version, 'a start now uses the last known good version');
    const rolled = await server.db.query<{ detail: { failed: number; to: number; reason: string } }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'gateway_config.rolled_back'`,
      [a.id],
    );
    assert.deepEqual(
      rolled.rows.map((r) => [r.detail.failed, r.detail.to]),
      [[bad.number, good.version]],
    );
    // A version that was good before is not rolled back on a later failure (a restart retries it).
    assert.equal(await svc.failed(a.id, inst.id, good.version, 'host trouble'), null);
    assert.equal((await svc.get(a.id, String(good.version))).status, 'good');
  });

  test('manual rollback to any version is a new version with its settings', async () => {
    const v = await call<Version>(a.client, 'POST', `${base}/versions/2/rollback`, { reason: 'back to the twice-a-day setup' }, 201);
    assert.deepEqual(v.settings, { heartbeatEvery: '2h', models: ['gpt-4o-mini'] });
    assert.ok(v.kinds.includes('rollback'));
    assert.equal(v.status, 'approved');
    // The tool policy stays today's: a rollback never gives tools back.
    assert.ok(v.config.tools.deny.includes('message'));
    await call(a.client, 'POST', `${base}/versions/2/rollback`, { reason: 'again' }, 409);
  });

  test('concurrent changes get distinct, gap-free numbers', async () => {
    const before = (await call<{ items: Version[] }>(a.client, 'GET', `${base}/versions?limit=1`)).items[0]?.number ?? 0;
    const made = await Promise.all(
      ['6h', '7h', '8h', '9h'].map((h) => a.client.call('POST', `${base}/versions`, { settings: { heartbeatEvery: h }, reason: h })),
    );
    assert.deepEqual(
      made.map((r) => r.status),
      [201, 201, 201, 201],
    );
    const nums = (await call<{ items: Version[] }>(a.client, 'GET', `${base}/versions?limit=4`)).items.map((v) => v.number);
    assert.deepEqual(nums, [before + 4, before + 3, before + 2, before + 1]);
  });

  test('an agent proposes a change through the broker: it always waits for review, and only its own tenant', async () => {
    const { broker } = server.services;
    const regA = await broker.registerSandbox({ tenantId: a.id, instanceId: a.instanceId, sandboxId: 'sbx-governance-a' });
    const regB = await broker.registerSandbox({ tenantId: b.id, instanceId: b.instanceId, sandboxId: 'sbx-governance-b' });
    try {
      const cur = await brokerCall(regA.socketPath, 'GET', '/governance/config', regA.token);
      assert.equal(cur.status, 200, JSON.stringify(cur.json));
      // No review rule is set for heartbeat or models here, yet the agent's proposal waits.
      assert.deepEqual((await call<{ review: string[] }>(a.client, 'GET', `${base}/rules`)).review, []);
      const p = await brokerCall(regA.socketPath, 'POST', '/governance/proposals', regA.token, {
        settings: { heartbeatEvery: '10h', models: ['gpt-4o'] },
        reason: 'I only need to check in twice a day',
      });
      assert.equal(p.status, 201, JSON.stringify(p.json));
      assert.equal(p.json['status'], 'pending');
      const n = Number(p.json['number']);
      const v = await call<Version>(a.client, 'GET', `${base}/versions/${n}`);
      assert.match(v.author, /^sandbox:[0-9a-f-]{36}$/, 'the sandbox start that asked');
      assert.equal((await svc.forStart(a.id)).input.heartbeatEvery === '10h', false, 'pending: not what a start uses');
      // Bad input names the field; a credential-named setting is refused.
      const bad = await brokerCall(regA.socketPath, 'POST', '/governance/proposals', regA.token, { settings: { heartbeatEvery: 'often' }, reason: 'x' });
      assert.equal(bad.status, 400);
      assert.match(String(bad.json['message']), /settings\.heartbeatEvery/);
      assert.equal((await brokerCall(regA.socketPath, 'POST', '/governance/proposals', regA.token, { settings: {}, reason: 'x', tenantId: b.id })).status, 400);
      // Tenant B's agent cannot see or name A's proposal (numbers are per tenant; B has its own or none).
      const fromB = await brokerCall(regB.socketPath, 'GET', `/governance/proposals/${n}`, regB.token);
      assert.equal(fromB.status, 404);
      assert.equal((await brokerCall(regB.socketPath, 'GET', `/governance/proposals/${n}`, regA.token)).status, 401, "A's token on B's socket");
      // A tenant admin decides it; the agent sees the outcome.
      await call(a.client, 'POST', `${base}/versions/${n}/approve`, { comment: 'ok' });
      assert.equal((await brokerCall(regA.socketPath, 'GET', `/governance/proposals/${n}`, regA.token)).json['status'], 'approved');
      assert.equal((await svc.forStart(a.id)).input.heartbeatEvery, '10h');
    } finally {
      await regA.close();
      await regB.close();
    }
  });

  test('secrets appear only as references: the canary is in no version, diff, audit row or API body', async () => {
    assert.deepEqual(redactSecrets({ gateway: { auth: { token: 'plain-secret', other: '${OPENCLAW_GATEWAY_TOKEN}' } }, models: { apiKey: 'k' } }), {
      gateway: { auth: { token: { $secretRef: 'gateway.auth.token' }, other: '${OPENCLAW_GATEWAY_TOKEN}' } },
      models: { apiKey: { $secretRef: 'models.apiKey' } },
    });
    assert.deepEqual(diffConfigs({ a: 1 }, { a: 1 }), []);
    const rows = await server.db.query<{ t: string }>('SELECT row_to_json(v)::text AS t FROM gateway_config_versions v');
    const audit = await server.db.query<{ t: string }>(`SELECT row_to_json(e)::text AS t FROM audit_events e WHERE action LIKE 'gateway_config.%'`);
    const all = [...rows.rows.map((r) => r.t), ...audit.rows.map((r) => r.t), ...bodies];
    assert.ok(rows.rows.length > 5 && audit.rows.length > 5 && bodies.length > 20);
    for (const t of all) assert.ok(!t.includes(CANARY), `the canary leaked: ${t.slice(0, 300)}`);
    // The rendered gateway token is a reference (a file SecretRef), never a value.
    const v = await svc.get(a.id, '1');
    assert.deepEqual((v.config['gateway'] as { auth: { token: unknown } }).auth.token, { source: 'file', provider: 'clawplane-gateway-token', id: 'value' });
  });

  test("hot apply: OpenClaw's reload table decides; a change it reloads in place asks the running gateway to reload, with no restart", async () => {
    // OpenClaw 2026.9.6 src/gateway/config-reload-plan.ts, as ported: longest prefix wins, unknown paths restart.
    for (const [path, kind] of [
      ['agents.defaults.heartbeat.every', 'hot'],
      ['agents.defaults.model.primary', 'hot'],
      ['models.providers.clawplane.models', 'hot'],
      ['tools.deny', 'restart'],
      ['plugins.entries.memory-core.config.notASetting', 'restart'],
      ['plugins.load.paths', 'hot'],
      ['cron.skipMissedJobs', 'hot'],
      ['hooks.allowedAgentIds', 'hot'],
      ['agents.entries.main.name', 'hot'],
      ['gateway.http.endpoints.responses.enabled', 'hot'],
      ['discovery.mdns.mode', 'hot'],
      ['logging.file', 'none'],
      ['gateway.reload.mode', 'none'],
      ['gateway.port', 'restart'],
      ['gateway.auth.mode', 'restart'],
      ['discovery.wideArea', 'restart'],
      ['browser.enabled', 'restart'],
      ['somethingNew', 'restart'],
    ] as const)
      assert.equal(reloadKind(path), kind, path);
    assert.deepEqual(applyWay({ gateway: { port: 1 }, tools: { deny: ['a'] } }, { gateway: { port: 2 }, tools: { deny: ['a', 'b'] } }), {
      way: 'restart',
      paths: ['gateway.port', 'tools.deny'],
    });
    assert.deepEqual(applyWay({ models: { a: 1 }, logging: { file: 'x' } }, { models: { a: 2 }, logging: { file: 'y' } }), {
      way: 'hot',
      paths: ['models.a', 'logging.file'],
    });

    await call(a.client, 'PUT', `${base}/rules`, { review: [] });
    const inst = a.instanceId;
    const runs = (await svc.forStart(a.id)).version;
    await server.db.query(`UPDATE instances SET desired_state = 'running', status = 'running', config_version = $2, config_target = NULL WHERE id = $1`, [
      inst,
      runs,
    ]);
    const row = async () =>
      (
        await server.db.query<{ generation: number; config_version: number | null; config_target: number | null }>(
          'SELECT generation, config_version, config_target FROM instances WHERE id = $1',
          [inst],
        )
      ).rows[0];
    const before = await row();
    const v = await call<Version & { appliedHow: string | null }>(
      a.client,
      'POST',
      `${base}/versions`,
      { settings: { heartbeatEvery: '6h', models: ['gpt-4o'] }, reason: 'even less often' },
      201,
    );
    assert.equal(v.appliedHow, null);
    const asked = await row();
    assert.deepEqual([asked?.generation, asked?.config_target], [before?.generation, v.number], 'a reload is asked for, not a restart');
    const plan = await svc.hotPlan(a.id, inst, { canHot: true });
    assert.ok(plan?.way === 'hot', JSON.stringify(plan));
    assert.equal(plan.version, v.number);
    assert.ok(plan.paths.includes('agents.defaults.heartbeat.every'), plan.paths.join(','));
    await svc.applied(a.id, inst, v.number, 'hot');
    const applied = await call<Version & { appliedHow: string | null }>(a.client, 'GET', `${base}/versions/${v.number}`);
    assert.deepEqual([applied.status, applied.appliedHow], ['good', 'hot']);
    assert.deepEqual([(await row())?.config_version, (await row())?.config_target], [v.number, null]);
    assert.equal(await svc.hotPlan(a.id, inst, { canHot: true }), null, 'nothing left to reload');
    // A driver that cannot write into a running sandbox: the same kind of change restarts instead.
    const w = await call<Version>(a.client, 'POST', `${base}/versions`, { settings: { heartbeatEvery: '8h', models: ['gpt-4o'] }, reason: 'rarely' }, 201);
    assert.deepEqual(await svc.hotPlan(a.id, inst, { canHot: false }), { way: 'restart', reason: 'the sandbox driver cannot reload a running gateway' });
    const restarted = await row();
    assert.deepEqual([restarted?.generation, restarted?.config_target], [(before?.generation ?? 0) + 1, null]);
    await svc.applied(a.id, inst, w.number, 'restart');
    assert.equal((await call<Version & { appliedHow: string | null }>(a.client, 'GET', `${base}/versions/${w.number}`)).appliedHow, 'restart');
    // What a gateway runs is not known (started before versions): a change restarts it.
    await server.db.query('UPDATE instances SET config_version = NULL WHERE id = $1', [inst]);
    await call(a.client, 'POST', `${base}/versions`, { settings: { heartbeatEvery: '12h', models: ['gpt-4o'] }, reason: 'twice a day' }, 201);
    assert.deepEqual([(await row())?.generation, (await row())?.config_target], [(before?.generation ?? 0) + 2, null]);
  });
});
