/**
 * Session ingestion (docs/adr/0007, "Session ingestion") on a real server and PostgreSQL: idle chat
 * sessions are summarised with the tenant's model through the broker (the fake provider, metered) into
 * the conversation archive, where the summary is searchable, and into a memory; two sweeps of two
 * replicas summarise each session once; a session that grew is summarised again (replacing its summary);
 * a tenant without a model route gets an excerpt that says so; a secret in the conversation reaches no log;
 * the tenant's state API reports what was summarised, what waits and what failed, and why.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { SessionIngest, SUMMARY_ACTOR, type IngestState } from '../src/knowledge/ingest.ts';
import { createLogger } from '../src/observability/logger.ts';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { waitFor } from './helpers/sandbox.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';

describe('session ingestion', async () => {
  const fake = await startFakeLlm();
  // The interval sweep of the server is the first replica; the test's sweeps race it on purpose.
  const server = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1', CLAWPLANE_INGEST_IDLE_MINUTES: '5', CLAWPLANE_INGEST_MEMORIES: 'true' });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const by = { actor: 'test', userId: a.ownerId };
  const key = await server.services.credentials.create(a.id, { name: 'fake', type: 'api_key', value: 'sk-fake-ingest-0123456789' }, by);
  const provider = await server.services.providers.create(a.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  await server.services.providers.setRoute(a.id, { scope: 'skill', scopeName: 'summaries', targets: [{ providerId: provider.id, model: 'summarizer' }] }, by);
  // B's fixture provider is a real OpenAI entry that cannot be reached here: B has no route at all.
  const canary = 'sk-live-CANARY-7f3a9d1e5b2c4f60';
  const idle = async (tenantId: string, session: string) =>
    server.db.query(`UPDATE chat_messages SET created_at = now() - interval '10 minutes' WHERE tenant_id = $1 AND session_id = $2`, [tenantId, session]);
  const say = async (t: { id: string; instanceId: string }, session: string, messages: { role: 'user' | 'assistant'; content: string }[]) => {
    await server.services.archive.append(t.id, { instanceId: t.instanceId, sessionId: session, agent: 'main', actor: 'test', messages });
    await idle(t.id, session);
  };
  const summaries = async (tenantId: string, session: string) =>
    (
      await server.db.query<{ content: string }>('SELECT content FROM chat_messages WHERE tenant_id = $1 AND session_id = $2 AND actor = $3', [
        tenantId,
        session,
        SUMMARY_ACTOR,
      ])
    ).rows.map((r) => r.content);
  const summaryCalls = (needle: string) => fake.requests.filter((r) => r.model === 'summarizer' && JSON.stringify(r.body).includes(needle)).length;
  const replica = (owner: string) =>
    new SessionIngest({
      db: server.db,
      proxy: server.services.broker.proxy,
      routes: server.services.providers,
      memories: server.services.memories,
      indexer: server.services.knowledgeIndexer,
      // Its log lines join the server's, which the canary check scans.
      log: createLogger('debug', new Writable({ write: (chunk: Buffer, _e, cb) => (capturedLogs.push(chunk.toString()), cb()) })),
      settings: { idleMinutes: 5, memories: true },
      owner,
    });

  test('an idle session is summarised once by the tenant model across two sweeps and two replicas, searchable, metered, without the secret in logs', async () => {
    await say(a, 'ingest-a1', [
      { role: 'user', content: `Our deploy key is ${canary}; please plan the Friday rollout of the billing service` },
      { role: 'assistant', content: 'The rollout of billing is planned for Friday at 10:00 with a canary stage' },
    ]);
    // A session still in use is not summarised.
    await server.services.archive.append(a.id, {
      instanceId: a.instanceId,
      sessionId: 'ingest-busy',
      agent: 'main',
      actor: 'test',
      messages: [{ role: 'user', content: 'still talking about the quarterly budget' }],
    });
    const [r1, r2] = [replica('replica-1'), replica('replica-2')];
    await Promise.all([r1.sweepOnce(), r2.sweepOnce(), r1.sweepOnce(), r2.sweepOnce()]);
    await Promise.all([r1.sweepOnce(), r2.sweepOnce()]);
    assert.equal(summaryCalls('Friday rollout'), 1, 'one model call for the session');
    const s = await summaries(a.id, 'ingest-a1');
    assert.equal(s.length, 1, 'one summary in the archive');
    assert.match(s[0] ?? '', /^Summary of the conversation ingest-a1: Hello from summarizer/, "the tenant model's answer");
    assert.deepEqual(await summaries(a.id, 'ingest-busy'), [], 'a session still in use waits');
    // The model read the conversation; the summary is found by a search of the archive.
    const hit = await a.client.json<{ archive: { sessionId: string; content: string }[] }>(
      'GET',
      `/api/v1/tenants/${a.slug}/knowledge/search?q=summarizer&in=archive`,
    );
    assert.ok(
      hit.archive.some((x) => x.sessionId === 'ingest-a1' && x.content.startsWith('Summary of the conversation')),
      JSON.stringify(hit),
    );
    // Kept as a memory too (CLAWPLANE_INGEST_MEMORIES), under a key per session.
    const mem = await a.client.json<{ items: { key: string | null; content: string }[] }>('GET', `/api/v1/tenants/${a.slug}/memories`);
    assert.equal(mem.items.filter((m) => m.key === 'chat:ingest-a1').length, 1);
    // Metered like any model call of the tenant.
    await server.services.broker.usage.flush();
    const usage = await server.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM llm_usage WHERE tenant_id = $1 AND api = 'summaries' AND outcome = 'ok'",
      [a.id],
    );
    assert.ok((usage.rows[0]?.n ?? 0) >= 1, 'metered as summaries');
    // The secret was in the conversation (and went to the tenant's own model) but into no log line.
    assert.ok(
      fake.requests.some((r) => JSON.stringify(r.body).includes(canary)),
      'the test can see the canary where it legitimately goes',
    );
    assert.ok(!capturedLogs.some((l) => l.includes(canary)), 'no log line holds the secret');
  });

  test('a session that grew is summarised again, replacing its summary and memory; B without a route gets an excerpt that says so', async () => {
    await say(a, 'ingest-a1', [{ role: 'user', content: 'Also move the invoice export to Monday' }]);
    await Promise.all([replica('replica-1').sweepOnce(), replica('replica-2').sweepOnce()]);
    assert.equal(summaryCalls('invoice export to Monday'), 1, 'summarised again once');
    assert.equal((await summaries(a.id, 'ingest-a1')).length, 1, 'the old summary replaced');
    const mem = await a.client.json<{ items: { key: string | null }[] }>('GET', `/api/v1/tenants/${a.slug}/memories`);
    assert.equal(mem.items.filter((m) => m.key === 'chat:ingest-a1').length, 1, 'the memory replaced, not added');

    await say(b, 'ingest-b1', [
      { role: 'user', content: 'Which warehouse ships the blue chairs?' },
      { role: 'assistant', content: 'The Leeds warehouse ships the blue chairs' },
    ]);
    await replica('replica-1').sweepOnce();
    const s = await summaries(b.id, 'ingest-b1');
    assert.equal(s.length, 1);
    assert.match(
      s[0] ?? '',
      /No model route is set for summaries, so this is an excerpt, not a summary\. Asked: Which warehouse ships the blue chairs\? Last answer: The Leeds warehouse/,
    );
    assert.deepEqual(await summaries(a.id, 'ingest-b1'), [], "nothing of B's in A");

    // A finished task (A's fixture task failed at dispatch) is summarised once it has been finished a while.
    const taskSession = `task:${a.taskId}`;
    await waitFor(
      'the fixture task failed',
      async () => ((await server.db.query("SELECT 1 FROM tasks WHERE id = $1 AND status = 'failed'", [a.taskId])).rowCount ? true : undefined),
      60_000,
    );
    await replica('replica-1').sweepOnce();
    assert.deepEqual(await summaries(a.id, taskSession), [], 'a task just finished waits like a session in use');
    await server.db.query(`UPDATE tasks SET finished_at = now() - interval '10 minutes' WHERE tenant_id = $1 AND id = $2`, [a.id, a.taskId]);
    await Promise.all([replica('replica-1').sweepOnce(), replica('replica-2').sweepOnce()]);
    const ts = await summaries(a.id, taskSession);
    assert.equal(ts.length, 1, JSON.stringify(ts));
    assert.match(ts[0] ?? '', new RegExp(`^Summary of the task ${a.taskId}: Hello from summarizer`));
    assert.equal(summaryCalls('fixture task of'), 1, 'its input went to the model once');
  });

  test('a refusal (budget) leaves the session to a later sweep, and nothing half-written', async () => {
    await server.services.brokerGovernance.setLimits(
      a.id,
      [{ agent: '', dailyTokens: 1, dailyCostUsd: null, requestsPerMinute: null, maxCallsPerTask: null }],
      by,
    );
    await server.services.broker.usage.flush();
    await say(a, 'ingest-a2', [{ role: 'user', content: 'Book the venue for the offsite in March' }]);
    await replica('replica-1').sweepOnce();
    assert.deepEqual(await summaries(a.id, 'ingest-a2'), [], 'no summary while the budget refuses');
    const row = await server.db.query<{ attempts: number; last_error: string; upto: string }>(
      "SELECT attempts, last_error, upto FROM conversation_ingests WHERE tenant_id = $1 AND source = 'chat' AND source_id = 'ingest-a2'",
      [a.id],
    );
    assert.equal(row.rows[0]?.attempts, 1);
    assert.match(row.rows[0]?.last_error ?? '', /budget|limit/i);
    assert.equal(Number(row.rows[0]?.upto), 0, 'not marked done');
    // The state API says so, with the reason and when it is retried.
    const failed = await a.client.json<IngestState>('GET', `/api/v1/tenants/${a.slug}/knowledge/ingestion?status=failed`);
    assert.equal(failed.counts.failed, 1);
    assert.deepEqual(
      failed.items.map((i) => [i.source, i.sourceId, i.status, i.attempts]),
      [['chat', 'ingest-a2', 'failed', 1]],
    );
    assert.match(failed.items[0]?.error ?? '', /budget|limit/i);
    assert.ok(failed.items[0]?.retryAt && failed.lastRunAt);
    await server.services.brokerGovernance.setLimits(a.id, [], by);
    // The back-off has not passed: a sweep right now leaves it.
    await replica('replica-2').sweepOnce();
    assert.deepEqual(await summaries(a.id, 'ingest-a2'), []);
    await server.db.query("UPDATE conversation_ingests SET claimed_until = now() - interval '1 second' WHERE tenant_id = $1 AND source_id = 'ingest-a2'", [
      a.id,
    ]);
    await replica('replica-2').sweepOnce();
    assert.equal((await summaries(a.id, 'ingest-a2')).length, 1, 'summarised once the back-off passed');
  });

  test("the ingestion state API: what the job did for the tenant, read-only for its members, nothing of another tenant's", async () => {
    const st = await a.client.json<IngestState>('GET', `/api/v1/tenants/${a.slug}/knowledge/ingestion`);
    assert.deepEqual([st.enabled, st.idleMinutes, st.memories], [true, 5, true]);
    const byId = new Map(st.items.map((i) => [`${i.source}:${i.sourceId}`, i]));
    for (const k of ['chat:ingest-a1', 'chat:ingest-a2', `task:${a.taskId}`]) {
      const i = byId.get(k);
      assert.equal(i?.status, 'ingested', `${k}: ${JSON.stringify(i)}`);
      assert.ok(i.summaryId && i.ingestedAt && i.error === null);
    }
    assert.equal(byId.get('chat:ingest-a1')?.model, `${provider.id}/summarizer`);
    assert.ok(byId.get('chat:ingest-a1')?.memoryId, 'kept as a memory too');
    assert.equal(byId.get('chat:ingest-busy')?.status, 'pending', 'a session still in use is pending');
    assert.equal(st.counts.failed, 0, 'the failure was retried');
    assert.equal(st.counts.ingested, st.items.filter((i) => i.status === 'ingested').length);
    assert.ok(st.lastRunAt);
    const pending = await a.client.json<IngestState>('GET', `/api/v1/tenants/${a.slug}/knowledge/ingestion?status=pending&limit=1`);
    assert.deepEqual([pending.items.length, pending.items[0]?.status], [1, 'pending']);
    // B sees its own session only.
    const other = await b.client.json<IngestState>('GET', `/api/v1/tenants/${b.slug}/knowledge/ingestion`);
    assert.ok(other.items.some((i) => i.sourceId === 'ingest-b1'));
    assert.ok(!other.items.some((i) => i.sourceId.startsWith('ingest-a')), JSON.stringify(other.items));
    // A viewer reads it; there is nothing to write; bad input is a 400.
    const { token } = await server.services.tokens.create(a.id, { name: 'ingest-viewer', role: 'viewer', createdBy: a.ownerId }, { actor: 'test' });
    const viewer = new ApiClient(server.url, { bearer: token });
    assert.equal((await viewer.json<IngestState>('GET', `/api/v1/tenants/${a.slug}/knowledge/ingestion`)).counts.ingested, st.counts.ingested);
    assert.equal((await viewer.call('POST', `/api/v1/tenants/${a.slug}/knowledge/ingestion`, {})).status, 404);
    assert.equal((await a.client.call('GET', `/api/v1/tenants/${a.slug}/knowledge/ingestion?status=done`)).status, 400);
    assert.equal((await a.client.call('GET', `/api/v1/tenants/${a.slug}/knowledge/ingestion?limit=0`)).status, 400);
  });
});
