/**
 * The fairness measurement of issue 8, shared by test/tasks-fairness.test.ts and bench/tasks.ts: the
 * quiet tenant's p95 wait (created → dispatched) alone, then while a noisy tenant floods the queue with
 * `noisyFactor`× as many tasks. Runs on a started server whose executor is a stand-in.
 */
import type { RunningServer } from '../src/server/serve.ts';

export interface FairnessResult {
  unloadedP95Ms: number;
  loadedP95Ms: number;
  ratio: number;
  /** From the flood's start until the last noisy task was dispatched: what FIFO would make the quiet tenant wait. */
  noisyDrainMs: number;
  noisyTasks: number;
  quietTasks: number;
  /** Noisy tasks already waiting when a loaded quiet task was created, summed over the quiet tasks. */
  backlogAhead: number;
  /** How many of those the quiet task overtook (dispatched before them). FIFO would make this 0. */
  overtaken: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function p95(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)] ?? 0;
}

async function waitAll(server: RunningServer, ids: string[]): Promise<number[]> {
  for (;;) {
    const r = await server.db.query<{ ms: number | null; status: string }>(
      `SELECT extract(epoch FROM (dispatched_at - created_at)) * 1000 AS ms, status FROM tasks WHERE id = ANY($1::uuid[])`,
      [ids],
    );
    if (r.rows.length === ids.length && r.rows.every((x) => x.status === 'completed' || x.status === 'failed')) {
      const failed = r.rows.filter((x) => x.status === 'failed').length;
      if (failed) throw new Error(`${failed} task(s) failed`);
      return r.rows.map((x) => Number(x.ms));
    }
    await sleep(100);
  }
}

export async function measureFairness(
  server: RunningServer,
  o: { quietTasks: number; noisyFactor: number; spacingMs: number; suffix: string },
): Promise<FairnessResult> {
  const s = server.services;
  const by = { actor: 'bench' };
  const quiet = await s.tenants.create({ slug: `quiet-${o.suffix}`, name: 'Quiet', quotas: { maxConcurrentTasks: 4 } }, by);
  const noisy = await s.tenants.create({ slug: `noisy-${o.suffix}`, name: 'Noisy', quotas: { maxConcurrentTasks: 4 } }, by);
  for (const t of [quiet, noisy]) await s.agents.create(t.id, { name: 'worker', capabilities: ['work'] }, by);
  const submitQuiet = async () => {
    const ids: string[] = [];
    for (let i = 0; i < o.quietTasks; i++) {
      ids.push((await s.tasks.create(quiet.id, { capability: 'work', input: `quiet ${i}` }, by)).task.id);
      await sleep(o.spacingMs);
    }
    return ids;
  };
  // Warm-up (queue registration, first polls) so the unloaded figure is the steady state.
  await waitAll(
    server,
    await Promise.all([0, 1, 2].map(async (i) => (await s.tasks.create(quiet.id, { capability: 'work', input: `warm-up ${i}` }, by)).task.id)),
  );
  const unloaded = await waitAll(server, await submitQuiet());
  const noisyCount = o.quietTasks * o.noisyFactor;
  const noisyIds: string[] = [];
  const flood = (async () => {
    for (let i = 0; i < noisyCount; i += 20) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(20, noisyCount - i) }, (_, j) => s.tasks.create(noisy.id, { capability: 'work', input: `noisy ${i + j}` }, by)),
      );
      noisyIds.push(...batch.map((b) => b.task.id));
    }
  })();
  const floodStarted = Date.now();
  await sleep(100);
  const loadedIds = await submitQuiet();
  await flood;
  const loaded = await waitAll(server, loadedIds);
  await waitAll(server, noisyIds);
  const lastNoisy = await server.db.query<{ t: Date }>('SELECT max(dispatched_at) AS t FROM tasks WHERE id = ANY($1::uuid[])', [noisyIds]);
  const noisyDrainMs = (lastNoisy.rows[0]?.t?.getTime() ?? Date.now()) - floodStarted;
  // Order, not time: for each quiet task, the noisy tasks created before it that were still waiting, and
  // how many of them it was dispatched ahead of. Independent of how fast or loaded the machine is.
  const order = await server.db.query<{ ahead: string; overtaken: string }>(
    `SELECT count(*) FILTER (WHERE n.dispatched_at > q.created_at) AS ahead,
            count(*) FILTER (WHERE n.dispatched_at > q.dispatched_at) AS overtaken
       FROM tasks q JOIN tasks n ON n.id = ANY($2::uuid[]) AND n.created_at < q.created_at
      WHERE q.id = ANY($1::uuid[])`,
    [loadedIds, noisyIds],
  );
  const u = p95(unloaded);
  const l = p95(loaded);
  return {
    unloadedP95Ms: Math.round(u),
    loadedP95Ms: Math.round(l),
    ratio: Math.round((l / Math.max(u, 1)) * 100) / 100,
    noisyDrainMs,
    noisyTasks: noisyCount,
    quietTasks: o.quietTasks,
    backlogAhead: Number(order.rows[0]?.ahead ?? 0),
    overtaken: Number(order.rows[0]?.overtaken ?? 0),
  };
}
