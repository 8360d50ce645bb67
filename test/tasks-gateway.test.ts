/**
 * A task end to end on a real OpenClaw gateway under bubblewrap (issue 8): the workflow wakes the
 * tenant's stopped instance, sends the turn through the ingress socket, streams the answer from the fake
 * provider (the one allowed stand-in) through the broker, meters tokens per task and shows every step
 * in the trace. One gateway for the file.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Task, TraceEvent } from '../src/tasks/types.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot, waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { uidBase } from './helpers/gateway.ts';

describe('a task on a real OpenClaw gateway', { timeout: 900_000 }, async () => {
  const fake = await startFakeLlm();
  const root = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
    CLAWPLANE_TASK_QUEUE_POLL_MS: '200',
  });
  await server.services.runtimes.pull(OPENCLAW_VERSION);
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  // As in test/instances.test.ts: stop the sandboxes, then the server, before the database goes.
  after(async () => {
    for (const h of await server.services.sandboxes.list()) await server.services.sandboxes.stop(h);
    await server.stop();
  });
  const by = { actor: 'test', userId: a.ownerId };
  const key = await server.services.credentials.create(a.id, { name: 'fake-llm-key', type: 'api_key', value: 'sk-fake-0123456789abcdef' }, by);
  const provider = await server.services.providers.create(a.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] }, by);
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
