/**
 * A task end to end on a real OpenClaw gateway under bubblewrap (issue 8): the workflow wakes the
 * tenant's stopped instance, sends the turn through the ingress socket, streams the answer from the fake
 * provider (the one allowed stand-in) through the broker, meters tokens per task and shows every step
 * in the trace. One gateway for the file.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Task, TraceEvent } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

describe('a task on a real OpenClaw gateway', { timeout: 900_000 }, async () => {
  const { server, a, fake, providerId, by } = await startGatewayFixture({
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
});
