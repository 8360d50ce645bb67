/**
 * OpenTelemetry traces (docs/architecture.md, Observability). Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set:
 * then the SDK is loaded, a W3C trace-context propagator and an AsyncLocalStorage context manager are
 * registered and spans go to `<endpoint>/v1/traces` over OTLP/HTTP in batches. Off, nothing of the SDK is
 * loaded and every helper here is a call into @opentelemetry/api's no-op tracer.
 *
 * What may go into a span is deliberately narrow (docs/security.md): ids (tenant, instance, task,
 * workflow, request), names, methods, paths without query strings, status codes and timings. Never a
 * message, prompt, completion, header value, token or key; a span's status carries an error class, never
 * an error message (which can quote a gateway's or provider's answer).
 */
import {
  context,
  propagation,
  trace,
  SpanKind,
  SpanStatusCode,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
} from '@opentelemetry/api';
import type { Logger } from 'pino';

export { SpanKind };

export interface TracingOptions {
  /** OTEL_EXPORTER_OTLP_ENDPOINT; undefined: tracing stays off. */
  endpoint: string | undefined;
  /** service.instance.id: the replica id. */
  instanceId?: string;
  log: Logger;
}

export interface Tracing {
  /** Exports every ended span now (tests; before a planned exit). */
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

const TRACER = 'clawplane';
const W3C = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
/** The response header the in-sandbox supervisor reports its span in (see recordSupervisorSpan). */
export const SUPERVISOR_SPAN_HEADER = 'x-clawplane-supervisor-span';

let running: (Tracing & { ids: { next: string | undefined } }) | undefined;
let exporters = 0;

/** How many OTLP exporters this process created (0 while tracing is off). */
export function exportersCreated(): number {
  return exporters;
}

/** True when spans are recorded and exported. */
export function tracingOn(): boolean {
  return running !== undefined;
}

/**
 * Starts tracing when an endpoint is configured; once per process (later calls get the same handle).
 * Undefined when off: no exporter, no processor, no context manager.
 */
export async function startTracing(o: TracingOptions): Promise<Tracing | undefined> {
  if (!o.endpoint) return undefined;
  if (running) return running;
  const [sdk, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  const random = new sdk.RandomIdGenerator();
  // The supervisor's span is recorded here with the span id the supervisor chose (its children, the
  // gateway's and the broker's, already name it as their parent): a one-shot override, consumed by the
  // very next synchronous startSpan.
  const ids = {
    next: undefined as string | undefined,
    generateTraceId: () => random.generateTraceId(),
    generateSpanId(): string {
      const id = ids.next;
      ids.next = undefined;
      return id ?? random.generateSpanId();
    },
  };
  const exporter = new OTLPTraceExporter({ url: `${o.endpoint.replace(/\/+$/, '')}/v1/traces` });
  exporters++;
  const parentBased = new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() });
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'clawplane', ...(o.instanceId ? { 'service.instance.id': o.instanceId } : {}) }),
    idGenerator: ids,
    sampler: {
      // DBOS opens a workflow span with whatever context is active when a worker dequeues it: a root with
      // nothing in it. The engine opens the workflow's real span under the trace that enqueued it
      // (src/durable/engine.ts), so that empty root is not recorded.
      shouldSample(ctx, traceId, name, kind, attributes, links) {
        if (!trace.getSpanContext(ctx) && attributes['operationType'] === 'workflow') return { decision: sdk.SamplingDecision.NOT_RECORD };
        return parentBased.shouldSample(ctx, traceId, name, kind, attributes, links);
      },
      toString: () => 'ClawplaneSampler',
    },
    spanProcessors: [
      {
        // DBOS sets a failed step's or workflow's status message to the error's message, which can quote
        // a gateway's answer: only the code is kept.
        onStart: () => undefined,
        onEnding(span) {
          if (span.status.message) span.setStatus({ code: span.status.code });
        },
        onEnd: () => undefined,
        forceFlush: () => Promise.resolve(),
        shutdown: () => Promise.resolve(),
      },
      new sdk.BatchSpanProcessor({ exporter, scheduledDelayMillis: 1000 }),
    ],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  o.log.info({ endpoint: redactEndpoint(o.endpoint) }, 'OpenTelemetry traces are exported over OTLP/HTTP');
  running = {
    ids,
    flush: () => provider.forceFlush(),
    shutdown: async () => {
      await provider.shutdown();
    },
  };
  return running;
}

/** The endpoint without credentials or a query string, for the log. */
function redactEndpoint(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(unparseable)';
  }
}

/** Exports the spans ended so far (a no-op while tracing is off). */
export async function flushTracing(): Promise<void> {
  await running?.flush();
}

function tracer() {
  return trace.getTracer(TRACER);
}

/** Starts a span, a child of the active one (or of `parent`). End it yourself. */
export function startSpan(
  name: string,
  attributes: Attributes = {},
  opts: { kind?: SpanKind; parent?: Context; links?: Link[]; startTime?: number } = {},
): Span {
  return tracer().startSpan(
    name,
    {
      attributes,
      kind: opts.kind ?? SpanKind.INTERNAL,
      ...(opts.links ? { links: opts.links } : {}),
      ...(opts.startTime !== undefined ? { startTime: opts.startTime } : {}),
    },
    opts.parent ?? context.active(),
  );
}

/** Runs `fn` with `span` as the active span (its async continuations too). */
export function withSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn);
}

/** Marks a span failed with the error's class only (an error's message can quote content). */
export function failSpan(span: Span, err: unknown): void {
  const code = (err as { code?: unknown } | null)?.code;
  span.setAttribute('error.type', typeof code === 'string' ? code : err instanceof Error ? err.name : 'error');
  span.setStatus({ code: SpanStatusCode.ERROR });
}

/** Runs `fn` in a new child span that ends when `fn` settles. */
export async function inSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
  opts: { kind?: SpanKind; parent?: Context } = {},
): Promise<T> {
  const span = startSpan(name, attributes, opts);
  try {
    return await withSpan(span, () => fn(span));
  } catch (err) {
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** Adds attributes to the active span (ids, names, counts: see the file comment). */
export function spanAttributes(attributes: Attributes): void {
  trace.getActiveSpan()?.setAttributes(attributes);
}

/** Writes the active context's `traceparent` into outgoing headers (nothing while off). */
export function injectTraceContext(headers: Record<string, unknown>, ctx: Context = context.active()): void {
  propagation.inject(ctx, headers);
}

/** The context an incoming request's `traceparent` names (the active one when it names none). */
export function extractTraceContext(headers: Record<string, string | string[] | undefined> | Headers): Context {
  const carrier: Record<string, string> = {};
  const get = (k: string) => (headers instanceof Headers ? (headers.get(k) ?? undefined) : headers[k]);
  for (const k of ['traceparent', 'tracestate']) {
    const v = get(k);
    if (typeof v === 'string') carrier[k] = v;
  }
  return propagation.extract(context.active(), carrier);
}

/** The active span's W3C traceparent, or undefined (off, or no span). */
export function currentTraceparent(): string | undefined {
  const sc = trace.getActiveSpan()?.spanContext();
  if (!sc || !trace.isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 1).toString(16).padStart(2, '0')}`;
}

/** A remote parent context from a traceparent string (undefined when malformed). */
export function contextFromTraceparent(tp: string | undefined): Context | undefined {
  const m = tp ? W3C.exec(tp) : null;
  if (!m) return undefined;
  const sc: SpanContext = { traceId: m[1] ?? '', spanId: m[2] ?? '', traceFlags: parseInt(m[3] ?? '0', 16) & 1, isRemote: true };
  return trace.isSpanContextValid(sc) ? trace.setSpanContext(context.active(), sc) : undefined;
}

/** trace_id and span_id of the active span, for log lines (pino mixin); empty when there is none. */
export function traceLogFields(): { trace_id?: string; span_id?: string } {
  const sc = trace.getActiveSpan()?.spanContext();
  if (!sc || !trace.isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId };
}

/**
 * The supervisor runs inside the sandbox, which has no network: it cannot export spans. It picks its
 * span's id, passes it to the gateway as the parent in `traceparent`, stamps the gateway's model calls
 * with it on their way to the broker, and reports it (with when it received the request and how long the
 * gateway took to answer) in a response header; the host records the span here, under the hop's client
 * span, ending it when the answer ends. A missing or malformed header (an older supervisor) records
 * nothing. Returns the span, to be ended by the caller.
 */
export function recordSupervisorSpan(header: string | string[] | undefined, parent: Span, sentAt: number): Span | undefined {
  if (!running || typeof header !== 'string') return undefined;
  const f = Object.fromEntries(header.split(';').map((kv) => kv.trim().split('=') as [string, string | undefined]));
  const spanId = f['id'];
  if (!spanId || !/^[0-9a-f]{16}$/.test(spanId) || /^0+$/.test(spanId)) return undefined;
  // The sandbox shares the host's clock (local and docker drivers); a report outside the hop is clamped to it.
  const at = Number(f['at']);
  const start = Number.isFinite(at) ? Math.min(Math.max(at, sentAt), Date.now()) : sentAt;
  const headMs = Number(f['head_ms']);
  running.ids.next = spanId;
  const span = startSpan(
    'sandbox.supervisor',
    { 'clawplane.recorded_by': 'host', ...(Number.isFinite(headMs) ? { 'clawplane.supervisor.gateway_head_ms': headMs } : {}) },
    { kind: SpanKind.SERVER, parent: trace.setSpan(context.active(), parent), startTime: start },
  );
  running.ids.next = undefined;
  return span;
}
