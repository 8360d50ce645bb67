/**
 * Knowledge (docs/adr/0007-knowledge-search.md) on a real server and PostgreSQL: memory and findings
 * CRUD with audit, search by words without an embeddings route, search by meaning with the fake
 * provider's embeddings (test/helpers/fake-llm.ts: words of one concept group get close vectors), the
 * archive, re-embedding after a model change, budgets, a second replica, and recall in a task.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import { createKnowledgeServices } from '../src/knowledge/setup.ts';
import { createLogger } from '../src/observability/logger.ts';
import { AgentService } from '../src/tasks/agents.ts';
import type { Task } from '../src/tasks/types.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { ScriptedExecutor } from './helpers/task-executors.ts';

interface Memory {
  id: number;
  agentId: string | null;
  kind: string;
  key: string | null;
  content: string;
  importance: number;
  embedded: boolean;
  score?: number;
  similarity?: number | null;
}
/** One request to a broker socket, as the sandbox's supervisor sends it. */
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

interface Page<T> {
  items: T[];
  nextCursor: string | null;
  mode: string | null;
  note: string | null;
}

describe('knowledge: memories, findings, search by meaning', { timeout: 300_000 }, async () => {
  const fake = await startFakeLlm();
  const server = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1', CLAWPLANE_TASK_QUEUE_POLL_MS: '50' });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const { providers, credentials, knowledgeIndexer } = server.services;
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  const by = { actor: 'test' };
  const cred = await credentials.create(a.id, { name: 'embed-key', type: 'api_key', value: 'sk-embed-0123456789abcdef' }, by);
  const provider = await providers.create(a.id, { kind: 'openai_compatible', name: 'fake-embed', baseUrl: fake.baseUrl, credentialId: cred.id }, by);
  const setEmbeddingModel = (model: string) =>
    providers.setRoute(a.id, { scope: 'skill', scopeName: 'embeddings', targets: [{ providerId: provider.id, model }] }, by);
  const embedCalls = () => fake.requests.filter((r) => r.path.endsWith('/embeddings')).length;

  test('memories: create a note and a kv entry (the same key replaces it), read, edit, delete; each change is audited', async () => {
    const agent = await a.client.json<{ id: string }>('POST', api('/agents'), { name: 'mem-agent', capabilities: ['mem'] }, 201);
    const note = await a.client.json<Memory>(
      'POST',
      api('/memories'),
      { agent: 'mem-agent', content: 'The customer prefers email over phone calls', importance: 0.8 },
      201,
    );
    assert.equal(note.agentId, agent.id);
    assert.equal(note.kind, 'note');
    const kv = await a.client.json<Memory>('POST', api('/memories'), { kind: 'kv', key: 'timezone', content: 'Europe/Berlin' }, 201);
    assert.equal(kv.agentId, null, 'no agent: shared by every agent of the tenant');
    const again = await a.client.json<Memory>('POST', api('/memories'), { kind: 'kv', key: 'timezone', content: 'Europe/Paris' }, 200);
    assert.equal(again.id, kv.id, 'the same key replaced the value');
    assert.equal((await a.client.json<Memory>('GET', api(`/memories/${kv.id}`))).content, 'Europe/Paris');
    // Strict bodies; a kv needs a key; a note has none.
    assert.equal((await a.client.call('POST', api('/memories'), { content: 'x', tenantId: b.id })).status, 400);
    assert.equal((await a.client.call('POST', api('/memories'), { kind: 'kv', content: 'x' })).status, 400);
    assert.equal((await a.client.call('POST', api('/memories'), { key: 'k', content: 'x' })).status, 400);
    assert.equal((await a.client.call('POST', api('/memories'), { agent: 'nobody', content: 'x' })).status, 404);
    assert.equal((await a.client.call('PATCH', api(`/memories/${note.id}`), { key: 'k' })).status, 409, 'a note has no key');
    const edited = await a.client.json<Memory>('PATCH', api(`/memories/${note.id}`), { content: 'The customer prefers email', importance: 0.9 });
    assert.deepEqual([edited.content, edited.importance], ['The customer prefers email', 0.9]);
    // Expired memories are not listed, found or recalled.
    const gone = await a.client.json<Memory>(
      'POST',
      api('/memories'),
      { content: 'a stale memory', expiresAt: new Date(Date.now() - 1000).toISOString() },
      201,
    );
    assert.equal((await a.client.call('GET', api(`/memories/${gone.id}`))).status, 404);
    const list = await a.client.json<Page<Memory>>('GET', api('/memories?limit=2'));
    assert.equal(list.items.length, 2);
    assert.ok(list.nextCursor);
    const page2 = await a.client.json<Page<Memory>>('GET', api(`/memories?limit=10&cursor=${list.nextCursor}`));
    assert.deepEqual(
      [...list.items, ...page2.items].map((m) => m.id),
      [kv.id, note.id, a.memoryId],
      'newest first, the fixture memory last',
    );
    assert.deepEqual(
      (await a.client.json<Page<Memory>>('GET', api('/memories?agent=mem-agent'))).items.map((m) => m.id),
      [note.id],
    );
    const del = await a.client.call('DELETE', api(`/memories/${kv.id}`));
    assert.equal(del.status, 204);
    assert.equal((await a.client.call('DELETE', api(`/memories/${kv.id}`))).status, 404);
    const audit = await server.db.query<{ action: string; detail: Record<string, unknown> }>(
      "SELECT action, detail FROM audit_events WHERE tenant_id = $1 AND action LIKE 'memory.%' AND actor LIKE 'token:%' ORDER BY seq",
      [a.id],
    );
    assert.deepEqual(
      audit.rows.map((r) => r.action),
      ['memory.create', 'memory.create', 'memory.update', 'memory.update', 'memory.create', 'memory.delete'],
    );
    assert.ok(!JSON.stringify(audit.rows).includes('prefers email'), 'the audit names memories, never their content');
    // B sees none of it.
    assert.deepEqual(
      (await b.client.json<Page<Memory>>('GET', `/api/v1/tenants/${b.slug}/memories`)).items.map((m) => m.content),
      ['memory of tenant-b'],
    );
  });

  test('without an embeddings route a search is by words, and says so', async () => {
    const r = await a.client.json<Page<Memory>>('GET', api('/memories?q=email'));
    assert.equal(r.mode, 'words');
    assert.match(r.note ?? '', /embeddings route/);
    assert.equal(r.items[0]?.content, 'The customer prefers email');
    assert.equal(embedCalls(), 0);
  });

  test('with an embeddings route, a query ranks the meaning-match above a word-match; calls are metered', async () => {
    await setEmbeddingModel('embed-v1');
    const meaning = await a.client.json<Memory>(
      'POST',
      api('/memories'),
      { content: 'Our fleet: a red sedan and a delivery truck, each vehicle serviced yearly' },
      201,
    );
    const word = await a.client.json<Memory>(
      'POST',
      api('/memories'),
      { content: 'Automobile club newsletter: invoice, payment, billing and receipt reminders' },
      201,
    );
    assert.ok(meaning.embedded && word.embedded, 'embedded on write');
    const words = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('automobile')}&mode=words`));
    assert.deepEqual(
      words.items.map((m) => m.id),
      [word.id],
      'by words only the newsletter matches',
    );
    const hybrid = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('automobile')}`));
    assert.equal(hybrid.mode, 'hybrid');
    const ids = hybrid.items.map((m) => m.id);
    assert.ok(ids.includes(word.id) && ids.includes(meaning.id), JSON.stringify(hybrid.items));
    assert.ok(ids.indexOf(meaning.id) < ids.indexOf(word.id), `meaning first: ${JSON.stringify(hybrid.items.map((m) => [m.content, m.score, m.similarity]))}`);
    const byMeaning = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('vehicles')}&mode=meaning`));
    assert.equal(byMeaning.items[0]?.id, meaning.id);
    await server.services.broker.usage.flush();
    const usage = await server.db.query<{ n: number; tokens: number }>(
      "SELECT count(*)::int AS n, sum(input_tokens)::int AS tokens FROM llm_usage WHERE tenant_id = $1 AND api = 'embeddings' AND outcome = 'ok'",
      [a.id],
    );
    assert.ok((usage.rows[0]?.n ?? 0) >= 4, 'every embedding call is a metered model call');
    assert.ok(
      fake.requests.filter((r) => r.path.endsWith('/embeddings')).every((r) => r.authorization === 'Bearer sk-embed-0123456789abcdef'),
      "the tenant's own key",
    );
  });

  test('findings: create, search by words and meaning, edit, delete; unknown task refused', async () => {
    const f1 = await a.client.json<{ id: string; tags: string[] }>(
      'POST',
      api('/findings'),
      {
        title: 'Puppies need vaccination',
        body: 'A young canine should see a vet at eight weeks.',
        sources: ['https://vet.example.test/guide'],
        tags: ['pets', 'health'],
        confidence: 0.9,
      },
      201,
    );
    const f2 = await a.client.json<{ id: string }>(
      'POST',
      api('/findings'),
      { title: 'Quarterly invoice totals', body: 'Billing grew; payment delays fell.', tags: ['finance'], confidence: 0.6 },
      201,
    );
    assert.equal((await a.client.call('POST', api('/findings'), { title: 'x', taskId: b.taskId })).status, 404, "another tenant's task");
    const hit = await a.client.json<Page<{ id: string }>>('GET', api(`/findings?q=${encodeURIComponent('dog')}`));
    assert.equal(hit.items[0]?.id, f1.id, 'found by meaning: no finding says "dog"');
    assert.ok(!hit.items.some((x) => x.id === f2.id));
    assert.deepEqual(
      (await a.client.json<Page<{ id: string }>>('GET', api('/findings?tag=finance'))).items.map((x) => x.id),
      [f2.id],
    );
    const ed = await a.client.json<{ title: string; confidence: number }>('PATCH', api(`/findings/${f2.id}`), {
      confidence: 0.7,
      title: 'Quarterly invoice totals (revised)',
    });
    assert.deepEqual([ed.title, ed.confidence], ['Quarterly invoice totals (revised)', 0.7]);
    assert.equal((await a.client.call('PATCH', api(`/findings/${f2.id}`), { createdBy: 'x' })).status, 400);
    assert.equal((await a.client.call('DELETE', api(`/findings/${f2.id}`))).status, 204);
    assert.equal((await a.client.call('GET', api(`/findings/${f2.id}`))).status, 404);
  });

  test('the archive is searchable by meaning after the sweep embeds it; one query spans all three', async () => {
    await server.services.archive.append(a.id, {
      instanceId: a.instanceId,
      sessionId: 's-weather',
      agent: 'main',
      actor: 'test',
      messages: [
        { role: 'user', content: 'Will it storm tomorrow? Need the forecast.' },
        { role: 'assistant', content: 'Rain is likely.' },
      ],
    });
    // A sweep kicked by an earlier route change or the interval may run too: either embeds them (SKIP LOCKED).
    await knowledgeIndexer.sweepOnce();
    await knowledgeIndexer.idle();
    const pending = await server.db.query("SELECT 1 FROM chat_messages WHERE tenant_id = $1 AND session_id = 's-weather' AND embedding IS NULL", [a.id]);
    assert.equal(pending.rowCount, 0, 'both messages embedded');
    const r = await a.client.json<{ memories: Memory[]; findings: unknown[]; archive: { sessionId: string; content: string }[]; mode: string }>(
      'GET',
      api(`/knowledge/search?q=${encodeURIComponent('weather')}`),
    );
    assert.equal(r.mode, 'hybrid');
    assert.equal(r.archive[0]?.sessionId, 's-weather');
    assert.equal(r.memories.length, 0, 'no memory is about the weather');
  });

  test('a second replica finds a memory written through the first at once', async () => {
    const replica = createKnowledgeServices({
      db: server.db,
      proxy: server.services.broker.proxy,
      agents: new AgentService(server.db),
      log: createLogger('silent'),
    });
    const before = await replica.memories.search(
      a.id,
      { q: 'truck', mode: 'meaning', limit: 5, includeShared: true },
      { actor: 'test', agent: '', taskId: null },
    );
    assert.ok(before.items.length >= 1);
    const m = await a.client.json<Memory>('POST', api('/memories'), { content: 'The garage mechanic fixed the brakes', importance: 0.7 }, 201);
    const after = await replica.memories.search(
      a.id,
      { q: 'repair', mode: 'meaning', limit: 5, includeShared: true },
      { actor: 'test', agent: '', taskId: null },
    );
    assert.equal(after.items[0]?.id, m.id);
  });

  test('a new embedding model re-embeds everything (the sweep), and old vectors are never compared with new ones', async () => {
    await setEmbeddingModel('embed-v2');
    // The route change kicks a sweep at once; this one takes whatever it has not claimed yet.
    await knowledgeIndexer.sweepOnce();
    await knowledgeIndexer.idle();
    const left = await server.db.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM agent_memories WHERE tenant_id = $1 AND embedding_model IS DISTINCT FROM $2)
            + (SELECT count(*) FROM findings WHERE tenant_id = $1 AND embedding_model IS DISTINCT FROM $2) AS n`,
      [a.id, `${provider.id}/embed-v2`],
    );
    assert.equal(Number(left.rows[0]?.n), 0);
    const r1 = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('vehicles')}&mode=meaning`));
    assert.match(r1.items[0]?.content ?? '', /sedan/);
    assert.equal(await knowledgeIndexer.sweepOnce(), 0, 'idempotent: nothing left to do');
    // A vector labelled with another model is never compared with the query's.
    await server.db.query("UPDATE agent_memories SET embedding_model = 'other/old-model' WHERE tenant_id = $1 AND content LIKE '%sedan%'", [a.id]);
    const r2 = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('vehicles')}&mode=meaning`));
    assert.ok(!r2.items.some((m) => /sedan/.test(m.content)), JSON.stringify(r2.items));
    await knowledgeIndexer.sweepOnce();
  });

  test('a budget refusal or a failing provider falls back to words, never a 500', async () => {
    await setEmbeddingModel('fail-500');
    const r = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('sedan')}`));
    assert.equal(r.mode, 'words');
    assert.match(r.note ?? '', /provider failed/);
    assert.match(r.items[0]?.content ?? '', /sedan/);
    const created = await a.client.json<Memory>('POST', api('/memories'), { content: 'written while the provider is down' }, 201);
    assert.equal(created.embedded, false, 'stored; the sweep embeds it later');
    await setEmbeddingModel('embed-v2');
    await server.services.brokerGovernance.setLimits(
      a.id,
      [{ agent: '', dailyTokens: 1, dailyCostUsd: null, requestsPerMinute: null, maxCallsPerTask: null }],
      by,
    );
    await server.services.broker.usage.flush();
    const refused = await a.client.json<Page<Memory>>('GET', api(`/memories?q=${encodeURIComponent('a brand new query')}`));
    assert.equal(refused.mode, 'words');
    await server.services.brokerGovernance.setLimits(a.id, [], by);
  });

  test("a task's recall uses the best matches by meaning", async () => {
    const exec = new ScriptedExecutor();
    server.services.taskRuntime.useExecutor(exec);
    await a.client.json('POST', api('/agents'), { name: 'fleet-agent', capabilities: ['fleet'] }, 201);
    await a.client.json(
      'POST',
      api('/memories'),
      { agent: 'fleet-agent', content: 'Vehicle maintenance is booked with the mechanic on Mondays', importance: 0.9 },
      201,
    );
    await a.client.json('POST', api('/memories'), { agent: 'fleet-agent', content: 'Send the invoice to accounting', importance: 0.9 }, 201);
    const t = await a.client.json<Task>('POST', api('/tasks'), { agent: 'fleet-agent', input: 'When can my car get repaired?' }, 201);
    await waitFor('task done', async () => ((await a.client.json<Task>('GET', api(`/tasks/${t.id}`))).status === 'completed' ? true : undefined), 60_000);
    const prompt = exec.calls.find((c) => c.taskId === t.id)?.prompt ?? '';
    assert.match(prompt, /Vehicle maintenance is booked/, 'the memory about the same meaning (no shared word) is recalled');
    assert.doesNotMatch(prompt, /invoice/, 'an unrelated memory is not');
  });

  test("from a sandbox: its broker token reads and writes its own tenant's memories and findings, never another's; a later task recalls it", async () => {
    const { broker } = server.services;
    const regA = await broker.registerSandbox({ tenantId: a.id, instanceId: a.instanceId, sandboxId: 'sbx-knowledge-a' });
    const regB = await broker.registerSandbox({ tenantId: b.id, instanceId: b.instanceId, sandboxId: 'sbx-knowledge-b' });
    try {
      await a.client.json('POST', api('/agents'), { name: 'ops-agent', capabilities: ['ops'] }, 201);
      const w = await brokerCall(regA.socketPath, 'POST', '/knowledge/memories', regA.token, {
        agent: 'ops-agent',
        content: 'Production deployment happens on Thursdays after the rollout review',
        importance: 0.9,
      });
      assert.equal(w.status, 201, JSON.stringify(w.json));
      const read = await brokerCall(regA.socketPath, 'GET', '/knowledge/memories?q=release', regA.token);
      assert.equal(read.status, 200);
      assert.match(JSON.stringify(read.json['items']), /Thursdays/, 'found by meaning through the broker');
      const f = await brokerCall(regA.socketPath, 'POST', '/knowledge/findings', regA.token, {
        title: 'Rollouts on Thursdays',
        tags: ['ops'],
        confidence: 0.8,
      });
      assert.equal(f.status, 201);
      // B's sandbox: same routes, its own tenant only; it cannot name A's memory.
      const other = await brokerCall(regB.socketPath, 'GET', '/knowledge/memories?q=deployment', regB.token);
      assert.equal(other.status, 200);
      assert.doesNotMatch(JSON.stringify(other.json), /Thursdays/);
      assert.equal((await brokerCall(regB.socketPath, 'DELETE', `/knowledge/memories/${(w.json as { id: number }).id}`, regB.token)).status, 404);
      assert.doesNotMatch(JSON.stringify((await brokerCall(regB.socketPath, 'GET', '/knowledge/findings', regB.token)).json), /Thursdays/);
      // A's token on B's socket, a bad token, unknown fields (no tenantId to smuggle in).
      assert.equal((await brokerCall(regB.socketPath, 'GET', '/knowledge/memories', regA.token)).status, 401);
      assert.equal((await brokerCall(regA.socketPath, 'GET', '/knowledge/memories', 'cpb_not-a-token')).status, 401);
      const smuggle = await brokerCall(regA.socketPath, 'POST', '/knowledge/memories', regA.token, { content: 'x', tenantId: b.id });
      assert.equal(smuggle.status, 400);
      const audit = await server.db.query<{ actor: string }>(
        "SELECT actor FROM audit_events WHERE tenant_id = $1 AND action = 'memory.create' ORDER BY seq DESC LIMIT 1",
        [a.id],
      );
      assert.equal(audit.rows[0]?.actor, `sandbox:${regA.sandboxStartId}`);
      // A later task of that agent starts with the memory.
      const exec = new ScriptedExecutor();
      server.services.taskRuntime.useExecutor(exec);
      const t = await a.client.json<Task>('POST', api('/tasks'), { agent: 'ops-agent', input: 'When do we ship the next release?' }, 201);
      await waitFor('task done', async () => ((await a.client.json<Task>('GET', api(`/tasks/${t.id}`))).status === 'completed' ? true : undefined), 60_000);
      assert.match(exec.calls.find((c) => c.taskId === t.id)?.prompt ?? '', /Thursdays after the rollout review/);
    } finally {
      await regA.close();
      await regB.close();
    }
    assert.equal(
      (await brokerCall(regA.socketPath, 'GET', '/knowledge/memories', regA.token).catch(() => ({ status: 0 }))).status === 200,
      false,
      'a stopped sandbox has no way in',
    );
  });
});
