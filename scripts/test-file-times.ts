/**
 * A node:test reporter that prints, after the run, the files that took longest (the sum of their top-level
 * tests and suites, which run one after another inside a file). The suite has a time budget; this says where
 * it goes. Used by scripts/test.ts beside the spec reporter.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';

interface TestEvent {
  type: string;
  data: { file?: string; nesting?: number; details?: { duration_ms?: number } };
}

export default async function* fileTimes(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const perFile = new Map<string, number>();
  for await (const event of source) {
    if ((event.type !== 'test:pass' && event.type !== 'test:fail') || event.data.nesting !== 0 || !event.data.file) continue;
    const file = path.relative(process.cwd(), event.data.file);
    perFile.set(file, (perFile.get(file) ?? 0) + (event.data.details?.duration_ms ?? 0));
  }
  const rows = [...perFile].sort((a, b) => b[1] - a[1]);
  // scripts/test.ts orders the next runs by these (longest first); written only when asked to.
  const out = process.env['CLAWPLANE_TEST_TIMES_FILE'];
  if (out) writeFileSync(out, JSON.stringify(Object.fromEntries(rows.slice(0, 30).map(([f, ms]) => [f, Math.round(ms / 1000)])), null, 2) + '\n');
  const total = rows.reduce((s, [, ms]) => s + ms, 0);
  yield `# time per test file (s; files run two at a time, ${(total / 1000).toFixed(0)} s in all):\n`;
  for (const [file, ms] of rows.slice(0, 25)) yield `#   ${(ms / 1000).toFixed(1).padStart(7)}  ${file}\n`;
}
