/**
 * Approval delivery to chat (src/governance/approval-delivery.ts, docs/security.md "Approval links"): a tenant
 * admin points approval requests at a Telegram chat and a Slack channel, each reached with a bot credential
 * of the tenant's own from the vault; configuration reviews and task/exec approvals are posted there with a
 * link to the console page where the decision is made after sign-in (the link itself decides nothing).
 * Telegram's Bot API and Slack's Web API are SaaS: the tests start a local stand-in for both (the only
 * stand-in here) and check what reached it; the bot tokens are canaries that must appear nowhere else
 * (logs, audit rows, API bodies, the database outside the vault).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';

interface SaasRequest {
  path: string;
  authorization: string | undefined;
  body: Record<string, unknown>;
}

/** A stand-in for Telegram's Bot API and Slack's Web API (SaaS the tests cannot reach). */
async function startChatStandIn(): Promise<{ url: string; requests: SaasRequest[]; failTelegram: boolean }> {
  const state = { url: '', requests: [] as SaasRequest[], failTelegram: false };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
      state.requests.push({ path: req.url ?? '', authorization: req.headers.authorization, body });
      res.setHeader('content-type', 'application/json');
      if (/^\/telegram\/bot[^/]+\/sendMessage$/.test(req.url ?? '')) {
        if (state.failTelegram) {
          res.statusCode = 401;
          res.end(JSON.stringify({ ok: false, error_code: 401, description: 'Unauthorized' }));
        } else res.end(JSON.stringify({ ok: true, result: { message_id: 1 } }));
      } else if (req.url === '/slack/chat.postMessage') {
        res.end(JSON.stringify(req.headers.authorization?.startsWith('Bearer xoxb-') ? { ok: true, ts: '1.2' } : { ok: false, error: 'not_authed' }));
      } else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  after(() => new Promise<void>((r) => server.close(() => r())));
  return state;
}

describe("approval requests delivered to the tenant's chats", async () => {
  const saas = await startChatStandIn();
  const server = await startTestServer({
    CLAWPLANE_ROLES: 'api,broker',
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_TELEGRAM_API_URL: `${saas.url}/telegram`,
    CLAWPLANE_SLACK_API_URL: `${saas.url}/slack`,
  });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const telegramToken = `123456789:${randomBytes(24).toString('base64url')}`;
  const slackToken = `xoxb-canary-${randomBytes(12).toString('hex')}`;
  const channels = `/api/v1/tenants/${a.slug}/approval-channels`;
  const bodies: string[] = [];
  const call = async <T>(c: ApiClient, method: string, p: string, body?: unknown, expect = 200): Promise<T> => {
    const res = await c.call(method, p, body);
    const text = await res.text();
    bodies.push(text);
    assert.equal(res.status, expect, `${method} ${p}: ${text}`);
    return JSON.parse(text) as T;
  };
  const connect = async (t: typeof a, skill: string, values: Record<string, string>) =>
    (await call<{ items: { id: string; name: string }[] }>(t.client, 'POST', `/api/v1/tenants/${t.slug}/credentials/skills/${skill}`, { values }, 201)).items[0]
      ?.id ?? '';
  const tg = await connect(a, 'telegram', { bot_token: telegramToken });
  const sl = await connect(a, 'slack', { bot_token: slackToken });
  const bTelegram = await connect(b, 'telegram', { bot_token: `987654321:${randomBytes(24).toString('base64url')}` });
  const second = await admin.json<{ userId: string }>(
    'POST',
    `/api/v1/tenants/${a.slug}/members`,
    { email: 'reviewer@tenant-a.test', role: 'tenant_admin' },
    201,
  );
  const reviewer = new ApiClient(server.url, {
    bearer: (await server.services.tokens.create(a.id, { name: 'reviewer', role: 'tenant_admin', createdBy: second.userId }, { actor: 'test' })).token,
  });
  const settle = async (n: number) => {
    // Delivery runs after the change committed, without holding up the answer: wait until it reached the stand-in.
    for (let i = 0; i < 400 && saas.requests.length < n; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(saas.requests.length, n, JSON.stringify(saas.requests.map((r) => r.path)));
  };

  test("a tenant admin sets the chats; bad input is a 400 naming the field; another tenant's credential is refused", async () => {
    const t = await call<{ kind: string; target: string; credentialId: string }>(a.client, 'PUT', `${channels}/telegram`, {
      credentialId: tg,
      target: '-1001234567890',
    });
    assert.deepEqual([t.kind, t.target, t.credentialId], ['telegram', '-1001234567890', tg]);
    await call(a.client, 'PUT', `${channels}/slack`, { credentialId: sl, target: 'C0123456789' });
    const cases: [string, unknown, string][] = [
      ['telegram', { credentialId: tg, target: 'not a chat' }, 'body.target'],
      ['slack', { credentialId: sl, target: '#general' }, 'body.target'],
      ['slack', { credentialId: tg, target: 'C0123456789' }, 'body.credentialId'],
      ['telegram', { credentialId: bTelegram, target: '42' }, 'body.credentialId'],
      ['telegram', { credentialId: 'nope', target: '42' }, 'body.credentialId'],
      ['telegram', { credentialId: tg, target: '42', token: 'x' }, 'body'],
      ['whatsapp', { credentialId: tg, target: '42' }, 'path.kind'],
    ];
    for (const [kind, body, field] of cases) {
      const res = await a.client.call('PUT', `${channels}/${kind}`, body);
      const text = await res.text();
      bodies.push(text);
      assert.equal(res.status, 400, `${kind} ${JSON.stringify(body)}: ${text}`);
      assert.ok(text.includes(field), `${kind} ${JSON.stringify(body)} → ${text}`);
    }
    const list = await call<{ items: { kind: string }[] }>(a.client, 'GET', channels);
    assert.deepEqual(
      list.items.map((c) => c.kind),
      ['slack', 'telegram'],
    );
    assert.deepEqual((await call<{ items: unknown[] }>(b.client, 'GET', `/api/v1/tenants/${b.slug}/approval-channels`)).items, []);
  });

  test('a change waiting for review is posted to both chats with a console link that needs sign-in and decides nothing', async () => {
    await call(a.client, 'PUT', `/api/v1/tenants/${a.slug}/gateway-config/rules`, { review: ['heartbeat'] });
    const v = await call<{ number: number; status: string }>(
      a.client,
      'POST',
      `/api/v1/tenants/${a.slug}/gateway-config/versions`,
      { settings: { heartbeatEvery: '6h' }, reason: 'wake four times a day' },
      201,
    );
    assert.equal(v.status, 'pending');
    await settle(2);
    const link = `${server.url}/tenants/${a.slug}/configuration?version=${v.number}`;
    const t = saas.requests.find((r) => r.path.startsWith('/telegram/'));
    assert.ok(t);
    assert.equal(t.path, `/telegram/bot${telegramToken}/sendMessage`, 'the bot token goes only to Telegram, in the path its API takes it in');
    assert.equal(t.body['chat_id'], '-1001234567890');
    assert.match(
      String(t.body['text']),
      /A gateway configuration change waits for your decision: version \d+ \(heartbeat\) by token:[0-9a-f-]+: wake four times a day/,
    );
    assert.deepEqual(t.body['reply_markup'], { inline_keyboard: [[{ text: 'Open to approve or reject', url: link }]] });
    const s = saas.requests.find((r) => r.path.startsWith('/slack/'));
    assert.ok(s);
    assert.equal(s.authorization, `Bearer ${slackToken}`);
    assert.equal(s.body['channel'], 'C0123456789');
    assert.ok(JSON.stringify(s.body['blocks']).includes(JSON.stringify(link)));
    // The link is the console page: opening it without a session shows the console (which asks for sign-in)
    // and changes nothing; deciding needs a signed-in tenant admin other than the proposer.
    const opened = await fetch(link);
    assert.equal(opened.status, 200);
    assert.match(opened.headers.get('content-type') ?? '', /text\/html/);
    await opened.text();
    assert.equal(
      (
        await fetch(`${server.url}/api/v1/tenants/${a.slug}/gateway-config/versions/${v.number}/approve`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{}',
        })
      ).status,
      401,
    );
    assert.equal((await call<{ status: string }>(a.client, 'GET', `/api/v1/tenants/${a.slug}/gateway-config/versions/${v.number}`)).status, 'pending');
    assert.equal(
      (await call<{ status: string }>(reviewer, 'POST', `/api/v1/tenants/${a.slug}/gateway-config/versions/${v.number}/approve`, {})).status,
      'approved',
    );
    // Each delivery is audited, without the token.
    const audit = await server.db.query<{ decision: string; detail: { channel: string; kind: string } }>(
      `SELECT decision, detail FROM audit_events WHERE tenant_id = $1 AND action = 'approval.delivered' ORDER BY seq`,
      [a.id],
    );
    assert.deepEqual(audit.rows.map((r) => [r.detail.channel, r.detail.kind, r.decision]).sort(), [
      ['slack', 'config', 'success'],
      ['telegram', 'config', 'success'],
    ]);
  });

  test('task and exec approvals are posted with a link to the tasks page; a change applied at once posts nothing', async () => {
    await call(a.client, 'PUT', `/api/v1/tenants/${a.slug}/gateway-config/rules`, { review: [] });
    await call(a.client, 'POST', `/api/v1/tenants/${a.slug}/gateway-config/versions`, { settings: { heartbeatEvery: '8h' }, reason: 'less' }, 201);
    const before = saas.requests.length;
    // What the task steps hand the approval webhooks when a task parks at an exec approval (src/tasks/steps.ts).
    await server.services.approvals.webhooks.deliver(a.id, {
      type: 'approval.requested',
      taskId: 't-1',
      approvalId: 'ap-1',
      kind: 'exec',
      tool: 'exec',
      summary: 'git push origin main',
    });
    await settle(before + 2);
    const t = saas.requests.at(-2)?.path.startsWith('/telegram/') ? saas.requests.at(-2) : saas.requests.at(-1);
    assert.match(String(t?.body['text']), /A shell command waits for your decision: exec: git push origin main/);
    assert.ok(String(t?.body['text']).includes(`${server.url}/tenants/${a.slug}/tasks?approval=ap-1`));
  });

  test('a chat that refuses the post is recorded as a failed delivery; nothing fails or leaks', async () => {
    saas.failTelegram = true;
    const before = saas.requests.length;
    const out = await server.services.approvalDelivery.deliver(a.id, { kind: 'task', id: 'ap-2', summary: 'http_get: https://example.com' });
    assert.deepEqual(
      out.sort((x, y) => x.kind.localeCompare(y.kind)),
      [
        { kind: 'slack', ok: true },
        { kind: 'telegram', ok: false },
      ],
    );
    assert.equal(saas.requests.length, before + 2);
    const failed = await server.db.query<{ detail: { why: string } }>(
      `SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'approval.delivered' AND decision = 'failure'`,
      [a.id],
    );
    assert.deepEqual(
      failed.rows.map((r) => r.detail.why),
      ['http_401'],
    );
    saas.failTelegram = false;
    // Removing a chat stops posting there; removing one twice is a 404.
    await call(a.client, 'DELETE', `${channels}/slack`);
    await call(a.client, 'DELETE', `${channels}/slack`, undefined, 404);
    const out2 = await server.services.approvalDelivery.deliver(a.id, { kind: 'task', id: 'ap-3', summary: 'x' });
    assert.deepEqual(out2, [{ kind: 'telegram', ok: true }]);
  });

  test('the bot tokens appear in no log line, audit row, API body or table outside the vault', async () => {
    const rows = await server.db.query<{ t: string }>(
      `SELECT row_to_json(x)::text AS t FROM (SELECT * FROM approval_channels) x UNION ALL SELECT row_to_json(e)::text FROM audit_events e`,
    );
    const all = [...capturedLogs, ...rows.rows.map((r) => r.t), ...bodies];
    assert.ok(capturedLogs.length > 10 && rows.rows.length > 10 && bodies.length > 10);
    for (const canary of [telegramToken, slackToken, telegramToken.split(':')[1] ?? telegramToken]) {
      for (const t of all) assert.ok(!t.includes(canary), `a bot token leaked: ${t.slice(0, 300)}`);
    }
  });
});
