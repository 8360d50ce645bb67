/**
 * Lanes on a real OpenClaw gateway under bubblewrap (docs/lanes.md): the server's own scheduler, ticking on an
 * injected clock (CLAWPLANE_TEST_LANE_CLOCK_FILE), fires a three-step lane; its steps run in order as tasks on
 * the tenant's gateway (woken from stopped for the first run, stopped again by the idle reaper after the last), with the
 * fake provider (the one allowed stand-in) behind the broker; summary.json equals the usage rows. A failing
 * second step halts the run and skips the third; a step that needs approval parks until approved via the API.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ingressSettings } from '../src/ingress/setup.ts';
import { laneSummary } from '../src/lanes/summary.ts';
import type { Lane, Run } from '../src/lanes/types.ts';
import type { TraceEvent } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

const IDLE_MS = 6000;

describe('lanes on a real OpenClaw gateway', { timeout: 900_000 }, async () => {
  const clockDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-lane-clock-'));
  after(() => rm(clockDir, { recursive: true, force: true }));
  const clockFile = path.join(clockDir, 'now');
  const setClock = (iso: string) => writeFile(clockFile, iso);
  const { server, a, fake } = await startGatewayFixture({
    file: import.meta.url,
    env: {
      CLAWPLANE_TASK_QUEUE_POLL_MS: '200',
      CLAWPLANE_TASK_RETRY_BASE_MS: '50',
      CLAWPLANE_TASK_RETRY_MAX_MS: '50',
      CLAWPLANE_LANE_TICK_MS: '100',
      CLAWPLANE_TEST_LANE_CLOCK_FILE: clockFile,
      // The reaper is swept by the test (no background pass stops the gateway between two steps).
      CLAWPLANE_IDLE_TIMEOUT_MS: String(IDLE_MS),
      CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
      CLAWPLANE_WARM_RESUME: 'false',
    },
  });
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  const storeDir = ingressSettings(server.config).backupDir;
  await a.client.json('POST', api('/agents'), { name: 'analyst', capabilities: ['lane'] }, 201);
  await a.client.json('POST', api('/projects'), { name: 'nightly', laneKinds: ['analysis'] }, 201);
  const step = (n: number, over: Record<string, unknown> = {}, prefix = 'LANE-STEP') => ({
    name: `s${n}`,
    capability: 'lane',
    input: `${prefix}-${n}: summarise part ${n}`,
    ...over,
  });
  const run = (id: string) => a.client.json<Run>('GET', api(`/lane-runs/${id}`));
  const ended = (id: string) =>
    waitFor(
      `run ${id} ended`,
      async () => {
        const r = await run(id);
        return r.finishedAt ? r : undefined;
      },
      600_000,
    );
  /**
   * The step markers (`<prefix>-<n>`) in the model calls the fake provider received since `from`, in the order they
   * first appear: each lane below has its own prefix, and a turn's earlier steps come along only as history.
   */
  const markers = (from: number, prefix: string) => [
    ...new Set(fake.requests.slice(from).flatMap((q) => [...JSON.stringify(q.body).matchAll(new RegExp(`${prefix}-(\\d)`, 'g'))].map((m) => Number(m[1])))),
  ];
  const usageOf = async (r: Run) => {
    await server.services.broker.usage.flush();
    const ids = r.steps.flatMap((s) => (s.taskId ? [s.taskId] : []));
    const u = await server.db.query<{ i: string; o: string; c: string; n: string }>(
      `SELECT coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o, coalesce(sum(cost_usd), 0) AS c, count(*) AS n
         FROM llm_usage WHERE tenant_id = $1 AND task_id IN (SELECT id::text FROM tasks WHERE tenant_id = $1 AND root_id = ANY($2::uuid[]))`,
      [a.id, ids],
    );
    const x = u.rows[0];
    return { input: Number(x?.i), output: Number(x?.o), cost: Number(x?.c), calls: Number(x?.n) };
  };
  const summaryOf = async (r: Run) => laneSummary.parse(JSON.parse(await readFile(path.join(storeDir, r.summaryKey ?? ''), 'utf8')));

  test('fired by its schedule: the stopped gateway wakes, three steps run in order on it, summary.json equals the usage rows', async () => {
    await setClock('2027-04-01T01:30:00Z');
    const lane = await a.client.json<Lane>(
      'POST',
      api('/lanes'),
      { name: 'nightly-report', project: 'nightly', kind: 'analysis', harmless: true, schedule: '0 2 * * *', steps: [step(1), step(2), step(3)] },
      201,
    );
    assert.equal(lane.nextSlotAt, '2027-04-01T02:00:00.000Z', 'placed by the injected clock');
    assert.equal((await server.services.instances.get(a.id, a.instanceId)).status, 'stopped');
    const from = fake.requests.length;
    await setClock('2027-04-01T02:00:01Z');
    // The server's own scheduler (no test code ticks it) creates the run for the slot.
    const fired = await waitFor('the scheduled run', async () => (await a.client.json<{ items: Run[] }>('GET', api(`/lane-runs?laneId=${lane.id}`))).items[0]);
    assert.deepEqual([fired.trigger, fired.slotAt], ['schedule', '2027-04-01T02:00:00.000Z']);
    const done = await ended(fired.id);
    assert.equal(done.status, 'succeeded', done.reason);
    assert.deepEqual(
      done.steps.map((s) => s.status),
      ['succeeded', 'succeeded', 'succeeded'],
    );
    assert.deepEqual(markers(from, 'LANE-STEP'), [1, 2, 3], 'the gateway received the steps in order');
    for (let i = 1; i < done.steps.length; i++)
      assert.ok((done.steps[i]?.startedAt ?? '') >= (done.steps[i - 1]?.finishedAt ?? 'z'), 'each step starts after the previous one ended');
    // The first step's task woke the tenant's stopped gateway through the gate.
    const trace = (await a.client.json<{ items: TraceEvent[] }>('GET', api(`/tasks/${done.steps[0]?.taskId}/trace`))).items.map((e) => `${e.step}.${e.kind}`);
    assert.ok(trace.includes('execute.wake') && trace.includes('execute.stream_done'), trace.join(', '));
    // Every output is the gateway's answer from the fake provider, stored as an artifact of the run.
    const prefix = (done.summaryKey ?? '').replace(/summary\.json$/, '');
    for (const [i, s] of done.steps.entries())
      assert.equal(await readFile(path.join(storeDir, `${prefix}step-${i}-${s.name}.txt`), 'utf8'), 'Hello from fake-model');
    const summary = await summaryOf(done);
    const usage = await usageOf(done);
    assert.ok(usage.calls >= 3, `model calls: ${usage.calls}`);
    assert.deepEqual([summary.tokens.input, summary.tokens.output, summary.modelCalls], [usage.input, usage.output, usage.calls]);
    assert.ok(Math.abs(summary.costUsd - usage.cost) < 1e-9, `${summary.costUsd} vs ${usage.cost}`);
    assert.deepEqual([summary.status, summary.jobCount, summary.run.trigger, summary.run.slotAt], ['succeeded', 3, 'schedule', '2027-04-01T02:00:00.000Z']);
    assert.equal(
      summary.steps.reduce((n, s) => n + s.inputTokens, 0),
      usage.input,
      "the steps' tokens add up to the run's",
    );
    assert.equal((await server.services.instances.get(a.id, a.instanceId)).status, 'running');
    // The gateway stays up for the next runs; once idle the reaper stops it (the last test).
    // The next slot is the next day's; it has not come.
    assert.equal((await a.client.json<Lane>('GET', api(`/lanes/${lane.id}`))).nextSlotAt, '2027-04-02T02:00:00.000Z');
    await a.client.json('PATCH', api(`/lanes/${lane.id}`), { enabled: false });
  });

  test('a failing second step halts the run with its reason; the third is skipped and never reaches the gateway', async () => {
    const lane = await a.client.json<Lane>(
      'POST',
      api('/lanes'),
      {
        name: 'breaks',
        project: 'nightly',
        kind: 'analysis',
        steps: [step(1, {}, 'BREAK-STEP'), step(2, { capability: 'nobody-has-this' }, 'BREAK-STEP'), step(3, {}, 'BREAK-STEP')],
      },
      201,
    );
    const from = fake.requests.length;
    const started = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const done = await ended(started.id);
    assert.equal(done.status, 'failed');
    assert.match(done.reason, /^step "s2" failed: task failed: /);
    assert.deepEqual(
      done.steps.map((s) => s.status),
      ['succeeded', 'failed', 'skipped'],
    );
    assert.match(done.steps[2]?.reason ?? '', /^skipped: step "s2" failed: task failed: /);
    assert.equal(done.steps[2]?.taskId, null, 'no task was created for the skipped step');
    assert.deepEqual(markers(from, 'BREAK-STEP'), [1]);
    const summary = await summaryOf(done);
    assert.deepEqual([summary.status, summary.jobCount, summary.reason], ['failed', 2, done.reason]);
    assert.equal(summary.tokens.input, (await usageOf(done)).input);
  });

  test('a step that needs approval parks until a member approves it through the API, then runs on the gateway', async () => {
    const lane = await a.client.json<Lane>(
      'POST',
      api('/lanes'),
      {
        name: 'gated',
        project: 'nightly',
        kind: 'analysis',
        steps: [step(1, {}, 'GATE-STEP'), step(2, { requiresApproval: true }, 'GATE-STEP'), step(3, {}, 'GATE-STEP')],
      },
      201,
    );
    const from = fake.requests.length;
    const started = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const parked = await waitFor(
      'parked',
      async () => {
        const r = await run(started.id);
        return r.status === 'waiting_approval' ? r : undefined;
      },
      600_000,
    );
    assert.deepEqual(
      parked.steps.map((s) => s.status),
      ['succeeded', 'waiting_approval', 'pending'],
    );
    assert.equal(parked.steps[1]?.taskId, null);
    assert.deepEqual(markers(from, 'GATE-STEP'), [1], 'nothing of the parked step reached the gateway');
    await a.client.json<Run>('POST', api(`/lane-runs/${started.id}/steps/1/approve`), { comment: 'go ahead' });
    const done = await ended(started.id);
    assert.equal(done.status, 'succeeded', done.reason);
    assert.deepEqual(markers(from, 'GATE-STEP'), [1, 2, 3]);
    assert.match(done.steps[1]?.decidedBy ?? '', /^token:/);
    const summary = await summaryOf(done);
    assert.equal(summary.steps[1]?.approvedBy, done.steps[1]?.decidedBy);
    assert.deepEqual([summary.tokens.input, summary.modelCalls], [(await usageOf(done)).input, (await usageOf(done)).calls]);
  });

  test('once idle after the runs, the reaper stops the gateway again (after a backup), as after any task', async () => {
    await waitFor('the idle reaper stops the gateway', async () => (await server.services.reaper.sweep()).includes(a.instanceId), 600_000);
    await waitFor('stopped', async () => (await server.services.instances.get(a.id, a.instanceId)).status === 'stopped', 180_000);
    await waitFor(
      'the idle backup',
      async () =>
        (await a.client.json<{ items: { reason: string }[] }>('GET', api(`/instances/${a.instanceId}/backups`))).items.some((x) => x.reason === 'idle'),
      60_000,
    );
  });
});
