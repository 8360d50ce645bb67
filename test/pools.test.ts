/**
 * Executor pools (docs/adr/0014-executor-pools.md) on a real server and PostgreSQL, with STAND-IN executors
 * (test/helpers/task-executors.ts style) in place of gateways: each stand-in records the turns the
 * dispatcher actually handed to each pool executor, and the test checks those records against shards it
 * computes itself. Shard routing (200 tasks over 2 shards), isolation by risk, concurrent claims, quotas
 * named in the refusal, pause and drain, queue depth in the API and metrics.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { ExecutorClaims } from '../src/pools/executors.ts';
import { PoolScaler } from '../src/pools/scaler.ts';
import { createLogger } from '../src/observability/logger.ts';
import type { TaskExecutor, Turn, TurnResult } from '../src/tasks/types.ts';
import { ApiClient, onboard } from './helpers/client.ts';
import { waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';

interface PoolView {
  id: string;
  agentType: string;
  riskClass: string;
  shards: number;
  state: string;
  drained: boolean;
  inFlight: number;
  queueDepth: number[];
  instanceId: string | null;
  activeExecutors: number[];
  sandboxes: number;
}
interface ExecutorView {
  id: string;
  poolId: string;
  shard: number;
  slot: number;
  gateway: string;
  sandbox: number;
  active: boolean;
  taskId: string | null;
  turns: number;
}
interface TaskView {
  id: string;
  status: string;
  statusReason: string;
  poolId: string | null;
  shard: number | null;
  agentType: string | null;
  executorId: string | null;
}

/** What each pool executor was given to run, as the executor itself saw it. */
class PoolStandIn implements TaskExecutor {
  readonly name = 'stand-in-pool';
  /** executor id → task ids it ran, in order. */
  readonly ran = new Map<string, string[]>();
  /** executor id → the instance (pool sandbox) its turns were sent to. */
  readonly sandboxOf = new Map<string, string>();
  /** Turns that arrived without an executor (the tenant's shared instance). */
  readonly unpooled: string[] = [];
  /** An executor handed a second turn while one was running on it. */
  readonly overlaps: string[] = [];
  readonly #busy = new Set<string>();
  /** Task inputs whose turn waits until released. */
  readonly #held = new Map<string, PromiseWithResolvers<void>>();

  hold(input: string): () => void {
    const w = Promise.withResolvers<void>();
    this.#held.set(input, w);
    return () => w.resolve();
  }

  async run(turn: Turn): Promise<TurnResult> {
    const ex = turn.executor;
    if (!ex) {
      this.unpooled.push(turn.taskId);
      return { output: `shared ${turn.taskId}` };
    }
    if (this.#busy.has(ex.id)) this.overlaps.push(`${ex.id} got ${turn.taskId} while busy`);
    this.#busy.add(ex.id);
    this.sandboxOf.set(ex.id, ex.instanceName);
    try {
      const list = this.ran.get(ex.id) ?? [];
      list.push(turn.taskId);
      this.ran.set(ex.id, list);
      const held = this.#held.get(turn.input);
      if (held) await held.promise;
      // Let other turns interleave, so concurrent claims really happen.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 5)));
      return { output: `ran on ${ex.gateway}` };
    } finally {
      this.#busy.delete(ex.id);
    }
  }

  executorOf(taskId: string): string | undefined {
    for (const [ex, ids] of this.ran) if (ids.includes(taskId)) return ex;
    return undefined;
  }
}

/** The shard a key must land on, computed here independently of src/pools (SHA-256, first 32 bits, modulo). */
const expectedShard = (key: string, shards: number) => createHash('sha256').update(key).digest().readUInt32BE(0) % shards;

describe('executor pools (stand-in executors)', { timeout: 600_000 }, async () => {
  // The server's own scaler stays out of the way (first pass after 10 min): the scaling test runs its own, as two replicas.
  const server = await startTestServer({
    CLAWPLANE_TASK_QUEUE_POLL_MS: '50',
    CLAWPLANE_TASK_RETRY_BASE_MS: '100',
    CLAWPLANE_TASK_RETRY_MAX_MS: '150',
    CLAWPLANE_POOL_SCALE_INTERVAL_MS: '600000',
  });
  const admin = await onboard(server);
  const tenant = await admin.json<{ id: string; slug: string }>(
    'POST',
    '/api/v1/tenants',
    { slug: 'pools', name: 'Pools', quotas: { maxInstances: 3, maxConcurrentTasks: 50, maxCpuMillis: 20_000, maxMemoryMb: 40_960 } },
    201,
  );
  const owner = await admin.json<{ userId: string }>(
    'POST',
    `/api/v1/tenants/${tenant.slug}/members`,
    { email: 'owner@pools.test', role: 'tenant_admin' },
    201,
  );
  const { token } = await server.services.tokens.create(tenant.id, { name: 'owner', role: 'tenant_admin', createdBy: owner.userId }, { actor: 'test' });
  const api = new ApiClient(server.url, { bearer: token });
  const base = `/api/v1/tenants/${tenant.slug}`;
  const exec = new PoolStandIn();
  server.services.taskRuntime.useExecutor(exec);

  const task = (id: string) => api.json<TaskView>('GET', `${base}/tasks/${id}`);
  const until = (id: string, statuses: string[]) =>
    waitFor(`task ${id} ${statuses.join('|')}`, async () => {
      const t = await task(id);
      return statuses.includes(t.status) ? t : undefined;
    });
  const executors = async (pool: string) => (await api.json<{ items: ExecutorView[] }>('GET', `${base}/pools/${pool}/executors`)).items;

  await api.json('POST', `${base}/agents`, { name: 'builder', agentType: 'coding', capabilities: ['build'] }, 201);
  await api.json('POST', `${base}/agents`, { name: 'chatter', agentType: 'chat', capabilities: ['talk'] }, 201);
  await api.json('POST', `${base}/agents`, { name: 'ops', agentType: 'shell', capabilities: ['ops'] }, 201);

  test('shard routing: 200 tasks over 2 shards, each run only by an executor of its own shard', async () => {
    const pool = await api.json<PoolView>('POST', `${base}/pools`, { agentType: 'coding', shards: 2, minExecutors: 2, maxExecutors: 2 }, 201);
    assert.deepEqual([pool.shards, pool.riskClass, pool.state, pool.queueDepth], [2, 'standard', 'active', [0, 0]]);
    const exs = await executors('coding');
    assert.equal(exs.length, 4);
    const shardOfExecutor = new Map(exs.map((e) => [e.id, e.shard]));

    const keys = new Map<string, string>();
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, j) => {
          const i = batch * 20 + j;
          const key = `customer-${i % 37}`;
          const t = await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'build', input: `build ${i}`, shardKey: key }, 201);
          assert.equal(t.poolId, pool.id);
          assert.equal(t.agentType, 'coding');
          keys.set(t.id, key);
        }),
      );
    }
    await waitFor('200 tasks completed', async () => {
      const r = await server.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND pool_id = $2 AND status IN ('completed', 'failed')`,
        [tenant.id, pool.id],
      );
      return r.rows[0]?.n === 200 ? true : undefined;
    });

    // What actually ran: every task exactly once, on an executor of the shard its key hashes to.
    const ranIds = [...exec.ran.values()].flat();
    assert.equal(ranIds.length, 200, 'every task ran once');
    assert.equal(new Set(ranIds).size, 200);
    const perShard = [0, 0];
    for (const [executorId, ids] of exec.ran) {
      const shard = shardOfExecutor.get(executorId);
      assert.notEqual(shard, undefined, `executor ${executorId} is one of the pool's`);
      for (const id of ids) {
        const key = keys.get(id) ?? assert.fail(`unknown task ${id}`);
        assert.equal(shard, expectedShard(key, 2), `task ${id} (key ${key}) ran on an executor of shard ${shard}`);
        perShard[shard as number] = (perShard[shard as number] ?? 0) + 1;
      }
    }
    assert.ok(perShard[0]! > 0 && perShard[1]! > 0, `both shards got work: ${perShard.join('/')}`);
    assert.deepEqual(exec.overlaps, [], 'no executor ran two turns at once');
    assert.deepEqual(exec.unpooled, []);
    // The API agrees: turns per executor, the task rows name the executor that ran them, nothing waits.
    const after = await executors('coding');
    assert.equal(
      after.reduce((n, e) => n + e.turns, 0),
      200,
    );
    for (const e of after) assert.ok(e.turns > 0, `executor ${e.gateway} of shard ${e.shard} was used`);
    const sample = [...keys.keys()].slice(0, 10);
    for (const id of sample) assert.equal((await task(id)).executorId, exec.executorOf(id));
    const done = await api.json<PoolView>('GET', `${base}/pools/coding`);
    assert.deepEqual([done.queueDepth, done.inFlight], [[0, 0], 0]);
  });

  test('concurrent claims (as from several replicas) never hand one executor to two tasks', async () => {
    const pool = await api.json<PoolView>('GET', `${base}/pools/coding`);
    // Two claimers on their own connections, 40 tasks at once for shard 0, which has 2 executors.
    const a = new ExecutorClaims(server.db, 30_000);
    const ids = Array.from({ length: 40 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    const got = await Promise.all(ids.map((id, i) => a.tryClaim(tenant.id, pool.id, 0, id, `replica-${i % 2}`)));
    const winners = got.filter((g) => g !== null);
    assert.equal(winners.length, 2, "exactly the shard's two executors were handed out");
    assert.equal(new Set(winners.map((w) => w.id)).size, 2);
    assert.ok(winners.every((w) => w.shard === 0));
    const busy = await api.json<PoolView>('GET', `${base}/pools/coding`);
    assert.equal(busy.inFlight, 2);
    for (const [i, g] of got.entries()) if (g) await a.release(g, ids[i] as string);
    assert.equal((await api.json<PoolView>('GET', `${base}/pools/coding`)).inFlight, 0);
  });

  test('isolation by risk: shell work only on the high-risk pool, other work never there', async () => {
    const shell = await api.json<PoolView>('POST', `${base}/pools`, { agentType: 'shell', minExecutors: 1, maxExecutors: 1 }, 201);
    assert.equal(shell.riskClass, 'high');
    const shellExecutors = new Set((await executors('shell')).map((e) => e.id));
    const codingExecutors = new Set((await executors('coding')).map((e) => e.id));
    const before = new Map([...exec.ran].map(([k, v]) => [k, v.length]));

    const s1 = await api.json<TaskView>('POST', `${base}/tasks`, { agent: 'ops', input: 'df -h' }, 201);
    const c1 = await api.json<TaskView>('POST', `${base}/tasks`, { agent: 'builder', input: 'compile it' }, 201);
    const t1 = await api.json<TaskView>('POST', `${base}/tasks`, { agent: 'chatter', input: 'hello' }, 201);
    assert.equal(s1.poolId, shell.id);
    assert.equal(t1.poolId, null, 'chat has no pool: it uses the shared instance');
    for (const t of [s1, c1, t1]) assert.equal((await until(t.id, ['completed', 'failed'])).status, 'completed');
    assert.ok(shellExecutors.has(exec.executorOf(s1.id) ?? ''), 'the shell task ran on the shell pool');
    assert.ok(codingExecutors.has(exec.executorOf(c1.id) ?? ''), 'the coding task ran on the coding pool');
    assert.ok(exec.unpooled.includes(t1.id));
    // Nothing but shell work ran on the shell pool's executor.
    for (const id of shellExecutors) assert.deepEqual(exec.ran.get(id)?.slice(before.get(id) ?? 0), [s1.id]);

    // A standard agent's task pointed at the high-risk pool (a row changed behind the API's back) is refused
    // at the claim, and the shell executor never sees it.
    await api.json('POST', `${base}/pools/coding/pause`, undefined);
    const c2 = await api.json<TaskView>('POST', `${base}/tasks`, { agent: 'builder', input: 'smuggled' }, 201);
    await server.db.query('UPDATE tasks SET pool_id = $3, shard = 0 WHERE tenant_id = $1 AND id = $2', [tenant.id, c2.id, shell.id]);
    await api.json('POST', `${base}/pools/coding/resume`, undefined);
    const failed = await until(c2.id, ['completed', 'failed']);
    assert.equal(failed.status, 'failed');
    assert.match(failed.statusReason, /standard-risk agent's task may not run in a high-risk pool/);
    assert.equal(exec.executorOf(c2.id), undefined, 'it ran nowhere');

    // A task may not claim a type its named agent does not have.
    const bad = await api.call('POST', `${base}/tasks`, { agent: 'builder', agentType: 'shell', input: 'x' });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /of type coding, not shell/);
  });

  test("quotas: a pool beyond the sandbox, CPU or memory quota is refused with the quota's name", async () => {
    // 2 pools reserve 2 sandboxes of maxInstances 3; coding reserves 2×2×1000 mCPU, shell 1000.
    const cpu = await api.call('POST', `${base}/pools`, { agentType: 'research', shards: 1, minExecutors: 1, maxExecutors: 8, cpuMillis: 2000 });
    assert.equal(cpu.status, 429);
    const cpuBody = (await cpu.json()) as { code: string; message: string; details: { quota: string; limit: number; requested: number } };
    assert.equal(cpuBody.code, 'quota_exceeded');
    assert.deepEqual([cpuBody.details.quota, cpuBody.details.limit, cpuBody.details.requested], ['maxCpuMillis', 20_000, 21_000]);
    assert.match(cpuBody.message, /quota maxCpuMillis/);
    const mem = await api.call('POST', `${base}/pools`, { agentType: 'research', memoryMb: 40_000 });
    assert.equal(mem.status, 429);
    assert.equal(((await mem.json()) as { details: { quota: string } }).details.quota, 'maxMemoryMb');
    await api.json('POST', `${base}/pools`, { agentType: 'research' }, 201);
    const box = await api.call('POST', `${base}/pools`, { agentType: 'browser' });
    assert.equal(box.status, 429);
    const boxBody = (await box.json()) as { details: { quota: string; limit: number } };
    assert.deepEqual([boxBody.details.quota, boxBody.details.limit], ['maxInstances', 3]);
    // Raising a pool past the CPU quota is refused the same way; nothing changed.
    const up = await api.call('PATCH', `${base}/pools/coding`, { cpuMillis: 5000 });
    assert.equal(up.status, 429);
    assert.equal(((await up.json()) as { details: { quota: string } }).details.quota, 'maxCpuMillis');
    // Refusals are audited with the quota; bad figures are 400s naming the field.
    const audit = await server.db.query<{ detail: { quota: string } }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'pool.create' AND decision = 'refused'`,
      [tenant.id],
    );
    assert.deepEqual(audit.rows.map((r) => r.detail.quota).sort(), ['maxCpuMillis', 'maxInstances', 'maxMemoryMb']);
    for (const body of [
      { agentType: 'browser', shards: 9 },
      { agentType: 'browser', minExecutors: 3, maxExecutors: 2 },
      { agentType: 'browser', executorsPerSandbox: 9 },
      { agentType: 'robot' },
    ]) {
      const r = await api.call('POST', `${base}/pools`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
    }
    assert.equal((await api.call('POST', `${base}/pools`, { agentType: 'coding' })).status, 409);
    await api.json('DELETE', `${base}/pools/research`, undefined, 204);
  });

  test('pause keeps new work queued; drain finishes in-flight work, refuses new work, then reports drained', async () => {
    // One turn in flight on shard 0's... any executor: held until released.
    const release = exec.hold('long build');
    const inflight = await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'build', input: 'long build', shardKey: 'k-long' }, 201);
    await waitFor('the long build runs', async () => (exec.executorOf(inflight.id) ? true : undefined));

    await api.json('POST', `${base}/pools/coding/pause`, undefined);
    const queued = await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'build', input: 'after pause', shardKey: 'k-other' }, 201);
    await waitFor('the paused pool counts the task as waiting', async () => {
      const p = await api.json<PoolView>('GET', `${base}/pools/coding`);
      return p.queueDepth.reduce((a, b) => a + b, 0) === 1 ? p : undefined;
    });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`clawplane_pool_queue_depth\\{tenant="${tenant.id}",agent_type="coding",shard="${expectedShard('k-other', 2)}"\\} 1`));
    assert.match(metrics, new RegExp(`clawplane_pool_executors_busy\\{tenant="${tenant.id}",agent_type="coding"\\} 1`));

    const drain = await api.json<PoolView>('POST', `${base}/pools/coding/drain`, undefined);
    assert.deepEqual([drain.state, drain.inFlight, drain.drained], ['draining', 1, false]);
    const refused = await api.call('POST', `${base}/tasks`, { capability: 'build', input: 'refused', shardKey: 'k-x' });
    assert.equal(refused.status, 409);
    assert.equal(((await refused.json()) as { code: string }).code, 'pool_draining');

    release();
    assert.equal((await until(inflight.id, ['completed', 'failed'])).status, 'completed', 'the in-flight turn finished');
    const drained = await waitFor('drained', async () => {
      const p = await api.json<PoolView>('GET', `${base}/pools/coding`);
      return p.drained ? p : undefined;
    });
    assert.equal(drained.inFlight, 0);
    assert.equal(exec.executorOf(queued.id), undefined, 'nothing new started while paused or draining');
    assert.equal((await task(queued.id)).status !== 'completed', true);
    // A pool with unfinished work cannot be removed.
    const rm = await api.call('DELETE', `${base}/pools/coding`);
    assert.equal(rm.status, 409);
    assert.equal(((await rm.json()) as { code: string }).code, 'pool_busy');

    await api.json('POST', `${base}/pools/coding/resume`, undefined);
    assert.equal((await until(queued.id, ['completed', 'failed'])).status, 'completed', 'resumed, the queued task runs');
    const audit = await server.db.query<{ action: string }>(
      `SELECT action FROM audit_events WHERE tenant_id = $1 AND action LIKE 'pool.%' AND decision = 'success' ORDER BY seq`,
      [tenant.id],
    );
    for (const a of ['pool.create', 'pool.pause', 'pool.drain', 'pool.resume', 'pool.delete'])
      assert.ok(
        audit.rows.some((r) => r.action === a),
        a,
      );
  });

  test('scaling: a backlog adds executors inside the sandbox up to its size, then a sandbox, up to max; idle brings them back to min; one decision per pool per tick across replicas', async (t) => {
    await server.services.tenants.update(tenant.id, { quotas: { maxInstances: 6 } }, { actor: 'test' });
    await api.json('POST', `${base}/agents`, { name: 'scholar', agentType: 'research', capabilities: ['study'] }, 201);
    // 1..3 executors, 2 per sandbox: slots 0 and 1 in pool-research, slot 2 in pool-research-1.
    const pool = await api.json<PoolView>(
      'POST',
      `${base}/pools`,
      { agentType: 'research', minExecutors: 1, maxExecutors: 3, executorsPerSandbox: 2, scaleDownAfterSeconds: 1 },
      201,
    );
    assert.deepEqual([pool.activeExecutors, pool.sandboxes], [[1], 1]);
    assert.deepEqual(
      (await executors('research')).map((e) => [e.slot, e.sandbox, e.gateway, e.active]),
      [
        [0, 0, 'e0', true],
        [1, 0, 'e1', false],
        [2, 1, 'e0', false],
      ],
    );
    // Two replicas' scalers (each a PoolScaler on its own; the server's own is idle for this file).
    const log = createLogger('silent');
    const replicas = [new PoolScaler({ db: server.db, log, intervalMs: 1000 }), new PoolScaler({ db: server.db, log, intervalMs: 1000 })];
    const tickBoth = async () => (await Promise.all(replicas.map((r) => r.tick()))).flat().filter((c) => c.poolId === pool.id);

    const releases = Array.from({ length: 5 }, (_, i) => exec.hold(`study ${i}`));
    // Held turns never released would keep the server from stopping: released whatever the outcome.
    t.after(() => releases.forEach((r) => r()));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'study', input: `study ${i}` }, 201)).id);
    await waitFor('one study runs, four wait', async () => {
      const p = await api.json<PoolView>('GET', `${base}/pools/research`);
      return p.inFlight === 1 && p.queueDepth[0] === 4 ? p : undefined;
    });
    // The backlog: one decision (by one replica) from 1 to max 3, not past it.
    const up = await tickBoth();
    assert.deepEqual(
      up.map((c) => [c.shard, c.from, c.to, c.reason]),
      [[0, 1, 3, 'backlog']],
    );
    const scaled = await api.json<PoolView>('GET', `${base}/pools/research`);
    assert.deepEqual([scaled.activeExecutors, scaled.sandboxes], [[3], 2]);
    const running = await waitFor('three studies run at once', async () => {
      const r = ids.filter((id) => exec.executorOf(id));
      return r.length === 3 ? r : undefined;
    });
    assert.deepEqual(
      running.map((id) => exec.sandboxOf.get(exec.executorOf(id) ?? '')).sort(),
      ['pool-research', 'pool-research', 'pool-research-1'],
      'two in the first sandbox, the third in the added one',
    );
    // Still a backlog of two, but at max: the next tick adds nothing.
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await tickBoth(), []);

    for (const release of releases) release();
    for (const id of ids) assert.equal((await until(id, ['completed', 'failed'])).status, 'completed');
    // Idle past scaleDownAfterSeconds: back to min (the last added first), not below.
    await new Promise((r) => setTimeout(r, 1200));
    const down = await tickBoth();
    assert.deepEqual(
      down.map((c) => [c.from, c.to, c.reason]),
      [[3, 1, 'idle']],
    );
    assert.deepEqual(
      (await executors('research')).map((e) => e.active),
      [true, false, false],
    );
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await tickBoth(), [], 'never below min');
    const audit = await server.db.query<{ detail: { from: number; to: number; reason: string } }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'pool.scale' AND target = $2 ORDER BY seq`,
      [tenant.id, `pool:${pool.id}`],
    );
    assert.deepEqual(
      audit.rows.map((r) => [r.detail.from, r.detail.to, r.detail.reason]),
      [
        [1, 3, 'backlog'],
        [3, 1, 'idle'],
      ],
    );
  });

  test('scale to zero where min is zero, woken by work', async () => {
    const pool = await api.json<PoolView>('POST', `${base}/pools`, { agentType: 'chat', minExecutors: 0, maxExecutors: 1, scaleDownAfterSeconds: 1 }, 201);
    assert.deepEqual(pool.activeExecutors, [1], 'one executor to begin with');
    const scaler = new PoolScaler({ db: server.db, log: createLogger('silent'), intervalMs: 100 });
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual(
      (await scaler.decide(pool.id)).changes.map((c) => [c.from, c.to, c.reason]),
      [[1, 0, 'idle']],
    );
    const t = await api.json<TaskView>('POST', `${base}/tasks`, { agent: 'chatter', input: 'wake up' }, 201);
    assert.equal(t.poolId, pool.id);
    await waitFor('the task waits for an executor', async () =>
      (await api.json<PoolView>('GET', `${base}/pools/chat`)).queueDepth[0] === 1 ? true : undefined,
    );
    assert.equal((await task(t.id)).status !== 'completed', true, 'no executor runs: it waits');
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(
      (await scaler.decide(pool.id)).changes.map((c) => [c.from, c.to, c.reason]),
      [[0, 1, 'backlog']],
    );
    assert.equal((await until(t.id, ['completed', 'failed'])).status, 'completed');
  });

  test('every setting changes through the API: shards re-route waiting work, min starts executors, executorsPerSandbox moves nothing running', async (t) => {
    // Bad changes are 400s naming the field; the agent type is the pool's identity.
    for (const [body, field] of [
      [{ minExecutors: 3 }, 'minExecutors'],
      [{ shards: 9 }, 'shards'],
      [{ executorsPerSandbox: 0 }, 'executorsPerSandbox'],
      [{ agentType: 'chat' }, 'agentType'],
    ] as const) {
      const r = await api.call('PATCH', `${base}/pools/coding`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(await r.text(), new RegExp(field), `the refusal names ${field}`);
    }
    // coding: 2 shards × 2 executors. One turn held on shard 1; three tasks wait on shard 1, one on shard 0.
    const keyOn = (shard: number, n: number) =>
      Array.from({ length: 200 }, (_, i) => `reshard-${i}`)
        .filter((k) => expectedShard(k, 2) === shard)
        .slice(0, n);
    const [heldKey] = keyOn(1, 1);
    const release = exec.hold('held across the re-shard');
    t.after(release);
    const held = await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'build', input: 'held across the re-shard', shardKey: heldKey }, 201);
    await waitFor('the held turn runs', async () => (exec.executorOf(held.id) ? true : undefined));
    const heldOn = (await executors('coding')).find((e) => e.id === exec.executorOf(held.id));
    assert.equal(heldOn?.shard, 1);
    await api.json('POST', `${base}/pools/coding/pause`, undefined);
    const waiting: TaskView[] = [];
    for (const key of [...keyOn(1, 4).slice(1), ...keyOn(0, 1)])
      waiting.push(await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'build', input: `after ${key}`, shardKey: key }, 201));
    assert.deepEqual(waiting.map((w) => w.shard).sort(), [0, 1, 1, 1]);

    // One shard: the waiting tasks are re-routed to it (not refused, not failed); the held turn finishes where it runs.
    const one = await api.json<PoolView>('PATCH', `${base}/pools/coding`, { shards: 1 });
    assert.deepEqual([one.shards, one.queueDepth, one.activeExecutors], [1, [4], [2]]);
    for (const w of waiting) assert.equal((await task(w.id)).shard, 0);
    const trace = (await api.json<{ items: { kind: string; detail: { from: number; to: number } }[] }>('GET', `${base}/tasks/${waiting[0]?.id}/trace`)).items;
    assert.deepEqual(
      trace.filter((e) => e.kind === 'rerouted').map((e) => [e.detail.from, e.detail.to]),
      [[1, 0]],
    );
    const during = await executors('coding');
    assert.deepEqual(
      during.filter((e) => e.shard === 1).map((e) => [e.id, e.active, e.taskId]),
      [[heldOn?.id, true, held.id]],
      "only shard 1's busy executor still runs, with its turn",
    );
    await api.json('POST', `${base}/pools/coding/resume`, undefined);
    release();
    assert.equal((await until(held.id, ['completed', 'failed'])).status, 'completed');
    const shard0 = new Set((await executors('coding')).filter((e) => e.shard === 0).map((e) => e.id));
    for (const w of waiting) {
      const end = await until(w.id, ['completed', 'failed']);
      assert.equal(
        end.status,
        'completed',
        `${end.statusReason}; trace: ${JSON.stringify((await api.json<{ items: unknown[] }>('GET', `${base}/tasks/${w.id}/trace`)).items)}`,
      );
      assert.ok(shard0.has(exec.executorOf(w.id) ?? ''), `task ${w.id} ran on an executor of the remaining shard`);
    }
    // Free now, the removed shard's last executor is stopped by the scaler.
    const scaler = new PoolScaler({ db: server.db, log: createLogger('silent'), intervalMs: 100 });
    assert.deepEqual(
      (await scaler.decide(one.id)).changes.map((c) => [c.shard, c.from, c.to, c.reason]),
      [[1, 1, 0, 'shards_lowered']],
    );
    assert.deepEqual((await executors('coding')).map((e) => e.shard).sort(), [0, 0]);

    // Back to two shards with min 2: every shard's minimum runs at once, and new keys land by the new count.
    const two = await api.json<PoolView>('PATCH', `${base}/pools/coding`, { shards: 2 });
    assert.deepEqual(two.activeExecutors, [2, 2]);
    const k = keyOn(1, 1)[0] as string;
    assert.equal((await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'build', input: 'new key', shardKey: k }, 201)).shard, 1);

    // research: 1..3, 2 per sandbox. Raising min starts an executor now.
    const r2 = await api.json<PoolView>('PATCH', `${base}/pools/research`, { minExecutors: 2 });
    assert.deepEqual([r2.activeExecutors, r2.sandboxes], [[2], 1]);
    // One per sandbox with max 4 needs 4 sandboxes: beyond maxInstances, refused naming it, nothing changed.
    const over = await api.call('PATCH', `${base}/pools/research`, { executorsPerSandbox: 1, maxExecutors: 4 });
    assert.equal(over.status, 429);
    assert.equal(((await over.json()) as { details: { quota: string } }).details.quota, 'maxInstances');
    assert.equal((await api.json<{ executorsPerSandbox: number }>('GET', `${base}/pools/research`)).executorsPerSandbox, 2);
    await server.services.tenants.update(tenant.id, { quotas: { maxInstances: 8 } }, { actor: 'test' });
    // Allowed: the two running executors stay in the first sandbox; the others are placed one per sandbox.
    const r3 = await api.json<PoolView & { executorsPerSandbox: number; maxExecutors: number }>('PATCH', `${base}/pools/research`, {
      executorsPerSandbox: 1,
      maxExecutors: 4,
    });
    assert.deepEqual([r3.executorsPerSandbox, r3.maxExecutors, r3.activeExecutors], [1, 4, [2]]);
    assert.deepEqual(
      (await executors('research')).map((e) => [e.slot, e.sandbox, e.gateway, e.active]),
      [
        [0, 0, 'e0', true],
        [1, 0, 'e1', true],
        [2, 1, 'e0', false],
        [3, 2, 'e0', false],
      ],
    );
    // A higher max later takes the lowest free position of that layout (sandbox 3, not a gap before sandbox 4).
    await api.json('PATCH', `${base}/pools/research`, { maxExecutors: 5 });
    assert.deepEqual((await executors('research')).map((e) => [e.slot, e.sandbox, e.gateway]).at(-1), [4, 3, 'e0']);
    const audit = await server.db.query<{ detail: Record<string, unknown> }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'pool.update' AND decision = 'success' AND target = $2 ORDER BY seq`,
      [tenant.id, `pool:${one.id}`],
    );
    assert.deepEqual(
      audit.rows.map((r) => [r.detail['shards'], r.detail['rerouted']]),
      [
        [1, 4],
        [2, 0],
      ],
    );
  });
});
