/**
 * Durable tasks (issue 8) through the API on a real server and PostgreSQL, with a STAND-IN executor
 * (test/helpers/task-executors.ts) in place of the gateway: idempotent create, the trace of every step,
 * memory recall, retries with backoff, cancel while executing, timeouts, approvals (approve twice,
 * reject, expiry), the inbox, signed webhooks, delegation to a child task, queue depth, audit.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import type { Task, TraceEvent } from '../src/tasks/types.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { hang, ScriptedExecutor } from './helpers/task-executors.ts';

describe('durable tasks (stand-in executor)', { timeout: 300_000 }, async () => {
  const server = await startTestServer({
    CLAWPLANE_TASK_RETRY_BASE_MS: '100',
    CLAWPLANE_TASK_RETRY_MAX_MS: '150',
    CLAWPLANE_TASK_QUEUE_POLL_MS: '50',
    CLAWPLANE_TASK_APPROVAL_TTL_S: '4',
    CLAWPLANE_TASK_TIMEOUT_MS: '3000',
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
  });
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  const exec = new ScriptedExecutor();
  server.services.taskRuntime.useExecutor(exec);
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  const create = (body: Record<string, unknown>, headers: Record<string, string> = {}) => a.client.call('POST', api('/tasks'), body, headers);
  const newTask = async (body: Record<string, unknown>) => {
    const r = await create(body);
    assert.equal(r.status, 201, await r.clone().text());
    return (await r.json()) as Task;
  };
  const task = (id: string) => a.client.json<Task>('GET', api(`/tasks/${id}`));
  const until = (id: string, statuses: string[], ms = 30_000) =>
    waitFor(
      `task ${id} ${statuses.join('|')}`,
      async () => {
        const t = await task(id);
        return statuses.includes(t.status) ? t : undefined;
      },
      ms,
    );
  const trace = async (id: string) => (await a.client.json<{ items: TraceEvent[] }>('GET', api(`/tasks/${id}/trace`))).items;

  // A webhook receiver on loopback (allowed by CLAWPLANE_EGRESS_ALLOW_HOSTS).
  const hooks: { body: string; sig: string }[] = [];
  const hookServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hooks.push({ body: Buffer.concat(chunks).toString('utf8'), sig: String(req.headers['x-clawplane-signature'] ?? '') });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', r));
  after(() => new Promise<void>((r) => hookServer.close(() => r())));
  let signingKey = '';

  test('agents: CRUD; shell agents are high risk', async () => {
    const w = await a.client.json<{ riskClass: string }>(
      'POST',
      api('/agents'),
      { name: 'writer', agentType: 'chat', capabilities: ['summarise', 'plan'], trustLevel: 2 },
      201,
    );
    assert.equal(w.riskClass, 'standard');
    await a.client.json('POST', api('/agents'), { name: 'junior', capabilities: ['summarise'], trustLevel: 1 }, 201);
    await a.client.json('POST', api('/agents'), { name: 'researcher', agentType: 'research', capabilities: ['research'] }, 201);
    const sh = await a.client.json<{ riskClass: string }>('POST', api('/agents'), { name: 'ops', agentType: 'shell', capabilities: ['ops'] }, 201);
    assert.equal(sh.riskClass, 'high');
    const dup = await a.client.call('POST', api('/agents'), { name: 'writer' });
    assert.equal(dup.status, 409);
    const p = await a.client.json<{ trustLevel: number }>('PATCH', api('/agents/junior'), { trustLevel: 0 });
    assert.equal(p.trustLevel, 0);
    // The harness fixture gives every tenant an agent of its own too; these four are this test's.
    const names = (await a.client.json<{ items: { name: string }[] }>('GET', api('/agents'))).items.map((x) => x.name);
    for (const n of ['writer', 'junior', 'researcher', 'ops']) assert.ok(names.includes(n), `${n} is listed`);
    const hook = await a.client.json<{ signingKey: string }>('PUT', api('/approval-webhook'), {
      url: `http://127.0.0.1:${(hookServer.address() as AddressInfo).port}/hook`,
    });
    signingKey = hook.signingKey;
    assert.match(signingKey, /^[0-9a-f]{64}$/);
  });

  test('idempotent create: the same Idempotency-Key returns the same task', async () => {
    const body = { capability: 'summarise', input: 'Summarise the Q4 report for #finance' };
    const r1 = await create(body, { 'idempotency-key': 'click-1' });
    const r2 = await create(body, { 'idempotency-key': 'click-1' });
    const r3 = await create(body, { 'idempotency-key': 'click-2' });
    assert.deepEqual([r1.status, r2.status, r3.status], [201, 200, 201]);
    const [t1, t2, t3] = (await Promise.all([r1.json(), r2.json(), r3.json()])) as Task[];
    assert.equal(t1?.id, t2?.id);
    assert.notEqual(t1?.id, t3?.id);
    // Concurrent double submit.
    const both = await Promise.all([create(body, { 'idempotency-key': 'click-3' }), create(body, { 'idempotency-key': 'click-3' })]);
    const ids = new Set(await Promise.all(both.map(async (r) => ((await r.json()) as Task).id)));
    assert.equal(ids.size, 1);
    const done = await until(t1?.id ?? '', ['completed']);
    // The other tasks of this test (same input) may finish first and leave a memory this one recalls.
    assert.match(done.output ?? '', /^Done: Summarise the Q4 report for #finance/);
  });

  test('a task runs through every step; the trace shows them in order; the next task recalls a memory', async () => {
    const t = await newTask({ capability: 'summarise', input: 'Summarise the Q4 revenue numbers' });
    const done = await until(t.id, ['completed']);
    assert.ok(done.agentId);
    assert.ok((done.confidence ?? 0) > 0.5);
    const steps = (await trace(t.id)).map((e) => `${e.step}.${e.kind}`);
    assert.deepEqual(steps, [
      'create.completed',
      'dispatch.completed',
      'recall.completed',
      'execute.started',
      'execute.stand_in',
      'execute.completed',
      'evaluate.completed',
      'finish.completed',
    ]);
    const disp = (await trace(t.id)).find((e) => e.step === 'dispatch');
    // Trust 2 "writer" beats "junior" (trust 0 is never dispatched).
    assert.equal(disp?.detail['agent'], 'writer');
    const msgs = await a.client.json<{ items: { role: string }[] }>('GET', api(`/tasks/${t.id}/messages`));
    assert.deepEqual(
      msgs.items.map((m) => m.role),
      ['user', 'assistant'],
    );
    const t2 = await newTask({ agent: 'writer', input: 'What were the Q4 revenue numbers again?' });
    await until(t2.id, ['completed']);
    const recall = (await trace(t2.id)).find((e) => e.step === 'recall');
    assert.ok((recall?.detail['memories'] as number) >= 1, 'a memory of the earlier task is recalled');
    assert.match(exec.calls.at(-1)?.prompt ?? '', /What you remember from earlier tasks:\n- Task: Summarise the Q4 revenue/);
    const skills = await a.client.json<{ skills: { skill: string; attempts: number; successes: number }[] }>('GET', api('/agents/writer'));
    assert.ok(skills.skills.some((s) => s.skill === 'summarise' && s.successes >= 2));
    // List with filters and cursor paging.
    const page1 = await a.client.json<{ items: Task[]; nextCursor: string | null }>('GET', api('/tasks?status=completed&limit=2'));
    assert.equal(page1.items.length, 2);
    assert.ok(page1.nextCursor);
    const page2 = await a.client.json<{ items: Task[] }>('GET', api(`/tasks?status=completed&limit=2&cursor=${encodeURIComponent(page1.nextCursor)}`));
    assert.ok(page2.items.length >= 1);
    assert.ok(page2.items.every((x) => !page1.items.some((y) => y.id === x.id)));
    const byAgent = await a.client.json<{ items: Task[] }>('GET', api('/tasks?agent=writer&priority=normal'));
    assert.ok(byAgent.items.length >= 2);
    assert.equal((await a.client.json<{ items: Task[] }>('GET', api('/tasks?agent=researcher'))).items.length, 0);
  });

  test('no agent for the capability: the task fails at dispatch with the reason', async () => {
    const t = await newTask({ capability: 'juggling', input: 'juggle' });
    const done = await until(t.id, ['failed']);
    assert.match(done.statusReason, /No agent with capability "juggling"/);
  });

  test('a failing execution is retried with backoff and then succeeds', async () => {
    let n = 0;
    exec.on(/flaky/, () => {
      n++;
      if (n < 3) return Promise.reject(new Error(`flaky failure ${n}`));
      return Promise.resolve({ output: 'third time lucky' });
    });
    const t = await newTask({ capability: 'summarise', input: 'a flaky job' });
    const done = await until(t.id, ['completed']);
    assert.equal(done.attempts, 3);
    const failed = (await trace(t.id)).filter((e) => e.kind === 'attempt_failed');
    assert.deepEqual(
      failed.map((e) => e.detail['retryInMs']),
      [100, 150],
      'exponential from 100 ms, capped at 150 ms',
    );
  });

  test('cancel while executing: the running step sees its signal abort; the task ends cancelled', async () => {
    let aborted = false;
    exec.on(/long running/, async (_t, signal) => {
      try {
        return await hang(signal);
      } finally {
        aborted = true;
      }
    });
    const t = await newTask({ capability: 'summarise', input: 'a long running job' });
    await until(t.id, ['executing']);
    const c = await a.client.json<Task>('POST', api(`/tasks/${t.id}/cancel`), { reason: 'changed my mind' });
    assert.equal(c.status, 'cancelled');
    await waitFor('the step saw the abort', async () => aborted, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await task(t.id)).status, 'cancelled', 'stays cancelled');
    assert.equal(await server.services.tasks.workflowStatus(t.id), 'CANCELLED');
  });

  test('a task that uses up its time budget fails as timed out', async () => {
    exec.on(/hangs forever/, (_t, signal) => hang(signal));
    const t = await newTask({ capability: 'summarise', input: 'this hangs forever' });
    const done = await until(t.id, ['failed'], 30_000);
    assert.match(done.statusReason, /timed out/);
  });

  // The stand-in plays a sandbox asking the broker for a tool grant for this task, as a gateway's tool would.
  const askForExec = (tenantId: string, taskId: string) =>
    server.services.grants.request(
      { id: `stand-in-${taskId}`, tenantId, instanceId: 'stand-in', sandboxId: 'stand-in' },
      { tool: 'exec', agent: 'main', context: { taskId } },
    );

  test('approval: the broker says requires_approval; the task parks; approve twice; it completes; webhooks are signed', async () => {
    await server.services.policy.setTenantPolicy(a.id, { execPolicy: 'ask', policies: [] }, { actor: 'test' });
    exec.on(/needs approval/, async (turn) => {
      if (turn.prompt.startsWith('A person approved')) return { output: 'ran it after approval' };
      const g = await askForExec(turn.tenantId, turn.taskId);
      assert.equal(g.outcome, 'requires_approval');
      return { output: 'I need to run a command; waiting for approval.' };
    });
    const t = await newTask({ capability: 'summarise', input: 'this needs approval' });
    await until(t.id, ['waiting_approval']);
    const inbox = await a.client.json<{ items: { taskId: string; tool: string }[] }>('GET', api('/approvals'));
    assert.ok(inbox.items.some((i) => i.taskId === t.id && i.tool === 'exec'));
    const [r1, r2] = await Promise.all([
      a.client.call('POST', api(`/tasks/${t.id}/approve`), { comment: 'fine' }),
      a.client.call('POST', api(`/tasks/${t.id}/approve`), { comment: 'fine' }),
    ]);
    assert.deepEqual([r1.status, r2.status], [200, 200], 'a double click is harmless');
    const done = await until(t.id, ['completed']);
    assert.equal(done.output, 'ran it after approval');
    const approvals = await a.client.json<{ items: { status: string; decidedBy: string }[] }>('GET', api(`/tasks/${t.id}/approvals`));
    assert.deepEqual(
      approvals.items.map((x) => [x.status, x.decidedBy]),
      [['approved', `token:${a.tokenId}`]],
    );
    const late = await a.client.call('POST', api(`/tasks/${t.id}/reject`), {});
    assert.equal(late.status, 409, 'the opposite decision after the fact is refused');
    const tool = await server.db.query<{ status: string; decided_by: string }>(`SELECT status, decided_by FROM tool_approvals WHERE context->>'taskId' = $1`, [
      t.id,
    ]);
    assert.deepEqual(tool.rows, [{ status: 'approved', decided_by: `token:${a.tokenId}` }]);
    const audit = await server.db.query<{ action: string; actor: string; decision: string }>(
      `SELECT action, actor, decision FROM audit_events WHERE target = $1 ORDER BY seq`,
      [`task:${t.id}`],
    );
    assert.deepEqual(
      audit.rows.map((x) => `${x.action}:${x.decision}`),
      ['task.create:success', 'task.approval.requested:requires_approval', 'task.approval.decided:approved'],
    );
    assert.equal(audit.rows[2]?.actor, `token:${a.tokenId}`);
    await waitFor('both webhooks', async () => hooks.filter((h) => h.body.includes(t.id)).length >= 2, 10_000);
    for (const h of hooks.filter((x) => x.body.includes(t.id))) {
      const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(h.sig);
      assert.ok(m, h.sig);
      assert.equal(m[2], createHmac('sha256', signingKey).update(`${m[1]}.${h.body}`).digest('hex'));
    }
    assert.deepEqual(
      hooks
        .filter((h) => h.body.includes(t.id))
        .map((h) => (JSON.parse(h.body) as { type: string }).type)
        .sort(),
      ['approval.decided', 'approval.requested'],
    );
  });

  test('approval rejected: the task fails naming who rejected it', async () => {
    exec.on(/please reject/, async (turn) => {
      await askForExec(turn.tenantId, turn.taskId);
      return { output: 'waiting' };
    });
    const t = await newTask({ capability: 'summarise', input: 'please reject this' });
    await until(t.id, ['waiting_approval']);
    await a.client.json('POST', api(`/tasks/${t.id}/reject`), { comment: 'not today' });
    const done = await until(t.id, ['failed']);
    assert.match(done.statusReason, new RegExp(`exec rejected by token:${a.tokenId}: not today`));
  });

  test('an unanswered approval expires and the task ends expired', async () => {
    exec.on(/nobody answers/, async (turn) => {
      await askForExec(turn.tenantId, turn.taskId);
      return { output: 'waiting' };
    });
    const t = await newTask({ capability: 'summarise', input: 'nobody answers this' });
    await until(t.id, ['waiting_approval']);
    const done = await until(t.id, ['expired'], 20_000);
    assert.match(done.statusReason, /expired unanswered/);
    const ap = await a.client.json<{ items: { status: string }[] }>('GET', api(`/tasks/${t.id}/approvals`));
    assert.equal(ap.items[0]?.status, 'expired');
    assert.equal((await a.client.call('POST', api(`/tasks/${t.id}/approve`), {})).status, 409);
  });

  test('delegation: the agent asks for a child task; the child runs as a child workflow; the parent aggregates', async () => {
    exec.on(/plan the launch/, () =>
      Promise.resolve({ output: 'I will split this.\n```clawplane-delegate\n{"tasks":[{"capability":"research","input":"research the market size"}]}\n```' }),
    );
    exec.on(/research the market size/, () => Promise.resolve({ output: 'The market is 42 units.' }));
    const t = await newTask({ capability: 'plan', input: 'plan the launch' });
    const done = await until(t.id, ['completed']);
    assert.match(done.output ?? '', /I will split this\.\n\n\[child [0-9a-f-]+\] The market is 42 units\./);
    const children = await a.client.json<{ items: Task[] }>('GET', api(`/tasks?parentId=${t.id}`));
    assert.equal(children.items.length, 1);
    assert.equal(children.items[0]?.status, 'completed');
    assert.equal(children.items[0]?.rootId, t.id);
    const steps = (await trace(t.id)).map((e) => `${e.step}.${e.kind}`);
    assert.ok(steps.includes('delegate.started') && steps.includes('delegate.completed'), steps.join(','));
  });

  test('SSE: the events stream replays the trace and ends with the status', async () => {
    const t = await newTask({ capability: 'summarise', input: 'stream me' });
    const res = await a.client.call('GET', api(`/tasks/${t.id}/events`));
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /event: dispatch\.completed/);
    assert.match(text, /event: end\ndata: \{"status":"completed"/);
  });

  test('queue depth: a Prometheus gauge per queue and tenant', async () => {
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(m, /# TYPE clawplane_task_queue_depth gauge/);
  });
});
