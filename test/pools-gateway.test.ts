/**
 * Executor pools on real OpenClaw gateways under bubblewrap (docs/adr/0014-executor-pools.md): a chat pool
 * with two shards gets its own sandbox (instance pool-chat, two gateway processes), deployed by the first
 * task; a task of each shard runs on its shard's gateway — checked on the gateways themselves (each one's
 * own session list), not on a field Clawplane set. The fake provider is the one stand-in.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { shardOf } from '../src/pools/types.ts';
import { gatewayRpc } from '../src/sandbox/gateway-rpc.ts';
import type { Task } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

describe('executor pools on real gateways', { timeout: 900_000 }, async () => {
  const { server, a } = await startGatewayFixture({ file: import.meta.url, env: { CLAWPLANE_TASK_QUEUE_POLL_MS: '200' } });
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  await server.services.tenants.update(a.id, { quotas: { maxInstances: 4 } }, { actor: 'test' });

  test('two shards, two gateways in the pool\'s own sandbox: each task runs on its shard\'s gateway only', async () => {
    await a.client.json('POST', api('/agents'), { name: 'assistant', agentType: 'chat', capabilities: ['answer'] }, 201);
    const pool = await a.client.json<{ id: string }>('POST', api('/pools'), { agentType: 'chat', shards: 2, minExecutors: 1, maxExecutors: 1 }, 201);
    // A key for each shard.
    const keys: string[] = [];
    for (let i = 0; keys.length < 2; i++) if (shardOf(`k${i}`, 2) === keys.length) keys.push(`k${i}`);
    const tasks: Task[] = [];
    for (const key of keys) tasks.push(await a.client.json<Task>('POST', api('/tasks'), { capability: 'answer', input: `Say hello for ${key}`, shardKey: key }, 201));
    for (const t of tasks) {
      const done = await waitFor(`task ${t.id}`, async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        if (x.status === 'failed') throw new Error(`task failed: ${x.statusReason}`);
        return x.status === 'completed' ? x : undefined;
      }, 600_000);
      assert.equal(done.output, 'Hello from fake-model');
    }
    // The pool's own instance, with both shards' gateways; not the tenant's other instance.
    const inst = (await server.services.instances.list(a.id)).find((i) => i.name === 'pool-chat');
    assert.ok(inst, 'the pool deployed its own instance');
    assert.equal(inst.executors, 2);
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
});
