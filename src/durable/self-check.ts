import type { Db } from '../db/pool.ts';
import { defineWorkflow, receive, runStep } from './engine.ts';

/**
 * The trivial workflow that proves durability end to end (issue 2): record a side effect, park until
 * told to continue, record another. After a crash the recorded step is not repeated.
 */
let db: Db | undefined;

export function bindSelfCheck(database: Db): void {
  db = database;
}

function record(workflowId: string, step: string): Promise<void> {
  return runStep(step, async () => {
    if (!db) throw new Error('self-check workflow used before bindSelfCheck');
    await db.query('INSERT INTO durable_self_checks (workflow_id, step) VALUES ($1, $2)', [workflowId, step]);
  });
}

export const selfCheckWorkflow = defineWorkflow('clawplane.selfCheck', async (workflowId: string, waitSeconds: number) => {
  await record(workflowId, 'before-wait');
  const msg = await receive<string>('continue', waitSeconds);
  await record(workflowId, 'after-wait');
  return { continued: msg !== null, message: msg };
});
