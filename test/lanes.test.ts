/**
 * Lanes (docs/lanes.md) on a real server, PostgreSQL and DBOS. Each step runs through the real task path
 * (dispatch, queue, workflow, evaluate) with a STAND-IN executor in place of the gateway, which meters each
 * turn through the broker's real usage writer as the gateway's model calls would be. The scheduler is driven
 * by injected clocks set in 2027, so the server's own scheduler (on the real clock) never sees these slots.
 *
 * Covered: platform rules narrow tenant settings (400 naming the rule and field); a three-step lane fired by
 * its schedule runs in order and its summary.json equals the usage rows; a failing second step halts the run
 * and skips the third; an approval step parks until approved through the API (and a rejection halts);
 * a slot fires once with two schedulers on two connection pools; missed slots follow catch-up rules after a
 * restart; a read-only step cannot get a write tool granted; runs per day are enforced; the built-in doctor
 * lane fires hourly and reports instance health, budgets near their caps and expiring credentials as findings.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createDb } from '../src/db/pool.ts';
import { ingressSettings } from '../src/ingress/setup.ts';
import { runCheck } from '../src/lanes/checks.ts';
import { LaneScheduler } from '../src/lanes/scheduler.ts';
import { LaneService } from '../src/lanes/service.ts';
import { laneSummary } from '../src/lanes/summary.ts';
import type { Finding, Lane, Run } from '../src/lanes/types.ts';
import { createLogger } from '../src/observability/logger.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { ScriptedExecutor } from './helpers/task-executors.ts';

interface ErrorBody {
  code: string;
  message: string;
  details?: { rule?: string; issues?: { path: string; message: string }[] };
}

describe('lanes', { timeout: 300_000 }, async () => {
  const server = await startTestServer({ CLAWPLANE_TASK_QUEUE_POLL_MS: '50', CLAWPLANE_TASK_RETRY_BASE_MS: '50', CLAWPLANE_TASK_RETRY_MAX_MS: '50' });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  const log = createLogger('silent');
  const lanes = server.services.lanes;

  // The stand-in meters each turn as the broker would (one usage row per model call, attributed to the task).
  const exec = new ScriptedExecutor();
  const order: string[] = [];
  let tokens = 100;
  exec.on(/^step /, async (turn) => {
    order.push(turn.input);
    tokens += 11;
    server.services.broker.usage.record({
      tenantId: turn.tenantId,
      instanceId: null,
      sandboxToken: null,
      agent: turn.agent.name,
      taskId: turn.taskId,
      providerId: null,
      providerKind: null,
      model: 'fake-model',
      api: 'chat',
      inputTokens: tokens,
      outputTokens: 7,
      costUsd: tokens / 1e6,
      latencyMs: 3,
      status: 200,
      outcome: 'ok',
    });
    return { output: `result of ${turn.input}` };
  });
  server.services.taskRuntime.useExecutor(exec);
  await server.services.agents.create(a.id, { name: 'worker', capabilities: ['lane'] }, { actor: 'test' });

  // Injected clocks: every lane's first slot is computed from `now`, and the schedulers tick at it.
  let now = new Date('2027-01-10T00:30:00Z');
  lanes.now = () => now;
  const scheduler = new LaneScheduler({ db: server.db, lanes, log, clock: () => now });

  const run = (id: string) => a.client.json<Run>('GET', api(`/lane-runs/${id}`));
  const until = (id: string, statuses: string[]) =>
    waitFor(`run ${id} ${statuses.join('|')}`, async () => {
      const r = await run(id);
      return statuses.includes(r.status) ? r : undefined;
    });
  const refusal = async (res: Response) => ({ status: res.status, body: (await res.json()) as ErrorBody });
  const steps = (...names: string[]) => names.map((n) => ({ name: n, capability: 'lane', input: `step ${n}` }));
  const storeDir = ingressSettings(server.config).backupDir;
  const usageOf = async (run: Run) => {
    const ids = run.steps.flatMap((s) => (s.taskId ? [s.taskId] : []));
    const r = await server.db.query<{ i: string; o: string; c: string; n: string }>(
      'SELECT coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o, coalesce(sum(cost_usd), 0) AS c, count(*) AS n FROM llm_usage WHERE tenant_id = $1 AND task_id = ANY($2)',
      [a.id, ids],
    );
    const x = r.rows[0];
    return { input: Number(x?.i), output: Number(x?.o), cost: Number(x?.c), calls: Number(x?.n) };
  };

  test('platform rules: a tenant setting broader than the platform is refused with the rule and the field', async () => {
    // Browser work only with explicit enablement: the platform's defaults leave the browser lane kind out.
    assert.ok(!(await admin.json<{ allowedLaneKinds: string[] }>('GET', '/api/v1/platform/lane-settings')).allowedLaneKinds.includes('browser'));
    const browser = await refusal(await a.client.call('POST', api('/projects'), { name: 'clicky', laneKinds: ['browser'] }));
    assert.deepEqual([browser.status, browser.body.details?.rule], [400, 'platform.allowedLaneKinds']);
    await admin.json('PUT', '/api/v1/platform/lane-settings', {
      allowedRepositories: ['github.com/acme/*'],
      allowedHosts: ['*.acme.test', 'api.acme.test'],
      allowedLaneKinds: ['health', 'analysis', 'content', 'browser'],
      maxRunsPerDay: 50,
      minScheduleMinutes: 60,
    });
    const cases: [Record<string, unknown>, string, string][] = [
      [{ name: 'p1', repositories: ['github.com/acme/app', 'github.com/evil/app'] }, 'platform.allowedRepositories', 'body.repositories.1'],
      [{ name: 'p1', repositories: ['github.com/*'] }, 'platform.allowedRepositories', 'body.repositories.0'],
      [{ name: 'p1', hosts: ['evil.test'] }, 'platform.allowedHosts', 'body.hosts.0'],
      [{ name: 'p1', runsPerDay: 51 }, 'platform.maxRunsPerDay', 'body.runsPerDay'],
      [{ name: 'p1', laneKinds: ['custom'] }, 'platform.allowedLaneKinds', 'body.laneKinds.0'],
    ];
    for (const [body, rule, field] of cases) {
      const { status, body: e } = await refusal(await a.client.call('POST', api('/projects'), body));
      assert.equal(status, 400, JSON.stringify(body));
      assert.equal(e.details?.rule, rule, JSON.stringify(e));
      assert.ok(
        e.details?.issues?.some((i) => i.path === field),
        JSON.stringify(e),
      );
      assert.match(e.message, new RegExp(rule.replace('.', '\\.')));
    }
    // Narrower is fine, and so is a narrower pattern.
    await a.client.json(
      'POST',
      api('/projects'),
      {
        name: 'nightly',
        repositories: ['github.com/acme/app', 'github.com/acme/tools-*'],
        hosts: ['x.acme.test'],
        laneKinds: ['health', 'analysis', 'browser'],
        runsPerDay: 50,
      },
      201,
    );
    // A broader change later is refused too.
    const p = (await a.client.json<{ items: { id: string; name: string }[] }>('GET', api('/projects'))).items.find((x) => x.name === 'nightly');
    const patched = await refusal(await a.client.call('PATCH', api(`/projects/${p?.id}`), { hosts: ['*'] }));
    assert.deepEqual([patched.status, patched.body.details?.rule], [400, 'platform.allowedHosts']);

    const lane = (over: Record<string, unknown>) =>
      a.client.call('POST', api('/lanes'), { name: 'l1', project: 'nightly', kind: 'analysis', steps: steps('one'), ...over });
    const laneCases: [Record<string, unknown>, string, string][] = [
      [{ kind: 'content' }, 'project.laneKinds', 'body.kind'],
      [{ schedule: '*/30 * * * *' }, 'platform.minScheduleMinutes', 'body.schedule'],
      [{ schedule: '0 25 * * *' }, 'cron.syntax', 'body.schedule'],
      [
        {
          kind: 'browser',
          steps: [
            { name: 'click', capability: 'lane', input: 'x', requiresApproval: true },
            { name: 'buy', capability: 'lane', input: 'y' },
          ],
        },
        'browser.requiresApproval',
        'body.steps.1.requiresApproval',
      ],
    ];
    for (const [body, rule, field] of laneCases) {
      const { status, body: e } = await refusal(await lane(body));
      assert.equal(status, 400, JSON.stringify(body));
      assert.equal(e.details?.rule, rule, JSON.stringify(e));
      assert.ok(
        e.details?.issues?.some((i) => i.path === field),
        JSON.stringify(e),
      );
    }
    // Plain schema errors name their field too; unknown fields are refused.
    for (const [body, field] of [
      [{ steps: [] }, 'body.steps'],
      [{ catchUp: 'sometimes' }, 'body.catchUp'],
      [{ tenantId: a.id }, 'body'],
      [{ project: 'nope' }, 'body.project'],
    ] as const) {
      const { status, body: e } = await refusal(await lane(body));
      assert.equal(status, 400);
      assert.ok(
        e.details?.issues?.some((i) => i.path === field),
        `${field}: ${JSON.stringify(e)}`,
      );
    }
    const bad = await refusal(await a.client.call('PUT', api('/lane-settings'), { timeZone: 'Mars/Olympus' }));
    assert.deepEqual([bad.status, bad.body.details?.issues?.[0]?.path], [400, 'body.timeZone']);
    // The platform can also make read-only a hard rule.
    await admin.json('PUT', '/api/v1/platform/lane-settings', {
      allowedRepositories: ['github.com/acme/*'],
      allowedHosts: ['*.acme.test'],
      allowedLaneKinds: ['health', 'analysis', 'browser'],
      maxRunsPerDay: 50,
      minScheduleMinutes: 60,
      readOnlyOnly: true,
    });
    const ro = await refusal(await lane({ readOnly: false }));
    assert.deepEqual([ro.status, ro.body.details?.rule], [400, 'platform.readOnlyOnly']);
    await admin.json('PUT', '/api/v1/platform/lane-settings', {
      allowedRepositories: ['github.com/acme/*'],
      allowedHosts: ['*.acme.test'],
      allowedLaneKinds: ['health', 'analysis', 'browser'],
      maxRunsPerDay: 50,
      minScheduleMinutes: 60,
    });
    // A lane is off by default unless it is harmless.
    const off = await a.client.json<{ enabled: boolean; id: string }>(
      'POST',
      api('/lanes'),
      { name: 'off', project: 'nightly', kind: 'analysis', steps: steps('one') },
      201,
    );
    const on = await a.client.json<{ enabled: boolean }>(
      'POST',
      api('/lanes'),
      { name: 'on', project: 'nightly', kind: 'analysis', harmless: true, steps: steps('one') },
      201,
    );
    assert.deepEqual([off.enabled, on.enabled], [false, true]);
    const audit = await server.db.query<{ action: string }>(
      "SELECT action FROM audit_events WHERE tenant_id = $1 AND action IN ('project.create', 'project.update', 'lane.create') ORDER BY seq",
      [a.id],
    );
    assert.ok(audit.rows.filter((r) => r.action === 'lane.create').length >= 2);
  });

  test('a three-step lane fired by its schedule runs its steps in order; summary.json equals the usage rows', async () => {
    await a.client.json('PUT', api('/lane-settings'), { timeZone: 'Europe/Berlin' });
    const lane = await a.client.json<{ id: string; nextSlotAt: string; enabled: boolean }>(
      'POST',
      api('/lanes'),
      { name: 'nightly-analysis', project: 'nightly', kind: 'analysis', harmless: true, schedule: '0 2 * * *', steps: steps('first', 'second', 'third') },
      201,
    );
    // 02:00 in Berlin in January is 01:00 UTC.
    assert.equal(lane.nextSlotAt, '2027-01-10T01:00:00.000Z');
    now = new Date('2027-01-10T00:59:59Z');
    assert.equal((await scheduler.tick()).fired.length, 0, 'not due yet');
    now = new Date('2027-01-10T01:00:30Z');
    const t = await scheduler.tick();
    const mine = t.fired.filter((f) => f.laneId === lane.id);
    assert.deepEqual(
      mine.map((f) => [f.trigger, f.slotAt]),
      [['schedule', '2027-01-10T01:00:00.000Z']],
    );
    order.length = 0;
    const done = await until(mine[0]?.runId ?? '', ['succeeded', 'failed']);
    assert.equal(done.status, 'succeeded', done.reason);
    assert.deepEqual(order, ['step first', 'step second', 'step third']);
    assert.deepEqual(
      done.steps.map((s) => s.status),
      ['succeeded', 'succeeded', 'succeeded'],
    );
    for (let i = 1; i < done.steps.length; i++)
      assert.ok((done.steps[i]?.startedAt ?? '') >= (done.steps[i - 1]?.finishedAt ?? 'z'), 'each step starts after the previous one ended');
    // The summary in the object store, under artifacts/<tenant>/lanes/<lane>/<stamp>/summary.json.
    assert.match(done.summaryKey ?? '', new RegExp(`^artifacts/${a.id}/lanes/nightly-analysis/\\d{8}-\\d{6}-\\d{3}z/summary\\.json$`));
    const summary = laneSummary.parse(JSON.parse(await readFile(path.join(storeDir, done.summaryKey ?? ''), 'utf8')));
    const usage = await usageOf(done);
    assert.equal(usage.calls, 3);
    assert.deepEqual([summary.tokens.input, summary.tokens.output, summary.modelCalls], [usage.input, usage.output, usage.calls]);
    assert.ok(Math.abs(summary.costUsd - usage.cost) < 1e-9, `${summary.costUsd} vs ${usage.cost}`);
    assert.deepEqual(
      [summary.schemaVersion, summary.status, summary.jobCount, summary.run.trigger, summary.run.slotAt],
      [1, 'succeeded', 3, 'schedule', '2027-01-10T01:00:00.000Z'],
    );
    assert.deepEqual([done.inputTokens, done.modelCalls], [usage.input, 3]);
    // Each step's output is an artifact; the usage export counts their bytes and the summary's.
    const outputs = ['first', 'second', 'third'].map((n) => Buffer.byteLength(`result of step ${n}`));
    assert.equal(
      summary.artifactBytes,
      outputs.reduce((x, y) => x + y, 0),
    );
    assert.equal(await readFile(path.join(storeDir, (done.summaryKey ?? '').replace('summary.json', 'step-1-second.txt')), 'utf8'), 'result of step second');
    const day = new Date().toISOString().slice(0, 10);
    const exported = await a.client.json<{ items: { artifactBytes: number }[] }>('GET', api(`/usage/daily?from=${day}&to=${day}`));
    const stored = await server.db.query<{ n: string }>('SELECT sum(size_bytes) AS n FROM lane_artifacts WHERE tenant_id = $1', [a.id]);
    assert.equal(exported.items[0]?.artifactBytes, Number(stored.rows[0]?.n));
    // The next slot is tomorrow 02:00 Berlin; a second tick at the same time fires nothing.
    assert.equal((await a.client.json<{ nextSlotAt: string }>('GET', api(`/lanes/${lane.id}`))).nextSlotAt, '2027-01-11T01:00:00.000Z');
    assert.equal((await scheduler.tick()).fired.length, 0);
    const audit = await server.db.query<{ action: string }>('SELECT action FROM audit_events WHERE target = $1 ORDER BY seq', [`lane-run:${done.id}`]);
    assert.deepEqual(
      audit.rows.map((r) => r.action),
      ['lane.run', 'lane.run.finish'],
    );
  });

  test('a failing second step halts the run with its reason; the third is skipped', async () => {
    const lane = await a.client.json<{ id: string }>(
      'POST',
      api('/lanes'),
      {
        name: 'fails',
        project: 'nightly',
        kind: 'analysis',
        steps: [...steps('first'), { name: 'broken', capability: 'nobody-has-this', input: 'step broken' }, ...steps('third')],
      },
      201,
    );
    order.length = 0;
    const started = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const done = await until(started.id, ['succeeded', 'failed']);
    assert.equal(done.status, 'failed');
    assert.match(done.reason, /^step "broken" failed: task failed: /);
    assert.deepEqual(
      done.steps.map((s) => s.status),
      ['succeeded', 'failed', 'skipped'],
    );
    assert.match(done.steps[2]?.reason ?? '', /^skipped: step "broken" failed/);
    assert.equal(done.steps[2]?.taskId, null, 'no task was created for the skipped step');
    assert.deepEqual(order, ['step first']);
    const summary = laneSummary.parse(JSON.parse(await readFile(path.join(storeDir, done.summaryKey ?? ''), 'utf8')));
    assert.deepEqual([summary.status, summary.jobCount, summary.steps.map((s) => s.status)], ['failed', 2, ['succeeded', 'failed', 'skipped']]);
    assert.equal(summary.tokens.input, (await usageOf(done)).input);
  });

  test('a step that needs approval parks until approved through the API; a rejection halts the run', async () => {
    const lane = await a.client.json<{ id: string }>(
      'POST',
      api('/lanes'),
      {
        name: 'gated',
        project: 'nightly',
        kind: 'analysis',
        steps: [...steps('look'), { name: 'act', capability: 'lane', input: 'step act', requiresApproval: true }, ...steps('report')],
      },
      201,
    );
    order.length = 0;
    const r1 = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const parked = await until(r1.id, ['waiting_approval']);
    assert.deepEqual(
      parked.steps.map((s) => s.status),
      ['succeeded', 'waiting_approval', 'pending'],
    );
    assert.equal(parked.steps[1]?.taskId, null, 'nothing runs before the approval');
    assert.deepEqual(order, ['step look']);
    // Approving a step that is not parked is a 409; an unknown step a 404.
    assert.equal((await a.client.call('POST', api(`/lane-runs/${r1.id}/steps/2/approve`), {})).status, 409);
    assert.equal((await a.client.call('POST', api(`/lane-runs/${r1.id}/steps/7/approve`), {})).status, 404);
    const approved = await a.client.json<Run>('POST', api(`/lane-runs/${r1.id}/steps/1/approve`), { comment: 'go' });
    assert.match(approved.steps[1]?.decidedBy ?? '', /^token:/);
    assert.equal((await a.client.call('POST', api(`/lane-runs/${r1.id}/steps/1/approve`), {})).status, 409, 'decided once');
    const done = await until(r1.id, ['succeeded', 'failed']);
    assert.equal(done.status, 'succeeded', done.reason);
    assert.deepEqual(order, ['step look', 'step act', 'step report']);
    const summary = laneSummary.parse(JSON.parse(await readFile(path.join(storeDir, done.summaryKey ?? ''), 'utf8')));
    assert.equal(summary.steps[1]?.approvedBy, approved.steps[1]?.decidedBy);

    order.length = 0;
    const r2 = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    await until(r2.id, ['waiting_approval']);
    await a.client.json('POST', api(`/lane-runs/${r2.id}/steps/1/reject`), { comment: 'not today' });
    const rejected = await until(r2.id, ['succeeded', 'failed']);
    assert.equal(rejected.status, 'failed');
    assert.match(rejected.reason, /step "act" was not approved: rejected by token:.*: not today/);
    assert.deepEqual(
      rejected.steps.map((s) => s.status),
      ['succeeded', 'failed', 'skipped'],
    );
    assert.deepEqual(order, ['step look']);
    const audit = await server.db.query<{ action: string }>(
      "SELECT action FROM audit_events WHERE target = ANY($1) AND action LIKE 'lane.step.%' ORDER BY seq",
      [[`lane-run:${r1.id}`, `lane-run:${r2.id}`]],
    );
    assert.deepEqual(
      audit.rows.map((r) => r.action),
      ['lane.step.approve', 'lane.step.reject'],
    );

    // A parked run blocks deleting its lane until it ends; cancelling ends it, and nothing runs afterwards.
    order.length = 0;
    const r3 = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    await until(r3.id, ['waiting_approval']);
    assert.equal((await a.client.call('DELETE', api(`/lanes/${lane.id}`))).status, 409);
    const cancelled = await a.client.json<Run>('POST', api(`/lane-runs/${r3.id}/cancel`), { reason: 'changed my mind' });
    assert.equal(cancelled.status, 'cancelled');
    assert.match(cancelled.reason, /^cancelled by token:.*: changed my mind$/);
    assert.deepEqual(
      cancelled.steps.map((s) => s.status),
      ['succeeded', 'skipped', 'skipped'],
    );
    assert.equal((await a.client.call('POST', api(`/lane-runs/${r3.id}/steps/1/approve`), {})).status, 409, 'a cancelled step cannot be approved');
    assert.equal((await a.client.call('POST', api(`/lane-runs/${r1.id}/cancel`), {})).status, 409, 'an ended run cannot be cancelled');
    assert.equal((await a.client.json<{ removed: boolean }>('DELETE', api(`/lanes/${lane.id}`))).removed, true);
  });

  test('a slot fires once with two schedulers (two replicas on two connection pools)', async () => {
    const other = createDb(server.database.url, log);
    try {
      const replica2 = new LaneScheduler({ db: other, lanes: new LaneService(other), log, clock: () => now });
      now = new Date('2027-01-10T03:00:00Z');
      const lane = await a.client.json<{ id: string; nextSlotAt: string }>(
        'POST',
        api('/lanes'),
        { name: 'hourly', project: 'nightly', kind: 'health', harmless: true, schedule: '0 * * * *', steps: steps('ping') },
        201,
      );
      assert.equal(lane.nextSlotAt, '2027-01-10T04:00:00.000Z');
      let fired = 0;
      for (const at of ['2027-01-10T04:00:01Z', '2027-01-10T04:00:02Z', '2027-01-10T05:00:00Z']) {
        now = new Date(at);
        // Both replicas tick twice at once; each slot must still fire exactly once.
        const ticks = await Promise.all([scheduler.tick(), replica2.tick(), scheduler.tick(), replica2.tick()]);
        fired += ticks.flatMap((x) => x.fired).filter((f) => f.laneId === lane.id).length;
      }
      const runs = await server.db.query<{ slot_at: Date }>('SELECT slot_at FROM lane_runs WHERE lane_id = $1 ORDER BY slot_at', [lane.id]);
      assert.deepEqual(
        runs.rows.map((r) => r.slot_at.toISOString()),
        ['2027-01-10T04:00:00.000Z', '2027-01-10T05:00:00.000Z'],
      );
      assert.equal(fired, 2);
      for (const r of await lanes.listRuns(a.id, { laneId: lane.id, limit: 10 }))
        assert.equal((await until(r.id, ['succeeded', 'failed'])).status, 'succeeded');
      await a.client.json('PATCH', api(`/lanes/${lane.id}`), { enabled: false });
    } finally {
      await other.close();
    }
  });

  test('missed slots after a restart: "run-once" runs the latest once, "skip" runs none', async () => {
    now = new Date('2027-02-01T08:10:00Z');
    const once = await a.client.json<{ id: string; nextSlotAt: string }>(
      'POST',
      api('/lanes'),
      { name: 'catch-once', project: 'nightly', kind: 'health', harmless: true, schedule: '0 * * * *', catchUp: 'run-once', steps: steps('catch') },
      201,
    );
    const skip = await a.client.json<{ id: string }>(
      'POST',
      api('/lanes'),
      { name: 'catch-skip', project: 'nightly', kind: 'health', harmless: true, schedule: '0 * * * *', catchUp: 'skip', steps: steps('skip') },
      201,
    );
    assert.equal(once.nextSlotAt, '2027-02-01T09:00:00.000Z');
    // The control plane was down from before 09:00 until 13:20: slots 09, 10, 11, 12 and 13 were missed.
    now = new Date('2027-02-01T13:20:00Z');
    const restarted = new LaneScheduler({ db: server.db, lanes, log, clock: () => now });
    const t = await restarted.tick();
    const onceRuns = await lanes.listRuns(a.id, { laneId: once.id, limit: 10 });
    assert.deepEqual(
      onceRuns.map((r) => [r.trigger, r.slotAt]),
      [['catch-up', '2027-02-01T13:00:00.000Z']],
    );
    assert.deepEqual(await lanes.listRuns(a.id, { laneId: skip.id, limit: 10 }), []);
    assert.deepEqual(
      t.skipped
        .filter((s) => s.laneId === once.id || s.laneId === skip.id)
        .map((s) => s.slots)
        .sort(),
      [4, 5],
    );
    for (const id of [once.id, skip.id])
      assert.equal((await a.client.json<{ nextSlotAt: string }>('GET', api(`/lanes/${id}`))).nextSlotAt, '2027-02-01T14:00:00.000Z');
    const audit = await server.db.query<{ detail: { missed: number; catchUp: string } }>(
      "SELECT detail FROM audit_events WHERE action = 'lane.slots_missed' AND target = ANY($1)",
      [[`lane:${once.id}`, `lane:${skip.id}`]],
    );
    assert.deepEqual(audit.rows.map((r) => [r.detail.catchUp, r.detail.missed]).sort(), [
      ['run-once', 5],
      ['skip', 5],
    ]);
    assert.equal((await restarted.tick()).fired.filter((f) => f.laneId === once.id || f.laneId === skip.id).length, 0, 'nothing fires twice');
    assert.equal((await until(onceRuns[0]?.id ?? '', ['succeeded', 'failed'])).status, 'succeeded');
    for (const id of [once.id, skip.id]) await a.client.json('PATCH', api(`/lanes/${id}`), { enabled: false });
  });

  test('a read-only lane step cannot get a write tool; the same step in a writing lane can', async () => {
    const caller = { id: 'lane-probe', tenantId: a.id, instanceId: 'lane-probe', sandboxId: 'lane-probe' };
    const seen: Record<string, string[]> = {};
    exec.on(/^probe /, async (turn) => {
      const ask = async (tool: string, context: Record<string, string>) =>
        (await server.services.grants.request(caller, { tool, agent: 'main', context })).outcome;
      seen[turn.input] = [await ask('write', { taskId: turn.taskId }), await ask('write', {}), await ask('read', { taskId: turn.taskId })];
      return { output: 'probed' };
    });
    for (const [name, readOnly] of [
      ['probe-ro', true],
      ['probe-rw', false],
    ] as const) {
      const lane = await a.client.json<{ id: string }>(
        'POST',
        api('/lanes'),
        { name, project: 'nightly', kind: 'analysis', readOnly, steps: [{ name: 'probe', capability: 'lane', input: `probe ${name}` }] },
        201,
      );
      const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
      assert.equal((await until(r.id, ['succeeded', 'failed'])).status, 'succeeded');
    }
    assert.deepEqual(seen['probe probe-ro'], ['deny', 'deny', 'granted']);
    assert.deepEqual(seen['probe probe-rw'], ['granted', 'granted', 'granted']);
    const denied = await server.db.query<{ detail: { policyIds: string[] } }>(
      "SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'tool.grant.deny' ORDER BY seq DESC LIMIT 1",
      [a.id],
    );
    assert.deepEqual(denied.rows[0]?.detail.policyIds, ['lanes/read-only']);
    // With no lane step running, the tenant's policy decides alone again.
    assert.equal((await server.services.grants.request(caller, { tool: 'write', agent: 'main', context: {} })).outcome, 'granted');
  });

  test("a project's runs per day are enforced: a manual run over it is a 429", async () => {
    await a.client.json('POST', api('/projects'), { name: 'tiny', laneKinds: ['analysis'], runsPerDay: 1 }, 201);
    const lane = await a.client.json<{ id: string }>(
      'POST',
      api('/lanes'),
      { name: 'tiny-lane', project: 'tiny', kind: 'analysis', steps: steps('small') },
      201,
    );
    const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const refused = await a.client.call('POST', api(`/lanes/${lane.id}/runs`));
    assert.equal(refused.status, 429, await refused.clone().text());
    await until(r.id, ['succeeded', 'failed']);
    const listed = await a.client.json<{ items: Run[] }>('GET', api(`/lane-runs?laneId=${lane.id}`));
    assert.equal(listed.items.length, 1);
    // A lane with a run in progress cannot be deleted; an ended one can.
    assert.equal((await a.client.json<{ removed: boolean }>('DELETE', api(`/lanes/${lane.id}`))).removed, true);
  });

  test('the doctor lane: enabled through the API, fired hourly, it reports instance health, budgets near their caps and expiring credentials, computed without a task', async () => {
    const bApi = (p: string) => `/api/v1/tenants/${b.slug}${p}`;
    // Only the doctor lane is due in this test (tenant A's lanes are out of the way).
    await server.db.query('UPDATE lanes SET enabled = false WHERE tenant_id = $1', [a.id]);
    // A check step names no agent, capability or input.
    const bad = await refusal(
      await b.client.call('POST', bApi('/lanes'), { name: 'x', project: 'fixture', kind: 'analysis', steps: [{ name: 'c', check: 'budgets', input: 'x' }] }),
    );
    assert.equal(bad.status, 400);
    assert.ok(
      bad.body.details?.issues?.some((i) => i.path === 'body.steps.0.input'),
      JSON.stringify(bad.body),
    );

    now = new Date('2027-01-12T09:10:00Z');
    const lane = await b.client.json<Lane>('PUT', bApi('/doctor-lane'), { enabled: true });
    assert.deepEqual(
      [lane.name, lane.project, lane.kind, lane.schedule, lane.harmless, lane.readOnly, lane.enabled, lane.nextSlotAt],
      ['doctor', 'doctor', 'health', '0 * * * *', true, true, true, '2027-01-12T10:00:00.000Z'],
    );
    assert.deepEqual(
      lane.steps.map((st) => st.check),
      ['instance-health', 'budgets', 'credentials'],
    );
    assert.equal((await b.client.json<Lane>('PUT', bApi('/doctor-lane'), { enabled: true })).id, lane.id, 'enabling again changes nothing');

    // What the doctor should find: an instance in error, a tenant cap at 85 % and an agent cap used up, a
    // credential expiring in three days and one already expired.
    // (Backing off after failures, as the reconciler leaves it: it does not try to start it meanwhile.)
    await server.db.query(
      `UPDATE instances SET status = 'error', desired_state = 'running', status_reason = 'the sandbox exited with code 1', failures = 3, next_attempt_at = now() + interval '1 day' WHERE tenant_id = $1`,
      [b.id],
    );
    await b.client.json('PUT', bApi('/limits'), {
      items: [
        { agent: '', dailyTokens: 1000, dailyCostUsd: null, requestsPerMinute: null, maxCallsPerTask: null },
        { agent: 'fixture', dailyTokens: 100, dailyCostUsd: null, requestsPerMinute: null, maxCallsPerTask: null },
      ],
    });
    server.services.broker.usage.record({
      tenantId: b.id,
      instanceId: null,
      sandboxToken: null,
      agent: 'fixture',
      taskId: null,
      providerId: null,
      providerKind: null,
      model: 'fake-model',
      api: 'chat',
      inputTokens: 800,
      outputTokens: 50,
      costUsd: 0.001,
      latencyMs: 3,
      status: 200,
      outcome: 'ok',
    });
    await b.client.json(
      'POST',
      bApi('/credentials'),
      { name: 'soon', type: 'secret', value: 'short-lived-secret-value', expiresAt: new Date(Date.now() + 3 * 86_400_000).toISOString() },
      201,
    );
    await b.client.json(
      'POST',
      bApi('/credentials'),
      { name: 'gone', type: 'secret', value: 'expired-secret-value', expiresAt: new Date(Date.now() - 3_600_000).toISOString() },
      201,
    );

    now = new Date('2027-01-12T10:00:20Z');
    const fired = (await scheduler.tick()).fired;
    assert.deepEqual(
      fired.map((f) => [f.laneId, f.trigger, f.slotAt]),
      [[lane.id, 'schedule', '2027-01-12T10:00:00.000Z']],
    );
    const done = await waitFor('the doctor run', async () => {
      const r = await b.client.json<Run>('GET', bApi(`/lane-runs/${fired[0]?.runId ?? ''}`));
      return r.finishedAt ? r : undefined;
    });
    assert.equal(done.status, 'succeeded', done.reason);
    assert.deepEqual(
      done.steps.map((st) => [st.name, st.status, st.taskId, st.modelCalls]),
      [
        ['instance-health', 'succeeded', null, 0],
        ['budgets', 'succeeded', null, 0],
        ['credentials', 'succeeded', null, 0],
      ],
    );
    const found = (i: number) => (done.steps[i]?.findings ?? []).map((f) => [f.severity, f.subject, f.message]);
    assert.deepEqual(found(0), [['fail', 'instance fixture', 'in error: the sandbox exited with code 1 (3 failed attempt(s))']]);
    assert.deepEqual(found(1), [
      ['warn', 'tenant cap', 'near its cap: 850 of 1000 daily tokens (85%)'],
      ['fail', 'cap of agent fixture', 'used up: 850 of 100 daily tokens; model calls are refused until 00:00 UTC'],
    ]);
    assert.deepEqual(
      found(2).map(([sev, subject]) => [sev, subject]),
      [
        ['fail', 'credential gone'],
        ['warn', 'credential soon'],
      ],
    );
    assert.match(found(2)[1]?.[2] ?? '', /^expires in 7\d h \(/);
    assert.deepEqual(
      done.steps.map((st) => st.reason),
      ['found 1 failing', 'found 1 failing and 1 warning', 'found 1 failing and 1 warning'],
    );
    // summary.json carries the findings; the run started no task and made no model call.
    const summary = laneSummary.parse(JSON.parse(await readFile(path.join(storeDir, done.summaryKey ?? ''), 'utf8')));
    assert.deepEqual([summary.findings, summary.jobCount, summary.modelCalls], [{ ok: 0, warn: 2, fail: 3 }, 0, 0]);
    assert.deepEqual(
      summary.steps.map((st) => [st.check, st.findings]),
      done.steps.map((st, i) => [lane.steps[i]?.check, st.findings]),
    );
    const stored = JSON.parse(
      await readFile(path.join(storeDir, (done.summaryKey ?? '').replace('summary.json', 'step-2-credentials.json')), 'utf8'),
    ) as Finding[];
    assert.deepEqual(stored, done.steps[2]?.findings);
    const tasks = await server.db.query('SELECT 1 FROM tasks WHERE tenant_id = $1 AND created_by LIKE $2', [b.id, `lane-run:${done.id}%`]);
    assert.equal(tasks.rowCount, 0);
    const audit = await server.db.query<{ detail: { findings?: unknown } }>(
      "SELECT detail FROM audit_events WHERE target = $1 AND action = 'lane.run.finish'",
      [`lane-run:${done.id}`],
    );
    assert.deepEqual(audit.rows[0]?.detail.findings, { ok: 0, warn: 2, fail: 3 });
    assert.equal((await b.client.json<Lane>('GET', bApi(`/lanes/${lane.id}`))).nextSlotAt, '2027-01-12T11:00:00.000Z', 'hourly');

    // Other instance states, checked directly: running but not ready fails; asleep is fine and not woken.
    await server.db.query(`UPDATE instances SET status = 'running', health = $2, health_checked_at = now() WHERE tenant_id = $1`, [
      b.id,
      JSON.stringify({ ready: false, executors: [{ id: 'e0', state: 'backoff', pid: null, restarts: 2, startedAt: null, readyMs: null, lastExit: null }] }),
    ]);
    assert.deepEqual(
      (await runCheck(server.db, b.id, 'instance-health', new Date())).map((f) => [f.severity, f.message]),
      [['fail', 'running but not ready: 1 of 1 executor(s) not ready (e0 backoff)']],
    );
    await server.db.query(`UPDATE instances SET status = 'stopped', desired_state = 'stopped' WHERE tenant_id = $1`, [b.id]);
    assert.deepEqual(
      (await runCheck(server.db, b.id, 'instance-health', new Date())).map((f) => f.severity),
      ['ok'],
    );

    // Disabling keeps the lane; a tenant's own lane named "doctor" is not taken over.
    assert.equal((await b.client.json<Lane>('PUT', bApi('/doctor-lane'), { enabled: false })).enabled, false);
    await a.client.json('POST', api('/lanes'), { name: 'doctor', project: 'nightly', kind: 'analysis', steps: steps('mine') }, 201);
    const taken = await refusal(await a.client.call('PUT', api('/doctor-lane'), { enabled: true }));
    assert.deepEqual([taken.status, taken.body.code], [409, 'lane_name_taken']);
  });

  test('every change and every run is audited', async () => {
    const p = await a.client.json<{ id: string }>('POST', api('/projects'), { name: 'short-lived', laneKinds: ['analysis'] }, 201);
    await a.client.json('PATCH', api(`/projects/${p.id}`), { runsPerDay: 2 });
    await a.client.json('DELETE', api(`/projects/${p.id}`));
    const r = await server.db.query<{ action: string }>(
      "SELECT DISTINCT action FROM audit_events WHERE (tenant_id = $1 AND (action LIKE 'lane%' OR action LIKE 'project.%')) OR action = 'lanes.platform_settings'",
      [a.id],
    );
    // Every action src/lanes writes but the approval expiry (its TTL is the platform's, hours by default).
    const want = [
      'lane.create',
      'lane.delete',
      'lane.run',
      'lane.run.cancel',
      'lane.run.finish',
      'lane.slots_missed',
      'lane.step.approve',
      'lane.step.reject',
      'lane.update',
      'lanes.platform_settings',
      'lanes.time_zone',
      'project.create',
      'project.delete',
      'project.update',
    ];
    assert.deepEqual(r.rows.map((x) => x.action).sort(), want);
  });
});
