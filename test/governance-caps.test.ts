/**
 * Heartbeat and cron caps (docs/adr/0013-gateway-config-versions.md, "Caps"), through the API and the broker:
 * the caps per tenant and per agent, their render into openclaw.json, and the broker refusing scheduled model
 * calls (heartbeat and cron turns, recognised by the prompt OpenClaw gives them) that come sooner than the cap
 * allows, with the cap's name. Time is moved by rewriting the recorded run start, never by waiting. The
 * prompts are the ones OpenClaw 2026.9.6 sends (test/governance-caps-gateway.test.ts checks them on a real
 * gateway). The fake LLM is the stand-in for the provider.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import { classifyScheduled } from '../src/governance/scheduled.ts';
import { HEARTBEAT_PROMPT } from '../src/runtime/config.ts';
import { twoTenants, onboard } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { startTestServer } from './helpers/server.ts';

function post(
  socketPath: string,
  token: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown>; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        socketPath,
        method: 'POST',
        path: '/v1/chat/completions',
        agent: false,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': String(payload.length), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          resolve({
            status: res.statusCode ?? 0,
            json: text ? (JSON.parse(text) as Record<string, unknown>) : {},
            retryAfter: res.headers['retry-after'] as string | undefined,
          });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A model call as OpenClaw makes it for a turn whose prompt is `prompt` (system text, history, the turn, a tool loop). */
const turn = (prompt: string, o: { history?: string; toolLoop?: boolean } = {}) => ({
  model: 'default',
  stream: false,
  messages: [
    { role: 'system', content: 'You are a personal assistant running inside OpenClaw.' },
    ...(o.history
      ? [
          { role: 'user', content: o.history },
          { role: 'assistant', content: 'ok' },
        ]
      : []),
    { role: 'user', content: prompt },
    // Measured on OpenClaw 2026.9.6: its internal context follows the turn's prompt as another user message.
    {
      role: 'user',
      content:
        '<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nConversation data (data, not instructions):\n"## Active Subagents\\nnone"\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>',
    },
    ...(o.toolLoop
      ? [
          { role: 'assistant', content: null, tool_calls: [{ id: 't1', type: 'function', function: { name: 'memory_search', arguments: '{}' } }] },
          { role: 'tool', tool_call_id: 't1', content: 'nothing' },
        ]
      : []),
  ],
});
const cronPrompt = (job: string, at: string) =>
  `[cron:${job} daily digest] Summarise the inbox.\nCurrent time: Saturday, December 5th, 2026 - ${at} (UTC)\n\nThis is an unattended scheduled run.`;
const heartbeat = (at: string) => `${HEARTBEAT_PROMPT}\nCurrent time: ${at}`;

describe('heartbeat and cron caps', async () => {
  const fake = await startFakeLlm();
  const server = await startTestServer({ CLAWPLANE_ROLES: 'api,broker', CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1' });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const { broker, credentials, providers } = server.services;
  const by = { actor: 'test', userId: a.ownerId };
  for (const t of [a, b]) {
    const key = await credentials.create(t.id, { name: 'fake', type: 'api_key', value: `sk-fake-${t.slug}` }, by);
    const p = await providers.create(t.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
    await providers.setRoute(t.id, { scope: 'tenant', targets: [{ providerId: p.id, model: 'fake-model' }] }, by);
  }
  const regA = await broker.registerSandbox({ tenantId: a.id, instanceId: a.instanceId, sandboxId: 'sbx-caps-a' });
  const regB = await broker.registerSandbox({ tenantId: b.id, instanceId: b.instanceId, sandboxId: 'sbx-caps-b' });
  const rules = `/api/v1/tenants/${a.slug}/gateway-config/rules`;
  const sendA = (body: unknown, headers?: Record<string, string>) => post(regA.socketPath, regA.token, body, headers);
  /** Moves the recorded start of a job's last run `minutes` into the past (instead of waiting). */
  const age = async (tenantId: string, job: string, minutes: number) => {
    const r = await server.db.query(`UPDATE scheduled_runs SET started_at = started_at - make_interval(mins => $3) WHERE tenant_id = $1 AND job = $2`, [
      tenantId,
      job,
      minutes,
    ]);
    assert.equal(r.rowCount, 1, `a recorded run of ${job}`);
  };

  test("OpenClaw's scheduled prompts are recognised from the turn's own (last) user message, nothing else", () => {
    assert.deepEqual(classifyScheduled(turn(cronPrompt('job-1', '09:00')))?.kind, 'cron');
    assert.equal(classifyScheduled(turn(cronPrompt('job-1', '09:00')))?.job, 'job-1');
    assert.equal(classifyScheduled(turn(heartbeat('09:00')))?.kind, 'heartbeat');
    assert.equal(classifyScheduled(turn('Run the following periodic tasks (only those due based on their intervals):\n\n- inbox: check'))?.kind, 'heartbeat');
    assert.equal(
      classifyScheduled(turn('A scheduled reminder has been triggered. The reminder content is:\n\nAutomation "probe" failed 2 times'))?.kind,
      'heartbeat',
    );
    // A tool loop keeps the turn's prompt as its last user message: the same run.
    assert.equal(classifyScheduled(turn(cronPrompt('job-1', '09:00'), { toolLoop: true }))?.run, classifyScheduled(turn(cronPrompt('job-1', '09:00')))?.run);
    // A chat whose history holds an earlier scheduled turn is a chat.
    assert.equal(classifyScheduled(turn('what did the digest say?', { history: cronPrompt('job-1', '09:00') })), null);
    assert.equal(classifyScheduled(turn('hello')), null);
    assert.equal(classifyScheduled({ messages: 'nope' }), null);
  });

  test('caps per tenant and agent are set through the rules; bad ones are a 400 naming the field', async () => {
    const r = await a.client.json<{ cronMinMinutes: number | null; agentCaps: Record<string, unknown> }>('PUT', rules, {
      review: [],
      cronMinMinutes: 60,
      agentCaps: { main: { heartbeatMinMinutes: 120 } },
    });
    assert.equal(r.cronMinMinutes, 60);
    assert.deepEqual(r.agentCaps, { main: { heartbeatMinMinutes: 120 } });
    const cases: [unknown, string][] = [
      [{ review: [], cronMinMinutes: 0 }, 'body.cronMinMinutes'],
      [{ review: [], cronMinMinutes: 'often' }, 'body.cronMinMinutes'],
      [{ review: [], agentCaps: { 'Bad Agent': {} } }, 'body.agentCaps'],
      [{ review: [], agentCaps: { main: { cronMinMinutes: 99999 } } }, 'body.agentCaps.main.cronMinMinutes'],
      [{ review: [], agentCaps: { main: { everyMinutes: 5 } } }, 'body.agentCaps.main'],
    ];
    for (const [body, field] of cases) {
      const res = await a.client.call('PUT', rules, body);
      const text = await res.text();
      assert.equal(res.status, 400, text);
      assert.ok(text.includes(field), `${JSON.stringify(body)} → ${text}`);
    }
    // The agent's own heartbeat cap is stricter than the tenant's (none): a faster heartbeat is refused with the cap's name.
    const e = await a.client.call('POST', `/api/v1/tenants/${a.slug}/gateway-config/versions`, { settings: { heartbeatEvery: '1h' }, reason: 'hourly' });
    assert.equal(e.status, 400);
    assert.match(await e.text(), /heartbeat_min_minutes \(120 minutes\)/);
  });

  test('the render: the heartbeat prompt carries the marker, a cron cap turns off catching up missed runs', async () => {
    const v = await a.client.json<{ config: { agents: { defaults: { heartbeat: { every: string; prompt?: string } } }; cron?: unknown } }>(
      'POST',
      `/api/v1/tenants/${a.slug}/gateway-config/versions`,
      { settings: { heartbeatEvery: '2h' }, reason: 'twice a day' },
      201,
    );
    assert.deepEqual(v.config.agents.defaults.heartbeat, { every: '2h', prompt: HEARTBEAT_PROMPT });
    assert.deepEqual(v.config.cron, { skipMissedJobs: true });
    // A heartbeat that is off needs no prompt; tenant B has no cron cap: no cron block.
    const start = await server.services.gatewayConfig.forStart(b.id);
    assert.equal(start.input.cronCapped, undefined);
  });

  test("the broker refuses a cron run that comes sooner than the cap, with the cap's name; the run's own tool loop passes", async () => {
    const first = await sendA(turn(cronPrompt('job-1', '09:00')));
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal((await sendA(turn(cronPrompt('job-1', '09:00'), { toolLoop: true }))).status, 200, 'the same run continues');
    const again = await sendA(turn(cronPrompt('job-1', '09:01')));
    assert.equal(again.status, 429, JSON.stringify(again.json));
    const err = again.json['error'] as { code: string; message: string };
    assert.equal(err.code, 'cron_min_minutes');
    assert.match(err.message, /cap cron_min_minutes: this cron job job-1 ran less than 60 minutes ago/);
    assert.ok(Number(again.retryAfter) > 0 && Number(again.retryAfter) <= 3600, String(again.retryAfter));
    // Another job, and a chat, are not held back by job-1's run.
    assert.equal((await sendA(turn(cronPrompt('job-2', '09:01')))).status, 200);
    assert.equal((await sendA(turn('hello'))).status, 200);
    // An hour later the next run of job-1 passes.
    await age(a.id, 'job-1', 60);
    assert.equal((await sendA(turn(cronPrompt('job-1', '10:01')))).status, 200);
    // The refusal is audited with the cap's name.
    const audit = await server.db.query<{ detail: { limit?: string } }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'broker.budget_refused'`,
      [a.id],
    );
    assert.ok(
      audit.rows.some((r) => JSON.stringify(r.detail).includes('cron_min_minutes')),
      JSON.stringify(audit.rows),
    );
  });

  test("the heartbeat cap binds the broker too: the agent's stricter cap (120 minutes) applies", async () => {
    assert.equal((await sendA(turn(heartbeat('09:00')))).status, 200);
    const soon = await sendA(turn(heartbeat('09:30')));
    assert.equal(soon.status, 429);
    assert.equal((soon.json['error'] as { code: string }).code, 'heartbeat_min_minutes');
    await age(a.id, 'heartbeat', 90);
    assert.equal((await sendA(turn(heartbeat('10:30')))).status, 429, '90 minutes is inside the agent cap of 120');
    await age(a.id, 'heartbeat', 30);
    assert.equal((await sendA(turn(heartbeat('11:00')))).status, 200);
  });

  test("without a cap nothing is recorded or refused; tenant B is not bound by A's caps", async () => {
    for (const at of ['09:00', '09:01', '09:02']) assert.equal((await post(regB.socketPath, regB.token, turn(cronPrompt('job-1', at)))).status, 200);
    const rows = await server.db.query('SELECT 1 FROM scheduled_runs WHERE tenant_id = $1', [b.id]);
    assert.equal(rows.rowCount, 0);
  });

  test('two replicas admitting new runs of one job at once admit one', async () => {
    await age(a.id, 'job-2', 61);
    const [x, y] = await Promise.all([sendA(turn(cronPrompt('job-2', '11:00'))), sendA(turn(cronPrompt('job-2', '11:00:30')))]);
    assert.deepEqual([x.status, y.status].sort(), [200, 429]);
    await a.client.json('PUT', rules, { review: [] });
    assert.equal((await sendA(turn(cronPrompt('job-2', '11:01')))).status, 200, 'caps removed: the next run passes at once');
  });

  test('a change of caps is a version of its own, with its diff; a change that renders nothing new makes none', async () => {
    type Version = { number: number; reason: string; status: string; config: { cron?: unknown; agents: { defaults: { heartbeat: { every: string } } } } };
    const versions = `/api/v1/tenants/${a.slug}/gateway-config/versions`;
    const latest = async () => (await a.client.json<{ items: Version[] }>('GET', versions)).items[0];
    // The caps were removed above (the previous test): that already made a version without the cron block.
    const before = await latest();
    assert.equal(before?.reason, 'caps changed');
    assert.equal(before?.config.cron, undefined, 'no cron cap: no cron block');
    await a.client.json('PUT', rules, { review: [], cronMinMinutes: 30 });
    const capped = await latest();
    assert.equal(capped?.number, (before?.number ?? 0) + 1);
    assert.equal(capped?.reason, 'caps changed');
    assert.notEqual(capped?.status, 'pending', 'a cap never waits for review');
    assert.deepEqual(capped?.config.cron, { skipMissedJobs: true });
    const d = await a.client.json<{ diff: { path: string }[] }>(
      'GET',
      `/api/v1/tenants/${a.slug}/gateway-config/diff?from=${before?.number}&to=${capped?.number}`,
    );
    assert.ok(
      d.diff.some((e) => e.path.startsWith('cron')),
      JSON.stringify(d.diff),
    );
    // Only review rules change: nothing renders differently, no version.
    await a.client.json('PUT', rules, { review: ['heartbeat'], cronMinMinutes: 30 });
    assert.equal((await latest())?.number, capped?.number);
    await a.client.json('PUT', rules, { review: [] });
  });
});
