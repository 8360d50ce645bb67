/**
 * Apply, check, roll back on a real OpenClaw gateway (docs/adr/0013-gateway-config-versions.md). A change
 * OpenClaw reloads in place (models) is written into the running sandbox and the gateway
 * keeps its process; a change that breaks the gateway (memory-core settings the plugin's schema refuses) is
 * refused by it, failed, and the gateway goes back to the last known good version by itself; chat works again,
 * and the history shows both versions with the reason. A change that needs a restart still restarts. The caps
 * refuse a faster heartbeat at save and a cron run that comes too soon at the broker, with the cap's name.
 * One gateway, the shared fixture.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Instance } from '../src/instances/instances.ts';
import { gatewayRpc } from '../src/sandbox/gateway-rpc.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

interface Version {
  number: number;
  status: string;
  statusReason: string;
  reason: string;
  author: string;
  kinds: string[];
  diff: { path: string; op: string }[];
  appliedHow: string | null;
}

describe('gateway configuration on a real gateway', { timeout: 900_000 }, async () => {
  const f = await startGatewayFixture({ file: import.meta.url });
  const { a, admin, server } = f;
  await admin.json('PATCH', `/api/v1/tenants/${a.slug}`, { quotas: { maxInstances: 2 } });
  const base = `/api/v1/tenants/${a.slug}/gateway-config`;
  const chat = async (text: string, session = 'governance') => {
    const res = await a.client.call('POST', `/api/v1/tenants/${a.slug}/chat/completions`, {
      model: 'agent/main',
      messages: [{ role: 'user', content: text }],
      session,
    });
    const body = await res.text();
    return { status: res.status, body };
  };
  let inst = '';
  /** The gateway process of executor e0, as the sandbox's supervisor reports it. */
  const gatewayProcess = async () => {
    const e0 = (await f.get(a, inst)).health?.executors.find((e) => e.id === 'e0');
    assert.ok(e0?.pid, 'the supervisor reports the gateway process');
    return { pid: e0.pid, startedAt: e0.startedAt, restarts: e0.restarts };
  };
  let firstProcess: Awaited<ReturnType<typeof gatewayProcess>> | undefined;
  /** Tool names the gateway offered the model in the last chat turn (what the fake provider received). */
  const offeredTools = () => ((f.fake.requests.at(-1)?.body['tools'] ?? []) as { function?: { name?: string } }[]).map((t) => t.function?.name ?? '');
  /** One operator call to the running gateway over its protocol (what Clawplane itself uses for reloads). */
  const rpc = async (method: string, params: unknown) => {
    const row = await server.services.instances.byId(inst);
    assert.ok(row?.sandbox);
    return gatewayRpc(await server.services.sandboxes.connect(row.sandbox), await server.services.instances.gatewayToken(inst), method, params);
  };

  test('the first start records version 1 and makes it the last known good; chat works', async () => {
    inst = (await a.client.json<Instance>('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'main' }, 202)).id;
    await f.waitStatus(a, inst, 'running');
    const c = await chat('hello');
    assert.equal(c.status, 200, c.body);
    assert.match(c.body, /Hello from fake-model/);
    const v1 = await a.client.json<Version>('GET', `${base}/versions/1`);
    assert.deepEqual([v1.status, v1.author, v1.reason, v1.appliedHow], ['good', 'system', 'first configuration', 'restart']);
    firstProcess = await gatewayProcess();
    assert.ok(offeredTools().includes('memory_store'), offeredTools().join(','));
  });

  test('a models change OpenClaw reloads in place is applied without a restart: same gateway process, version good and recorded as hot', async () => {
    const v2 = await a.client.json<Version>(
      'POST',
      `${base}/versions`,
      { settings: { models: ['fake-model', 'fake-model-large'] }, reason: 'offer the large model' },
      201,
    );
    assert.deepEqual([v2.number, v2.status, v2.kinds], [2, 'approved', ['models']]);
    const now = await f.waitStatus(a, inst, 'running', /configuration version 2 applied without a restart/);
    assert.equal(now.status, 'running');
    assert.deepEqual(await gatewayProcess(), firstProcess, 'the gateway kept its process');
    const v = await a.client.json<Version>('GET', `${base}/versions/2`);
    assert.deepEqual([v.status, v.appliedHow], ['good', 'hot']);
    // The running gateway has it: its applied configuration offers the new model.
    const got = (await rpc('config.get', {})) as {
      configRevisionHash: string;
      appliedConfigHash: string;
      config: { models: { providers: { clawplane: { models: { id: string }[] } } } };
    };
    assert.equal(got.appliedConfigHash, got.configRevisionHash);
    assert.deepEqual(
      got.config.models.providers.clawplane.models.map((m) => m.id),
      ['fake-model', 'fake-model-large'],
    );
    const c = await chat('still there?');
    assert.equal(c.status, 200, c.body);
  });

  test('a change that breaks the gateway is rolled back to the last known good version by itself; chat works again', async () => {
    const v3 = await a.client.json<Version>(
      'POST',
      `${base}/versions`,
      { settings: { models: ['fake-model', 'fake-model-large'], memory: { notASetting: true } }, reason: 'tune memory search' },
      201,
    );
    assert.equal(v3.number, 3);
    assert.equal(v3.status, 'approved');
    assert.deepEqual(v3.kinds, ['plugins']);
    assert.deepEqual(
      v3.diff.map((d) => `${d.op} ${d.path}`),
      ['added plugins.entries.memory-core.config.notASetting'],
    );
    // Plugin settings are checked when the plugin loads: restarted onto it, failed its check, and back on version 2.
    const back = await f.waitStatus(a, inst, 'running', /rolled back to configuration version 2 after version 3 failed/, 300_000);
    assert.match(back.statusReason, /crashed \d+ times before becoming ready|not ready within/);
    const c = await chat('are you back?');
    assert.equal(c.status, 200, c.body);
    assert.match(c.body, /Hello from fake-model/);
    // The history shows both, with the reason.
    const page = await a.client.json<{ items: Version[] }>('GET', `${base}/versions`);
    assert.deepEqual(
      page.items.map((v) => [v.number, v.status]),
      [
        [3, 'failed'],
        [2, 'good'],
        [1, 'good'],
      ],
    );
    assert.match(page.items[0]?.statusReason ?? '', new RegExp(`failed its check on instance ${inst}: .*; rolled back to version 2`));
    assert.equal(page.items[0]?.reason, 'tune memory search');
    const got = (await rpc('config.get', {})) as { valid: boolean; configRevisionHash: string; appliedConfigHash: string };
    assert.ok(got.valid && got.appliedConfigHash === got.configRevisionHash, JSON.stringify(got).slice(0, 300));
    // The tenant's admins are told through the audit log, with the reason.
    const audit = await a.client.json<{ items: { action: string; decision: string; detail: { failed?: number; to?: number; reason?: string } }[] }>(
      'GET',
      `/api/v1/tenants/${a.slug}/audit?action=gateway_config.rolled_back`,
    );
    const row = audit.items.find((e) => e.action === 'gateway_config.rolled_back');
    assert.ok(row, JSON.stringify(audit.items.map((e) => e.action)));
    assert.deepEqual([row.decision, row.detail.failed, row.detail.to], ['failure', 3, 2]);
    // The gateway's own config is version 1's again (what runs is what the history says).
    const running = await server.services.instances.byId(inst);
    assert.equal((await server.db.query<{ config_version: number }>('SELECT config_version FROM instances WHERE id = $1', [inst])).rows[0]?.config_version, 2);
    assert.equal(running?.status, 'running');
    // The canary provider key is nowhere in the history.
    assert.ok(!JSON.stringify(page).includes(f.canary));
  });

  test('a change OpenClaw cannot reload in place still restarts the gateway, and the version records it', async () => {
    // What this gateway runs is not known (as for one started by a release before versions): only a restart is safe.
    await server.db.query('UPDATE instances SET config_version = NULL WHERE id = $1', [inst]);
    const before = await gatewayProcess();
    const v4 = await a.client.json<Version>('POST', `${base}/versions`, { settings: { models: ['fake-model'] }, reason: 'only the small model' }, 201);
    assert.equal(v4.number, 4);
    await waitFor(
      'the restart onto version 4',
      async () => {
        const v = await a.client.json<Version>('GET', `${base}/versions/4`);
        return v.status === 'good' ? v : undefined;
      },
      180_000,
    );
    const v = await a.client.json<Version>('GET', `${base}/versions/4`);
    assert.equal(v.appliedHow, 'restart');
    const after = await gatewayProcess();
    // Pids are of the sandbox's own pid namespace (a new sandbox may reuse one): the start time tells.
    assert.notEqual(after.startedAt, before.startedAt, 'a new gateway process');
    const c = await chat('and now?');
    assert.equal(c.status, 200, c.body);
  });

  test("caps: a faster heartbeat is refused at save, and a cron run sooner than the cap is refused by the broker, each with the cap's name", async () => {
    await a.client.json('PUT', `${base}/rules`, { review: [], heartbeatMinMinutes: 60, cronMinMinutes: 60 });
    // The caps are a configuration version of their own, applied to the running gateway (a reload of its cron
    // settings): the job is added once that version is applied, as an operator watching the console would.
    const capsVersion = (await a.client.json<{ items: Version[] }>('GET', `${base}/versions`)).items[0];
    assert.equal(capsVersion?.reason, 'caps changed');
    await waitFor(
      'the caps version applied',
      async () => {
        const v = await a.client.json<Version>('GET', `${base}/versions/${capsVersion.number}`);
        assert.notEqual(v.status, 'failed', v.statusReason);
        return v.status === 'good' || undefined;
      },
      180_000,
    );
    await f.waitStatus(a, inst, 'running');
    const save = await a.client.call('POST', `${base}/versions`, { settings: { heartbeatEvery: '5m' }, reason: 'check often' });
    const saved = await save.text();
    assert.equal(save.status, 400, saved);
    assert.match(saved, /heartbeat_min_minutes \(60 minutes\)/);
    // A cron job on the real gateway (through its own protocol, as an operator would add one), run twice.
    const job = (await rpc('cron.add', {
      name: 'digest',
      schedule: { kind: 'every', everyMs: 3_600_000 },
      sessionTarget: 'isolated',
      wakeMode: 'now',
      payload: { kind: 'agentTurn', message: 'Summarise the day' },
    })) as { id: string };
    assert.ok(job.id, JSON.stringify(job));
    const cronCalls = () => f.fake.requests.filter((r) => JSON.stringify(r.body['messages'] ?? []).includes(`[cron:${job.id} `));
    // A forced run OpenClaw queues behind other cron work may be skipped; the same prompt is the same run to the
    // broker's cap, so asking again is safe until one reaches the provider.
    const answers: unknown[] = [];
    let asked = 0;
    await waitFor(
      'the first cron run reaching the provider',
      async () => {
        if (cronCalls().length > 0) return true;
        if (asked++ % 60 === 0) answers.push(await rpc('cron.run', { id: job.id, mode: 'force' }));
        return undefined;
      },
      180_000,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}; cron.run answered ${JSON.stringify(answers)}; runs: ${JSON.stringify(await rpc('cron.runs', { id: job.id }))}`);
    });
    const refused = async () =>
      (
        await server.db.query<{ detail: unknown }>(`SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'broker.budget_refused'`, [a.id])
      ).rows.filter((r) => JSON.stringify(r.detail).includes('cron_min_minutes'));
    assert.equal((await refused()).length, 0, 'the first run passes');
    // A second run of the same job within the hour (a new prompt: a new run) is refused at the broker. A forced
    // run while the first is still finishing is not started by OpenClaw, so it is asked again until one runs.
    const before = cronCalls().length;
    let attempt = 0;
    const rows = await waitFor(
      "the broker refusing the second run with the cap's name",
      async () => {
        const r = await refused();
        if (r.length > 0) return r;
        await rpc('cron.update', { id: job.id, patch: { payload: { kind: 'agentTurn', message: `Summarise the night (${++attempt})` } } });
        await rpc('cron.run', { id: job.id, mode: 'force' });
        await new Promise((res) => setTimeout(res, 10_000));
        return undefined;
      },
      180_000,
    );
    assert.ok(rows.length > 0);
    assert.equal(
      cronCalls().filter((r) => JSON.stringify(r.body['messages']).includes('Summarise the night')).length,
      0,
      'the refused run never reached the provider',
    );
    assert.ok(cronCalls().length >= before);
  });
});
