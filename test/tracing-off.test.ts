/**
 * Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/architecture.md, Observability): a
 * server started without it creates no exporter and records nothing, even for a request that arrives with
 * a `traceparent`, and its log lines carry no trace ids. The traced side is test/tracing.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { trace } from '@opentelemetry/api';
import { parseConfig } from '../src/config/schema.ts';
import { exportersCreated, tracingOn } from '../src/observability/tracing.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';

describe('tracing off', async () => {
  const server = await startTestServer();

  test('no OTEL_EXPORTER_OTLP_ENDPOINT: no exporter, no recording span, no trace ids in logs', async () => {
    assert.equal(server.config.otelEndpoint, undefined);
    const before = capturedLogs.length;
    const res = await server.call('GET', '/api/v1/tenants', { headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } });
    assert.ok(res.status < 500, String(res.status));
    assert.equal(exportersCreated(), 0);
    assert.equal(tracingOn(), false);
    assert.equal(trace.getTracer('probe').startSpan('probe').isRecording(), false, 'the global tracer is the no-op one');
    const lines = capturedLogs.slice(before);
    assert.ok(
      lines.some((l) => l.includes('"msg":"request"')),
      'the request was logged',
    );
    assert.ok(
      lines.every((l) => !l.includes('trace_id')),
      'no trace ids in log lines',
    );
  });

  test('the endpoint is validated at start-up with the variable named', () => {
    assert.throws(() => parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }), /OTEL_EXPORTER_OTLP_ENDPOINT/);
    assert.equal(parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }).otelEndpoint, 'http://127.0.0.1:4318');
  });
});
