import { DBOS } from '@dbos-inc/dbos-sdk';
import type { Logger } from 'pino';

/**
 * The thin internal interface over DBOS Transact (issue 2, ADR 0001). Workflow code registers through
 * `defineWorkflow`/`runStep` and starts through `startWorkflow`, so a move to another engine touches this
 * folder only. DBOS keeps its tables in the `dbos` schema of Clawplane's own database.
 */
export interface EngineOptions {
  databaseUrl: string;
  log: Logger;
  /** Stable per process role in production, so each executor recovers its own workflows. */
  executorId?: string;
}

let launched = false;

export async function launchEngine(opts: EngineOptions): Promise<void> {
  if (launched) return;
  const log = opts.log.child({ component: 'dbos' });
  DBOS.setConfig({
    name: 'clawplane',
    systemDatabaseUrl: opts.databaseUrl,
    systemDatabaseSchemaName: 'dbos',
    systemDatabasePoolSize: 10,
    // Pinned so workflows started by one build are recovered by the next one (DBOS otherwise hashes
    // the registered code and skips recovery of workflows from a different version).
    applicationVersion: 'clawplane-1',
    ...(opts.executorId ? { executorID: opts.executorId } : {}),
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

export function engineRunning(): boolean {
  return launched;
}

/** Registers a durable workflow under a stable name. Call at module load, before `launchEngine`. */
export function defineWorkflow<Args extends unknown[], R>(name: string, fn: (...args: Args) => Promise<R>): (...args: Args) => Promise<R> {
  return DBOS.registerWorkflow(fn, { name });
}

/** Runs `fn` as a checkpointed step of the current workflow: after a crash it is not run again. */
export function runStep<R>(name: string, fn: () => Promise<R>): Promise<R> {
  return DBOS.runStep(fn, { name });
}

/** Starts (or, with the same id, re-attaches to) a workflow; the id makes starts idempotent. */
export async function startWorkflow<Args extends unknown[], R>(
  wf: (...args: Args) => Promise<R>,
  workflowId: string,
  ...args: Args
): Promise<{ workflowId: string; result: () => Promise<R> }> {
  const handle = await DBOS.startWorkflow(wf, { workflowID: workflowId })(...args);
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
