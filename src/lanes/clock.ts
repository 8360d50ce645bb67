import { readFileSync } from 'node:fs';

/**
 * The lane scheduler's clock read from a file holding an ISO time (CLAWPLANE_TEST_LANE_CLOCK_FILE, tests only):
 * replicas in separate processes then share one injected "now" (docs/adr/0012-lane-scheduling.md). While the
 * file does not exist, the real clock.
 */
export function fileClock(file: string): () => Date {
  return () => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8').trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Date();
      throw err;
    }
    const at = new Date(text);
    if (Number.isNaN(at.getTime())) throw new Error(`the lane clock file ${file} does not hold an ISO time`);
    return at;
  };
}
