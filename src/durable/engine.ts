import { DBOS, DBOSWorkflowConflictError } from '@dbos-inc/dbos-sdk';
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import { contextFromTraceparent, currentTraceparent, startSpan, withSpan, failSpan, tracingOn } from '../observability/tracing.ts';
import { trace } from '@opentelemetry/api';

/**
 * The thin internal interface over DBOS Transact (issue 2, ADR 0001). Workflow code registers through
 * `defineWorkflow`/`runStep` and starts through `startWorkflow`, so a move to another engine touches this
 * folder only. DBOS keeps its tables in the `dbos` schema of Clawplane's own database.
 */
export interface EngineOptions {
  databaseUrl: string;
  log: Logger;
  /** The replica id: each executor recovers its own workflows at launch; dead ones' are taken over (src/replicas/). */
  executorId?: string;
  /** false: this process enqueues and waits on workflows but does not dequeue queued ones (no worker role). */
  dequeue?: boolean;
  /** DBOS opens spans for workflows and steps with the registered OpenTelemetry tracer provider. */
  tracing?: boolean;
}

let launched = false;

/**
 * DBOS sets `idle_in_transaction_session_timeout` (its default, 60 s) with a query queued on every new
 * pooled connection, which overlaps the borrower's first query (pg's "client is already executing a
 * query" deprecation, an error in pg 9). Given in the URL's startup options instead, DBOS skips that.
 */
export function withIdleTransactionTimeout(url: string, ms = 60_000): string {
  const u = new URL(url);
  const options = u.searchParams.get('options') ?? '';
  if (options.includes('idle_in_transaction_session_timeout')) return url;
  u.searchParams.set('options', `${options} -c idle_in_transaction_session_timeout=${ms}`.trim());
  return u.toString();
}

export async function launchEngine(opts: EngineOptions): Promise<void> {
  if (launched) return;
  const log = opts.log.child({ component: 'dbos' });
  DBOS.setConfig({
    name: 'clawplane',
    systemDatabaseUrl: withIdleTransactionTimeout(opts.databaseUrl),
    systemDatabaseSchemaName: 'dbos',
    systemDatabasePoolSize: 10,
    // Pinned so workflows started by one build are recovered by the next one (DBOS otherwise hashes
    // the registered code and skips recovery of workflows from a different version).
    applicationVersion: 'clawplane-1',
    ...(opts.executorId ? { executorID: opts.executorId } : {}),
    ...(opts.dequeue === false ? { listenQueues: [] } : {}),
    // DBOS's own OTLP export stays off: its spans end in the provider src/observability/tracing.ts registered.
    ...(opts.tracing ? { tracingEnabled: true } : {}),
    logger: {
      info: (m: unknown) => log.debug({ dbos: String(m) }),
      debug: () => undefined,
      warn: (m: unknown) => log.warn({ dbos: String(m) }),
      error: (m: unknown) => log.error({ dbos: m instanceof Error ? m.message : String(m) }),
    },
  });
  await DBOS.launch();
  launched = true;
}

export async function shutdownEngine(): Promise<void> {
  if (!launched) return;
  launched = false;
  await DBOS.shutdown();
}

/**
 * Recovers the pending workflows of another executor (a dead replica): DBOS puts them back on their queue, from
 * which any live executor dequeues each once and resumes it from its last completed step. This is what DBOS's
 * admin endpoint /dbos-workflow-recovery does (docs.dbos.dev, self-hosting: "instruct your executor to recover
 * workflows assigned to other executor IDs"); DBOS 5 exposes it on the executor only. Resolves with how many.
 */
export async function recoverExecutor(executorId: string): Promise<number> {
  if (!launched) throw new Error('the durable engine is not running');
  const exec = dbosExecutor();
  const handles = await exec.recoverPendingWorkflows([executorId]);
  return handles.length;
}

interface DbosExecutorInternals {
  recoverPendingWorkflows(executorIds: string[]): Promise<unknown[]>;
}

function dbosExecutor(): DbosExecutorInternals {
  // The same CommonJS module instance the package entry point loaded (the package's exports hide the path).
  const require = createRequire(import.meta.url);
  const entry = require.resolve('@dbos-inc/dbos-sdk');
  const mod = require(entry.replace(/index\.js$/, 'dbos-executor.js')) as { DBOSExecutor: { globalInstance?: DbosExecutorInternals } };
  const exec = mod.DBOSExecutor.globalInstance;
  if (!exec) throw new Error('DBOS has no executor: launch the engine first');
  return exec;
}

export function engineRunning(): boolean {
  return launched;
}

/**
 * Trace context travels with a workflow's arguments: DBOS does not carry it through a queue (a worker
 * dequeues with no context), so `startWorkflow`/`enqueueWorkflow` append `{ [TRACE_ARG]: traceparent }`
 * while a span is active and the registered function takes it off again. Durable like the arguments, so a
 * workflow recovered by another replica continues the trace that started it.
 */
const TRACE_ARG = 'clawplaneTraceparent';

function traceArg(): [] | [Record<typeof TRACE_ARG, string>] {
  const tp = tracingOn() ? currentTraceparent() : undefined;
  return tp ? [{ [TRACE_ARG]: tp }] : [];
}

/** Registers a durable workflow under a stable name. Call at module load, before `launchEngine`. */
export function defineWorkflow<Args extends unknown[], R>(name: string, fn: (...args: Args) => Promise<R>): (...args: Args) => Promise<R> {
  const run = async (...all: unknown[]): Promise<R> => {
    const last = all.at(-1);
    const carried = typeof last === 'object' && last !== null && TRACE_ARG in last ? String((last as Record<string, unknown>)[TRACE_ARG]) : undefined;
    const args = (carried === undefined ? all : all.slice(0, -1)) as Args;
    if (!tracingOn()) return fn(...args);
    // The workflow's span: under DBOS's own workflow span when that has a parent (started inside a traced
    // request or workflow), else under the trace that enqueued it, else a new trace.
    const dbosSpan = trace.getActiveSpan();
    const parent = dbosSpan?.isRecording() ? undefined : contextFromTraceparent(carried);
    const span = startSpan(`workflow ${name}`, { 'clawplane.workflow.name': name, 'clawplane.workflow.id': DBOS.workflowID ?? '' }, parent ? { parent } : {});
    try {
      return await withSpan(span, () => fn(...args));
    } catch (err) {
      failSpan(span, err);
      throw err;
    } finally {
      span.end();
    }
  };
  return DBOS.registerWorkflow(run, { name }) as unknown as (...args: Args) => Promise<R>;
}

/**
 * Runs `fn` as a checkpointed step of the current workflow: after a crash it is not run again.
 * With `timeoutMs` the attempt fails after that long; DBOS does not kill the code (issue 8), so step
 * code that can take long must watch `stepSignal()`.
 */
export function runStep<R>(name: string, fn: () => Promise<R>, opts: { timeoutMs?: number } = {}): Promise<R> {
  return DBOS.runStep(() => againOnLockConflict(fn), { name, ...(opts.timeoutMs !== undefined ? { timeoutMS: Math.max(1, Math.round(opts.timeoutMs)) } : {}) });
}

/** PostgreSQL's deadlock and serialization failures: the transaction was rolled back whole, and may simply run again. */
const LOCK_CONFLICT = new Set(['40P01', '40001']);

/**
 * Runs a step's body again (up to 4 more times, after a short random pause) when PostgreSQL chose one of its
 * transactions as a deadlock or serialization victim. Safe because a step may run more than once by DBOS's own
 * contract (at least once: a crash before its checkpoint repeats it), so every step is written to be repeated;
 * without this a lock conflict with a concurrent change (e.g. a pool's shards re-routing the task while its
 * dispatch writes it) failed the whole task as an internal error.
 */
async function againOnLockConflict<R>(fn: () => Promise<R>): Promise<R> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (attempt >= 5 || typeof code !== 'string' || !LOCK_CONFLICT.has(code)) throw err;
      await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 80 * attempt)));
    }
  }
}

/**
 * True when this execution no longer owns its workflow: another replica took it over (it found this one
 * silent past the expiry, src/replicas/registry.ts) and DBOS refused this execution's checkpoint. Workflow
 * code that catches errors must rethrow this one rather than record a failure: the new owner runs the
 * workflow on, and this execution must stop without writing an outcome of its own.
 */
export function ownershipLost(err: unknown): boolean {
  return err instanceof DBOSWorkflowConflictError;
}

/** Inside a step: aborts when the step's attempt times out or its workflow is cancelled. */
export function stepSignal(): AbortSignal {
  const st = DBOS.stepStatus;
  if (!st) return new AbortController().signal;
  return st.timeoutSignal ? AbortSignal.any([st.cancelSignal, st.timeoutSignal]) : st.cancelSignal;
}

/** The id of the workflow the caller runs in (undefined outside a workflow). */
export function currentWorkflowId(): string | undefined {
  return DBOS.workflowID;
}

/** A durable sleep: after a crash the workflow sleeps only for what is left. */
export function sleepDurable(ms: number): Promise<void> {
  return DBOS.sleep(ms);
}

/** A durable clock reading (the same value on replay). */
export function durableNow(): Promise<number> {
  return DBOS.now();
}

/** Parameters of a queue; `partitionConcurrency` makes it partitioned (every enqueue names a partition). */
export interface QueueSettings {
  partitionConcurrency?: number;
  workerConcurrency?: number;
  pollingMs?: number;
}

/** Registers (or updates) a database-backed queue; safe to call repeatedly and after launch. */
export async function ensureQueue(name: string, q: QueueSettings): Promise<void> {
  await DBOS.registerQueue(name, {
    ...(q.partitionConcurrency !== undefined ? { partitionConcurrency: q.partitionConcurrency } : {}),
    ...(q.workerConcurrency !== undefined ? { workerConcurrency: q.workerConcurrency } : {}),
    ...(q.pollingMs !== undefined ? { minPollingIntervalMs: q.pollingMs } : {}),
    onConflict: 'always_update',
  });
}

/** Enqueues a workflow on a queue; the id makes it idempotent (an existing id returns that workflow). */
export async function enqueueWorkflow<Args extends unknown[], R>(
  wf: (...args: Args) => Promise<R>,
  workflowId: string,
  q: { queue: string; partitionKey?: string; priority?: number },
  ...args: Args
): Promise<{ workflowId: string }> {
  const start = DBOS.startWorkflow(wf as (...a: unknown[]) => Promise<R>, {
    workflowID: workflowId,
    queueName: q.queue,
    enqueueOptions: {
      ...(q.partitionKey !== undefined ? { queuePartitionKey: q.partitionKey } : {}),
      ...(q.priority !== undefined ? { priority: q.priority } : {}),
    },
  });
  const handle = await start(...args, ...traceArg());
  return { workflowId: handle.workflowID };
}

/** Cancels a workflow: it stops at its next step; a running step sees `stepSignal()` abort. */
export function cancelWorkflow(workflowId: string): Promise<void> {
  return DBOS.cancelWorkflow(workflowId, { cancelChildren: true });
}

/** Starts (or, with the same id, re-attaches to) a workflow; the id makes starts idempotent. */
export async function startWorkflow<Args extends unknown[], R>(
  wf: (...args: Args) => Promise<R>,
  workflowId: string,
  ...args: Args
): Promise<{ workflowId: string; result: () => Promise<R> }> {
  const handle = await DBOS.startWorkflow(wf as (...a: unknown[]) => Promise<R>, { workflowID: workflowId })(...args, ...traceArg());
  return { workflowId: handle.workflowID, result: () => handle.getResult() };
}

export function workflowResult<R>(workflowId: string): Promise<R> {
  return DBOS.retrieveWorkflow<R>(workflowId).getResult();
}

export async function workflowStatus(workflowId: string): Promise<string | undefined> {
  const s = await DBOS.retrieveWorkflow(workflowId).getStatus();
  return s?.status;
}

/** Delivers a message to a parked workflow; the idempotency key makes double deliveries harmless. */
export function sendToWorkflow(workflowId: string, topic: string, message: unknown, idempotencyKey?: string): Promise<void> {
  return DBOS.send(workflowId, message, topic, idempotencyKey);
}

/** Parks the current workflow until a message on `topic` arrives or the timeout passes (null). */
export function receive<T>(topic: string, timeoutSeconds: number): Promise<T | null> {
  return DBOS.recv<T>(topic, timeoutSeconds);
}
