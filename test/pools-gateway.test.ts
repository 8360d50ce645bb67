/**
 * Executor pools on real OpenClaw gateways under bubblewrap (docs/adr/0014-executor-pools.md): a chat pool
 * with two shards gets its own sandbox (instance pool-chat, two gateway processes), deployed by the first
 * task; a task of each shard runs on its shard's gateway — checked on the gateways themselves (each one's
 * own session list), not on a field Clawplane set. Then scaling inside that running sandbox: with shard 0's
 * executor held, a task's backlog makes the pool's scaler start a third gateway beside the two serving ones
 * (neither restarted), the task runs there, and once idle it is stopped again. Then a swarm of three agent
 * types (chat on the pool, coding on the shared instance, shell on its own high-risk instance) with the three
 * provider calls open at once, and a cancelled swarm whose running child's provider call is cut and whose
 * other child, waiting for the same gateway, never sends its turn. The fake provider is the one stand-in.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { ExecutorClaims } from '../src/pools/executors.ts';
import { shardOf } from '../src/pools/types.ts';
import { gatewayRpc } from '../src/sandbox/gateway-rpc.ts';
import type { Task } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

describe('executor pools on real gateways', { timeout: 900_000 }, async () => {
  const { server, a, fake, providerId, by } = await startGatewayFixture({
    file: import.meta.url,
    env: { CLAWPLANE_TASK_QUEUE_POLL_MS: '200', CLAWPLANE_POOL_SCALE_INTERVAL_MS: '500' },
  });
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  await server.services.tenants.update(a.id, { quotas: { maxInstances: 4 } }, { actor: 'test' });

  test("two shards, two gateways in the pool's own sandbox: each task runs on its shard's gateway only", async () => {
    await a.client.json('POST', api('/agents'), { name: 'assistant', agentType: 'chat', capabilities: ['answer'] }, 201);
    const pool = await a.client.json<{ id: string }>(
      'POST',
      api('/pools'),
      { agentType: 'chat', shards: 2, minExecutors: 1, maxExecutors: 1, executorsPerSandbox: 3, memoryMb: 1100 },
      201,
    );
    // A key for each shard.
    const keys: string[] = [];
    for (let i = 0; keys.length < 2; i++) if (shardOf(`k${i}`, 2) === keys.length) keys.push(`k${i}`);
    const tasks: Task[] = [];
    for (const key of keys)
      tasks.push(await a.client.json<Task>('POST', api('/tasks'), { capability: 'answer', input: `Say hello for ${key}`, shardKey: key }, 201));
    for (const t of tasks) {
      const done = await waitFor(
        `task ${t.id}`,
        async () => {
          const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
          if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
          return x.status === 'completed' ? x : undefined;
        },
        600_000,
      );
      assert.equal(done.output, 'Hello from fake-model');
    }
    // The pool's own instance, declaring three gateways and running both shards' two; not the tenant's other instance.
    const inst = (await server.services.instances.list(a.id)).find((i) => i.name === 'pool-chat');
    assert.ok(inst, 'the pool deployed its own instance');
    assert.equal(inst.executors, 3);
    assert.deepEqual(await states(inst.id), { e0: 'ready', e1: 'ready', e2: 'stopped' });
    // Its cgroup's memory limit is its three gateways' reservation (3 × 1100 MiB), not the driver's per-sandbox default.
    // (cgroup v2 or v1, whichever this host has: the local driver writes the one it finds.)
    const memoryMax =
      (await readFile(`/sys/fs/cgroup/clawplane/${inst.id}/memory.max`, 'utf8').catch(() => undefined)) ??
      (await readFile(`/sys/fs/cgroup/memory/clawplane/${inst.id}/memory.limit_in_bytes`, 'utf8'));
    assert.equal(Number(memoryMax), 3 * 1100 * 2 ** 20);
    assert.notEqual(inst.id, a.instanceId);
    const row = await server.services.instances.get(a.id, inst.id);
    assert.ok(row.sandbox);
    const transport = await server.services.sandboxes.connect(row.sandbox);
    const token = await server.services.instances.gatewayToken(inst.id);
    // Ask each gateway which sessions it has: task i's session is on e<i> and not on the other one.
    const sessionsOf = async (gw: string) => JSON.stringify(await gatewayRpc(transport, token, 'sessions.list', {}, { executor: gw }));
    const [s0, s1] = [await sessionsOf('e0'), await sessionsOf('e1')];
    const [t0, t1] = tasks as [Task, Task];
    assert.ok(s0.includes(`task-${t0.id}`), `shard 0's task is on e0: ${s0.slice(0, 400)}`);
    assert.ok(!s0.includes(`task-${t1.id}`), "shard 1's task is not on e0");
    assert.ok(s1.includes(`task-${t1.id}`), `shard 1's task is on e1: ${s1.slice(0, 400)}`);
    assert.ok(!s1.includes(`task-${t0.id}`), "shard 0's task is not on e1");
    const p = await a.client.json<{ instanceId: string | null; inFlight: number }>('GET', api(`/pools/${pool.id}`));
    assert.deepEqual([p.instanceId, p.inFlight], [inst.id, 0]);
  });

  test('a backlog starts another gateway inside the running pool sandbox (the others keep serving); idle stops it', async () => {
    const pool = await a.client.json<{ id: string }>('PATCH', api('/pools/chat'), { maxExecutors: 2 });
    const inst = (await server.services.instances.list(a.id)).find((i) => i.name === 'pool-chat');
    assert.ok(inst);
    const before = await pids(inst.id);
    // Shard 0's one running executor (e0) is busy: held here under a lease, as another replica's turn would hold it.
    const holder = new ExecutorClaims(server.db, 600_000);
    const held = await holder.tryClaim(a.id, pool.id, 0, '00000000-0000-4000-8000-00000000e0e0', 'test');
    assert.equal(held?.gateway, 'e0');
    let key = 'k0';
    for (let i = 0; shardOf(key, 2) !== 0; i++) key = `k${i}`;
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'answer', input: 'Say hello while e0 is busy', shardKey: key }, 201);
    const done = await waitFor(
      `task ${t.id}`,
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
        return x.status === 'completed' ? x : undefined;
      },
      600_000,
    );
    assert.equal(done.output, 'Hello from fake-model');
    // The scaler added shard 0's second slot, gateway e2 of the same sandbox, and the task ran there.
    const exs = await a.client.json<{ items: { id: string; shard: number; slot: number; sandbox: number; gateway: string; active: boolean }[] }>(
      'GET',
      api('/pools/chat/executors'),
    );
    const e2 = exs.items.find((e) => e.shard === 0 && e.slot === 1);
    assert.deepEqual([e2?.sandbox, e2?.gateway, e2?.active], [0, 'e2', true]);
    const row = await server.services.instances.get(a.id, inst.id);
    assert.ok(row.sandbox);
    const transport = await server.services.sandboxes.connect(row.sandbox);
    const token = await server.services.instances.gatewayToken(inst.id);
    const sessionsOf = async (gw: string) => JSON.stringify(await gatewayRpc(transport, token, 'sessions.list', {}, { executor: gw }));
    assert.ok((await sessionsOf('e2')).includes(`task-${t.id}`), 'the task ran on the added gateway');
    assert.ok(!(await sessionsOf('e0')).includes(`task-${t.id}`), 'not on the busy one');
    const during = await pids(inst.id);
    assert.deepEqual([during['e0'], during['e1']], [before['e0'], before['e1']], 'the serving gateways were not restarted');
    const audit = await server.db.query<{ detail: { shard: number; from: number; to: number; reason: string } }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'pool.scale' ORDER BY seq`,
      [a.id],
    );
    assert.deepEqual(
      audit.rows.map((r) => [r.detail.shard, r.detail.from, r.detail.to, r.detail.reason]),
      [[0, 1, 2, 'backlog']],
    );

    // Idle past 1 s (the pool's scale-down time, lowered now): back to one executor on shard 0; its gateway
    // stops, the others keep running.
    assert.ok(held);
    await holder.release(held, '00000000-0000-4000-8000-00000000e0e0');
    await a.client.json('PATCH', api('/pools/chat'), { scaleDownAfterSeconds: 1 });
    await waitFor('e2 stopped after idle', async () => ((await states(inst.id))['e2'] === 'stopped' ? true : undefined), 120_000);
    assert.deepEqual(await states(inst.id), { e0: 'ready', e1: 'ready', e2: 'stopped' });
    const after = await pids(inst.id);
    assert.deepEqual([after['e0'], after['e1']], [before['e0'], before['e1']]);
  });

  test('a swarm of three agent types on real gateways: shell alone in its own sandbox, the children at once, the parent aggregates; a cancelled child waiting for its gateway never starts its turn', async (t) => {
    // chat runs on the chat pool's sandbox, coding on the tenant's shared instance, shell on its own high-risk one.
    await server.services.tenants.update(a.id, { quotas: { maxInstances: 6 } }, { actor: 'test' });
    await a.client.json('POST', api('/agents'), { name: 'builder', agentType: 'coding', capabilities: ['build'] }, 201);
    await a.client.json('POST', api('/agents'), { name: 'ops', agentType: 'shell', capabilities: ['check'] }, 201);
    const step = (agentType: string, capability: string, input: string) => ({ agentType, capability, input });
    await a.client.json(
      'POST',
      api('/swarm-rules'),
      {
        name: 'trio',
        capability: 'release',
        steps: [
          step('chat', 'answer', 'Notes for {{input}} trio-chat'),
          step('coding', 'build', 'Build {{input}} trio-coding'),
          step('shell', 'check', 'Check {{input}} trio-shell'),
        ],
      },
      201,
    );
    // Every provider call holds after its first word until released: three calls open at once are three children running at once.
    const route = (model: string) => server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model }] }, by);
    const slow = (ms: number) => {
      fake.slowMs = ms;
      fake.releaseSlow();
    };
    t.after(async () => {
      slow(400);
      await route('fake-model');
    });
    slow(3_600_000);
    await route('slow');
    const call = (marker: string) => fake.requests.find((r) => JSON.stringify(r.body).includes(marker));
    const parent = await a.client.json<Task>('POST', api('/tasks'), { capability: 'release', input: 'v3' }, 201);
    await waitFor(
      "the three children's provider calls open at once",
      async () => (['trio-chat', 'trio-coding', 'trio-shell'].every((m) => call(m) && call(m)?.finishedAt === undefined) ? true : undefined),
      600_000,
    );
    slow(400);
    const done = await waitFor(
      `swarm ${parent.id}`,
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${parent.id}`));
        return ['completed', 'failed', 'cancelled'].includes(x.status) ? x : undefined;
      },
      600_000,
    );
    assert.equal(done.status, 'completed', done.statusReason);
    assert.equal(done.output?.match(/Hello from slow/g)?.length, 3, `the parent aggregated its three children: ${done.output}`);
    interface Node {
      id: string;
      agentType: string;
      status: string;
      children: Node[];
    }
    const tree = await a.client.json<Node>('GET', api(`/tasks/${parent.id}/tree`));
    const kids = new Map(tree.children.map((c) => [c.agentType, c]));
    assert.deepEqual([...kids.keys()].sort(), ['chat', 'coding', 'shell']);
    // Where each child ran, from its trace: three sandboxes; the shell one ran nothing else, on any of its gateways.
    const ranOn = async (id: string) => {
      const tr = await a.client.json<{ items: { kind: string; detail: { instanceId?: string } }[] }>('GET', api(`/tasks/${id}/trace`));
      return tr.items.find((e) => e.kind === 'gateway_ready')?.detail.instanceId;
    };
    const where = new Map<string, string | undefined>();
    for (const [type, k] of kids) where.set(type, await ranOn(k.id));
    const names = new Map((await server.services.instances.list(a.id)).map((i) => [i.id, i.name]));
    assert.equal(names.get(where.get('chat') ?? ''), 'pool-chat');
    assert.equal(names.get(where.get('shell') ?? ''), 'tasks-high-risk');
    assert.equal(new Set(where.values()).size, 3, `three sandboxes: ${JSON.stringify([...where])}`);
    const shellRow = await server.services.instances.get(a.id, where.get('shell') ?? '');
    assert.ok(shellRow.sandbox);
    const shellSessions = JSON.stringify(
      await gatewayRpc(
        await server.services.sandboxes.connect(shellRow.sandbox),
        await server.services.instances.gatewayToken(shellRow.id),
        'sessions.list',
        {},
      ),
    );
    const sessions = [...shellSessions.matchAll(/task-([0-9a-f-]{36})/g)].map((m) => m[1]);
    assert.deepEqual([...new Set(sessions)], [kids.get('shell')?.id], 'the shell sandbox served the shell child only');

    // Cancelling a swarm: two coding children share one gateway, so one runs its turn and the other waits for
    // the gateway. Both are cancelled: the running turn is aborted (its provider call cut), the waiting one
    // never starts (its prompt never reaches the provider, even once the gateway is free).
    await a.client.json(
      'POST',
      api('/swarm-rules'),
      {
        name: 'pair',
        capability: 'pair',
        steps: [step('coding', 'build', 'Build {{input}} pair-first'), step('coding', 'build', 'Build {{input}} pair-second')],
      },
      201,
    );
    slow(3_600_000);
    const pair = await a.client.json<Task>('POST', api('/tasks'), { capability: 'pair', input: 'v4' }, 201);
    const running = await waitFor(
      'one child turn reaches the provider',
      async () => (call('pair-first') ? 'pair-first' : call('pair-second') ? 'pair-second' : undefined),
      600_000,
    );
    const waiting = running === 'pair-first' ? 'pair-second' : 'pair-first';
    const pairTree = await a.client.json<Node>('GET', api(`/tasks/${pair.id}/tree`));
    const waitingChild = await waitFor('the other child waits for the gateway', async () => {
      for (const c of pairTree.children) {
        const tr = await a.client.json<{ items: { kind: string }[] }>('GET', api(`/tasks/${c.id}/trace`));
        const task = await a.client.json<Task>('GET', api(`/tasks/${c.id}`));
        if (task.input.includes(waiting) && tr.items.some((e) => e.kind === 'gateway_ready')) return c.id;
      }
      return undefined;
    });
    await a.client.json('POST', api(`/tasks/${pair.id}/cancel`), { reason: 'not needed' });
    const cut = await waitFor("the running turn's provider call is cut", async () => (call(running)?.aborted ? true : undefined), 120_000);
    assert.ok(cut);
    for (const c of pairTree.children) assert.equal((await a.client.json<Task>('GET', api(`/tasks/${c.id}`))).status, 'cancelled');
    // The gateway is free again: a later task runs there, and the cancelled child's turn never started.
    slow(400);
    await route('fake-model');
    const after = await a.client.json<Task>('POST', api('/tasks'), { agent: 'builder', input: 'Build after the cancel' }, 201);
    const afterDone = await waitFor(
      `task ${after.id}`,
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${after.id}`));
        return ['completed', 'failed'].includes(x.status) ? x : undefined;
      },
      600_000,
    );
    assert.equal(afterDone.status, 'completed', afterDone.statusReason);
    assert.equal(call(waiting), undefined, `the cancelled child ${waitingChild} never sent its turn`);
  });

  /** Each gateway's state in the pool sandbox, as its supervisor reports it. */
  async function states(instanceId: string): Promise<Record<string, string>> {
    const row = await server.services.instances.get(a.id, instanceId);
    assert.ok(row.sandbox);
    const st = await server.services.sandboxes.status(row.sandbox);
    assert.ok(st.running && st.health);
    return Object.fromEntries(st.health.executors.map((e) => [e.id, e.state]));
  }

  async function pids(instanceId: string): Promise<Record<string, number | null>> {
    const row = await server.services.instances.get(a.id, instanceId);
    assert.ok(row.sandbox);
    const st = await server.services.sandboxes.status(row.sandbox);
    assert.ok(st.running && st.health);
    return Object.fromEntries(st.health.executors.map((e) => [e.id, e.pid]));
  }
});
