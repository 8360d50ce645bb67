/**
 * Fairness (issue 8): a noisy tenant with 10× the tasks does not push a quiet tenant's p95 wait
 * (created → dispatched) past 1.5× its unloaded value. STAND-IN instant executor: the measurement is
 * about the queues, not the gateway.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { measureFairness } from '../bench/tasks-fairness.ts';
import { startTestServer } from './helpers/server.ts';
import { instantExecutor } from './helpers/task-executors.ts';

describe('fair scheduling across tenants', { timeout: 300_000 }, async () => {
  const server = await startTestServer({ CLAWPLANE_TASK_QUEUE_POLL_MS: '50', CLAWPLANE_LOG_LEVEL: 'warn' });
  server.services.taskRuntime.useExecutor(instantExecutor);

  test("a noisy tenant with 10x the tasks does not queue the quiet tenant behind its backlog", async () => {
    const r = await measureFairness(server, { quietTasks: 20, noisyFactor: 10, spacingMs: 100, suffix: 'test' });
    console.log(`fairness: ${JSON.stringify(r)}`);
    // What fairness must prevent: under FIFO the quiet tenant would wait for the noisy backlog to drain.
    // Its p95 wait must stay a small fraction of that drain time.
    assert.ok(r.loadedP95Ms * 5 <= r.noisyDrainMs, `quiet p95 ${r.loadedP95Ms} ms vs a noisy backlog that took ${r.noisyDrainMs} ms to drain`);
    // The 1.5x-of-unloaded target is measured by `npm run bench -- tasks` on a quiet machine; here,
    // on two cores shared with the other test files, the noisy tenant's CPU use alone slows every task,
    // so this bound only catches a gross regression.
    assert.ok(r.ratio <= 4, `quiet p95 ${r.loadedP95Ms} ms loaded vs ${r.unloadedP95Ms} ms alone (ratio ${r.ratio})`);
  });
});
