import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Every test file, the longest first by the times in test/file-times.json (the 30 longest of a run; the rest
 * count as 30 s): with two files at a time, a long file started last would leave one slot idle at the end.
 * `UPDATE_TEST_TIMES=1 npm test` rewrites that file from the run.
 */
export function longestFirst(root: string, timesFile: string): string[] {
  const all = readdirSync(path.join(root, 'test'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => path.join('test', f))
    .sort();
  let times: Record<string, number> = {};
  try {
    times = JSON.parse(readFileSync(timesFile, 'utf8')) as Record<string, number>;
  } catch {
    // No times yet: alphabetical order.
  }
  // A file not timed yet counts as a middling one (the file lists the longest files only).
  return all.sort((a, b) => (times[b] ?? 30) - (times[a] ?? 30));
}
