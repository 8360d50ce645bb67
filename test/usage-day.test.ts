/**
 * "Today" for daily budgets and the usage page is the UTC day, whatever time zone the PostgreSQL
 * server or its database is set to (real PostgreSQL; nothing stands in). Found by review: comparing a
 * timestamptz with a bare `date` casts the date at the session's time zone, so on a server east of UTC
 * yesterday's spending counted against today's budget.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Budgets, BudgetExceededError } from '../src/broker/budgets.ts';
import { usageSummary } from '../src/broker/usage.ts';
import { createDb } from '../src/db/pool.ts';
import { createLogger } from '../src/observability/logger.ts';
import { adminQuery, testDatabase } from './helpers/db.ts';

describe('the usage day is the UTC day in any server time zone', async () => {
  const t = await testDatabase();
  // Fourteen hours east of UTC: local midnight is 10:00 UTC of the day before.
  await adminQuery(`ALTER DATABASE ${t.name} SET timezone TO 'Etc/GMT-14'`);
  const db = createDb(t.url, createLogger('silent'));
  const tenant =
    (await db.query<{ id: string }>(`INSERT INTO tenants (slug, name, daily_token_budget) VALUES ('tz', 'tz', 940) RETURNING id`)).rows[0]?.id ?? '';
  const utcMidnight = `date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`;
  const insert = (at: string, tokens: number) =>
    db.query(
      `INSERT INTO llm_usage (tenant_id, agent, model, api, input_tokens, output_tokens, latency_ms, status, outcome, created_at) VALUES ($1, 'main', 'm', 'chat', $2, 0, 1, 200, 'ok', ${at})`,
      [tenant, tokens],
    );
  // 30 minutes before UTC midnight (yesterday) and 30 seconds after it (today).
  await insert(`${utcMidnight} - interval '30 minutes'`, 900);
  await insert(`${utcMidnight} + interval '30 seconds'`, 50);

  test('the session really runs east of UTC', async () => {
    assert.equal((await db.query<{ tz: string }>("SELECT current_setting('TimeZone') AS tz")).rows[0]?.tz, 'Etc/GMT-14');
  });

  test("usage summary: yesterday's calls are not today's", async () => {
    const rows = await usageSummary(db, tenant, 1);
    assert.deepEqual(
      rows.map((r) => r.inputTokens),
      [50],
    );
  });

  test("daily budget: yesterday's 900 tokens do not count against today's 940", async () => {
    const budgets = new Budgets(db);
    const hold = await budgets.admit(tenant, 'main', null);
    await hold.settle(960, 0);
    // Another process sees 50 + 960 today: over budget, refused. (Counting yesterday, the first admit was already refused: 950 ≥ 940.)
    await assert.rejects(new Budgets(db).admit(tenant, 'main', null), BudgetExceededError);
  });

  test('close', async () => {
    await db.close();
  });
});
