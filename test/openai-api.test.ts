/**
 * The tenant's OpenAI-compatible surface without a gateway: what the official clients see of its
 * errors (OpenAI's shape, Clawplane's message, code and request id), /models, the accepted request
 * fields, and X-Request-Id on every answer. test/openai-sdks.test.ts drives the same clients through a
 * real gateway.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI } from '@langchain/openai';
import { APICallError, generateText } from 'ai';
import OpenAI from 'openai';
import { onboard } from './helpers/client.ts';
import { EVERY_CHAT_FIELD } from './helpers/openai-fields.ts';
import { chatInput, gatewayChatBody, gatewayResponsesBody, responsesInput } from '../src/ingress/openai-input.ts';
import { startTestServer } from './helpers/server.ts';

interface OpenAiErrorBody {
  error: { message: string; type: string; code: string; param: string | null; request_id: string };
}

describe('the OpenAI-compatible surface: errors, models, fields, request ids', async () => {
  const server = await startTestServer();
  const admin = await onboard(server);
  const t = await admin.json<{ id: string; slug: string }>('POST', '/api/v1/tenants', { slug: 'oai', name: 'OAI' }, 201);
  const m = await admin.json<{ userId: string }>('POST', `/api/v1/tenants/oai/members`, { email: 'owner@oai.test', role: 'tenant_admin' }, 201);
  const { token } = await server.services.tokens.create(t.id, { name: 'sdk', role: 'member', createdBy: m.userId }, { actor: 'test' });
  const base = `${server.url}/api/v1/tenants/oai`;
  const call = (method: string, p: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(base + p, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? null : JSON.stringify(body),
    });
  const openAiError = async (res: Response, status: number, code: string): Promise<OpenAiErrorBody['error']> => {
    assert.equal(res.status, status);
    const body = (await res.json()) as OpenAiErrorBody;
    assert.deepEqual(Object.keys(body), ['error'], JSON.stringify(body));
    assert.deepEqual(Object.keys(body.error).slice(0, 5), ['message', 'type', 'code', 'param', 'request_id']);
    assert.equal(body.error.code, code);
    assert.equal(body.error.request_id, res.headers.get('x-request-id'));
    assert.match(body.error.message, /^[A-Z].*\.$/, `a sentence: ${body.error.message}`);
    assert.doesNotMatch(body.error.message, /\.\s*was not found/, 'no phrase glued onto a sentence');
    return body.error;
  };

  test('GET …/models lists the agents as OpenAI models; one is found by id, another is an OpenAI-shaped 404', async () => {
    const res = await call('GET', '/models');
    assert.equal(res.status, 200);
    assert.ok(res.headers.get('x-request-id'));
    const list = (await res.json()) as { object: string; data: { id: string; object: string; owned_by: string; created: number }[] };
    assert.equal(list.object, 'list');
    assert.deepEqual(
      list.data.map((d) => [d.id, d.object, d.owned_by]),
      [['agent/main', 'model', 'clawplane']],
    );
    assert.ok(list.data[0] && list.data[0].created > 1_700_000_000);
    const one = await call('GET', '/models/agent%2Fmain');
    assert.equal(one.status, 200);
    assert.equal(((await one.json()) as { id: string }).id, 'agent/main');
    const missing = await openAiError(await call('GET', '/models/agent%2Fnobody'), 404, 'not_found');
    assert.equal(missing.type, 'not_found_error');
    assert.match(missing.message, /GET …\/models lists the agents/);
  });

  test('a request with every documented Chat Completions field passes validation (it reaches instance selection)', async () => {
    // The tenant has no instance: a 404 naming that is proof that the body was accepted.
    const e = await openAiError(await call('POST', '/chat/completions', EVERY_CHAT_FIELD), 404, 'not_found');
    assert.equal(e.message, 'An instance of this tenant was not found. Deploy one (POST …/instances), then retry.');
    const r = await openAiError(
      await call('POST', '/responses', {
        model: 'agent/main',
        input: [
          { role: 'developer', content: 'x' },
          { role: 'user', content: 'hi' },
        ],
        instructions: 'be brief',
        max_output_tokens: 100,
        temperature: 0.1,
        top_p: 1,
        user: 'u',
        store: false,
        metadata: { a: 'b' },
        reasoning: { effort: 'low' },
        text: { format: { type: 'text' } },
        truncation: 'auto',
        parallel_tool_calls: true,
        tool_choice: 'auto',
        tools: [],
        include: [],
        previous_response_id: null,
        service_tier: 'auto',
      }),
      404,
      'not_found',
    );
    assert.match(r.message, /Deploy one/);
  });

  test("a tenant whose daily budget is spent is refused before anything wakes: 429 in OpenAI's shape naming the budget", async () => {
    const s = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'spent', name: 'Spent' }, 201);
    const o = await admin.json<{ userId: string }>('POST', '/api/v1/tenants/spent/members', { email: 'owner@spent.test', role: 'tenant_admin' }, 201);
    const member = (await server.services.tokens.create(s.id, { name: 'sdk', role: 'member', createdBy: o.userId }, { actor: 'test' })).token;
    const inst = await server.services.instances.deploy(s.id, { name: 'main', start: false }, { actor: 'test' });
    const spentCall = (p: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${server.url}/api/v1/tenants/spent${p}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${member}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      });
    const turn = { model: 'agent/main', messages: [{ role: 'user' as const, content: 'hi' }] };
    // The platform's token quota, spent today as the broker counts it.
    await server.db.query('UPDATE tenants SET daily_token_budget = 1000 WHERE id = $1', [s.id]);
    await server.db.query(
      `INSERT INTO broker_spend (tenant_id, scope, day, tokens, cost_usd, calls) VALUES ($1, 'tenant', (now() AT TIME ZONE 'UTC')::date, 1000, 2.5, 4)`,
      [s.id],
    );
    for (const [p, body] of [
      ['/chat/completions', turn],
      ['/chat/completions', { ...turn, stream: true }],
      ['/responses', { model: 'agent/main', input: 'hi' }],
    ] as const) {
      const e = await openAiError(await spentCall(p, body), 429, 'budget_exceeded');
      assert.match(e.message, /daily token budget of the tenant \(1000 tokens\) is used up/);
    }
    const hook = await spentCall('/hooks/agent', { message: 'hi' });
    assert.equal(hook.status, 429);
    assert.equal(((await hook.json()) as { code: string }).code, 'budget_exceeded');
    await assert.rejects(
      new OpenAI({ baseURL: `${server.url}/api/v1/tenants/spent`, apiKey: member, maxRetries: 0 }).chat.completions.create(turn),
      (e: unknown) => e instanceof OpenAI.RateLimitError && /daily token budget/.test(e.message),
    );
    // The tenant admin's own cost cap is lower than nothing: it counts as well.
    await server.db.query('UPDATE tenants SET daily_token_budget = NULL WHERE id = $1', [s.id]);
    await server.db.query(`INSERT INTO broker_limits (tenant_id, agent, daily_cost_usd) VALUES ($1, '', 2.5)`, [s.id]);
    assert.match(
      (await openAiError(await spentCall('/chat/completions', turn), 429, 'budget_exceeded')).message,
      /daily cost budget of the tenant \(\$2\.5\) is used up/,
    );
    // Nothing woke.
    const row = await server.services.instances.byId(inst.id);
    assert.deepEqual([row?.desiredState, row?.status], ['stopped', 'stopped']);
    assert.equal((await server.db.query(`SELECT 1 FROM audit_events WHERE action = 'instance.start' AND target = $1`, [`instance:${inst.id}`])).rowCount, 0);
    // Raised: the next turn passes the gate at once (and reaches instance selection: "nope" is no instance).
    await server.db.query(`UPDATE broker_limits SET daily_cost_usd = 10 WHERE tenant_id = $1`, [s.id]);
    await openAiError(await spentCall('/chat/completions', turn, { 'x-clawplane-instance': 'nope' }), 404, 'not_found');
  });

  test('what the gateway receives: its fields only, developer turns as system ones, message items typed, bytes as sources', () => {
    const chat = gatewayChatBody(
      chatInput.parse({ ...EVERY_CHAT_FIELD, tools: [...EVERY_CHAT_FIELD.tools, { type: 'custom', custom: { name: 'free' } }] }),
      'main',
    );
    assert.deepEqual(Object.keys(chat).sort(), [
      'frequency_penalty',
      'max_completion_tokens',
      'max_tokens',
      'messages',
      'model',
      'presence_penalty',
      'seed',
      'stop',
      'stream',
      'temperature',
      'tool_choice',
      'tools',
      'top_p',
    ]);
    assert.equal(chat['model'], 'openclaw/main');
    assert.deepEqual(
      (chat['messages'] as { role: string }[]).map((m) => m.role),
      ['system', 'system', 'user', 'assistant', 'tool', 'user'],
    );
    assert.deepEqual(
      (chat['tools'] as { type: string }[]).map((t) => t.type),
      ['function'],
    );
    const resp = gatewayResponsesBody(
      responsesInput.parse({
        model: 'agent/main',
        input: [
          {
            role: 'user',
            content: [
              { type: 'input_text', text: 'hi', prompt_cache_breakpoint: {} },
              { type: 'input_image', image_url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'auto' },
            ],
          },
          { type: 'function_call_output', call_id: 'c1', output: 'x' },
        ],
        tools: [{ type: 'web_search' }],
        tool_choice: { type: 'web_search' },
        user: 'u',
        store: false,
      }),
      'main',
    );
    assert.deepEqual(resp, {
      model: 'openclaw/main',
      stream: false,
      input: [
        {
          role: 'user',
          type: 'message',
          content: [
            { type: 'input_text', text: 'hi' },
            { type: 'input_image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
          ],
        },
        { type: 'function_call_output', call_id: 'c1', output: 'x' },
      ],
    });
  });

  test("fields outside OpenAI's documented set, and bad values, are a 400 in OpenAI's shape naming the field", async () => {
    const unknown = await openAiError(await call('POST', '/chat/completions', { ...EVERY_CHAT_FIELD, temprature: 0.5 }), 400, 'validation_failed');
    assert.equal(unknown.type, 'invalid_request_error');
    assert.match(unknown.message, /unknown field\(s\): temprature/);
    const role = await openAiError(
      await call('POST', '/chat/completions', { model: 'agent/main', messages: [{ role: 'wizard', content: 'x' }] }),
      400,
      'validation_failed',
    );
    assert.equal(role.param, 'messages.0.role');
    const model = await openAiError(
      await call('POST', '/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
      400,
      'validation_failed',
    );
    assert.equal(model.param, 'model');
    assert.match(model.message, /GET …\/models lists them/);
    await openAiError(await call('POST', '/responses', { model: 'agent/main', input: 'hi', instructionz: 'x' }), 400, 'validation_failed');
  });

  test("auth failures, unknown tenants and unknown OpenAI paths answer in OpenAI's shape; the rest of the API keeps its own", async () => {
    const unauth = await fetch(`${base}/models`, { headers: { authorization: 'Bearer cp_not_a_token' } });
    assert.equal((await openAiError(unauth, 401, 'unauthenticated')).type, 'authentication_error');
    await openAiError(
      await fetch(`${server.url}/api/v1/tenants/no-such/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: '{}',
      }),
      404,
      'not_found',
    );
    const route = await openAiError(await call('POST', '/embeddings', { model: 'agent/main', input: 'x' }), 404, 'not_found');
    assert.match(route.message, /^There is no route POST \/api\/v1\/tenants\/oai\/embeddings\. The API is described at \/api\/v1\/docs\.$/);
    // Clawplane's own shape elsewhere, and its not-found message reads as a sentence too.
    const own = await call('GET', '/nope');
    assert.equal(own.status, 404);
    const body = (await own.json()) as { code: string; message: string; requestId: string };
    assert.equal(body.code, 'not_found');
    assert.equal(body.message, 'There is no route GET /api/v1/tenants/oai/nope. The API is described at /api/v1/docs.');
    assert.equal(body.requestId, own.headers.get('x-request-id'));
  });

  test('X-Request-Id is on every answer: JSON, a console file, a health probe, the OpenAPI document', async () => {
    for (const url of [`${base}/models`, `${server.url}/healthz`, `${server.url}/api/v1/openapi.json`, `${server.url}/`, `${server.url}/tenants/oai/chat`]) {
      const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      await res.arrayBuffer();
      assert.match(res.headers.get('x-request-id') ?? '', /^[\w-]{8,}$/, `${url} (${res.status})`);
    }
    const mine = await fetch(`${base}/models`, { headers: { authorization: `Bearer ${token}`, 'x-request-id': 'my-trace-123' } });
    assert.equal(mine.headers.get('x-request-id'), 'my-trace-123');
  });

  test("each SDK's typed error carries Clawplane's message, code and request id", async () => {
    const openai = new OpenAI({ baseURL: base, apiKey: token, maxRetries: 0 });
    const err = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).then(
      () => assert.fail('accepted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.match(err.message, /must be "agent\/<name>"/);
    assert.equal(err.code, 'validation_failed');
    assert.equal(err.param, 'model');
    assert.ok(err.requestID);
    const noAuth = await new OpenAI({ baseURL: base, apiKey: 'cp_wrong', maxRetries: 0 }).models.list().then(
      () => assert.fail('listed'),
      (e: unknown) => e,
    );
    assert.ok(noAuth instanceof OpenAI.AuthenticationError);
    assert.match(noAuth.message, /The API token is unknown, expired or revoked/);

    const provider = createOpenAICompatible({ name: 'clawplane', baseURL: base, apiKey: token });
    const aiErr = await generateText({ model: provider('gpt-4o'), prompt: 'x', maxRetries: 0 }).then(
      () => assert.fail('accepted'),
      (e: unknown) => e,
    );
    assert.ok(APICallError.isInstance(aiErr), String(aiErr));
    assert.equal(aiErr.statusCode, 400);
    assert.match(aiErr.message, /must be "agent\/<name>"/);

    const lc = new ChatOpenAI({ model: 'gpt-4o', apiKey: token, configuration: { baseURL: base }, maxRetries: 0 });
    await assert.rejects(lc.invoke('x'), (e: Error) => /must be "agent\/<name>"/.test(e.message));
  });
});
