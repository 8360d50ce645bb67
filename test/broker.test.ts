import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { SandboxRegistration } from '../src/broker/types.ts';
import { onboard } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** ms from request start to each chunk. */
  chunkTimes: number[];
}

/** One HTTP call over a sandbox's broker socket, as the in-sandbox supervisor makes it. */
function call(
  sock: string,
  path: string,
  token: string | undefined,
  body?: unknown,
  opts: { abortAfterFirstChunk?: boolean; onFirstChunk?: () => void; headers?: Record<string, string> } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        socketPath: sock,
        agent: false,
        path,
        method: payload ? 'POST' : 'GET',
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          ...opts.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        const chunkTimes: number[] = [];
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          chunkTimes.push(Date.now() - started);
          if (chunkTimes.length === 1) opts.onFirstChunk?.();
          if (opts.abortAfterFirstChunk) {
            req.destroy();
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString(), chunkTimes });
          }
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString(), chunkTimes }));
        res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString(), chunkTimes }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const chat = (model: string, stream = false) => ({ model, stream, messages: [{ role: 'user', content: 'hi' }] });

describe('broker: the only way out of a sandbox', async () => {
  const fake = await startFakeLlm(); // stand-in for real LLM providers (the only allowed fake)
  const server = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1' });
  const admin = await onboard(server);
  const { broker, credentials, providers, tenants } = server.services;
  const by = { actor: 'test' };
  const canary = `sk-canary-${randomBytes(12).toString('hex')}`;

  const makeTenant = async (slug: string, key: string) => {
    const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug, name: slug }, 201);
    const cred = await credentials.create(t.id, { name: 'openai', type: 'api_key', value: key }, by);
    const p = await providers.create(t.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: cred.id }, by);
    await providers.setRoute(t.id, { scope: 'tenant', targets: [{ providerId: p.id, model: 'fake-model' }] }, by);
    const reg = await broker.registerSandbox({ tenantId: t.id, instanceId: `inst-${slug}`, sandboxId: `sbx-${slug}` });
    return { id: t.id, credId: cred.id, providerId: p.id, reg };
  };
  const a = await makeTenant('broker-a', canary);
  const b = await makeTenant('broker-b', `sk-b-${randomBytes(12).toString('hex')}`);
  const responses: string[] = [];
  const sendA = async (path: string, body?: unknown, reg: SandboxRegistration = a.reg, token = reg.token, opts: Parameters<typeof call>[4] = {}) => {
    const r = await call(reg.socketPath, path, token, body, opts);
    responses.push(JSON.stringify(r.headers) + r.text);
    return r;
  };

  test('a chat completion goes through with the tenant key injected, never shown to the sandbox', async () => {
    const r = await sendA('/v1/chat/completions', chat('auto'));
    assert.equal(r.status, 200, r.text);
    const body = JSON.parse(r.text) as { choices: { message: { content: string } }[] };
    assert.equal(body.choices[0]?.message.content, 'Hello from fake-model');
    const got = fake.requests.at(-1);
    assert.equal(got?.authorization, `Bearer ${canary}`);
    assert.equal(got?.model, 'fake-model', 'the route picked the model');
    assert.ok(!r.text.includes(canary) && !JSON.stringify(r.headers).includes(canary));
  });

  test('streaming is unbuffered: the first chunk arrives before the provider finishes', async () => {
    // The provider holds its second chunk for up to 30 s and is let go only once the client has the first:
    // a buffering proxy would deliver nothing until the 30 s were up. Order, not a timing margin.
    fake.slowMs = 30_000;
    await providers.setRoute(a.id, { scope: 'agent', scopeName: 'slowpoke', targets: [{ providerId: a.providerId, model: 'slow' }] }, by);
    let upstreamDoneAtFirstChunk: boolean | undefined;
    const r = await sendA('/v1/chat/completions', chat('agent/slowpoke', true), a.reg, a.reg.token, {
      onFirstChunk: () => {
        upstreamDoneAtFirstChunk = fake.requests.at(-1)?.finishedAt !== undefined;
        fake.releaseSlow();
      },
    });
    fake.slowMs = 600;
    assert.equal(r.status, 200);
    const upstream = fake.requests.at(-1);
    assert.ok(upstream?.finishedAt);
    assert.equal(upstreamDoneAtFirstChunk, false, 'the first chunk reached the client while the provider was still holding the rest');
    assert.match(r.text, /data: .*Hello/);
    assert.match(r.text, /\[DONE\]/);
    assert.equal((upstream.body['stream_options'] as { include_usage: boolean }).include_usage, true, 'the broker asks for usage in streams');
  });

  test('a client that disconnects aborts the upstream call', async () => {
    const before = fake.requests.length;
    await sendA('/v1/chat/completions', chat('agent/slowpoke', true), a.reg, a.reg.token, { abortAfterFirstChunk: true });
    for (let i = 0; i < 500 && !fake.requests[before]?.aborted; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(fake.requests[before]?.aborted, true);
  });

  test('fallback on 429 and 500 to the next target, metered as fallbacks', async () => {
    await providers.setRoute(
      a.id,
      {
        scope: 'agent',
        scopeName: 'flaky',
        targets: [
          { providerId: a.providerId, model: 'fail-429' },
          { providerId: a.providerId, model: 'fail-500' },
          { providerId: a.providerId, model: 'fake-model' },
        ],
      },
      by,
    );
    const n = fake.requests.length;
    const r = await sendA('/v1/chat/completions', chat('agent/flaky'));
    assert.equal(r.status, 200);
    assert.deepEqual(
      fake.requests.slice(n).map((x) => x.model),
      ['fail-429', 'fail-500', 'fake-model'],
    );
    // When every target fails, the last answer is passed back as is.
    await providers.setRoute(a.id, { scope: 'agent', scopeName: 'doomed', targets: [{ providerId: a.providerId, model: 'fail-500' }] }, by);
    assert.equal((await sendA('/v1/chat/completions', chat('agent/doomed'))).status, 500);
    await broker.usage.flush();
    const rows = await server.db.query<{ outcome: string; n: number }>(
      `SELECT outcome, count(*)::int AS n FROM llm_usage WHERE tenant_id = $1 AND agent = 'flaky' GROUP BY outcome ORDER BY outcome`,
      [a.id],
    );
    assert.deepEqual(rows.rows, [
      { outcome: 'fallback', n: 2 },
      { outcome: 'ok', n: 1 },
    ]);
  });

  test('Anthropic /v1/messages streams and is metered from message_start and message_delta', async () => {
    const key = await credentials.create(a.id, { name: 'anthropic', type: 'api_key', value: `sk-ant-test-${randomBytes(8).toString('hex')}` }, by);
    const p = await providers.create(a.id, { kind: 'anthropic', name: 'claude', baseUrl: fake.baseUrl, credentialId: key.id }, by);
    await providers.setRoute(a.id, { scope: 'agent', scopeName: 'claude', targets: [{ providerId: p.id, model: 'claude-fake' }] }, by);
    const r = await sendA(
      '/v1/messages',
      { model: 'agent/claude', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'hi' }] },
      a.reg,
      a.reg.token,
      { headers: { 'anthropic-version': '2023-06-01' } },
    );
    assert.equal(r.status, 200, r.text);
    assert.match(r.text, /event: message_stop/);
    assert.equal(fake.requests.at(-1)?.apiKey?.startsWith('sk-ant-test-'), true);
    await broker.usage.flush();
    const u = await server.db.query<{ input_tokens: number; output_tokens: number }>(
      `SELECT input_tokens, output_tokens FROM llm_usage WHERE tenant_id = $1 AND agent = 'claude' AND outcome = 'ok'`,
      [a.id],
    );
    assert.deepEqual(u.rows[0], { input_tokens: 40, output_tokens: 60 });
    // An OpenAI-format call for an Anthropic-only route has no compatible provider: a clear refusal.
    const wrong = await sendA('/v1/chat/completions', chat('agent/claude'));
    assert.equal(wrong.status, 400);
    assert.match((JSON.parse(wrong.text) as { error: { message: string } }).error.message, /No OpenAI-compatible provider is configured for agent "claude"/);
  });

  test('cost comes from the price table; usage rows and tenant-labelled metrics are recorded', async () => {
    await broker.prices.set({ model: 'fake-*', inputUsdPerMtok: 1000, outputUsdPerMtok: 2000 });
    assert.equal((await sendA('/v1/chat/completions', chat('auto'))).status, 200);
    await broker.usage.flush();
    const row = await server.db.query<{ cost_usd: string; input_tokens: number; output_tokens: number; instance_id: string }>(
      `SELECT cost_usd, input_tokens, output_tokens, instance_id FROM llm_usage WHERE tenant_id = $1 AND outcome = 'ok' AND agent = '' ORDER BY id DESC LIMIT 1`,
      [a.id],
    );
    // 40 in at $1000/M + 60 out at $2000/M = $0.16
    assert.equal(Number(row.rows[0]?.cost_usd), 0.16, JSON.stringify(row.rows[0]));
    assert.equal(row.rows[0]?.instance_id, 'inst-broker-a');
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`clawplane_broker_requests_total\\{tenant="${a.id}",api="chat.completions",outcome="ok"\\} \\d+`));
    assert.match(metrics, new RegExp(`clawplane_broker_cost_usd_total\\{tenant="${a.id}"\\}`));
  });

  test("a task's tag in the system text meters the call to that task and never reaches the provider; forged, foreign or header claims do not", async () => {
    const taskId = randomUUID();
    const tag = server.services.taskTags.tag(a.id, taskId);
    const tagged = (system: unknown, headers: Record<string, string> = {}) =>
      sendA(
        '/v1/chat/completions',
        {
          model: 'auto',
          messages: [
            { role: 'system', content: system },
            { role: 'user', content: 'hi' },
          ],
        },
        a.reg,
        a.reg.token,
        { headers },
      );
    const taskOf = async () => {
      await broker.usage.flush();
      const r = await server.db.query<{ task_id: string | null }>(`SELECT task_id FROM llm_usage WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1`, [a.id]);
      return r.rows[0]?.task_id ?? null;
    };
    // As OpenClaw sends it: the tag inside a long system prompt, and as a content part.
    assert.equal((await tagged(`You are a helpful agent.\n${tag}\nBe brief.`)).status, 200);
    assert.equal(await taskOf(), taskId);
    const seen = JSON.stringify(fake.requests.at(-1)?.body);
    assert.ok(
      !seen.includes('clawplane-task') && seen.includes('You are a helpful agent.') && seen.includes('Be brief.'),
      `the provider saw the system text without the tag: ${seen}`,
    );
    assert.equal((await tagged([{ type: 'text', text: tag }])).status, 200);
    assert.equal(await taskOf(), taskId);
    // Claims the broker must not believe: a forged MAC, tenant B's tag for this task, a header.
    const forged = tag.replace(/ (\S{22})\]$/, ' AAAAAAAAAAAAAAAAAAAAAA]');
    const foreign = server.services.taskTags.tag(b.id, taskId);
    for (const [system, headers] of [
      [forged, {}],
      [foreign, {}],
      ['plain', { 'x-clawplane-task': taskId }],
    ] as const) {
      assert.equal((await tagged(system, headers)).status, 200);
      assert.equal(await taskOf(), null, `not attributed: ${system}`);
      assert.ok(!JSON.stringify(fake.requests.at(-1)?.body).includes('clawplane-task'), 'a tag is removed even when it is not believed');
    }
  });

  test('daily token budget under 100 concurrent requests: no overspend beyond the calls in flight', async () => {
    const t = await makeTenant('broker-budget', `sk-budget-${randomBytes(8).toString('hex')}`);
    await tenants.update(t.id, { quotas: { dailyTokenBudget: 2000 } }, by);
    // Each call costs 100 tokens. 100 requests, at most 10 in flight at a time.
    let ok = 0;
    let refused = 0;
    let maxInFlight = 0;
    let inFlight = 0;
    const bodies: string[] = [];
    const queue = Array.from({ length: 100 }, (_, i) => i);
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (queue.pop() !== undefined) {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          const r = await call(t.reg.socketPath, '/v1/chat/completions', t.reg.token, chat('auto'));
          inFlight--;
          if (r.status === 200) ok++;
          else {
            refused++;
            bodies.push(r.text);
            assert.equal(r.status, 429);
          }
        }
      }),
    );
    await broker.usage.flush();
    const spent = Number(
      (await server.db.query<{ t: string }>(`SELECT coalesce(sum(input_tokens + output_tokens), 0) AS t FROM llm_usage WHERE tenant_id = $1`, [t.id])).rows[0]
        ?.t,
    );
    assert.ok(spent >= 2000, `spent ${spent}`);
    assert.ok(spent <= 2000 + maxInFlight * 100, `spent ${spent} with at most ${maxInFlight} in flight`);
    assert.equal(ok + refused, 100);
    assert.ok(refused >= 100 - 20 - maxInFlight);
    const err = JSON.parse(bodies[0] ?? '{}') as { error: { type: string; message: string; code: string } };
    assert.equal(err.error.type, 'rate_limit_error', 'refusals use the OpenAI error shape');
    assert.equal(err.error.code, 'daily_tokens');
    assert.match(err.error.message, /daily token budget .* is used up; it resets at 00:00 UTC/);
    const audit = await server.db.query(`SELECT 1 FROM audit_events WHERE tenant_id = $1 AND action = 'broker.budget_refused'`, [t.id]);
    assert.equal(audit.rowCount, 1, 'a flood of refusals is one audit row');
  });

  test('requests-per-minute cap answers 429 with Retry-After', async () => {
    const t = await makeTenant('broker-rpm', `sk-rpm-${randomBytes(8).toString('hex')}`);
    await server.db.query(`INSERT INTO broker_limits (tenant_id, agent, requests_per_minute) VALUES ($1, '', 3)`, [t.id]);
    broker.budgets.forget(t.id);
    const statuses: number[] = [];
    let retry: string | undefined;
    for (let i = 0; i < 5; i++) {
      const r = await call(t.reg.socketPath, '/v1/chat/completions', t.reg.token, chat('auto'));
      statuses.push(r.status);
      if (r.status === 429) retry = r.headers['retry-after'] as string;
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.ok(Number(retry) > 0);
  });

  test("a sandbox can never spend another tenant's key; unknown and revoked tokens get 401", async () => {
    // A's token on B's socket, B's token on A's socket, no token, a made-up token.
    for (const [sock, token] of [
      [b.reg.socketPath, a.reg.token],
      [a.reg.socketPath, b.reg.token],
      [a.reg.socketPath, undefined],
      [a.reg.socketPath, `cpb_${randomBytes(32).toString('base64url')}`],
    ] as const) {
      const n = fake.requests.length;
      const r = await call(sock, '/v1/chat/completions', token, chat('auto'));
      assert.equal(r.status, 401);
      assert.equal((JSON.parse(r.text) as { error: { type: string } }).error.type, 'authentication_error');
      assert.equal(fake.requests.length, n, 'nothing reached the provider');
    }
    const bReply = await call(b.reg.socketPath, '/v1/chat/completions', b.reg.token, chat('auto'));
    assert.equal(bReply.status, 200);
    assert.notEqual(fake.requests.at(-1)?.authorization, `Bearer ${canary}`, "B's call used B's key");
    // On the internal TCP port the token alone decides; a closed registration's token is refused at once.
    const tcp = await broker.listenTcp(0);
    const viaTcp = (token: string) =>
      fetch(`${tcp}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(chat('auto')),
      });
    assert.equal((await viaTcp(b.reg.token)).status, 200);
    await b.reg.close();
    assert.equal((await viaTcp(b.reg.token)).status, 401);
  });

  test('tool grants over the sandbox socket: issued, bound to the socket, revoked when the sandbox stops', async () => {
    const t = await makeTenant('broker-grants', `sk-gr-${randomBytes(8).toString('hex')}`);
    const ok = await call(t.reg.socketPath, '/broker/grants', t.reg.token, { tool: 'web_search', agent: 'main', context: {} });
    assert.equal(ok.status, 201, ok.text);
    const grant = JSON.parse(ok.text) as { token: string; jti: string };
    assert.match(grant.token, /^ey/);
    await server.services.grants.verifyGrant(grant.token, { tool: 'web_search' });
    const denied = await call(t.reg.socketPath, '/broker/grants', t.reg.token, { tool: 'gateway', agent: 'main', context: {} });
    assert.equal(denied.status, 403, 'critical tools are never granted');
    const foreign = await call(t.reg.socketPath, '/broker/grants', a.reg.token, { tool: 'web_search', agent: 'main', context: {} });
    assert.equal(foreign.status, 401, "another sandbox's token is refused on this socket");
    await t.reg.close();
    await assert.rejects(server.services.grants.verifyGrant(grant.token, { tool: 'web_search' }), /revoked/);
  });

  test('tool egress: CONNECT only to allow-listed hosts; skill APIs get the credential added by the broker', async () => {
    const t = await makeTenant('broker-egress', `sk-eg-${randomBytes(8).toString('hex')}`);
    // A TCP echo service stands in for an outside host (127.0.0.1 is allowed by the platform in this test).
    const echo = net.createServer((sock) => sock.pipe(sock));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const port = (echo.address() as net.AddressInfo).port;
    const connect = (target: string) =>
      new Promise<{ status: number; socket: net.Socket }>((resolve, reject) => {
        const req = http.request({ socketPath: t.reg.socketPath, method: 'CONNECT', path: target, agent: false });
        req.on('connect', (res, socket) => resolve({ status: res.statusCode ?? 0, socket }));
        req.on('response', (res) => resolve({ status: res.statusCode ?? 0, socket: res.socket }));
        req.on('error', reject);
        req.end();
      });
    const refused = await connect(`127.0.0.1:${port}`);
    assert.equal(refused.status, 403, 'not on the allow-list yet');
    refused.socket.destroy();
    const owner = (await server.services.tokens.create(t.id, { name: 'owner', role: 'tenant_admin', createdBy: null }, by)).token;
    const putEgress = (items: unknown[]) =>
      fetch(`${server.url}/api/v1/tenants/broker-egress/egress`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${owner}`, 'content-type': 'application/json' },
        body: JSON.stringify({ items }),
      });
    // Checked when saved, by the connection-time rules: metadata always, private and loopback unless the platform allows them.
    const bad = await putEgress([
      { host: '127.0.0.1', port },
      { host: '169.254.169.254', port: 80 },
      { host: '10.1.2.3', port: 443 },
      { host: 'localhost', port: 0 },
      { host: 'api.github.com', port: 443 },
    ]);
    const badBody = (await bad.json()) as { details: { issues: { path: string; rule: string }[] } };
    assert.equal(bad.status, 400, JSON.stringify(badBody));
    assert.deepEqual(
      badBody.details.issues.map((i) => [i.path, i.rule]),
      [
        ['body.items.1.host', 'metadata_address'],
        ['body.items.2.host', 'blocked_address'],
        ['body.items.3.host', 'blocked_address'],
      ],
    );
    assert.equal((await server.services.brokerGovernance.egressHosts(t.id)).length, 0, 'nothing of a refused list was saved');
    const put = await putEgress([{ host: '127.0.0.1', port }]);
    assert.equal(put.status, 200, await put.text());
    const ok = await connect(`127.0.0.1:${port}`);
    assert.equal(ok.status, 200);
    const echoed = await new Promise<string>((resolve) => {
      ok.socket.once('data', (d: Buffer) => resolve(d.toString()));
      ok.socket.write('ping through the tunnel');
    });
    assert.equal(echoed, 'ping through the tunnel');
    ok.socket.destroy();
    const metadata = await connect('169.254.169.254:80');
    assert.equal(metadata.status, 403, 'metadata is refused at connection time too');
    metadata.socket.destroy();
    echo.close();
    const denied = await server.db.query(`SELECT 1 FROM audit_events WHERE tenant_id = $1 AND action = 'broker.egress_denied'`, [t.id]);
    assert.ok((denied.rowCount ?? 0) >= 2);

    // Skill endpoint: the sandbox calls /skills/github/… and the broker adds the tenant's GitHub token.
    const ghKey = `ghp-canary-${randomBytes(10).toString('hex')}`;
    const cred = await credentials.create(t.id, { name: 'github', type: 'pat', value: ghKey }, by);
    const ep = await fetch(`${server.url}/api/v1/tenants/broker-egress/skill-endpoints/github`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${owner}`, 'content-type': 'application/json' },
      body: JSON.stringify({ baseUrl: fake.url, credentialId: cred.id }),
    });
    assert.equal(ep.status, 200, await ep.text());
    const viaSkill = await call(t.reg.socketPath, '/skills/github/v1/chat/completions', undefined, chat('fake-model'));
    assert.equal(viaSkill.status, 200, viaSkill.text);
    assert.equal(fake.requests.at(-1)?.authorization, `Bearer ${ghKey}`);
    assert.ok(!viaSkill.text.includes(ghKey) && !JSON.stringify(viaSkill.headers).includes(ghKey));
    const unknown = await call(t.reg.socketPath, '/skills/nope/x', undefined, {});
    assert.equal(unknown.status, 404);
  });

  test("tenants without a provider use the platform's default provider, tested before it is saved", async () => {
    const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'broker-noprov', name: 'No provider' }, 201);
    const reg = await broker.registerSandbox({ tenantId: t.id, instanceId: 'inst-np', sandboxId: 'sbx-np' });
    const before = await call(reg.socketPath, '/v1/chat/completions', reg.token, chat('auto'));
    assert.equal(before.status, 400, 'no provider yet: a clear refusal');
    const platformKey = `sk-platform-${randomBytes(10).toString('hex')}`;
    const res = await admin.call('PUT', '/api/v1/platform/default-provider', {
      kind: 'openai_compatible',
      baseUrl: 'http://127.0.0.1:9/v1',
      apiKey: platformKey,
      defaultModel: 'fake-model',
    });
    assert.equal(res.status, 400, 'an unreachable provider is not saved');
    const body = (await res.json()) as { code: string; message: string };
    assert.equal(body.code, 'provider_test_failed');
    assert.ok(!JSON.stringify(body).includes(platformKey));
    const ok = await admin.json<{ test: { ok: boolean; modelCount: number } }>('PUT', '/api/v1/platform/default-provider', {
      kind: 'openai_compatible',
      baseUrl: fake.baseUrl,
      apiKey: platformKey,
      defaultModel: 'fake-model',
    });
    assert.deepEqual([ok.test.ok, ok.test.modelCount], [true, 2]);
    const view = await admin.json<Record<string, unknown>>('GET', '/api/v1/platform/default-provider');
    assert.equal(view['keySet'], true);
    assert.ok(!JSON.stringify(view).includes(platformKey));
    const after = await call(reg.socketPath, '/v1/chat/completions', reg.token, chat('auto'));
    assert.equal(after.status, 200, after.text);
    assert.equal(fake.requests.at(-1)?.authorization, `Bearer ${platformKey}`);
    const audit = await server.db.query(`SELECT 1 FROM audit_events WHERE tenant_id = $1 AND action = 'platform_secret.decrypt'`, [t.id]);
    assert.equal(audit.rowCount, 1, 'the platform key read is audited against the tenant it served');
    // A tenant with its own provider keeps using it.
    assert.equal((await sendA('/v1/chat/completions', chat('auto'))).status, 200);
    assert.equal(fake.requests.at(-1)?.authorization, `Bearer ${canary}`);
    await reg.close();
  });

  test('revoking the provider key takes effect on the next call', async () => {
    const t = await makeTenant('broker-revoke', `sk-rev-${randomBytes(8).toString('hex')}`);
    assert.equal((await call(t.reg.socketPath, '/v1/chat/completions', t.reg.token, chat('auto'))).status, 200);
    await credentials.revoke(t.id, t.credId, by);
    const r = await call(t.reg.socketPath, '/v1/chat/completions', t.reg.token, chat('auto'));
    assert.equal(r.status, 503);
    assert.match(r.text, /revoked, expired or unreadable/);
  });

  test('bad requests get clear errors in the caller format, and the canary never shows', async () => {
    const bad = await call(a.reg.socketPath, '/v1/chat/completions', a.reg.token, undefined);
    assert.equal(bad.status, 404, 'GET on a POST route');
    const notJson = await new Promise<number>((resolve) => {
      const req = http.request(
        { socketPath: a.reg.socketPath, path: '/v1/chat/completions', method: 'POST', headers: { authorization: `Bearer ${a.reg.token}` } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.end('{nope');
    });
    assert.equal(notJson, 400);
    const models = await sendA('/v1/models');
    assert.equal(models.status, 200);
    assert.match(models.text, /agent\/slowpoke/);
    for (const text of [...responses, ...capturedLogs]) assert.ok(!text.includes(canary), 'canary leaked');
    const audit = await server.db.query<{ t: string }>("SELECT string_agg(row_to_json(a)::text, ' ') AS t FROM audit_events a");
    assert.ok(!(audit.rows[0]?.t ?? '').includes(canary));
    const decrypts = await server.db.query(`SELECT 1 FROM audit_events WHERE action = 'credential.decrypt' AND tenant_id = $1 AND actor LIKE 'sandbox:%'`, [
      a.id,
    ]);
    assert.ok((decrypts.rowCount ?? 0) >= 1, 'decrypts by the broker are audited with the sandbox as actor');
  });
});
