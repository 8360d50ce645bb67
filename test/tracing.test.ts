/**
 * OpenTelemetry traces on a real OpenClaw gateway (docs/architecture.md, Observability): an OTLP/HTTP
 * receiver in this process collects what the server exports for one streamed chat and one task, and each
 * must be one connected trace (one trace id, every parent present) with a span from every hop: the API
 * request, the ingress, the durable workflow and its steps, the hop into the sandbox, the supervisor in
 * there, the broker and the provider call. Ids are attributes; a planted provider key, the message
 * text, the answer and the gateway's tokens appear in no exported byte.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { flushTracing } from '../src/observability/tracing.ts';
import type { Task } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { ancestor, connected as connectedIn, one, startOtlpReceiver, traceWith, type Collected } from './helpers/otlp.ts';
import { waitFor } from './helpers/sandbox.ts';
import { capturedLogs } from './helpers/server.ts';

const receiver = await startOtlpReceiver();
after(() => receiver.close());

describe('one trace per chat and per task, on a real gateway', { timeout: 900_000 }, async () => {
  const fx = await startGatewayFixture({ file: import.meta.url, env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, CLAWPLANE_TASK_QUEUE_POLL_MS: '200' } });
  const { server, a, canary } = fx;
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  const secretsOf = async () => [canary, await server.services.instances.gatewayToken(a.instanceId), await server.services.instances.hooksToken(a.instanceId)];

  const traceOf = (rootName: string, names: string[], pick?: (s: Collected) => boolean) => traceWith(receiver.spans, flushTracing, rootName, names, pick);
  const connected = (traceId: string) => connectedIn(receiver.spans, traceId);

  test('a streamed chat: API → ingress → sandbox → supervisor → broker → provider, one trace, no content', async () => {
    const message = `trace-canary-message-${randomBytes(8).toString('hex')}`;
    const res = await a.client.call('POST', api('/chat/completions'), {
      model: 'agent/main',
      messages: [{ role: 'user', content: message }],
      stream: true,
      session: 'traced',
    });
    assert.equal(res.status, 200);
    const body = await res.text();
    assert.match(body, /Hello from fake-model|Hello/);
    const root = await traceOf('POST /api/v1/tenants/:tenant/chat/completions', [
      'ingress.turn',
      'sandbox.request',
      'sandbox.supervisor',
      'broker.request',
      'provider.request',
    ]);
    const trace = connected(root.traceId);
    assert.equal(root.kind, 2, 'the API span is a server span');
    assert.equal(root.attrs['clawplane.tenant_id'], a.id);
    const ingress = one(trace, 'ingress.turn');
    assert.equal(ingress.attrs['clawplane.instance_id'], a.instanceId);
    assert.equal(ingress.attrs['clawplane.tenant_id'], a.id);
    const hop = one(trace, 'sandbox.request');
    const sup = one(trace, 'sandbox.supervisor', (s) => s.parentSpanId === hop.spanId);
    const broker = one(trace, 'broker.request', (s) => s.parentSpanId === sup.spanId);
    const provider = one(trace, 'provider.request', (s) => s.parentSpanId === broker.spanId);
    assert.ok(ancestor(trace, root, ingress) && ancestor(trace, ingress, hop), 'API → ingress → sandbox');
    assert.equal(broker.attrs['clawplane.tenant_id'], a.id);
    assert.equal(broker.attrs['clawplane.instance_id'], a.instanceId);
    assert.equal(provider.attrs['server.address'], '127.0.0.1');
    assert.equal(provider.attrs['http.response.status_code'], 200);
    // The request's log lines carry its trace id.
    assert.ok(
      capturedLogs.some((l) => l.includes(`"trace_id":"${root.traceId}"`)),
      'a log line of the request carries the trace id',
    );
    const exported = receiver.bodies.join('\n');
    for (const s of [...(await secretsOf()), message, 'Hello from fake-model', 'Bearer'])
      assert.ok(!exported.includes(s), `${s.slice(0, 12)}… appears in no span`);
  });

  test('a task: API → workflow → DBOS steps → sandbox → supervisor → broker → provider, one trace, ids as attributes', async () => {
    await a.client.json('POST', api('/agents'), { name: 'tracer', capabilities: ['trace'] }, 201);
    const input = `trace-canary-task-${randomBytes(8).toString('hex')}`;
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'trace', input }, 201);
    await waitFor(
      'task completed',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
        return x.status === 'completed' ? x : undefined;
      },
      600_000,
    );
    const root = await traceOf(
      'POST /api/v1/tenants/:tenant/tasks',
      ['workflow clawplane.task', 'dispatch', 'execute', 'sandbox.request', 'sandbox.supervisor', 'broker.request', 'provider.request'],
      (s) => s.attrs['clawplane.tenant_id'] === a.id,
    );
    const trace = connected(root.traceId);
    const wf = one(trace, 'workflow clawplane.task');
    assert.equal(wf.attrs['clawplane.task_id'], t.id);
    assert.equal(wf.attrs['clawplane.tenant_id'], a.id);
    assert.ok(ancestor(trace, root, wf), 'the workflow continues the trace of the request that enqueued it');
    const execute = one(trace, 'execute');
    assert.ok(ancestor(trace, wf, one(trace, 'dispatch')) && ancestor(trace, wf, execute), 'DBOS steps under the workflow');
    assert.equal(execute.attrs['clawplane.task_id'], t.id);
    assert.equal(typeof execute.attrs['clawplane.instance_id'], 'string');
    const hop = one(trace, 'sandbox.request', (s) => ancestor(trace, execute, s));
    const sup = one(trace, 'sandbox.supervisor', (s) => s.parentSpanId === hop.spanId);
    const broker = one(trace, 'broker.request', (s) => s.parentSpanId === sup.spanId);
    one(trace, 'provider.request', (s) => s.parentSpanId === broker.spanId);
    assert.equal(broker.attrs['clawplane.instance_id'], execute.attrs['clawplane.instance_id']);
    const exported = receiver.bodies.join('\n');
    for (const s of [...(await secretsOf()), input, 'Hello from fake-model', 'Bearer'])
      assert.ok(!exported.includes(s), `${s.slice(0, 12)}… appears in no span`);
  });
});
