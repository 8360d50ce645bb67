import { cancelWorkflow, defineWorkflow, durableNow, ownershipLost, receive, runStep, sendToWorkflow, sleepDurable, startWorkflow } from '../durable/engine.ts';
import { policyDecided, type SwarmPolicy } from '../swarms/types.ts';
import { spanAttributes } from '../observability/tracing.ts';
import { approvalTopic, type ApprovalDecision } from './approvals.ts';
import { retryDelayMs } from './backoff.ts';
import { MAX_DEPTH } from './delegation.ts';
import type { Evaluation, SwarmPlan, TaskOutcome, TaskRunArgs, TaskSteps } from './steps.ts';
import type { ExecutorClaim } from '../pools/types.ts';
import type { TurnResult } from './types.ts';

/**
 * The task workflow (issue 8, item 3): one DBOS workflow per task, workflow id = task id.
 *
 *   dispatch + recall → execute (retried: attempts with capped exponential backoff) → settle: approvals
 *   (park in recv until decided or expired; then execute again to continue) or evaluate → delegate
 *   (children as child workflows; wait; aggregate).
 *
 * A task's throughput follows its SQL round trips and commits (`npm run bench -- tasks`), so each step
 * writes in one transaction and steps that always run together are one step.
 *
 * Timeouts are cooperative and count working time only (time parked for a person does not count): the
 * task's own budget and its chain's deadline bound each execute step (DBOS step timeout → the
 * executor's signal aborts). No DBOS workflow timeout is set, because it would also cut approvals that
 * legitimately wait for days. Registered at module load (DBOS needs it before launch); the step bodies
 * are bound with `bindTaskWorkflow` when the server starts.
 */
// DBOS recovers and dequeues workflows as soon as it launches, which is before the server has built
// the services: workflows wait here until `bindTaskWorkflow` (not a DBOS operation, so replay-safe).
let steps: TaskSteps | undefined;
let bound = Promise.withResolvers<TaskSteps>();

export function bindTaskWorkflow(s: TaskSteps): void {
  if (steps && steps !== s) bound = Promise.withResolvers<TaskSteps>();
  steps = s;
  bound.resolve(s);
}

function S(): TaskSteps {
  if (!steps) throw new Error('task workflow used before bindTaskWorkflow');
  return steps;
}

/** How long one recv waits before the workflow re-reads the approval row (a decision whose send was lost in a crash). */
const APPROVAL_POLL_MS = 300_000;

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

async function waitForApproval(a: TaskRunArgs, ap: { id: string; expiresAt: string }): Promise<ApprovalDecision | null> {
  const expiresAt = Date.parse(ap.expiresAt);
  for (;;) {
    const left = expiresAt - (await durableNow());
    if (left > 0) {
      const msg = await receive<ApprovalDecision>(approvalTopic(ap.id), Math.max(0.05, Math.min(left, APPROVAL_POLL_MS) / 1000));
      if (msg) return msg;
    }
    const st = await runStep('approval-check', () => S().approvalState(a, ap.id));
    if (st.status === 'approved' || st.status === 'rejected') return { decision: st.status, by: st.by ?? 'unknown', comment: st.comment };
    if (left <= 0 || st.status === 'expired') {
      await runStep('approval-expire', () => S().expireApproval(a, ap.id));
      return null;
    }
  }
}

async function runTask(a: TaskRunArgs): Promise<TaskOutcome> {
  const cfg = (await bound.promise).settings;
  const d0 = await runStep('dispatch', () => S().dispatch(a));
  if ('error' in d0) return runStep('finish', () => S().finish(a, 'failed', d0.error, null));
  if ('swarm' in d0) return runSwarm(a, d0.swarm, a.chainDeadlineMs ?? d0.startedAt + cfg.chainTimeoutMs);
  const disp = d0;
  const { agent, input, memories, startedAt } = disp;
  const chainDeadline = a.chainDeadlineMs ?? startedAt + cfg.chainTimeoutMs;
  let prompt = memories.length ? `${input}\n\nWhat you remember from earlier tasks:\n${memories.map((m) => `- ${m.replace(/\n/g, ' ')}`).join('\n')}` : input;

  let parkedMs = 0;
  let attempts = 0;
  let approvedExec: readonly string[] = [];
  let ev: Evaluation | undefined;
  for (let turn = 1; !ev; turn++) {
    let res: { turn: number; attempt: number; result: TurnResult } | undefined;
    let lastError = '';
    for (let attempt = 1; attempt <= cfg.retryAttempts; attempt++) {
      // A pooled task first waits for a free executor of its shard; time waiting there (a busy shard, a
      // paused pool) is not counted against the task's budget, like time parked for a person.
      let executor: ExecutorClaim | undefined;
      if (disp.pool) {
        const c = await runStep('claim', () => S().claimExecutor(a, disp));
        if ('error' in c) return runStep('finish', () => S().finish(a, 'failed', `no executor: ${c.error}`, agent));
        parkedMs += c.waitedMs;
        executor = c.claim;
      }
      const deadline = Math.min(startedAt + cfg.taskTimeoutMs, chainDeadline) + parkedMs;
      // The first attempt starts right after dispatch, which recorded startedAt: no DBOS.now() checkpoint.
      const remaining = deadline - (turn === 1 && attempt === 1 && !executor ? startedAt : await durableNow());
      if (remaining <= 0) {
        const which = startedAt + cfg.taskTimeoutMs <= chainDeadline ? `its ${cfg.taskTimeoutMs} ms budget` : "its delegated chain's deadline";
        return runStep('finish', () => S().finish(a, 'failed', `timed out: the task used ${which}${lastError ? ` (last error: ${lastError})` : ''}`, agent));
      }
      attempts++;
      try {
        const p = prompt;
        const ex = executor;
        // The person approved one run of each command: only the first attempt after the decision may use it
        // (a retry after a failure asks again).
        const ok = attempt === 1 ? approvedExec : [];
        res = { turn, attempt, result: await runStep('execute', () => S().execute(a, agent, input, p, turn, attempt, ex, ok), { timeoutMs: remaining }) };
        break;
      } catch (err) {
        if (ownershipLost(err)) throw err;
        lastError = message(err);
        const delay = attempt < cfg.retryAttempts ? retryDelayMs(attempt, { baseMs: cfg.retryBaseMs, maxMs: cfg.retryMaxMs }) : 0;
        await runStep('retry', () => S().trace(a, 'execute', 'attempt_failed', { turn, attempt, error: lastError, ...(delay ? { retryInMs: delay } : {}) }));
        if (delay) await sleepDurable(delay);
      }
    }
    if (!res) {
      const err = lastError;
      return runStep('finish', () => S().finish(a, 'failed', `execution failed after ${cfg.retryAttempts} attempt(s): ${err}`, agent));
    }
    const done = res;
    const tried = attempts;
    const settled = await runStep('settle', () => S().settle(a, disp, done, tried, a.depth < MAX_DEPTH));
    if ('evaluated' in settled) {
      ev = settled.evaluated;
      break;
    }
    const park = settled.park;
    const parkedFrom = await durableNow();
    const decided: { id: string; by: string }[] = [];
    for (const ap of park) {
      const d = await waitForApproval(a, ap);
      if (!d) return runStep('finish', () => S().finish(a, 'expired', `approval of ${ap.tool} expired unanswered`, agent));
      if (d.decision === 'rejected')
        return runStep('finish', () => S().finish(a, 'failed', `${ap.tool} rejected by ${d.by}${d.comment ? `: ${d.comment}` : ''}`, agent));
      decided.push({ id: ap.id, by: d.by });
    }
    parkedMs += (await durableNow()) - parkedFrom;
    // Recorded before this release as a step without a result: nothing to allow again then.
    approvedExec = ((await runStep('approval-resume', () => S().resumed(a, decided))) as { exec?: string[] } | undefined)?.exec ?? [];
    prompt = `A person approved your use of ${park.map((p) => p.tool).join(', ')}. Continue the task.`;
  }

  if (!ev.delegation) {
    const out = ev.output;
    return { taskId: a.taskId, status: 'completed', output: out, reason: 'done' };
  }
  const req = ev.delegation;
  const children = await runStep('delegate', () => S().delegate(a, req));
  const results = await runChildren(a, children, chainDeadline + parkedMs, { policy: req.policy ?? 'all', quorum: req.quorum ?? null, step: 'delegate' });
  const output = ev.output;
  return runStep('aggregate', () => S().aggregate(a, output, results, { policy: req.policy ?? 'all', quorum: req.quorum ?? null }));
}

/** The topic a child's outcome is sent to its parent on. */
const CHILD_TOPIC = 'clawplane.child-outcome';
/** How long a parent waits for word from its children before reading their rows (a child that ended without a message). */
const CHILD_CHECK_S = 60;

/**
 * Starts the children as child workflows (all at once: they run in parallel) and collects their outcomes as
 * they end (each child sends its own). Once the policy is decided with children still running — `all` after a
 * failure, `any` after a success, a quorum reached or out of reach — the rest are cancelled (rows and
 * workflows) and count as cancelled.
 */
async function runChildren(
  a: TaskRunArgs,
  children: string[],
  chainDeadlineMs: number,
  policy: { policy: SwarmPolicy; quorum: number | null; step: 'delegate' | 'swarm' },
): Promise<TaskOutcome[]> {
  for (const id of children)
    await startWorkflow(taskWorkflow, id, { tenantId: a.tenantId, taskId: id, depth: a.depth + 1, chainDeadlineMs, parentId: a.taskId });
  const got = new Map<string, TaskOutcome>();
  for (;;) {
    const open = children.filter((c) => !got.has(c));
    if (open.length === 0) break;
    const done = [...got.values()].filter((o) => o.status === 'completed').length;
    const decided = policyDecided(policy.policy, policy.quorum, done, got.size - done, children.length);
    if (decided !== null && got.size > 0) {
      const why = `the parent's policy ${policy.policy}${policy.quorum ? ` ${policy.quorum}` : ''} was already ${decided ? 'met' : 'out of reach'} (${done} of ${children.length} completed, ${got.size - done} not)`;
      const after = await runStep('cancel-children', () => S().cancelChildren(a, open, why, policy.step));
      for (const id of open) await cancelWorkflow(id);
      for (const o of after) got.set(o.taskId, o);
      break;
    }
    const msg = await receive<TaskOutcome>(CHILD_TOPIC, CHILD_CHECK_S);
    if (msg && open.includes(msg.taskId)) got.set(msg.taskId, msg);
    else if (!msg) for (const o of await runStep('children-check', () => S().childOutcomes(a, open))) got.set(o.taskId, o);
  }
  return children.map((id) => got.get(id) ?? { taskId: id, status: 'failed', output: null, reason: 'no outcome' });
}

/** A swarm (src/swarms): decompose by its rule, run the children in parallel, aggregate under its policy. */
async function runSwarm(a: TaskRunArgs, plan: SwarmPlan, chainDeadlineMs: number): Promise<TaskOutcome> {
  const children = await runStep('decompose', () => S().decompose(a, plan));
  const results = await runChildren(a, children, chainDeadlineMs, { policy: plan.policy, quorum: plan.quorum, step: 'swarm' });
  return runStep('aggregate', () => S().aggregate(a, '', results, { policy: plan.policy, quorum: plan.quorum, step: 'swarm' }));
}

export const taskWorkflow = defineWorkflow('clawplane.task', async (a: TaskRunArgs): Promise<TaskOutcome> => {
  spanAttributes({ 'clawplane.tenant_id': a.tenantId, 'clawplane.task_id': a.taskId, 'clawplane.task.depth': a.depth });
  const outcome = await runAndFinish(a);
  // A child tells its parent at once (the parent may cancel its siblings: runChildren).
  if (a.parentId) await sendToWorkflow(a.parentId, CHILD_TOPIC, outcome);
  return outcome;
});

async function runAndFinish(a: TaskRunArgs): Promise<TaskOutcome> {
  try {
    return await runTask(a);
  } catch (err) {
    // Another replica took this workflow over (src/durable/engine.ts ownershipLost): it records the outcome.
    if (ownershipLost(err)) throw err;
    // Cancellation also lands here: the next step throws again and the workflow ends cancelled.
    const reason = `internal error: ${message(err)}`;
    return runStep('finish', () => S().finish(a, 'failed', reason, null));
  }
}
