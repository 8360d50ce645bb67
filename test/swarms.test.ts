/**
 * Swarms (src/swarms, docs/adr/0014-executor-pools.md) on a real server and PostgreSQL with a STAND-IN
 * executor in place of gateways: a tenant's rule decomposes a task into children for three agent types (one
 * of them shell, on its own high-risk pool), the children run in parallel (each waits until all three have
 * started), the parent aggregates, partial failure follows the policy (all, any, quorum), the tree shows it;
 * and an agent's own plan (a delegation block) with a policy.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TaskExecutor, Turn, TurnResult } from '../src/tasks/types.ts';
import { ApiClient, onboard } from './helpers/client.ts';
import { waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';

interface TaskView {
  id: string;
  status: string;
  statusReason: string;
  output: string | null;
  swarmRuleId: string | null;
}
interface Node {
  id: string;
  status: string;
  statusReason: string;
  agentType: string | null;
  poolId: string | null;
  executorId: string | null;
  swarmRuleId: string | null;
  children: Node[];
}

/**
 * Runs turns; "together:<n>" turns wait until n of them have started; "hold" turns wait until their task is
 * cancelled (the step's signal); inputs with "fail" fail.
 */
class SwarmStandIn implements TaskExecutor {
  readonly name = 'stand-in-swarm';
  readonly turns: Turn[] = [];
  #started = 0;
  readonly #waiters: (() => void)[] = [];
  /** What an agent answers instead of its default (by agent name). */
  readonly answers = new Map<string, string>();

  /** Held turns that ended because their task was cancelled. */
  readonly aborted: string[] = [];

  /** Ends every held turn still running (the server cannot stop while one runs). */
  readonly #release = new Set<() => void>();
  releaseAll(): void {
    for (const r of this.#release) r();
  }

  async run(turn: Turn, ctx: { signal: AbortSignal }): Promise<TurnResult> {
    this.turns.push(turn);
    if (turn.input.includes('hold')) {
      await new Promise<void>((_, reject) => {
        const stop = () => reject(new Error('released'));
        this.#release.add(stop);
        ctx.signal.addEventListener('abort', () => (this.aborted.push(turn.taskId), reject(new Error('aborted'))), { once: true });
      });
    }
    const m = /together:(\d+)/.exec(turn.input);
    if (m) {
      this.#started++;
      const need = Number(m[1]);
      if (this.#started >= need) for (const w of this.#waiters.splice(0)) w();
      else await new Promise<void>((r) => this.#waiters.push(r));
    }
    if (turn.input.includes('fail')) throw new Error(`the ${turn.agent.agentType} agent failed on purpose`);
    return { output: this.answers.get(turn.agent.name) ?? `${turn.agent.agentType} did: ${turn.input}` };
  }

  resetBarrier(): void {
    this.#started = 0;
  }
}

describe('swarms (stand-in executor)', { timeout: 600_000 }, async () => {
  const server = await startTestServer({
    CLAWPLANE_TASK_QUEUE_POLL_MS: '50',
    CLAWPLANE_TASK_RETRY_BASE_MS: '50',
    CLAWPLANE_TASK_RETRY_MAX_MS: '60',
    CLAWPLANE_TASK_RETRY_ATTEMPTS: '2',
  });
  const admin = await onboard(server);
  const tenant = await admin.json<{ id: string; slug: string }>(
    'POST',
    '/api/v1/tenants',
    { slug: 'swarm', name: 'Swarm', quotas: { maxInstances: 4, maxConcurrentTasks: 20 } },
    201,
  );
  const owner = await admin.json<{ userId: string }>(
    'POST',
    `/api/v1/tenants/${tenant.slug}/members`,
    { email: 'owner@swarm.test', role: 'tenant_admin' },
    201,
  );
  const { token } = await server.services.tokens.create(tenant.id, { name: 'owner', role: 'tenant_admin', createdBy: owner.userId }, { actor: 'test' });
  const api = new ApiClient(server.url, { bearer: token });
  const base = `/api/v1/tenants/${tenant.slug}`;
  const exec = new SwarmStandIn();
  server.services.taskRuntime.useExecutor(exec);
  const until = (id: string) =>
    waitFor(`task ${id} ended`, async () => {
      const t = await api.json<TaskView>('GET', `${base}/tasks/${id}`);
      return ['completed', 'failed', 'cancelled', 'expired'].includes(t.status) ? t : undefined;
    });

  await api.json('POST', `${base}/agents`, { name: 'writer', agentType: 'chat', capabilities: ['draft', 'plan'] }, 201);
  await api.json('POST', `${base}/agents`, { name: 'builder', agentType: 'coding', capabilities: ['build'] }, 201);
  await api.json('POST', `${base}/agents`, { name: 'ops', agentType: 'shell', capabilities: ['check'] }, 201);
  const coding = await api.json<{ id: string }>('POST', `${base}/pools`, { agentType: 'coding' }, 201);
  const shell = await api.json<{ id: string; riskClass: string }>('POST', `${base}/pools`, { agentType: 'shell' }, 201);
  assert.equal(shell.riskClass, 'high');
  const steps = (inputs: [string, string, string]) => [
    { agentType: 'chat', capability: 'draft', input: inputs[0] },
    { agentType: 'coding', capability: 'build', input: inputs[1] },
    { agentType: 'shell', capability: 'check', input: inputs[2] },
  ];

  test('a swarm of three agent types: children in parallel, shell alone on its pool, the parent aggregates, the tree shows it', async () => {
    const rule = await api.json<{ id: string }>(
      'POST',
      `${base}/swarm-rules`,
      { name: 'release', capability: 'release', steps: steps(['notes for {{input}} together:3', 'build {{input}} together:3', 'check {{input}} together:3']) },
      201,
    );
    exec.resetBarrier();
    const t = await api.json<TaskView>('POST', `${base}/tasks`, { capability: 'release', input: 'v1.2' }, 201);
    assert.equal(t.swarmRuleId, rule.id);
    // Each child waits until all three have started: the swarm finishes only if they ran at the same time.
    const done = await until(t.id);
    assert.equal(done.status, 'completed', done.statusReason);
    for (const s of ['chat did: notes for v1.2', 'coding did: build v1.2', 'shell did: check v1.2'])
      assert.ok(done.output?.includes(s), `the parent aggregated "${s}": ${done.output}`);

    const tree = await api.json<Node>('GET', `${base}/tasks/${t.id}/tree`);
    assert.equal(tree.swarmRuleId, rule.id);
    assert.deepEqual(tree.children.map((c) => c.agentType).sort(), ['chat', 'coding', 'shell']);
    assert.ok(tree.children.every((c) => c.status === 'completed'));
    const byType = new Map(tree.children.map((c) => [c.agentType, c]));
    assert.equal(byType.get('shell')?.poolId, shell.id);
    assert.equal(byType.get('coding')?.poolId, coding.id);
    assert.equal(byType.get('chat')?.poolId, null);
    // Where each child actually ran: the shell child on the shell pool's executor, no one else there.
    const shellExecutors = new Set((await api.json<{ items: { id: string }[] }>('GET', `${base}/pools/shell/executors`)).items.map((e) => e.id));
    const ranOnShell = exec.turns.filter((x) => x.executor && shellExecutors.has(x.executor.id)).map((x) => x.taskId);
    assert.deepEqual(ranOnShell, [byType.get('shell')?.id]);
    assert.equal(exec.turns.find((x) => x.taskId === byType.get('coding')?.id)?.executor?.poolId, coding.id);
    assert.equal(exec.turns.find((x) => x.taskId === byType.get('chat')?.id)?.executor, undefined);
    const trace = (await api.json<{ items: { step: string; kind: string; detail: Record<string, unknown> }[] }>('GET', `${base}/tasks/${t.id}/trace`)).items;
    assert.ok(trace.some((e) => e.step === 'swarm' && e.kind === 'decomposed'));
    const agg = trace.find((e) => e.step === 'swarm' && e.kind === 'aggregated');
    assert.deepEqual([agg?.detail['policy'], agg?.detail['completed'], agg?.detail['met']], ['all', 3, true]);
  });

  test('partial failure follows the policy, and children it no longer needs are cancelled: all fails fast, quorum and any complete early', async () => {
    // "hold" children run until cancelled: a parent that waited for them would never end.
    const cases = [
      {
        name: 'strict',
        policy: 'all',
        inputs: ['notes {{input}} hold', 'fail build {{input}}', 'check {{input}} hold'],
        want: 'failed',
        kids: [
          ['chat', 'cancelled'],
          ['coding', 'failed'],
          ['shell', 'cancelled'],
        ],
        reason: /child task\(s\) .*failed/,
      },
      {
        name: 'majority',
        policy: 'quorum',
        quorum: 2,
        inputs: ['notes {{input}}', 'build {{input}} hold', 'check {{input}}'],
        want: 'completed',
        kids: [
          ['chat', 'completed'],
          ['coding', 'cancelled'],
          ['shell', 'completed'],
        ],
        reason: /policy quorum 2: 2 of 3 completed/,
      },
      {
        name: 'first',
        policy: 'any',
        inputs: ['notes {{input}}', 'build {{input}} hold', 'check {{input}} hold'],
        want: 'completed',
        kids: [
          ['chat', 'completed'],
          ['coding', 'cancelled'],
          ['shell', 'cancelled'],
        ],
        reason: /policy any: 1 of 3 completed/,
      },
      {
        name: 'all-three',
        policy: 'quorum',
        quorum: 2,
        inputs: ['notes {{input}} hold', 'fail b', 'fail c'],
        want: 'failed',
        kids: [
          ['chat', 'cancelled'],
          ['coding', 'failed'],
          ['shell', 'failed'],
        ],
        reason: /policy quorum 2: 0 of 3 completed/,
      },
    ] as const;
    for (const c of cases) {
      await api.json(
        'POST',
        `${base}/swarm-rules`,
        {
          name: c.name,
          capability: `ship-${c.name}`,
          steps: steps(c.inputs as unknown as [string, string, string]),
          policy: c.policy,
          ...('quorum' in c ? { quorum: c.quorum } : {}),
        },
        201,
      );
      const t = await api.json<TaskView>('POST', `${base}/tasks`, { capability: `ship-${c.name}`, input: 'v2' }, 201);
      const done = await until(t.id);
      assert.equal(done.status, c.want, `${c.policy}: ${done.statusReason}`);
      assert.match(done.statusReason, c.reason);
      const tree = await api.json<Node>('GET', `${base}/tasks/${t.id}/tree`);
      assert.deepEqual(tree.children.map((x) => [x.agentType, x.status]).sort(), c.kids);
      // The cancelled children say why.
      for (const k of tree.children.filter((x) => x.status === 'cancelled'))
        assert.match(k.statusReason, new RegExp(`cancelled: the parent's policy ${c.policy}.*already (met|out of reach)`));
      const trace = (await api.json<{ items: { step: string; kind: string }[] }>('GET', `${base}/tasks/${t.id}/trace`)).items;
      assert.ok(trace.some((e) => e.step === 'swarm' && e.kind === 'children_cancelled'));
    }
    exec.releaseAll();
  });

  test("the agent's own plan: a delegation block with agent types and a policy", async () => {
    exec.answers.set(
      'writer',
      'Plan:\n```clawplane-delegate\n{"tasks": [{"capability": "build", "agentType": "coding", "input": "compile hold"}, {"capability": "check", "agentType": "shell", "input": "check disk"}], "policy": "any"}\n```',
    );
    const t = await api.json<TaskView>('POST', `${base}/tasks`, { agent: 'writer', input: 'plan the rollout' }, 201);
    const done = await until(t.id);
    assert.equal(done.status, 'completed', done.statusReason);
    const tree = await api.json<Node>('GET', `${base}/tasks/${t.id}/tree`);
    // The shell child's success met "any": the coding child, still running, was cancelled.
    assert.deepEqual(tree.children.map((x) => [x.agentType, x.status, x.poolId]).sort(), [
      ['coding', 'cancelled', coding.id],
      ['shell', 'completed', shell.id],
    ]);
    exec.answers.delete('writer');
    exec.releaseAll();
  });

  test('rules are validated (400 naming the field), unique per name and capability (409), audited', async () => {
    for (const body of [
      { name: 'x', capability: 'c1', steps: steps(['a', 'b', 'c']).slice(0, 1) },
      { name: 'x', capability: 'c1', steps: steps(['a', 'b', 'c']), policy: 'quorum' },
      { name: 'x', capability: 'c1', steps: steps(['a', 'b', 'c']), policy: 'quorum', quorum: 4 },
      {
        name: 'x',
        capability: 'c1',
        steps: [
          { agentType: 'robot', capability: 'a' },
          { agentType: 'chat', capability: 'b' },
        ],
      },
      { name: 'Bad Name', capability: 'c1', steps: steps(['a', 'b', 'c']) },
    ]) {
      const r = await api.call('POST', `${base}/swarm-rules`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
    }
    assert.equal((await api.call('POST', `${base}/swarm-rules`, { name: 'release', capability: 'other', steps: steps(['a', 'b', 'c']) })).status, 409);
    assert.equal((await api.call('POST', `${base}/swarm-rules`, { name: 'other', capability: 'release', steps: steps(['a', 'b', 'c']) })).status, 409);
    await api.json('DELETE', `${base}/swarm-rules/first`, undefined, 204);
    assert.equal((await api.call('GET', `${base}/swarm-rules/first`)).status, 404);
    const audit = await server.db.query<{ action: string }>(`SELECT action FROM audit_events WHERE tenant_id = $1 AND action LIKE 'swarm_rule.%'`, [tenant.id]);
    assert.ok(audit.rows.some((r) => r.action === 'swarm_rule.delete'));
    assert.equal((await api.call('GET', `${base}/tasks/00000000-0000-4000-8000-000000000000/tree`)).status, 404);
  });
});
