/**
 * A task end to end on a real OpenClaw gateway under bubblewrap (issue 8): the workflow wakes the
 * tenant's stopped instance, sends the turn through the ingress socket, streams the answer from the fake
 * provider (the one allowed stand-in) through the broker, meters tokens per task and shows every step
 * in the trace. Then the knowledge tools inside that gateway (docs/adr/0007): it loads the
 * clawplane-knowledge plugin and offers its tools; when the model calls `memory_store` during a chat, the
 * memory reaches the broker through the sandbox's egress with the sandbox's own identity and lands under
 * that tenant and the gateway's agent; a later task of that agent starts with it in its prompt; another
 * tenant's sandbox identity cannot read it. One gateway for the file (each start costs ~20 s and ~0.8 GB).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import type { Memory } from '../src/knowledge/memories.ts';
import type { Task, TraceEvent } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

function brokerCall(socketPath: string, method: string, path: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('a task on a real OpenClaw gateway', { timeout: 900_000 }, async () => {
  const { server, a, b, fake, providerId, by } = await startGatewayFixture({
    file: import.meta.url,
    canary: 'sk-fake-0123456789abcdef',
    env: { CLAWPLANE_TASK_QUEUE_POLL_MS: '200' },
  });
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;

  test('create → dispatch → recall → wake the stopped instance → execute on the gateway → evaluate with metered tokens', async () => {
    await a.client.json('POST', api('/agents'), { name: 'assistant', capabilities: ['answer'] }, 201);
    const t0 = Date.now();
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'answer', input: 'Say hello to the finance team' }, 201);
    const done = await waitFor(
      'task completed',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
        return x.status === 'completed' ? x : undefined;
      },
      600_000,
    );
    console.log(`task on a real gateway (including waking the instance): ${Date.now() - t0} ms`);
    assert.equal(done.output, 'Hello from fake-model');
    assert.ok(done.inputTokens >= 40 && done.outputTokens >= 60, `tokens metered per task: ${done.inputTokens}/${done.outputTokens}`);
    const trace = (await a.client.json<{ items: TraceEvent[] }>('GET', api(`/tasks/${t.id}/trace`))).items;
    const steps = trace.map((e) => `${e.step}.${e.kind}`);
    for (const s of [
      'create.completed',
      'dispatch.completed',
      'recall.completed',
      'execute.started',
      'execute.wake',
      'execute.gateway_ready',
      'execute.stream_started',
      'execute.stream_progress',
      'execute.stream_done',
      'execute.metered',
      'execute.completed',
      'evaluate.completed',
      'finish.completed',
    ]) {
      assert.ok(steps.includes(s), `${s} in ${steps.join(', ')}`);
    }
    assert.ok(
      steps.indexOf('dispatch.completed') < steps.indexOf('execute.wake') && steps.indexOf('execute.stream_done') < steps.indexOf('evaluate.completed'),
      'in order',
    );
    const usage = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM llm_usage WHERE tenant_id = $1 AND task_id = $2', [a.id, t.id]);
    assert.ok((usage.rows[0]?.n ?? 0) >= 1);
    const inst = await server.services.instances.get(a.id, a.instanceId);
    assert.equal(inst.status, 'running', "the tenant's stopped instance was woken");
  });

  test("a task's usage is its own turns' usage while chats run on the same gateway at the same time", async () => {
    // The `drip` model streams for about two seconds a call, so the chats' model calls overlap the task's.
    await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model: 'drip' }] }, by);
    fake.usage = { input: 7, output: 11 };
    const from = fake.requests.length;
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'answer', input: 'TASK-QUARTZ: list the three biggest costs' }, 201);
    const chats = [1, 2, 3].map((i) =>
      a.client.call('POST', api('/chat/completions'), {
        model: 'agent/main',
        messages: [{ role: 'user', content: `CHAT-${i}: what is the weather` }],
        session: `usage-chat-${i}`,
      }),
    );
    for (const r of await Promise.all(chats)) assert.equal(r.status, 200, await r.text());
    const done = await waitFor(
      'task completed',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
        return x.status === 'completed' ? x : undefined;
      },
      600_000,
    );
    await server.services.broker.usage.flush();
    const calls = fake.requests.slice(from).map((q) => JSON.stringify(q.body));
    const taskCalls = calls.filter((b) => b.includes('TASK-QUARTZ')).length;
    const chatCalls = calls.filter((b) => /CHAT-\d/.test(b)).length;
    assert.ok(taskCalls >= 1 && chatCalls >= 3, `model calls: ${taskCalls} for the task, ${chatCalls} for the chats`);
    assert.ok(
      calls.every((b) => !b.includes('clawplane-task')),
      'the task tag never reaches the provider',
    );
    const rows = await server.db.query<{ task_id: string | null; n: number; input: number; output: number }>(
      `SELECT task_id, count(*)::int AS n, sum(input_tokens)::int AS input, sum(output_tokens)::int AS output
         FROM llm_usage WHERE tenant_id = $1 AND (task_id = $2 OR (task_id IS NULL AND created_at >= $3)) GROUP BY task_id`,
      [a.id, t.id, new Date(t.createdAt)],
    );
    const byTask = rows.rows.find((r) => r.task_id === t.id);
    const untagged = rows.rows.find((r) => r.task_id === null);
    assert.equal(byTask?.n, taskCalls, "the task's usage rows are exactly its own model calls");
    assert.equal(untagged?.n, chatCalls, "the chats' calls are not counted to the task");
    assert.equal(done.inputTokens, 7 * taskCalls);
    assert.equal(done.outputTokens, 11 * taskCalls);
  });

  const fact = 'The customer Zorblax wants every invoice sent by email';
  test("the agent stores a memory from a chat; it is the tenant's, under the gateway's agent; a later task recalls it; another tenant's sandbox cannot read it", async () => {
    // The gateway's agent is the platform default "main"; a Clawplane agent of that name owns its memories.
    await a.client.json('POST', api('/agents'), { name: 'main', capabilities: ['billing'] }, 201);
    fake.toolArgs['memory_store'] = { content: fact, importance: 0.9 };
    await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model: 'tool-memory_store' }] }, by);
    const r = await a.client.call('POST', api('/chat/completions'), {
      model: 'agent/main',
      messages: [{ role: 'user', content: 'Please remember how Zorblax wants its invoices' }],
      session: 'knowledge-1',
    });
    const text = await r.text();
    assert.equal(r.status, 200, text);
    for (const t of ['memory_store', 'memory_recall', 'finding_record', 'finding_search'])
      assert.ok(fake.toolNames.includes(t), `${t} offered to the model: ${fake.toolNames.join(', ')}`);
    assert.match(text, /Tool said: Remembered \(memory \d+\)/, 'the tool result the model got says it was stored');

    const mine = (await a.client.json<{ items: Memory[] }>('GET', api('/memories'))).items.filter((m) => m.content === fact);
    assert.equal(mine.length, 1, 'one memory, visible through the API');
    assert.equal(mine[0]?.agent, 'main', "under the gateway's agent");
    assert.match(mine[0]?.createdBy ?? '', /^sandbox:/, "written with the sandbox's identity");
    const theirs = await b.client.json<{ items: Memory[] }>('GET', `/api/v1/tenants/${b.slug}/memories`);
    assert.ok(!JSON.stringify(theirs).includes('Zorblax'), "not in the other tenant's memories");

    // A later task of that agent: the workflow's recall puts the memory into the prompt the model sees.
    await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model: 'fake-model' }] }, by);
    const before = fake.requests.length;
    const t = await a.client.json<Task>('POST', api('/tasks'), { agent: 'main', input: 'Send Zorblax the invoice for November' }, 201);
    const done = await waitFor(
      'task finished',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        return ['completed', 'failed', 'expired'].includes(x.status) ? x : undefined;
      },
      300_000,
    );
    assert.equal(done.status, 'completed', done.statusReason);
    const prompts = fake.requests.slice(before).map((q) => JSON.stringify(q.body['messages'] ?? []));
    assert.ok(
      prompts.some((p) => p.includes(fact)),
      'the recalled memory is in the prompt the provider received',
    );

    // Another tenant's sandbox identity: its broker token finds nothing of A's, by words or listing.
    const regB = await server.services.broker.registerSandbox({ tenantId: b.id, instanceId: b.instanceId, sandboxId: 'sbx-knowledge-gw-b' });
    try {
      for (const path of ['/knowledge/memories?q=Zorblax', '/knowledge/memories', '/knowledge/memories?q=invoice%20email&mode=words']) {
        const o = await brokerCall(regB.socketPath, 'GET', path, regB.token);
        assert.equal(o.status, 200, o.body);
        assert.ok(!o.body.includes('Zorblax'), `${path} from B's sandbox: ${o.body}`);
      }
    } finally {
      await regB.close();
    }
  });
});
