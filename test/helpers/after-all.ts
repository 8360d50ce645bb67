import { after } from 'node:test';

/** What a bench registered to run when its main returns (bench/run.ts), in registration order. */
const benchCleanups: (() => unknown)[] = [];

/**
 * Runs `fn` after the file's tests (node:test's `after`, in registration order). In a bench (bench/run.ts sets
 * CLAWPLANE_BENCH=1) it runs when the bench's main returns instead, so a bench never starts node:test's
 * harness and prints no empty test summary.
 */
export function afterAll(fn: () => unknown): void {
  if (process.env['CLAWPLANE_BENCH'] === '1') benchCleanups.push(fn);
  else after(fn as () => void | Promise<void>);
}

/** Runs what a bench registered with afterAll, in order; one that throws does not keep the rest from running. */
export async function runBenchCleanups(): Promise<void> {
  for (const fn of benchCleanups.splice(0)) {
    try {
      await fn();
    } catch (err) {
      console.error('cleanup failed:', err);
    }
  }
}
