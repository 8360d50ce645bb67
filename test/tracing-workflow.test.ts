/**
 * Traces of the durable workflow without a gateway (a stand-in executor; the real-gateway trace is
 * test/tracing.test.ts): the workflow a request enqueued continues that request's trace through the
 * queue, DBOS's step spans sit under it, ids are attributes, and the task's input is in no exported byte.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { flushTracing, tracingOn } from '../src/observability/tracing.ts';
import type { Task } from '../src/tasks/types.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { ancestor, connected, one, startOtlpReceiver, traceWith } from './helpers/otlp.ts';
import { waitFor } from './helpers/sandbox.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';
import { ScriptedExecutor } from './helpers/task-executors.ts';

const receiver = await startOtlpReceiver();
after(() => receiver.close());

describe('workflow traces (stand-in executor)', { timeout: 300_000 }, async () => {
  const server = await startTestServer({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, CLAWPLANE_TASK_QUEUE_POLL_MS: '50' });
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  const exec = new ScriptedExecutor();
  server.services.taskRuntime.useExecutor(exec);
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;

  test('a task enqueued by a request: one trace from the request through the queue to every step', async () => {
    assert.equal(tracingOn(), true);
    await a.client.json('POST', api('/agents'), { name: 'tracer', capabilities: ['trace'] }, 201);
    const input = `trace-canary-task-${randomBytes(8).toString('hex')}`;
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'trace', input }, 201);
    await waitFor(
      'task completed',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        return x.status === 'completed' ? x : undefined;
      },
      60_000,
    );
    const root = await traceWith(
      receiver.spans,
      flushTracing,
      'POST /api/v1/tenants/:tenant/tasks',
      ['workflow clawplane.task', 'dispatch', 'execute', 'settle'],
      (s) => s.attrs['clawplane.tenant_id'] === a.id,
    );
    const trace = connected(receiver.spans, root.traceId);
    const wf = one(trace, 'workflow clawplane.task');
    assert.equal(wf.attrs['clawplane.task_id'], t.id);
    assert.equal(wf.attrs['clawplane.workflow.id'], t.id);
    assert.ok(ancestor(trace, root, wf), 'the dequeued workflow continues the trace of the request that enqueued it');
    for (const step of ['dispatch', 'execute', 'settle']) assert.ok(ancestor(trace, wf, one(trace, step)), `${step} under the workflow`);
    // The empty root DBOS opens at dequeue is not exported as a trace of its own.
    assert.ok(!receiver.spans.some((s) => !s.parentSpanId && s.name === 'clawplane.task'), 'no stray DBOS workflow root');
    assert.ok(
      capturedLogs.some((l) => l.includes(`"trace_id":"${root.traceId}"`)),
      'log lines carry the trace id',
    );
    const exported = receiver.bodies.join('\n');
    assert.ok(!exported.includes(input) && !exported.includes('Done: '), 'the input and the output are in no span');
  });
});
