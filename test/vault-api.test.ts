/**
 * The vault through the real HTTP API (issue 4): credentials are write-only, skill forms validate,
 * provider settings and model routes round-trip, "test connection" reaches a provider through the
 * SSRF-guarded egress path, tenants cannot touch each other's keys, and `clawplane vault rotate` works
 * against a live server. A canary secret is planted everywhere a key can go and then searched for in
 * every response, header, log line, audit row and database row of this file: it must be in none.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { parseConfig } from '../src/config/schema.ts';
import { ConfigError } from '../src/errors.ts';
import { checkUrlShape, EgressRefusedError } from '../src/net/ssrf.ts';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

// Generated per run, so no fixed string can satisfy the scans by accident.
const canary = `sk-canary-${randomBytes(20).toString('hex')}`;

// Every response this file receives (status, headers, body), recorded before any test reads it.
const recorded: string[] = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
  const res = await realFetch(input, init);
  const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
  recorded.push(`${res.status}\n${headers}\n\n${await res.clone().text()}`);
  return res;
};
after(() => {
  globalThis.fetch = realFetch;
});

/**
 * The one stand-in this suite allows (STYLE 7): a local OpenAI-compatible server in place of an external
 * LLM provider. GET /v1/models answers the model list to the canary key; anything under /reject/ answers
 * 401 and echoes the key it was sent, as real providers' error messages do.
 */
interface FakeProvider {
  base: string;
  seen: { path: string; authorization: string | undefined }[];
}
async function startFakeProvider(): Promise<FakeProvider> {
  const seen: FakeProvider['seen'] = [];
  const srv = http.createServer((req, res) => {
    const authorization = req.headers.authorization;
    seen.push({ path: req.url ?? '', authorization });
    const key = (authorization ?? '').replace(/^Bearer /, '');
    res.setHeader('content-type', 'application/json');
    if (req.url === '/v1/models' && key === canary) {
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-small' }, { id: 'fake-large' }, { id: 'fake-embed' }] }));
      return;
    }
    res.statusCode = 401;
    res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${key}`, type: 'invalid_request_error', code: 'invalid_api_key' } }));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  after(() => new Promise<void>((resolve) => srv.close(() => resolve())));
  return { base: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen };
}

/** Runs the CLI without blocking this process: the server under test keeps answering meanwhile. */
function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => {
      recorded.push(`cli ${args.join(' ')}\n${stdout}\n${stderr}`);
      resolve({ status, stdout, stderr });
    });
  });
}

interface Credential {
  id: string;
  name: string;
  status: string;
  last4: string;
  version: number;
  skill: string | null;
  metadata: Record<string, unknown>;
  expiresAt: string | null;
  expiresSoon: boolean;
}
interface Provider {
  id: string;
  name: string;
  kind: string;
  baseUrl: string;
  credentialId: string | null;
  defaultModel: string | null;
  enabled: boolean;
}
interface ErrorJson {
  code: string;
  message: string;
  details?: { issues?: { path: string; message: string }[] };
}
type TestResult = { ok: boolean; modelCount?: number; models?: string[]; error?: { code: string; message: string } };

describe('vault API', async () => {
  const fake = await startFakeProvider();
  const server = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1' });
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const A = `/api/v1/tenants/${a.slug}`;
  const B = `/api/v1/tenants/${b.slug}`;
  const viewerOfA = new ApiClient(server.url, {
    bearer: (await server.services.tokens.create(a.id, { name: 'viewer', role: 'viewer', createdBy: a.ownerId }, { actor: 'test' })).token,
  });
  let canaryCred: Credential;
  let local: Provider;

  /** A request that must fail with `status`; returns the error body. */
  async function refused(client: ApiClient, method: string, p: string, body: unknown, status: number): Promise<ErrorJson> {
    const res = await client.call(method, p, body);
    const text = await res.text();
    assert.equal(res.status, status, `${method} ${p}: ${text}`);
    return JSON.parse(text) as ErrorJson;
  }

  test('the skill registry and provider catalogue are there for the UI, to signed-in callers only', async () => {
    const skills = await viewerOfA.json<{ items: { id: string; fields: { name: string; secret: boolean; required: boolean }[] }[] }>('GET', '/api/v1/skills');
    const slack = skills.items.find((s) => s.id === 'slack');
    assert.deepEqual(
      slack?.fields.map((f) => [f.name, f.secret, f.required]),
      [
        ['bot_token', true, true],
        ['signing_secret', true, false],
      ],
    );
    assert.ok(['github', 'telegram', 'notion', 'gmail', 'whatsapp'].every((id) => skills.items.some((s) => s.id === id)));
    const kinds = await viewerOfA.json<{ items: { kind: string; defaultBaseUrl: string | null }[] }>('GET', '/api/v1/provider-kinds');
    assert.equal(kinds.items.find((k) => k.kind === 'anthropic')?.defaultBaseUrl, 'https://api.anthropic.com/v1');
    assert.equal(kinds.items.find((k) => k.kind === 'openai_compatible')?.defaultBaseUrl, null);
    const anon = new ApiClient(server.url);
    assert.equal((await anon.call('GET', '/api/v1/skills')).status, 401);
    assert.equal((await anon.call('GET', `${A}/credentials`)).status, 401);
  });

  test('a credential is write-only: create, get and list show status, expiry and the last 4 characters, never the value', async () => {
    canaryCred = await a.client.json<Credential>('POST', `${A}/credentials`, { name: 'openai-key', type: 'api_key', value: canary }, 201);
    assert.deepEqual([canaryCred.status, canaryCred.last4, canaryCred.version, canaryCred.expiresSoon], ['active', canary.slice(-4), 1, false]);
    const res = await a.client.call('GET', `${A}/credentials/${canaryCred.id}`);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const got = (await res.json()) as Credential & Record<string, unknown>;
    assert.equal(got.name, 'openai-key');
    assert.ok(!('value' in got) && !('ciphertext' in got));
    const listed = await viewerOfA.json<{ items: Credential[] }>('GET', `${A}/credentials`);
    assert.ok(
      listed.items.some((c) => c.id === canaryCred.id && c.last4 === canary.slice(-4)),
      'a viewer sees the metadata',
    );

    // Expiry: the UI warns about keys that run out within two weeks.
    const soon = await a.client.json<Credential>(
      'POST',
      `${A}/credentials`,
      { name: 'soon', type: 'secret', value: 'short-lived-secret-value', expiresAt: new Date(Date.now() + 3 * 86_400_000).toISOString() },
      201,
    );
    const later = await a.client.json<Credential>(
      'POST',
      `${A}/credentials`,
      { name: 'later', type: 'secret', value: 'long-lived-secret-value', expiresAt: new Date(Date.now() + 90 * 86_400_000).toISOString() },
      201,
    );
    assert.deepEqual([soon.expiresSoon, later.expiresSoon], [true, false]);
    assert.ok(soon.expiresAt !== null);

    const dup = await refused(a.client, 'POST', `${A}/credentials`, { name: 'openai-key', type: 'api_key', value: canary }, 409);
    assert.equal(dup.code, 'credential_name_taken');
  });

  test('only tenant admins change credentials; a platform admin can read neither values nor metadata', async () => {
    await refused(viewerOfA, 'POST', `${A}/credentials`, { name: 'by-viewer', type: 'api_key', value: canary }, 403);
    await refused(viewerOfA, 'POST', `${A}/credentials/${canaryCred.id}/revoke`, undefined, 403);
    await refused(viewerOfA, 'POST', `${A}/providers/${a.providerId}/test`, undefined, 403);
    for (const p of [`${A}/credentials`, `${A}/credentials/${canaryCred.id}`, `${A}/providers`]) {
      const e = await refused(admin, 'GET', p, undefined, 403);
      assert.match(e.message, /Platform admins manage tenants but cannot use or read/);
    }
    await refused(admin, 'POST', `${A}/credentials`, { name: 'by-platform', type: 'api_key', value: canary }, 403);
  });

  test('bad input is refused with 400 naming the field, never echoing the value', async () => {
    const cases: [unknown, RegExp][] = [
      [{ name: 'bad name!', type: 'api_key', value: canary }, /body\.name/],
      [{ name: 'ok', type: 'password', value: canary }, /body\.type/],
      [{ name: 'ok', type: 'api_key', value: canary.repeat(500) }, /body\.value/],
      [{ name: 'ok', type: 'api_key', value: canary, tenantId: b.id }, /unknown field\(s\): tenantId/],
      [{ name: 'ok', type: 'api_key', value: canary, expiresAt: canary }, /body\.expiresAt/],
      [{ name: canary, type: 'api_key' }, /body\.value/],
    ];
    for (const [body, field] of cases) {
      const e = await refused(a.client, 'POST', `${A}/credentials`, body, 400);
      assert.equal(e.code, 'validation_failed');
      assert.match(e.message, field);
    }
    // Not JSON at all: the body is not parsed, so nothing of it can come back.
    const raw = await fetch(`${server.url}${A}/credentials`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.client.bearer ?? ''}`, 'content-type': 'application/json' },
      body: `{"name":"x","value":"${canary}`,
    });
    assert.equal(raw.status, 400);
    const e = await refused(a.client, 'PUT', `${A}/credentials/${canaryCred.id}/value`, { value: '' }, 400);
    assert.match(e.message, /body\.value/);
  });

  test('skill forms validate against the registry and store one credential per secret field', async () => {
    const slack = `${A}/credentials/skills/slack`;
    let e = await refused(a.client, 'POST', slack, { values: { bot_token: canary } }, 400);
    assert.match(e.message, /bot_token does not look right: expected starts with xoxb-/);
    assert.deepEqual(
      e.details?.issues?.map((i) => i.path),
      ['bot_token'],
    );
    e = await refused(a.client, 'POST', slack, { values: { signing_secret: canary } }, 400);
    assert.deepEqual(e.details?.issues?.map((i) => i.path).sort(), ['bot_token', 'signing_secret']);
    e = await refused(a.client, 'POST', slack, { values: { bot_token: `xoxb-${'1'.repeat(12)}`, webhook: canary } }, 400);
    assert.match(e.message, /webhook/);
    e = await refused(a.client, 'POST', `${A}/credentials/skills/myspace`, { values: { token: canary } }, 400);
    assert.match(e.message, /Unknown skill "myspace"/);

    const botToken = `xoxb-${randomBytes(12).toString('hex')}`;
    const made = await a.client.json<{ items: Credential[] }>(
      'POST',
      slack,
      { values: { bot_token: botToken, signing_secret: randomBytes(16).toString('hex') } },
      201,
    );
    assert.deepEqual(
      made.items.map((c) => [c.name, c.skill, c.status]),
      [
        ['slack.bot_token', 'slack', 'active'],
        ['slack.signing_secret', 'slack', 'active'],
      ],
    );
    assert.equal(made.items[0]?.last4, botToken.slice(-4));
    const gh = await a.client.json<{ items: Credential[] }>(
      'POST',
      `${A}/credentials/skills/github`,
      { values: { pat: `ghp_${'a'.repeat(36)}`, scopes: ['repo', 'read:org'] }, prefix: 'gh-bot' },
      201,
    );
    assert.deepEqual([gh.items[0]?.name, gh.items[0]?.metadata['scopes']], ['gh-bot.pat', ['repo', 'read:org']]);
    const onlySlack = await a.client.json<{ items: Credential[] }>('GET', `${A}/credentials?skill=slack`);
    assert.deepEqual(onlySlack.items.map((c) => c.name).sort(), ['slack.bot_token', 'slack.signing_secret']);
  });

  test('provider settings round-trip; user-supplied base URLs go through the SSRF rules', async () => {
    local = await a.client.json<Provider>(
      'POST',
      `${A}/providers`,
      { kind: 'openai_compatible', name: 'local', baseUrl: `${fake.base}/v1/`, credentialId: canaryCred.id, defaultModel: 'fake-small' },
      201,
    );
    assert.deepEqual([local.baseUrl, local.credentialId, local.defaultModel, local.enabled], [`${fake.base}/v1`, canaryCred.id, 'fake-small', true]);
    const patched = await a.client.json<Provider>('PATCH', `${A}/providers/${local.id}`, { defaultModel: 'fake-large', name: 'local-llm' });
    const again = await viewerOfA.json<Provider>('GET', `${A}/providers/${local.id}`);
    assert.deepEqual(again, patched);
    assert.deepEqual([again.name, again.defaultModel, again.baseUrl], ['local-llm', 'fake-large', `${fake.base}/v1`]);
    const list = await viewerOfA.json<{ items: Provider[] }>('GET', `${A}/providers`);
    assert.deepEqual(list.items.map((p) => p.name).sort(), ['local-llm', 'main']);
    const anthropic = await a.client.json<Provider>('POST', `${A}/providers`, { kind: 'anthropic', name: 'claude' }, 201);
    assert.equal(anthropic.baseUrl, 'https://api.anthropic.com/v1');

    // Allowed is exactly 127.0.0.1: other spellings of this machine, private and metadata addresses are refused.
    for (const [baseUrl, reason] of [
      ['https://localhost:11434/v1', /localhost is this machine/],
      ['http://localhost:11434/v1', /Plain http/],
      ['http://10.0.0.7/v1', /Plain http/],
      ['https://10.0.0.7/v1', /a private address/],
      ['https://169.254.169.254/latest', /cloud metadata/],
      ['https://0x7f000002/v1', /127\.0\.0\.2 is a loopback address/],
      ['https://user:pw@api.example.com/v1', /user name or password/],
    ] as const) {
      const err = await refused(a.client, 'POST', `${A}/providers`, { kind: 'openai_compatible', name: 'ssrf', baseUrl }, 400);
      assert.equal(err.code, 'egress_refused');
      assert.match(err.message, reason);
    }
    const noUrl = await refused(a.client, 'POST', `${A}/providers`, { kind: 'openai_compatible', name: 'no-url' }, 400);
    assert.match(noUrl.message, /needs a baseUrl/);
    await refused(a.client, 'PATCH', `${A}/providers/${local.id}`, { tenantId: b.id }, 400);
  });

  test('model routes: tenant default, per-agent and per-skill overrides, ordered fallbacks', async () => {
    const routes = `${A}/model-routes`;
    await a.client.json('PUT', routes, {
      scope: 'tenant',
      targets: [
        { providerId: local.id, model: 'fake-large' },
        { providerId: a.providerId, model: 'gpt-4o' },
      ],
    });
    await a.client.json('PUT', routes, { scope: 'agent', scopeName: 'coder', targets: [{ providerId: a.providerId, model: 'gpt-4o' }] });
    await a.client.json('PUT', routes, { scope: 'skill', scopeName: 'github', targets: [{ providerId: local.id, model: 'fake-small' }] });
    const got = await viewerOfA.json<{ items: { scope: string; scopeName: string; targets: { providerId: string; model: string }[] }[] }>('GET', routes);
    assert.deepEqual(got.items, [
      { scope: 'agent', scopeName: 'coder', targets: [{ providerId: a.providerId, model: 'gpt-4o' }] },
      { scope: 'skill', scopeName: 'github', targets: [{ providerId: local.id, model: 'fake-small' }] },
      {
        scope: 'tenant',
        scopeName: '',
        targets: [
          { providerId: local.id, model: 'fake-large' },
          { providerId: a.providerId, model: 'gpt-4o' },
        ],
      },
    ]);
    const resolved = await server.services.providers.resolveRoute(a.id, { agent: 'coder', skill: 'github' });
    assert.deepEqual(
      resolved.map((t) => t.model),
      ['fake-small'],
      'the skill override wins over the agent and the default',
    );
    const e = await refused(a.client, 'PUT', routes, { scope: 'tenant', scopeName: 'x', targets: [] }, 400);
    assert.match(e.message, /scopeName/);
    await a.client.json('PUT', routes, { scope: 'agent', scopeName: 'coder', targets: [] });
    assert.equal((await a.client.json<{ items: unknown[] }>('GET', routes)).items.length, 2, 'an empty list removes the override');
    await refused(viewerOfA, 'PUT', routes, { scope: 'tenant', targets: [] }, 403);
  });

  test('test connection lists the models through the guarded egress path; a refusing provider never gets its key echoed back', async () => {
    const before = fake.seen.length;
    const ok = await a.client.json<TestResult>('POST', `${A}/providers/${local.id}/test`);
    assert.deepEqual([ok.ok, ok.modelCount, ok.models], [true, 3, ['fake-small', 'fake-large', 'fake-embed']]);
    assert.deepEqual(
      fake.seen.slice(before),
      [{ path: '/v1/models', authorization: `Bearer ${canary}` }],
      'the decrypted key went to the provider, and only there',
    );

    const rejecting = await a.client.json<Provider>(
      'POST',
      `${A}/providers`,
      { kind: 'openai_compatible', name: 'rejecting', baseUrl: `${fake.base}/reject/v1`, credentialId: canaryCred.id },
      201,
    );
    const bad = await a.client.json<TestResult>('POST', `${A}/providers/${rejecting.id}/test`);
    assert.deepEqual([bad.ok, bad.error?.code], [false, 'http_401']);
    assert.match(bad.error?.message ?? '', /refused the API key/);
    assert.equal(fake.seen.at(-1)?.authorization, `Bearer ${canary}`, 'the fake provider did echo the canary: the scan below must not find it');

    const audit = await server.db.query<{ action: string; actor: string; decision: string; detail: { purpose?: string } }>(
      "SELECT action, actor, decision, detail FROM audit_events WHERE action = 'credential.decrypt' AND target = $1 ORDER BY seq",
      [`credential:${canaryCred.id}`],
    );
    assert.equal(audit.rows.length, 2, 'every decrypt is audited');
    assert.ok(audit.rows.every((r) => r.decision === 'allow' && r.actor === `token:${a.tokenId}` && r.detail.purpose?.startsWith('provider.test_connection:')));
  });

  test("tenant B can neither see, use nor point at tenant A's key or provider", async () => {
    const before = fake.seen.length;
    await refused(b.client, 'GET', `${A}/credentials/${canaryCred.id}`, undefined, 404);
    await refused(b.client, 'GET', `${B}/credentials/${canaryCred.id}`, undefined, 404);
    await refused(b.client, 'POST', `${B}/providers/${local.id}/test`, undefined, 404);
    await refused(b.client, 'POST', `${B}/credentials/${canaryCred.id}/revoke`, undefined, 404);
    await refused(b.client, 'PUT', `${B}/credentials/${canaryCred.id}/value`, { value: 'sk-overwrite-attempt-123' }, 404);
    // Attaching A's credential to B's provider fails like a missing one (composite foreign key).
    await refused(
      b.client,
      'POST',
      `${B}/providers`,
      { kind: 'openai_compatible', name: 'steal', baseUrl: `${fake.base}/v1`, credentialId: canaryCred.id },
      404,
    );
    await refused(b.client, 'PATCH', `${B}/providers/${b.providerId}`, { credentialId: canaryCred.id }, 404);
    await refused(b.client, 'PUT', `${B}/model-routes`, { scope: 'tenant', targets: [{ providerId: local.id, model: 'fake-small' }] }, 404);
    const bList = await b.client.json<{ items: Credential[] }>('GET', `${B}/credentials?includeRevoked=true`);
    assert.deepEqual(
      bList.items.map((c) => c.name),
      ['llm-key'],
    );
    assert.equal(fake.seen.length, before, "none of B's attempts reached the provider with A's key");
    assert.equal((await a.client.json<Credential>('GET', `${A}/credentials/${canaryCred.id}`)).status, 'active');
  });

  test('clawplane vault rotate re-wraps every tenant key while the server keeps serving; status shows nothing left on the old version', async () => {
    const env = {
      ...process.env,
      DATABASE_URL: server.database.url,
      CLAWPLANE_SECRET_KEY: server.config.secretKey?.toString('base64') ?? '',
      CLAWPLANE_DATA_DIR: server.config.dataDir,
    };
    let done = false;
    const rotation = runCli(['vault', 'rotate'], env).finally(() => (done = true));
    const during: TestResult[] = [];
    // The server's vault caches data keys; forgetting them makes each test unwrap under whatever version is stored now.
    while (!done) {
      server.services.vault.forget();
      during.push(await a.client.json<TestResult>('POST', `${A}/providers/${local.id}/test`));
    }
    const rotated = await rotation;
    assert.equal(rotated.status, 0, rotated.stderr);
    assert.match(rotated.stdout, /rotated: master key local is at version 2; re-wrapped 2 tenant data key\(s\)/);
    assert.ok(during.length > 0 && during.every((r) => r.ok), 'connection tests during rotation still decrypt');
    server.services.vault.forget();
    const status = await runCli(['vault', 'status', '--json'], env);
    assert.equal(status.status, 0, status.stdout);
    const st = JSON.parse(status.stdout) as { currentVersion: number; versions: { version: number; tenantKeys: number }[] };
    assert.deepEqual(
      [st.currentVersion, st.versions.map((v) => [v.version, v.tenantKeys])],
      [
        2,
        [
          [1, 0],
          [2, 2],
        ],
      ],
    );
    assert.equal((await a.client.json<TestResult>('POST', `${A}/providers/${local.id}/test`)).ok, true, 'nothing lost after rotation');
    assert.equal((await runCli(['vault', 'spin'], env)).status, 2);
  });

  test('replacing a value bumps the version; revocation takes effect on the next use', async () => {
    const replaced = await a.client.json<Credential>('PUT', `${A}/credentials/${canaryCred.id}/value`, { value: `${canary}-v2` });
    assert.deepEqual([replaced.version, replaced.last4], [2, `${canary}-v2`.slice(-4)]);
    const refusedKey = await a.client.json<TestResult>('POST', `${A}/providers/${local.id}/test`);
    assert.deepEqual([refusedKey.ok, refusedKey.error?.code], [false, 'http_401'], 'the new value is the one sent');
    await a.client.json('PUT', `${A}/credentials/${canaryCred.id}/value`, { value: canary });

    const revoked = await a.client.json<Credential>('POST', `${A}/credentials/${canaryCred.id}/revoke`);
    assert.equal(revoked.status, 'revoked');
    const before = fake.seen.length;
    const after = await a.client.json<TestResult>('POST', `${A}/providers/${local.id}/test`);
    assert.deepEqual([after.ok, after.error?.code], [false, 'credential_revoked']);
    assert.equal(fake.seen.length, before, 'a revoked key is not sent');
    assert.equal((await a.client.json<Credential>('POST', `${A}/credentials/${canaryCred.id}/revoke`)).status, 'revoked', 'revoking twice is harmless');
    const visible = await a.client.json<{ items: Credential[] }>('GET', `${A}/credentials`);
    assert.ok(!visible.items.some((c) => c.id === canaryCred.id), 'revoked keys are hidden by default');
    const all = await a.client.json<{ items: Credential[] }>('GET', `${A}/credentials?includeRevoked=true`);
    assert.ok(all.items.some((c) => c.id === canaryCred.id && c.status === 'revoked'));
    await refused(a.client, 'PUT', `${A}/credentials/${canaryCred.id}/value`, { value: canary }, 409);
    const deny = await server.db.query(
      "SELECT 1 FROM audit_events WHERE action = 'credential.decrypt' AND decision = 'deny' AND detail->>'reason' = 'revoked'",
    );
    assert.equal(deny.rowCount, 1, 'the refused use is audited');
    const del = await a.client.json<{ deleted: boolean }>('DELETE', `${A}/providers/${local.id}`);
    assert.equal(del.deleted, true);
    await refused(a.client, 'GET', `${A}/providers/${local.id}`, undefined, 404);
  });

  test('the egress allow-list is one config setting; host:port entries allow that port only', () => {
    assert.deepEqual(parseConfig({ CLAWPLANE_EGRESS_ALLOW_HOSTS: ' ollama.internal:11434, 10.0.0.5 ,[fd00::1]:8000' }).egressAllowHosts, [
      'ollama.internal:11434',
      '10.0.0.5',
      '[fd00::1]:8000',
    ]);
    assert.deepEqual(parseConfig({}).egressAllowHosts, []);
    assert.throws(
      () => parseConfig({ CLAWPLANE_EGRESS_ALLOW_HOSTS: 'http://evil.example/' }),
      (err: unknown) => err instanceof ConfigError && /CLAWPLANE_EGRESS_ALLOW_HOSTS/.test(err.message),
    );
    const policy = { allowedHosts: ['ollama.internal:11434', '[fd00::1]:8000'] };
    assert.equal(checkUrlShape('http://ollama.internal:11434/v1', policy).allowListed, true);
    assert.throws(() => checkUrlShape('http://ollama.internal:8080/v1', policy), EgressRefusedError);
    assert.equal(checkUrlShape('http://[fd00::1]:8000/v1', policy).allowListed, true);
    assert.throws(() => checkUrlShape('http://[fd00::1]:8001/v1', policy), EgressRefusedError);
    assert.throws(() => checkUrlShape('http://169.254.169.254:80/', { allowedHosts: ['169.254.169.254:80'] }), /cloud metadata/);
  });

  test('THE CANARY: in no response, header, log line, audit row or database row; the stored value is ciphertext', async () => {
    // The scans can fail: the canary was sent, and the recordings hold what they should.
    assert.ok(fake.seen.some((s) => s.authorization === `Bearer ${canary}`));
    assert.ok(recorded.length > 50 && recorded.some((r) => r.includes(canary.slice(-4)) && r.includes('"last4"')));
    assert.ok(capturedLogs.length > 50 && capturedLogs.some((l) => l.includes('/credentials')));
    const hex = Buffer.from(canary, 'utf8').toString('hex');
    const needles = [canary, hex, canary.slice('sk-canary-'.length)];

    for (const r of recorded) for (const n of needles) assert.ok(!r.includes(n), `a response leaked the canary:\n${r.slice(0, 2000)}`);
    for (const l of capturedLogs) for (const n of needles) assert.ok(!l.includes(n), `a log line leaked the canary: ${l}`);
    const audit = await server.db.query<{ row: string }>('SELECT a::text AS row FROM audit_events a ORDER BY seq');
    assert.ok(audit.rows.some((r) => r.row.includes('credential.create')));
    for (const { row } of audit.rows) for (const n of needles) assert.ok(!row.includes(n), `an audit row leaked the canary: ${row}`);

    const stored = await server.db.query<{ row: string }>('SELECT c::text AS row FROM credentials c WHERE id = $1', [canaryCred.id]);
    assert.equal(stored.rowCount, 1);
    for (const n of needles) assert.ok(!stored.rows[0]?.row.includes(n), 'the credential row holds the value in clear');
    // And nowhere else in the database either: every table of the schema, row by row, as text.
    const tables = await server.db.query<{ name: string }>("SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'");
    assert.ok(tables.rows.length >= 10);
    for (const { name } of tables.rows) {
      const rows = await server.db.query<{ row: string }>(`SELECT t::text AS row FROM ${name} t`);
      for (const { row } of rows.rows) for (const n of needles) assert.ok(!row.includes(n), `table ${name} holds the canary in clear`);
    }
  });
});
