/**
 * OpenClaw's own exec approvals park a durable task (issue 8, item 4) on a real gateway: with exec mode
 * `ask`, the gateway holds the agent's `exec` call and broadcasts `exec.approval.requested`; the task
 * parks with an exec approval naming the command; approving it through the API resolves it on the
 * gateway (`exec.approval.resolve` allow-once), OpenClaw runs the command and the task completes;
 * rejecting it denies it there and fails the task naming who rejected. The fake provider (the one
 * allowed stand-in) asks for `echo hi` and reports the tool result it got. One gateway for the file.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Approval, Task, TraceEvent } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

describe('OpenClaw exec approvals park a task', { timeout: 900_000 }, async () => {
  const { server, fake, a, by, providerId } = await startGatewayFixture({
    file: import.meta.url,
    canary: 'sk-fake-0123456789abcdef',
    env: { CLAWPLANE_TASK_QUEUE_POLL_MS: '200' },
  });
  // Exec is rendered `ask` only when the platform default and the tenant's policy both say ask.
  const defaults = await server.services.onboarding.agentDefaults();
  await server.services.onboarding.setAgentDefaults({ ...defaults, execPolicy: 'ask' }, by);
  await server.services.policy.setTenantPolicy(a.id, { execPolicy: 'ask', policies: [] }, by);
  await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model: 'tool-exec' }] }, by);
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  await a.client.json('POST', api('/agents'), { name: 'operator', capabilities: ['shell-ish'] }, 201);

  const parked = async (id: string) => {
    await waitFor(
      'task waiting for approval',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${id}`));
        if (['failed', 'completed', 'expired'].includes(x.status))
          throw new Error(`task ended ${x.status}: ${x.statusReason} (output ${x.output}; tools offered: ${fake.toolNames.join(', ')})`);
        return x.status === 'waiting_approval' ? x : undefined;
      },
      240_000,
    );
    const aps = (await a.client.json<{ items: Approval[] }>('GET', api(`/tasks/${id}/approvals`))).items;
    assert.equal(aps.length, 1);
    assert.equal(aps[0]?.kind, 'exec');
    assert.match(aps[0]?.summary ?? '', /echo hi/);
    const inbox = (await a.client.json<{ items: Approval[] }>('GET', api('/approvals'))).items;
    assert.ok(
      inbox.some((x) => x.taskId === id && x.kind === 'exec'),
      'in the approvals inbox',
    );
  };
  const ended = (id: string) =>
    waitFor(
      'task ended',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${id}`));
        return ['failed', 'completed', 'expired', 'cancelled'].includes(x.status) ? x : undefined;
      },
      120_000,
    );

  test('approve: the gateway runs the command, the model gets its output, the task completes', async () => {
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'shell-ish', input: 'Run echo hi and tell me what it printed' }, 201);
    await parked(t.id);
    assert.equal(fake.toolResults.length, 0, 'nothing ran before the approval');
    await a.client.json('POST', api(`/tasks/${t.id}/approve`), { comment: 'fine' }, 200);
    const done = await ended(t.id);
    assert.equal(done.status, 'completed', done.statusReason);
    console.log(`tool results the model received: ${JSON.stringify(fake.toolResults)}`);
    assert.ok(
      fake.toolResults.some((r) => /\bhi\b/.test(r.replace(/echo hi/g, '')) && !/denied/i.test(r)),
      `the command ran and its output reached the model: ${JSON.stringify(fake.toolResults)}`,
    );
    assert.match(done.output ?? '', /Exec said: .*hi/);
    const steps = (await a.client.json<{ items: TraceEvent[] }>('GET', api(`/tasks/${t.id}/trace`))).items.map((e) => `${e.step}.${e.kind}`);
    for (const s of ['execute.approvals_watch', 'execute.exec_approval_requested', 'approval.requested', 'execute.exec_approval_resolved', 'finish.completed'])
      assert.ok(steps.includes(s), `${s} in ${steps.join(', ')}`);
  });

  test('reject: the gateway refuses the command and the task fails naming who rejected it', async () => {
    const before = fake.toolResults.length;
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'shell-ish', input: 'Run echo hi again' }, 201);
    await parked(t.id);
    await a.client.json('POST', api(`/tasks/${t.id}/reject`), { comment: 'not today' }, 200);
    const done = await ended(t.id);
    assert.equal(done.status, 'failed');
    assert.match(done.statusReason, new RegExp(`exec rejected by token:${a.tokenId}: not today`));
    // The denied tool result reaches the model (OpenClaw ends the held turn); no "hi" output from a run.
    await waitFor('the held turn ended with a denial', async () => (fake.toolResults.length > before ? true : undefined), 60_000);
    const late = fake.toolResults.slice(before);
    console.log(`tool results after the rejection: ${JSON.stringify(late)}`);
    assert.ok(
      late.every((r) => /denied/i.test(r)),
      `denied, not run: ${JSON.stringify(late)}`,
    );
  });

  test('a change of worker while parked: the person decides once; the new turn runs the approved command without asking again', async () => {
    const before = fake.toolResults.length;
    const t = await a.client.json<Task>('POST', api('/tasks'), { capability: 'shell-ish', input: 'Run echo hi once more' }, 201);
    await parked(t.id);
    // What a worker that stops (or dies) does to the turn it holds: the gateway's run ends with its connection.
    assert.equal(server.services.taskRuntime.steps.executor.abandonParked?.(), 1, 'the parked turn was held here');
    await a.client.json('POST', api(`/tasks/${t.id}/approve`), { comment: 'once is enough' }, 200);
    const done = await ended(t.id);
    const trace = (await a.client.json<{ items: TraceEvent[] }>('GET', api(`/tasks/${t.id}/trace`))).items;
    console.log(
      `after a change of worker: tool results ${JSON.stringify(fake.toolResults.slice(before))}; trace ${trace.map((e) => `${e.step}.${e.kind}`).join(', ')}`,
    );
    assert.equal(done.status, 'completed', done.statusReason);
    const aps = (await a.client.json<{ items: Approval[] }>('GET', api(`/tasks/${t.id}/approvals`))).items;
    assert.deepEqual(
      aps.map((x) => x.status),
      ['approved'],
      'one approval, decided once',
    );
    assert.ok(
      fake.toolResults.slice(before).some((r) => /\bhi\b/.test(r.replace(/echo hi/g, '')) && !/denied/i.test(r)),
      `the approved command ran after the change of worker: ${JSON.stringify(fake.toolResults.slice(before))}`,
    );
    assert.ok(
      trace.some((e) => e.kind === 'exec_approval_resolved' && (e.detail as { approvedBefore?: boolean }).approvedBefore === true),
      'the new turn allowed the command the person had approved',
    );
  });
});
