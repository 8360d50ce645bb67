/**
 * The clients people point at a tenant's base URL (/api/v1/tenants/{tenant}) — the openai SDK, the AI
 * SDK (@ai-sdk/openai-compatible, and @ai-sdk/openai's default provider, which calls …/responses) and
 * LangChain — driven through a real OpenClaw 2026.9.6 under bubblewrap, with the fake provider behind
 * the real broker. ONE gateway for the file: the first test wakes it from stopped with every SDK's
 * documented streaming loop running at once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI } from '@langchain/openai';
import { generateText, streamText } from 'ai';
import OpenAI from 'openai';
import type { Instance } from '../src/instances/instances.ts';
import { onboard } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { EVERY_CHAT_FIELD } from './helpers/openai-fields.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { uidBase } from './helpers/gateway.ts';

const ANSWER = 'Hello from fake-model';

describe('OpenAI clients against a real gateway', { timeout: 1_200_000 }, async () => {
  const fake = await startFakeLlm();
  const root = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
    CLAWPLANE_LOG_LEVEL: 'info',
    // Nothing is reaped while the file runs.
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
  });
  await server.services.runtimes.pull(OPENCLAW_VERSION);
  const admin = await onboard(server);
  const t = await admin.json<{ id: string; slug: string }>('POST', '/api/v1/tenants', { slug: 'sdk', name: 'SDK' }, 201);
  const owner = await admin.json<{ userId: string }>('POST', '/api/v1/tenants/sdk/members', { email: 'owner@sdk.test', role: 'tenant_admin' }, 201);
  const by = { actor: 'test', userId: owner.userId };
  const key = await server.services.credentials.create(t.id, { name: 'fake-llm-key', type: 'api_key', value: 'sk-fake-0123456789abcdef' }, by);
  const provider = await server.services.providers.create(t.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  await server.services.providers.setRoute(t.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] }, by);
  const { token } = await server.services.tokens.create(t.id, { name: 'sdk', role: 'member', createdBy: owner.userId }, { actor: 'test' });
  const instance = await server.services.instances.deploy(t.id, { name: 'main', start: false }, { actor: 'test' });
  const baseURL = `${server.url}/api/v1/tenants/sdk`;

  const openai = new OpenAI({ baseURL, apiKey: token, maxRetries: 0 });
  const compatible = createOpenAICompatible({ name: 'clawplane', baseURL, apiKey: token, includeUsage: true });
  const aiOpenAi = createOpenAI({ baseURL, apiKey: token });
  const langchain = (headers: Record<string, string> = {}) =>
    new ChatOpenAI({ model: 'agent/main', apiKey: token, maxRetries: 0, configuration: { baseURL, defaultHeaders: headers } });
  const status = async () => (await server.services.instances.byId(instance.id))?.status;
  const starts = async () =>
    (await server.db.query(`SELECT 1 FROM audit_events WHERE action = 'instance.start' AND target = $1`, [`instance:${instance.id}`])).rowCount ?? 0;

  test("a stopped instance is woken by streams from every SDK at once; each documented loop completes with the agent's answer", async () => {
    assert.equal(await status(), 'stopped');
    const raw = (async () => {
      const res = await fetch(`${baseURL}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'agent/main', stream: true, messages: [{ role: 'user', content: 'raw' }] }),
      });
      return { headers: res.headers, text: await res.text() };
    })();
    // The openai SDK's README loop.
    const viaOpenAi = (async () => {
      const stream = await openai.chat.completions.create({ model: 'agent/main', messages: [{ role: 'user', content: 'openai' }], stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content || '';
      return text;
    })();
    // The AI SDK's documented loop; errors in a stream go to onError, so record them.
    const aiErrors: unknown[] = [];
    const viaAiSdk = (async () => {
      const result = streamText({ model: compatible('agent/main'), prompt: 'ai sdk', maxRetries: 0, onError: ({ error }) => void aiErrors.push(error) });
      let text = '';
      for await (const part of result.textStream) text += part;
      return text;
    })();
    // @ai-sdk/openai's default provider(model) speaks the Responses API.
    const viaResponses = (async () => {
      const result = streamText({ model: aiOpenAi('agent/main'), prompt: 'responses', maxRetries: 0, onError: ({ error }) => void aiErrors.push(error) });
      let text = '';
      for await (const part of result.textStream) text += part;
      return text;
    })();
    const viaLangChain = (async () => {
      let text = '';
      for await (const chunk of await langchain().stream('langchain')) text += typeof chunk.content === 'string' ? chunk.content : '';
      return text;
    })();
    const [r, o, a, resp, l] = await Promise.all([raw, viaOpenAi, viaAiSdk, viaResponses, viaLangChain]);
    assert.deepEqual(aiErrors, []);
    assert.deepEqual([o, a, resp, l], [ANSWER, ANSWER, ANSWER, ANSWER]);
    // What made the difference: progress went out as comments, never as events a client parses.
    assert.match(r.text, /^: waking\n\n/m);
    assert.match(r.text, /^: ready\n\n/m);
    assert.doesNotMatch(r.text, /^event:/m);
    assert.match(r.text, /data: \[DONE\]/);
    assert.ok(r.headers.get('x-request-id'));
    assert.equal(await starts(), 1, 'one start for all of them');
    assert.equal(await status(), 'running');
  });

  test('create: each SDK gets the answer, and the openai SDK sees the request id', async () => {
    const c = await openai.chat.completions.create({
      model: 'agent/main',
      messages: [
        { role: 'developer', content: 'Be brief.' },
        { role: 'user', content: 'hi' },
      ],
    });
    assert.equal(c.choices[0]?.message.content, ANSWER);
    assert.match(c._request_id ?? '', /^[\w-]{8,}$/);
    const r = await openai.responses.create({ model: 'agent/main', input: 'hi there' });
    assert.equal(r.output_text, ANSWER);
    assert.match(r._request_id ?? '', /^[\w-]{8,}$/);
    assert.equal((await generateText({ model: compatible('agent/main'), prompt: 'hi', maxRetries: 0 })).text, ANSWER);
    assert.equal((await generateText({ model: aiOpenAi('agent/main'), prompt: 'hi', maxRetries: 0 })).text, ANSWER);
    assert.equal((await langchain().invoke('hi')).content, ANSWER);
  });

  test('the openai SDK streams the Responses API through its documented loop', async () => {
    const stream = await openai.responses.create({ model: 'agent/main', input: 'stream it', stream: true });
    let text = '';
    for await (const event of stream) if (event.type === 'response.output_text.delta') text += event.delta;
    assert.equal(text, ANSWER);
  });

  test('models: the SDK lists and retrieves the agents', async () => {
    const ids: string[] = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['agent/main']);
    assert.equal((await openai.models.retrieve('agent/main')).id, 'agent/main');
  });

  test('sessions: turns with one X-Clawplane-Session continue one conversation, which the archive lists', async () => {
    const opts = { headers: { 'x-clawplane-session': 'sdk-thread-1' } };
    await openai.chat.completions.create({ model: 'agent/main', messages: [{ role: 'user', content: 'remember ALBATROSS' }] }, opts);
    const n = fake.requests.length;
    const { data, response } = await openai.chat.completions
      .create({ model: 'agent/main', messages: [{ role: 'user', content: 'what word?' }] }, opts)
      .withResponse();
    assert.equal(data.choices[0]?.message.content, ANSWER);
    assert.equal(response.headers.get('x-clawplane-session'), 'sdk-thread-1');
    // The gateway kept the session: the provider saw the first turn in the second one's history.
    assert.match(JSON.stringify(fake.requests.slice(n).map((q) => q.body['messages'])), /remember ALBATROSS/);
    let text = '';
    for await (const chunk of await langchain({ 'x-clawplane-session': 'sdk-thread-1' }).stream('and again?'))
      text += typeof chunk.content === 'string' ? chunk.content : '';
    assert.equal(text, ANSWER);
    const msgs = (await (await fetch(`${baseURL}/chat/sessions/sdk-thread-1/messages`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      items: { role: string; content: string }[];
    };
    assert.deepEqual(
      msgs.items.map((m) => m.role),
      ['user', 'assistant', 'user', 'assistant', 'user', 'assistant'],
    );
    assert.equal(msgs.items[0]?.content, 'remember ALBATROSS');
  });

  test('a request with every documented Chat Completions field is answered by the gateway', async () => {
    const n = fake.requests.length;
    const res = await fetch(`${baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(EVERY_CHAT_FIELD),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    assert.equal((JSON.parse(body) as { choices: { message: { content: string } }[] }).choices[0]?.message.content, ANSWER);
    // The developer turn reached the model as system instructions.
    assert.match(JSON.stringify(fake.requests.slice(n).map((q) => q.body['messages'])), /Answer briefly\./);
  });

  test("errors: each SDK's typed error carries Clawplane's message", async () => {
    const e = await openai.chat.completions
      .create({ model: 'agent/main', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-clawplane-instance': 'nope' } })
      .then(
        () => assert.fail('answered'),
        (err: unknown) => err,
      );
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.match(e.message, /Instance "nope" was not found\. Name an instance/);
    assert.equal(e.code, 'not_found');
    const bad = await openai.chat.completions.create({ model: 'agent/main', messages: [{ role: 'user', content: 'x' }], temperature: 7 }).then(
      () => assert.fail('answered'),
      (err: unknown) => err,
    );
    assert.ok(bad instanceof OpenAI.BadRequestError);
    assert.match(bad.message, /temperature/);
    await assert.rejects(generateText({ model: compatible('agent/main'), prompt: 'x', temperature: 7, maxRetries: 0 }), /temperature/);
    await assert.rejects(
      new ChatOpenAI({ model: 'agent/main', apiKey: 'cp_wrong', maxRetries: 0, configuration: { baseURL } }).invoke('x'),
      /The API token is unknown/,
    );
  });
});
