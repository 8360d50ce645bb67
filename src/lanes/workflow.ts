import { defineWorkflow, durableNow, ownershipLost, receive, runStep, workflowResult } from '../durable/engine.ts';
import { enqueueTask } from '../tasks/service.ts';
import { laneApprovalTopic } from './service.ts';
import type { LaneRunArgs, LaneSteps } from './steps.ts';

/**
 * One lane run (docs/lanes.md): one DBOS workflow per run, workflow id = run id, enqueued on the lanes queue.
 *
 *   begin (the tenant must be active) → for each step in order: [park until a person approves] → the step's
 *   task (a root task through the task path: dispatch, wake the gateway through the gate, execute, evaluate)
 *   → record its status, timings, tokens, cost and output artifact → finish: summary.json. A check step
 *   (the doctor lane) is one checkpointed step instead: Clawplane computes its findings, no task.
 *
 * Fail-closed: a failed, rejected or expired step halts the run with its reason and the later steps are
 * recorded skipped. Registered at module load; the step bodies are bound when the server starts.
 */
let steps: LaneSteps | undefined;
let bound = Promise.withResolvers<LaneSteps>();

export function bindLaneWorkflow(s: LaneSteps): void {
  if (steps && steps !== s) bound = Promise.withResolvers<LaneSteps>();
  steps = s;
  bound.resolve(s);
}

function S(): LaneSteps {
  if (!steps) throw new Error('lane workflow used before bindLaneWorkflow');
  return steps;
}

/** How long one recv waits before the workflow re-reads the step row (a decision whose send was lost). */
const APPROVAL_POLL_MS = 300_000;

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

async function waitForApproval(a: LaneRunArgs, index: number, expiresAt: number): Promise<{ ok: true } | { ok: false; reason: string }> {
  for (;;) {
    const left = expiresAt - (await durableNow());
    if (left > 0) await receive<unknown>(laneApprovalTopic(a.runId, index), Math.max(0.05, Math.min(left, APPROVAL_POLL_MS) / 1000));
    const st = await runStep('approval-check', () => S().approvalState(a, index));
    if (st.decision === 'approved') return { ok: true };
    if (st.decision === 'rejected') return { ok: false, reason: st.reason };
    if (left <= 0) return { ok: false, reason: await runStep('approval-expire', () => S().expireApproval(a, index)) };
  }
}

async function runLane(a: LaneRunArgs): Promise<{ status: string; reason: string }> {
  await bound.promise;
  const begun = await runStep('begin', () => S().begin(a));
  if ('error' in begun) return runStep('finish', () => S().finish(a, 'failed', begun.error));
  for (const [i, step] of a.steps.entries()) {
    if (step.requiresApproval) {
      const expiresAt = await runStep('park', () => S().park(a, i));
      const d = await waitForApproval(a, i, expiresAt);
      if (!d.ok) return runStep('finish', () => S().finish(a, 'failed', `step "${step.name}" was not approved: ${d.reason}`, i));
    }
    if (step.check) {
      const c = await runStep('check', () => S().runCheck(a, i));
      if (!c.ok) return runStep('finish', () => S().finish(a, 'failed', `step "${step.name}" failed: ${c.reason}`, i));
      continue;
    }
    const t = await runStep('task', () => S().createTask(a, i));
    if ('error' in t) return runStep('finish', () => S().finish(a, 'failed', `step "${step.name}" failed: ${t.error}`, i));
    await enqueueTask(t.task, t.queue);
    try {
      await workflowResult(t.task.id);
    } catch (err) {
      if (ownershipLost(err)) throw err;
      // A cancelled or failed task workflow: its row says what happened, and recordStep reads it.
    }
    const done = await runStep('record', () => S().recordStep(a, i, t.task.id));
    if (!done.ok) return runStep('finish', () => S().finish(a, 'failed', `step "${step.name}" failed: ${done.reason}`, i));
  }
  return runStep('finish', () => S().finish(a, 'succeeded', ''));
}

export const laneRunWorkflow = defineWorkflow('clawplane.lane-run', async (a: LaneRunArgs): Promise<{ status: string; reason: string }> => {
  try {
    return await runLane(a);
  } catch (err) {
    // Another replica took this run over (src/durable/engine.ts ownershipLost): it records the outcome.
    if (ownershipLost(err)) throw err;
    const reason = `internal error: ${message(err)}`;
    return runStep('finish', () => S().finish(a, 'failed', reason));
  }
});
