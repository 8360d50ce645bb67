import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { Db } from '../src/db/pool.ts';
import { ClawplaneError } from '../src/errors.ts';
import { CredentialService, CredentialUnavailableError } from '../src/vault/credentials.ts';
import { dbKeyVersionStore, LocalKeyProvider } from '../src/vault/local-key-provider.ts';
import { ProviderService } from '../src/vault/providers.ts';
import { createSkillRegistry } from '../src/vault/skills.ts';
import { Vault } from '../src/vault/vault.ts';
import { testDatabase } from './helpers/db.ts';

const admin = { actor: 'user:admin', userId: null };
const broker = { actor: 'broker', purpose: 'llm.request' };

async function makeTenant(db: Db): Promise<string> {
  const slug = `t-${randomBytes(5).toString('hex')}`;
  const r = await db.query<{ id: string }>('INSERT INTO tenants (slug, name) VALUES ($1, $1) RETURNING id', [slug]);
  const id = r.rows[0]?.id;
  assert.ok(id);
  return id;
}

/** Every audit row as text, to grep for planted canaries. */
async function auditText(db: Db): Promise<string> {
  const r = await db.query('SELECT * FROM audit_events ORDER BY seq');
  return JSON.stringify(r.rows);
}

// One database for the file (testDatabase registers its own clean-up at the top level).
const { db } = await testDatabase();
const vault = new Vault({ db, keys: new LocalKeyProvider({ secret: randomBytes(32), versions: dbKeyVersionStore(db) }) });
const credentials = new CredentialService({ db, vault });
const tenantA = await makeTenant(db);
const tenantB = await makeTenant(db);

describe('credential service', () => {
  test('a value is write-only: not in list, get, the table or any audit row; only the last 4 show', async () => {
    const canary = `sk-canary-${randomBytes(16).toString('hex')}`;
    const created = await credentials.create(tenantA, { name: 'openai', type: 'api_key', value: canary }, admin);
    assert.equal(created.last4, canary.slice(-4));
    assert.equal(created.status, 'active');
    const listed = await credentials.list(tenantA);
    const got = await credentials.get(tenantA, created.id);
    for (const shown of [created, listed, got]) assert.ok(!JSON.stringify(shown).includes(canary), 'the value leaked into a result');
    assert.ok(!JSON.stringify(got).includes('ciphertext'));
    const raw = await db.query('SELECT * FROM credentials WHERE id = $1', [created.id]);
    assert.ok(!JSON.stringify(raw.rows).includes(canary) && !JSON.stringify(raw.rows).includes(Buffer.from(canary).toString('hex')), 'stored in clear');
    // Decrypting for the broker is audited, and still the value stays out of the audit log.
    const plain = await credentials.decryptForBroker(tenantA, created.id, broker);
    assert.equal(plain.value, canary);
    const audit = await auditText(db);
    assert.ok(audit.includes('credential.create') && audit.includes('credential.decrypt'));
    assert.ok(!audit.includes(canary), 'the canary is in the audit log');
    // Short values get no hint at all: 4 of 8 characters would give half the secret away.
    assert.equal((await credentials.create(tenantA, { name: 'short', type: 'secret', value: 'abcdefgh' }, admin)).last4, '');
  });

  test('decrypt is audited with actor and purpose, and records last use', async () => {
    const c = await credentials.create(tenantA, { name: 'anthropic', type: 'api_key', value: `sk-ant-${randomBytes(12).toString('hex')}` }, admin);
    assert.equal(c.lastUsedAt, null);
    await credentials.decryptForBroker(tenantA, c.id, { actor: 'broker:instance-7', purpose: 'llm.chat', requestId: 'req-42' });
    const row = await db.query<{ actor: string; tenant_id: string; decision: string; detail: { purpose: string }; request_id: string }>(
      `SELECT actor, tenant_id, decision, detail, request_id FROM audit_events WHERE action = 'credential.decrypt' AND target = $1`,
      [`credential:${c.id}`],
    );
    assert.equal(row.rowCount, 1);
    assert.deepEqual(
      {
        actor: row.rows[0]?.actor,
        tenant: row.rows[0]?.tenant_id,
        decision: row.rows[0]?.decision,
        purpose: row.rows[0]?.detail.purpose,
        req: row.rows[0]?.request_id,
      },
      { actor: 'broker:instance-7', tenant: tenantA, decision: 'allow', purpose: 'llm.chat', req: 'req-42' },
    );
    assert.ok((await credentials.get(tenantA, c.id)).lastUsedAt instanceof Date);
  });

  test('another tenant gets NotFound for every operation on the id, and the attempt is audited', async () => {
    const c = await credentials.create(tenantA, { name: 'gh', type: 'pat', value: `ghp_${randomBytes(18).toString('hex')}` }, admin);
    await assert.rejects(credentials.get(tenantB, c.id), { code: 'not_found', status: 404 });
    await assert.rejects(credentials.revoke(tenantB, c.id, admin), { code: 'not_found' });
    await assert.rejects(credentials.replaceValue(tenantB, c.id, 'x'.repeat(20), admin), { code: 'not_found' });
    await assert.rejects(credentials.decryptForBroker(tenantB, c.id, broker), { code: 'not_found' });
    assert.ok(!(await credentials.list(tenantB)).some((x) => x.id === c.id));
    await assert.rejects(credentials.get(tenantA, 'not-a-uuid'), { code: 'not_found' });
    const denied = await db.query(`SELECT 1 FROM audit_events WHERE action = 'credential.decrypt' AND decision = 'deny' AND tenant_id = $1 AND target = $2`, [
      tenantB,
      `credential:${c.id}`,
    ]);
    assert.equal(denied.rowCount, 1);
    assert.equal((await credentials.get(tenantA, c.id)).status, 'active', 'the cross-tenant revoke did nothing');
  });

  test('revoke takes effect on the very next decrypt, and is audited', async () => {
    const c = await credentials.create(tenantA, { name: 'slack-bot', type: 'bot_token', value: `xoxb-${randomBytes(12).toString('hex')}` }, admin);
    await credentials.decryptForBroker(tenantA, c.id, broker);
    const revoked = await credentials.revoke(tenantA, c.id, admin);
    assert.equal(revoked.status, 'revoked');
    await assert.rejects(credentials.decryptForBroker(tenantA, c.id, broker), (err: unknown) => {
      assert.ok(err instanceof CredentialUnavailableError);
      assert.equal(err.code, 'credential_revoked');
      assert.match(err.message, /Ask a tenant admin to add a new credential/);
      return true;
    });
    assert.ok(!(await credentials.list(tenantA)).some((x) => x.id === c.id), 'revoked credentials are hidden by default');
    assert.ok((await credentials.list(tenantA, { includeRevoked: true })).some((x) => x.id === c.id));
    const a = await db.query(`SELECT decision FROM audit_events WHERE target = $1 ORDER BY seq`, [`credential:${c.id}`]);
    assert.deepEqual(
      a.rows.map((r) => String(r['decision'])),
      ['success', 'allow', 'success', 'deny'],
    );
    // The name is free again.
    await credentials.create(tenantA, { name: 'slack-bot', type: 'bot_token', value: `xoxb-${randomBytes(12).toString('hex')}` }, admin);
  });

  test('expired credentials show as expired and are refused', async () => {
    const c = await credentials.create(
      tenantA,
      { name: 'old', type: 'oauth_token', value: 'x'.repeat(30), expiresAt: new Date(Date.now() - 1000).toISOString() },
      admin,
    );
    assert.equal(c.status, 'expired');
    await assert.rejects(credentials.decryptForBroker(tenantA, c.id, broker), { code: 'credential_expired' });
  });

  test('a ciphertext moved to another row, or an old version put back, does not open', async () => {
    const one = await credentials.create(tenantA, { name: 'one', type: 'secret', value: 'value-one-0123456789' }, admin);
    const two = await credentials.create(tenantA, { name: 'two', type: 'secret', value: 'value-two-0123456789' }, admin);
    const inB = await credentials.create(tenantB, { name: 'b', type: 'secret', value: 'value-b-0123456789' }, admin);
    await db.query(`UPDATE credentials t SET ciphertext = s.ciphertext, iv = s.iv, tag = s.tag FROM credentials s WHERE t.id = $1 AND s.id = $2`, [
      two.id,
      one.id,
    ]);
    await assert.rejects(credentials.decryptForBroker(tenantA, two.id, broker), { code: 'vault_decrypt_failed' });
    await db.query(`UPDATE credentials t SET ciphertext = s.ciphertext, iv = s.iv, tag = s.tag FROM credentials s WHERE t.id = $1 AND s.id = $2`, [
      inB.id,
      one.id,
    ]);
    await assert.rejects(credentials.decryptForBroker(tenantB, inB.id, broker), { code: 'vault_decrypt_failed' });
    const failed = await db.query(`SELECT 1 FROM audit_events WHERE action = 'credential.decrypt' AND decision = 'failure'`);
    assert.equal(failed.rowCount, 2);

    const before = await db.query<{ ciphertext: Buffer; iv: Buffer; tag: Buffer }>('SELECT ciphertext, iv, tag FROM credentials WHERE id = $1', [one.id]);
    const updated = await credentials.replaceValue(tenantA, one.id, 'value-one-rotated-0123', admin);
    assert.equal(updated.version, 2);
    assert.equal((await credentials.decryptForBroker(tenantA, one.id, broker)).value, 'value-one-rotated-0123');
    const old = before.rows[0];
    assert.ok(old);
    await db.query('UPDATE credentials SET ciphertext = $2, iv = $3, tag = $4 WHERE id = $1', [one.id, old.ciphertext, old.iv, old.tag]);
    await assert.rejects(credentials.decryptForBroker(tenantA, one.id, broker), { code: 'vault_decrypt_failed' });
  });

  test('input is validated strictly and errors never echo the value', async () => {
    const canary = `canary-${randomBytes(8).toString('hex')}`;
    const bad = [
      { name: 'x', type: 'password', value: canary },
      { name: ' bad name', type: 'api_key', value: canary },
      { name: 'x', type: 'api_key', value: canary, tenantId: tenantB },
      { name: 'x', type: 'api_key', value: '' },
    ];
    for (const input of bad) {
      await assert.rejects(credentials.create(tenantA, input, admin), (err: unknown) => {
        assert.ok(err instanceof ClawplaneError);
        assert.equal(err.code, 'validation_failed');
        assert.ok(!JSON.stringify({ m: err.message, d: err.details }).includes(canary));
        return true;
      });
    }
    await assert.rejects(
      credentials
        .create(tenantA, { name: 'dup', type: 'api_key', value: canary }, admin)
        .then(() => credentials.create(tenantA, { name: 'dup', type: 'api_key', value: canary }, admin)),
      {
        code: 'credential_name_taken',
        status: 409,
      },
    );
  });

  test('any value round-trips through seal and decrypt (property, 60 runs against the database)', async () => {
    const tenant = await makeTenant(db);
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 1, maxLength: 300, unit: 'grapheme' }), async (value) => {
        const c = await credentials.create(tenant, { name: `p-${randomUUID()}`, type: 'secret', value }, admin);
        assert.equal((await credentials.decryptForBroker(tenant, c.id, broker)).value, value);
      }),
      { numRuns: 60 },
    );
  });
});

describe('skill credentials', () => {
  test('the registry describes every built-in skill as JSON the UI can render', () => {
    const registry = createSkillRegistry();
    const described = registry.describe();
    assert.deepEqual(JSON.parse(JSON.stringify(described)), described);
    assert.deepEqual(
      described.map((s) => s.id),
      ['slack', 'github', 'telegram', 'notion', 'gmail', 'whatsapp'],
    );
    const slack = described.find((s) => s.id === 'slack');
    assert.deepEqual(
      slack?.fields.map((f) => [f.name, f.secret, f.required]),
      [
        ['bot_token', true, true],
        ['signing_secret', true, false],
      ],
    );
    const whatsapp = described.find((s) => s.id === 'whatsapp');
    assert.deepEqual(
      whatsapp?.fields.map((f) => [f.name, f.secret]),
      [
        ['api_key', true],
        ['phone_number_id', false],
      ],
    );
    registry.register({
      id: 'linear',
      label: 'Linear',
      description: 'Issues.',
      fields: [{ name: 'api_key', label: 'API key', type: 'secret', credentialType: 'api_key', required: true }],
    });
    assert.ok(registry.describe().some((s) => s.id === 'linear'));
    assert.throws(() => registry.register({ id: 'linear', label: 'L', description: '', fields: [] }), /already registered/);
  });

  test('connecting a skill validates the form and stores one credential per secret field', async () => {
    const token = `xoxb-${randomBytes(10).toString('hex')}`;
    const made = await credentials.createForSkill(tenantA, 'slack', { bot_token: token, signing_secret: randomBytes(16).toString('hex') }, admin);
    assert.deepEqual(
      made.map((c) => [c.name, c.type, c.skill]),
      [
        ['slack.bot_token', 'bot_token', 'slack'],
        ['slack.signing_secret', 'secret', 'slack'],
      ],
    );
    assert.equal((await credentials.decryptForBroker(tenantA, made[0]?.id ?? '', broker)).value, token);

    const gh = await credentials.createForSkill(tenantA, 'github', { pat: `ghp_${'a'.repeat(36)}`, scopes: ['repo', 'read:org'] }, admin);
    assert.deepEqual(gh[0]?.metadata, { scopes: ['repo', 'read:org'] });

    const wrong = `xoxp-${randomBytes(10).toString('hex')}`;
    await assert.rejects(credentials.createForSkill(tenantA, 'slack', { bot_token: wrong }, admin, { prefix: 'slack2' }), (err: unknown) => {
      assert.ok(err instanceof ClawplaneError);
      assert.match(err.message, /bot_token does not look right: expected starts with xoxb-/);
      assert.ok(!err.message.includes(wrong));
      return true;
    });
    await assert.rejects(credentials.createForSkill(tenantA, 'whatsapp', { api_key: 'x'.repeat(30) }, admin), /phone_number_id/);
    await assert.rejects(credentials.createForSkill(tenantA, 'nope', {}, admin), /Unknown skill "nope"/);
    // All or nothing: the second field's name clash leaves no first credential behind.
    await credentials.create(tenantA, { name: 'slack3.signing_secret', type: 'secret', value: 'y'.repeat(32) }, admin);
    await assert.rejects(credentials.createForSkill(tenantA, 'slack', { bot_token: token, signing_secret: 'a'.repeat(32) }, admin, { prefix: 'slack3' }), {
      code: 'credential_name_taken',
    });
    assert.ok(!(await credentials.list(tenantA)).some((c) => c.name === 'slack3.bot_token'));
  });
});

describe('LLM providers and model routes', () => {
  let server: http.Server;
  let port = 0;
  const keyCanary = `sk-provider-canary-${randomBytes(12).toString('hex')}`;
  let providers: ProviderService;

  before(async () => {
    // A stand-in for an OpenAI-compatible provider (the only fake allowed: external APIs).
    server = http.createServer((req, res) => {
      if (req.headers.authorization !== `Bearer ${keyCanary}`) {
        res
          .writeHead(401, { 'content-type': 'application/json' })
          .end(JSON.stringify({ error: { message: `Incorrect API key provided: ${req.headers.authorization ?? ''}` } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: [{ id: 'llama3' }, { id: 'qwen2' }] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    providers = new ProviderService({ db, credentials, egress: { allowedHosts: ['127.0.0.1'] } });
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  test('test connection lists models through the egress guard and never returns the key', async () => {
    const key = await credentials.create(tenantA, { name: 'local-llm', type: 'api_key', value: keyCanary }, admin);
    const p = await providers.create(
      tenantA,
      { kind: 'openai_compatible', name: 'local', baseUrl: `http://127.0.0.1:${port}/v1/`, credentialId: key.id },
      admin,
    );
    assert.equal(p.baseUrl, `http://127.0.0.1:${port}/v1`);
    const ok = await providers.testConnection(tenantA, p.id, admin);
    assert.ok(ok.ok);
    assert.equal(ok.modelCount, 2);
    assert.ok(ok.latencyMs >= 0);
    assert.ok(!JSON.stringify(ok).includes(keyCanary));
    const purpose = await db.query(`SELECT 1 FROM audit_events WHERE action = 'credential.decrypt' AND detail->>'purpose' = $1`, [
      `provider.test_connection:${p.id}`,
    ]);
    assert.equal(purpose.rowCount, 1);

    // A wrong key: the fake echoes it back in its error body; the result must not.
    const wrongCanary = `sk-wrong-${randomBytes(12).toString('hex')}`;
    await credentials.replaceValue(tenantA, key.id, wrongCanary, admin);
    const bad = await providers.testConnection(tenantA, p.id, admin);
    assert.ok(!bad.ok);
    assert.equal(bad.error.code, 'http_401');
    assert.match(bad.error.message, /refused the API key/);
    assert.ok(!JSON.stringify(bad).includes(wrongCanary));

    // Provider kinds that need a key say so instead of calling out.
    const keyless = await providers.create(tenantA, { kind: 'openai', name: 'openai-nokey' }, admin);
    assert.equal(keyless.baseUrl, 'https://api.openai.com/v1');
    const missing = await providers.testConnection(tenantA, keyless.id, admin);
    assert.deepEqual(!missing.ok && missing.error.code, 'credential_missing');
    assert.ok(!(await auditText(db)).includes(keyCanary) && !(await auditText(db)).includes(wrongCanary));
  });

  test("base URLs pass the SSRF guard when saved; another tenant's credential or provider is NotFound", async () => {
    await assert.rejects(providers.create(tenantA, { kind: 'openai_compatible', name: 'meta', baseUrl: 'http://169.254.169.254/v1' }, admin), {
      code: 'egress_refused',
    });
    await assert.rejects(providers.create(tenantA, { kind: 'openai_compatible', name: 'priv', baseUrl: 'https://10.0.0.8/v1' }, admin), {
      code: 'egress_refused',
    });
    await assert.rejects(providers.create(tenantA, { kind: 'openai_compatible', name: 'nourl' }, admin), { code: 'validation_failed' });
    const bKey = await credentials.create(tenantB, { name: 'bkey', type: 'api_key', value: 'b'.repeat(20) }, admin);
    await assert.rejects(providers.create(tenantA, { kind: 'openai', name: 'steal', credentialId: bKey.id }, admin), { code: 'not_found' });
    const bProv = await providers.create(tenantB, { kind: 'mistral', name: 'bm', credentialId: bKey.id }, admin);
    await assert.rejects(providers.get(tenantA, bProv.id), { code: 'not_found' });
    await assert.rejects(providers.update(tenantA, bProv.id, { enabled: false }, admin), { code: 'not_found' });
    await assert.rejects(providers.testConnection(tenantA, bProv.id, admin), { code: 'not_found' });
    await assert.rejects(providers.setRoute(tenantA, { scope: 'tenant', targets: [{ providerId: bProv.id, model: 'm' }] }, admin), { code: 'not_found' });
    await assert.rejects(providers.remove(tenantA, bProv.id, admin), { code: 'not_found' });
    await assert.rejects(providers.create(tenantA, { kind: 'openai', name: 'x', tenantId: tenantB }, admin), { code: 'validation_failed' });
    assert.ok(!(await providers.list(tenantA)).some((p) => p.id === bProv.id));
  });

  test('routes: skill override, then agent override, then the tenant default; fallbacks in order; disabled skipped', async () => {
    const t = await makeTenant(db);
    const a = await providers.create(t, { kind: 'anthropic', name: 'a' }, admin);
    const o = await providers.create(t, { kind: 'openai', name: 'o' }, admin);
    const g = await providers.create(t, { kind: 'gemini', name: 'g' }, admin);
    await providers.setRoute(
      t,
      {
        scope: 'tenant',
        targets: [
          { providerId: a.id, model: 'claude-sonnet-4-5' },
          { providerId: o.id, model: 'gpt-4.1' },
        ],
      },
      admin,
    );
    await providers.setRoute(t, { scope: 'agent', scopeName: 'coder', targets: [{ providerId: o.id, model: 'gpt-5' }] }, admin);
    await providers.setRoute(
      t,
      {
        scope: 'skill',
        scopeName: 'github',
        targets: [
          { providerId: g.id, model: 'gemini-2.5-pro' },
          { providerId: a.id, model: 'claude-haiku-4-5' },
        ],
      },
      admin,
    );
    const models = async (who: { agent?: string; skill?: string }) => (await providers.resolveRoute(t, who)).map((r) => r.model);
    assert.deepEqual(await models({}), ['claude-sonnet-4-5', 'gpt-4.1']);
    assert.deepEqual(await models({ agent: 'coder' }), ['gpt-5']);
    assert.deepEqual(await models({ agent: 'coder', skill: 'github' }), ['gemini-2.5-pro', 'claude-haiku-4-5']);
    await providers.update(t, g.id, { enabled: false }, admin);
    assert.deepEqual(await models({ skill: 'github' }), ['claude-haiku-4-5']);
    assert.equal((await providers.listRoutes(t)).length, 3);
    await providers.setRoute(t, { scope: 'agent', scopeName: 'coder', targets: [] }, admin);
    assert.deepEqual(await models({ agent: 'coder' }), ['claude-sonnet-4-5', 'gpt-4.1']);
    await providers.remove(t, a.id, admin);
    assert.deepEqual(await models({}), ['gpt-4.1']);
    assert.deepEqual(await providers.resolveRoute(tenantB, {}), [], 'another tenant sees none of these routes');
    await assert.rejects(providers.setRoute(t, { scope: 'agent', targets: [] }, admin), { code: 'validation_failed' });
  });
});
