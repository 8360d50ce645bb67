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
  const { server, a } = await startGatewayFixture({ file: import.meta.url, canary: 'sk-fake-0123456789abcdef', env: { CLAWPLANE_TASK_QUEUE_POLL_MS: '200' } });
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;

  test('create → dispatch → recall → wake the stopped instance → execute on the gateway → evaluate with metered tokens', async () => {
    await a.client.json('POST', api('/agents'), { name: 'assistant', capabilities: ['answer'] }, 201);
    const t0 = Date.now();
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'answer', input: 'Say hello to the finance team' }, 201);
    const done = await waitFor('task completed', async () => {
      const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
      if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
      return x.status === 'completed' ? x : undefined;
    }, 600_000);
    console.log(`task on a real gateway (including waking the instance): ${Date.now() - t0} ms`);
    assert.equal(done.output, 'Hello from fake-model');
    assert.ok(done.inputTokens >= 40 && done.outputTokens >= 60, `tokens metered per task: ${done.inputTokens}/${done.outputTokens}`);
    const trace = (await a.client.json<{ items: TraceEvent[] }>('GET', api(`/tasks/${t.id}/trace`))).items;
    const steps = trace.map((e) => `${e.step}.${e.kind}`);
    for (const s of ['create.completed', 'dispatch.completed', 'recall.completed', 'execute.started', 'execute.wake', 'execute.gateway_ready', 'execute.stream_started', 'execute.stream_progress', 'execute.stream_done', 'execute.metered', 'execute.completed', 'evaluate.completed', 'finish.completed']) {
      assert.ok(steps.includes(s), `${s} in ${steps.join(', ')}`);
    }
    assert.ok(steps.indexOf('dispatch.completed') < steps.indexOf('execute.wake') && steps.indexOf('execute.stream_done') < steps.indexOf('evaluate.completed'), 'in order');
    const usage = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM llm_usage WHERE tenant_id = $1 AND task_id = $2', [a.id, t.id]);
    assert.ok((usage.rows[0]?.n ?? 0) >= 1);
    const inst = await server.services.instances.get(a.id, a.instanceId);
    assert.equal(inst.status, 'running', "the tenant's stopped instance was woken");
  });
});
