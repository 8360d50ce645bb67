/**
 * Usage for billing (docs/usage.md): the export for a day equals the sum of that day's usage rows per tenant,
 * across a UTC midnight (rows at 23:59:59.999 and 00:00:00.000), with the database set east of UTC (connections
 * opened after the setting run there);
 * the CSV parses to the same figures; bad ranges are 400s naming the field.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { parse } from 'csv-parse/sync';
import { ApiClient, onboard } from './helpers/client.ts';
import { adminQuery } from './helpers/db.ts';
import { startTestServer } from './helpers/server.ts';

interface Daily {
  tenantId: string;
  tenantSlug: string;
  day: string;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  modelCalls: number;
  tasks: number;
  taskSeconds: number;
  gatewayHours: number;
  artifactBytes: number;
  backupBytes: number;
}

describe('daily usage export', async () => {
  const server = await startTestServer();
  // Fourteen hours east of UTC for new connections: a day cut at the session's midnight would be wrong by 14 hours.
  await adminQuery(`ALTER DATABASE ${server.database.name} SET timezone TO 'Etc/GMT-14'`);
  const admin = await onboard(server);
  const tenant = async (slug: string) => {
    const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug, name: slug }, 201);
    const m = await admin.json<{ userId: string }>('POST', `/api/v1/tenants/${slug}/members`, { email: `owner@${slug}.test`, role: 'tenant_admin' }, 201);
    const { token } = await server.services.tokens.create(t.id, { name: 'owner', role: 'viewer', createdBy: m.userId }, { actor: 'test' });
    return { id: t.id, slug, client: new ApiClient(server.url, { bearer: token }) };
  };
  const a = await tenant('usage-a');
  const b = await tenant('usage-b');

  // Two days either side of a UTC midnight, in the past so "now" does not cut the gateway intervals.
  const D1 = '2026-03-14';
  const D2 = '2026-03-15';
  const MIDNIGHT = `${D2}T00:00:00.000Z`;
  const BEFORE = `${D1}T23:59:59.999Z`;

  const usage = (tenantId: string, at: string, i: number, o: number, cost: number) =>
    server.db.query(
      `INSERT INTO llm_usage (tenant_id, agent, model, api, input_tokens, output_tokens, cost_usd, latency_ms, status, outcome, created_at) VALUES ($1, 'main', 'gpt-4o', 'chat', $2, $3, $4, 5, 200, 'ok', $5)`,
      [tenantId, i, o, cost, at],
    );
  await usage(a.id, BEFORE, 1000, 200, 0.0123);
  await usage(a.id, `${D1}T08:00:00Z`, 7, 3, 0.0001);
  await usage(a.id, MIDNIGHT, 50, 5, 0.5);
  await usage(b.id, BEFORE, 11, 22, 0.25);
  await usage(b.id, MIDNIGHT, 300, 400, 1.75);
  await usage(b.id, `${D2}T23:59:59.999Z`, 1, 1, 0.00000001);

  // Tasks ending either side of midnight: 90 s and 30 s of work (from dispatch).
  const task = (tenantId: string, dispatched: string, finished: string) => {
    const id = randomUUID();
    return server.db.query(
      `INSERT INTO tasks (id, tenant_id, root_id, input, status, created_by, created_at, dispatched_at, finished_at) VALUES ($1, $2, $1, 'x', 'completed', 'test', $3, $3, $4)`,
      [id, tenantId, dispatched, finished],
    );
  };
  await task(a.id, `${D1}T23:58:29.999Z`, BEFORE);
  await task(a.id, `${D1}T23:59:30Z`, MIDNIGHT);

  // A's instance runs from 22:00 on D1 to 01:30 on D2: 2 h on D1, 1.5 h on D2; a stop in between does not count.
  const instanceId = randomUUID();
  await server.db.query(
    `INSERT INTO instances (id, tenant_id, name, runtime_version, desired_state, status) VALUES ($1, $2, 'gw', '2026.9.6', 'stopped', 'stopped')`,
    [instanceId, a.id],
  );
  const event = (to: string, at: string) =>
    server.db.query(`INSERT INTO instance_events (tenant_id, instance_id, from_status, to_status, actor, created_at) VALUES ($1, $2, null, $3, 'test', $4)`, [
      a.id,
      instanceId,
      to,
      at,
    ]);
  await event('provisioning', `${D1}T21:59:00Z`);
  await event('running', `${D1}T22:00:00Z`);
  await event('stopped', `${D2}T01:30:00Z`);

  // Backups and lane artifacts either side of midnight.
  const backup = (tenantId: string, size: number, at: string) =>
    server.db.query(
      `INSERT INTO instance_backups (id, tenant_id, instance_id, instance_name, runtime_version, reason, object_key, size_bytes, sha256, duration_ms, created_at) VALUES ($1, $2, $3, 'gw', '2026.9.6', 'manual', $4, $5, '', 0, $6)`,
      [randomUUID(), tenantId, instanceId, `k/${randomUUID()}`, size, at],
    );
  await backup(a.id, 4096, BEFORE);
  await backup(a.id, 100, MIDNIGHT);
  const artifact = (tenantId: string, size: number, at: string) =>
    server.db.query(`INSERT INTO lane_artifacts (tenant_id, run_id, object_key, size_bytes, created_at) VALUES ($1, $2, $3, $4, $5)`, [
      tenantId,
      randomUUID(),
      `artifacts/${randomUUID()}`,
      size,
      at,
    ]);
  await artifact(b.id, 777, BEFORE);
  await artifact(b.id, 23, MIDNIGHT);

  /** The day's usage rows summed per tenant, straight from the table, bounded in UTC. */
  const fromRows = async (tenantId: string, day: string) => {
    const r = await server.db.query<{ i: string; o: string; c: string; n: string }>(
      `SELECT coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o, coalesce(sum(cost_usd), 0) AS c, count(*) AS n FROM llm_usage WHERE tenant_id = $1 AND created_at >= $2::timestamptz AND created_at < $2::timestamptz + interval '1 day'`,
      [tenantId, `${day}T00:00:00Z`],
    );
    const x = r.rows[0];
    return { inputTokens: Number(x?.i), outputTokens: Number(x?.o), costUsd: Number(x?.c), modelCalls: Number(x?.n) };
  };

  test("a tenant's export for each day equals that day's usage rows", async () => {
    const res = await a.client.json<{ from: string; to: string; items: Daily[] }>('GET', `/api/v1/tenants/${a.slug}/usage/daily?from=${D1}&to=${D2}`);
    assert.deepEqual([res.from, res.to], [D1, D2]);
    assert.deepEqual(
      res.items.map((d) => d.day),
      [D1, D2],
    );
    for (const d of res.items) {
      assert.equal(d.tenantId, a.id);
      const want = await fromRows(a.id, d.day);
      assert.deepEqual({ inputTokens: d.inputTokens, outputTokens: d.outputTokens, costUsd: d.costUsd, modelCalls: d.modelCalls }, want, d.day);
    }
    const [d1, d2] = res.items;
    assert.deepEqual([d1?.inputTokens, d2?.inputTokens], [1007, 50], 'the 23:59:59.999 row is on the first day, the 00:00 row on the second');
    assert.deepEqual([d1?.tasks, d1?.taskSeconds, d2?.tasks, d2?.taskSeconds], [1, 90, 1, 30]);
    assert.deepEqual([d1?.gatewayHours, d2?.gatewayHours], [2, 1.5]);
    assert.deepEqual([d1?.backupBytes, d2?.backupBytes], [4096, 100]);
    assert.deepEqual([d1?.artifactBytes, d2?.artifactBytes], [0, 0], "B's artifacts are not A's");
  });

  test('a day without usage is listed with zeros for the tenant', async () => {
    const res = await b.client.json<{ items: Daily[] }>('GET', `/api/v1/tenants/${b.slug}/usage/daily?from=2026-03-13&to=2026-03-13`);
    assert.deepEqual(
      res.items.map((d) => [d.day, d.modelCalls, d.costUsd]),
      [['2026-03-13', 0, 0]],
    );
  });

  test('the platform CSV export parses and, per tenant and day, equals the usage rows', async () => {
    const res = await admin.call('GET', `/api/v1/platform/usage/daily?from=${D1}&to=${D2}&format=csv`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/csv/);
    const rows = parse(await res.text(), { columns: true, skip_empty_lines: true }) as Record<string, string>[];
    const ours = rows.filter((r) => r['tenantId'] === a.id || r['tenantId'] === b.id);
    assert.deepEqual(
      ours.map((r) => `${r['day']} ${r['tenantSlug']}`),
      [`${D1} usage-a`, `${D1} usage-b`, `${D2} usage-a`, `${D2} usage-b`],
    );
    for (const r of ours) {
      const want = await fromRows(r['tenantId'] ?? '', r['day'] ?? '');
      assert.deepEqual(
        { inputTokens: Number(r['inputTokens']), outputTokens: Number(r['outputTokens']), costUsd: Number(r['costUsd']), modelCalls: Number(r['modelCalls']) },
        want,
        `${r['tenantSlug']} ${r['day']}`,
      );
    }
    const b2 = ours.find((r) => r['tenantId'] === b.id && r['day'] === D2);
    assert.deepEqual([b2?.['costUsd'], b2?.['artifactBytes']], ['1.75000001', '23']);
    // The JSON form carries the same rows.
    const json = await admin.json<{ items: Daily[] }>('GET', `/api/v1/platform/usage/daily?from=${D1}&to=${D2}`);
    assert.equal(json.items.filter((d) => d.tenantId === a.id || d.tenantId === b.id).length, 4);
  });

  test("a tenant's CSV carries its own days only", async () => {
    const res = await a.client.call('GET', `/api/v1/tenants/${a.slug}/usage/daily?from=${D1}&to=${D2}&format=csv`);
    const rows = parse(await res.text(), { columns: true }) as Record<string, string>[];
    assert.deepEqual(
      rows.map((r) => [r['tenantSlug'], r['day'], r['gatewayHours']]),
      [
        ['usage-a', D1, '2'],
        ['usage-a', D2, '1.5'],
      ],
    );
  });

  test('bad ranges are refused with the field named; tenants cannot use the platform export', async () => {
    const bad = async (q: string, field: string) => {
      const res = await a.client.call('GET', `/api/v1/tenants/${a.slug}/usage/daily?${q}`);
      const body = (await res.json()) as { code: string; details?: { issues: { path: string }[] } };
      assert.equal(res.status, 400, q);
      assert.ok(
        body.details?.issues.some((i) => i.path === field),
        `${q}: ${JSON.stringify(body)}`,
      );
    };
    await bad(`from=${D2}&to=${D1}`, 'query.to');
    await bad('from=2024-01-01&to=2026-01-01', 'query.from');
    await bad('from=2026-02-30', 'query.from');
    await bad('format=xml', 'query.format');
    assert.equal((await a.client.call('GET', '/api/v1/platform/usage/daily')).status, 403);
  });
});
