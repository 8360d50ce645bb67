/**
 * STAND-IN task executors (issue 8 tests): they replace the OpenClaw gateway for tests about the
 * workflow itself — retries, approvals, cancellation, restarts, fairness — where a real gateway would
 * only add minutes. The one real-gateway test is test/tasks-gateway.test.ts.
 */
import type { TaskExecutor, Turn, TurnResult } from '../../src/tasks/types.ts';

export type Script = (turn: Turn, signal: AbortSignal) => Promise<TurnResult>;

/** Runs a per-input script: the first registered pattern matching the task's input decides the answer. */
export class ScriptedExecutor implements TaskExecutor {
  readonly name = 'stand-in';
  readonly calls: Turn[] = [];
  readonly #scripts: { match: RegExp; run: Script }[] = [];

  on(match: RegExp, run: Script): this {
    this.#scripts.push({ match, run });
    return this;
  }

  async run(turn: Turn, ctx: { signal: AbortSignal; trace: (kind: string, detail?: Record<string, unknown>) => Promise<void> }): Promise<TurnResult> {
    this.calls.push(turn);
    await ctx.trace('stand_in', { attempt: turn.attempt });
    const s = this.#scripts.find((x) => x.match.test(turn.input));
    if (s) return s.run(turn, ctx.signal);
    return { output: `Done: ${turn.prompt.slice(0, 60)}` };
  }
}

/** Answers at once ("instant executor"), for throughput and fairness measurements. */
export const instantExecutor: TaskExecutor = {
  name: 'stand-in-instant',
  run: (turn) => Promise.resolve({ output: `ok ${turn.taskId}` }),
};

/** Waits until the signal aborts (a hung turn), then throws its reason. */
export function hang(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason as Error);
    signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });
}
