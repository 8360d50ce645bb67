/**
 * Retry delays of a task's execution (issue 8): exponential from `baseMs`, capped at `maxMs`. DBOS step
 * retries have no cap (shared/notes/durable-engine.md), so the workflow retries itself: each attempt
 * is its own step and the wait between them is a durable sleep.
 */
export function retryDelayMs(failedAttempt: number, o: { baseMs: number; maxMs: number }): number {
  return Math.min(o.maxMs, o.baseMs * 2 ** Math.max(0, failedAttempt - 1));
}
