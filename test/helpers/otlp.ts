/**
 * A collector's OTLP/HTTP traces endpoint for tests: decodes the JSON ExportTraceServiceRequest the SDK's
 * exporter sends (observability/tracing.ts) into spans, and keeps every body as received so tests can
 * scan the exported bytes for planted secrets. Plus checks on the shape of a trace.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

type AnyValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: { key: string; value: AnyValue }[];
}
export interface Collected {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  kind: number;
  attrs: Record<string, string | number | boolean>;
}

/** A collector's OTLP/HTTP traces endpoint: the JSON ExportTraceServiceRequest the SDK's exporter sends. */
export async function startOtlpReceiver(): Promise<{ url: string; spans: Collected[]; bodies: string[]; close(): Promise<void> }> {
  const spans: Collected[] = [];
  const bodies: string[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let raw = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
        res.writeHead(415).end();
        return;
      }
      const text = raw.toString('utf8');
      bodies.push(text);
      const body = JSON.parse(text) as { resourceSpans?: { scopeSpans?: { spans?: OtlpSpan[] }[] }[] };
      for (const rs of body.resourceSpans ?? [])
        for (const ss of rs.scopeSpans ?? [])
          for (const s of ss.spans ?? []) {
            const attrs: Collected['attrs'] = {};
            for (const a of s.attributes ?? []) attrs[a.key] = a.value.stringValue ?? a.value.boolValue ?? a.value.doubleValue ?? Number(a.value.intValue);
            spans.push({ traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId || undefined, name: s.name, kind: s.kind, attrs });
          }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, spans, bodies, close: () => new Promise((r) => srv.close(() => r())) };
}

/** The spans of one trace, checked to be connected: one root, every other span's parent in the trace. */
export function connected(spans: Collected[], traceId: string): Collected[] {
  const mine = spans.filter((s) => s.traceId === traceId);
  const ids = new Set(mine.map((s) => s.spanId));
  const roots = mine.filter((s) => !s.parentSpanId);
  assert.equal(roots.length, 1, `one root in ${traceId}: ${roots.map((r) => r.name).join(', ')}`);
  for (const s of mine) if (s.parentSpanId) assert.ok(ids.has(s.parentSpanId), `the parent of ${s.name} is in the trace`);
  return mine;
}

/** True when `a` is an ancestor of `b` in the trace. */
export function ancestor(trace: Collected[], a: Collected, b: Collected): boolean {
  const byId = new Map(trace.map((s) => [s.spanId, s]));
  for (let p = b.parentSpanId ? byId.get(b.parentSpanId) : undefined; p; p = p.parentSpanId ? byId.get(p.parentSpanId) : undefined) if (p === a) return true;
  return false;
}

/** The span of that name (and condition) in the trace; fails listing the names there are. */
export function one(trace: Collected[], name: string, where: (s: Collected) => boolean = () => true): Collected {
  const s = trace.find((x) => x.name === name && where(x));
  assert.ok(s, `a "${name}" span in the trace (have: ${[...new Set(trace.map((x) => x.name))].join(', ')})`);
  return s;
}

/** Waits (flushing) until a root span of that name heads a trace holding every named span. */
export async function traceWith(
  spans: Collected[],
  flush: () => Promise<void>,
  rootName: string,
  names: string[],
  pick: (s: Collected) => boolean = () => true,
  timeoutMs = 120_000,
): Promise<Collected> {
  const t0 = Date.now();
  for (;;) {
    await flush();
    for (const root of spans.filter((s) => s.name === rootName && !s.parentSpanId && pick(s))) {
      const have = new Set(spans.filter((s) => s.traceId === root.traceId).map((s) => s.name));
      if (names.every((n) => have.has(n))) return root;
    }
    if (Date.now() - t0 > timeoutMs) {
      const roots = spans
        .filter((s) => !s.parentSpanId)
        .map((r) => `${r.name}: ${[...new Set(spans.filter((s) => s.traceId === r.traceId).map((s) => s.name))].join(', ')}`);
      throw new Error(`no trace under "${rootName}" with ${names.join(', ')}; traces: ${roots.join(' | ')}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
