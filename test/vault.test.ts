import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Db } from '../src/db/pool.ts';
import { credentialAad, DecryptionError, newDataKey, open, seal, tenantKeyAad, type Sealed } from '../src/vault/envelope.ts';
import { dbKeyVersionStore, LocalKeyProvider, MasterKeyMismatchError, memoryKeyVersionStore } from '../src/vault/local-key-provider.ts';
import type { WrappedKey } from '../src/vault/types.ts';
import { Vault, type SealedCredential } from '../src/vault/vault.ts';
import { testDatabase } from './helpers/db.ts';

const uuid = fc.uuid();
const secret = fc.string({ minLength: 1, maxLength: 200, unit: 'binary' });

/** Flips one bit of a copy of `b` at a position chosen by `r`. */
function flip(b: Buffer, r: number): Buffer {
  const out = Buffer.from(b);
  if (out.length === 0) return Buffer.from([1]);
  const i = r % (out.length * 8);
  out[i >> 3] = (out[i >> 3] ?? 0) ^ (1 << (i & 7));
  return out;
}

function fails(fn: () => unknown): boolean {
  try {
    fn();
    return false;
  } catch (err) {
    assert.ok(err instanceof DecryptionError, `expected DecryptionError, got ${String(err)}`);
    return true;
  }
}

async function rejects(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return false;
  } catch (err) {
    assert.ok(err instanceof DecryptionError, `expected DecryptionError, got ${String(err)}`);
    return true;
  }
}

describe('envelope: a credential opens only in its own context (properties)', () => {
  test('another tenant key, credential id, version or any tampered field fails (2000 runs)', () => {
    fc.assert(
      fc.property(
        uuid,
        uuid,
        uuid,
        uuid,
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 1000 }),
        secret,
        fc.nat(),
        (t1, t2, c1, c2, v1, v2, value, bit) => {
          fc.pre(t1 !== t2 && c1 !== c2 && v1 !== v2);
          const dekA = newDataKey();
          const dekB = newDataKey();
          const s = seal(dekA, Buffer.from(value), credentialAad(t1, c1, v1));
          assert.equal(open(dekA, s, credentialAad(t1, c1, v1)).toString(), Buffer.from(value).toString());
          assert.ok(
            fails(() => open(dekB, s, credentialAad(t1, c1, v1))),
            'opened under another tenant key',
          );
          assert.ok(
            fails(() => open(dekA, s, credentialAad(t2, c1, v1))),
            'opened as another tenant',
          );
          assert.ok(
            fails(() => open(dekA, s, credentialAad(t1, c2, v1))),
            'opened as another credential',
          );
          assert.ok(
            fails(() => open(dekA, s, credentialAad(t1, c1, v2))),
            'opened as another version',
          );
          for (const field of ['iv', 'tag', 'ciphertext'] as const) {
            const tampered: Sealed = { ...s, [field]: flip(s[field], bit) };
            assert.ok(
              fails(() => open(dekA, tampered, credentialAad(t1, c1, v1))),
              `opened with a tampered ${field}`,
            );
          }
          assert.ok(
            fails(() => open(dekA, { ...s, tag: s.tag.subarray(0, 12) }, credentialAad(t1, c1, v1))),
            'accepted a truncated tag',
          );
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('a wrapped data key unwraps only for its tenant, version and untampered bytes (1000 runs)', async () => {
    const keys = new LocalKeyProvider({ secret: randomBytes(32), versions: memoryKeyVersionStore() });
    const v1 = await keys.currentVersion();
    const v2 = await keys.createVersion();
    assert.deepEqual([v1, v2], [1, 2]);
    const other = new LocalKeyProvider({ secret: randomBytes(32), versions: memoryKeyVersionStore() });
    await other.createVersion();
    await fc.assert(
      fc.asyncProperty(uuid, uuid, fc.nat(), fc.constantFrom('ciphertext', 'iv', 'tag'), async (t1, t2, bit, field) => {
        fc.pre(t1 !== t2);
        const dek = newDataKey();
        const w = await keys.wrap(dek, tenantKeyAad(t1));
        assert.equal(w.version, v2);
        assert.ok((await keys.unwrap(w, tenantKeyAad(t1))).equals(dek));
        assert.ok(await rejects(keys.unwrap(w, tenantKeyAad(t2))), 'unwrapped as another tenant');
        assert.ok(await rejects(keys.unwrap({ ...w, version: v1 }, tenantKeyAad(t1))), 'unwrapped under another version');
        const tampered: WrappedKey = { ...w, [field]: flip(w[field], bit) };
        assert.ok(await rejects(keys.unwrap(tampered, tenantKeyAad(t1))), `unwrapped a tampered ${field}`);
      }),
      { numRuns: 1000 },
    );
    // Another secret cannot use these versions: refused up front with a message that names the fix.
    const w = await keys.wrap(newDataKey(), tenantKeyAad(randomUUID()));
    const stranger = new LocalKeyProvider({ secret: randomBytes(32), versions: memoryKeyVersionStore() });
    await assert.rejects(stranger.unwrap(w, tenantKeyAad(randomUUID())), /not registered/);
  });
});

async function makeTenant(db: Db): Promise<string> {
  const slug = `t-${randomBytes(5).toString('hex')}`;
  const r = await db.query<{ id: string }>('INSERT INTO tenants (slug, name) VALUES ($1, $1) RETURNING id', [slug]);
  const id = r.rows[0]?.id;
  assert.ok(id);
  return id;
}

describe('Vault over the database', () => {
  test('tenant data keys: created once even when two processes race, bound to their tenant', async () => {
    const { db } = await testDatabase();
    const secretKey = randomBytes(32);
    const a = new Vault({ db, keys: new LocalKeyProvider({ secret: secretKey, versions: dbKeyVersionStore(db) }), cacheTtlMs: 0 });
    const b = new Vault({ db, keys: new LocalKeyProvider({ secret: secretKey, versions: dbKeyVersionStore(db) }), cacheTtlMs: 0 });
    const t1 = await makeTenant(db);
    const t2 = await makeTenant(db);
    const [k1, k2] = await Promise.all([a.getOrCreateTenantKey(t1), b.getOrCreateTenantKey(t1)]);
    assert.ok(k1.equals(k2), 'both processes use the same data key');
    const versions = await db.query('SELECT version FROM vault_key_versions');
    assert.equal(versions.rowCount, 1, 'concurrent first starts agreed on version 1');
    await a.getOrCreateTenantKey(t2);
    // Swap the two tenants' wrapped keys: neither opens, because the wrap is bound to the tenant id.
    await db.query(
      `UPDATE tenant_data_keys a SET wrapped_dek = b.wrapped_dek, iv = b.iv, tag = b.tag
         FROM tenant_data_keys b WHERE a.tenant_id IN ($1, $2) AND b.tenant_id IN ($1, $2) AND a.tenant_id <> b.tenant_id`,
      [t1, t2],
    );
    await assert.rejects(a.getOrCreateTenantKey(t1), DecryptionError);
    await assert.rejects(a.getOrCreateTenantKey(t2), DecryptionError);
    await assert.rejects(a.getOrCreateTenantKey(randomUUID()), { code: 'not_found' });
  });

  test('a different CLAWPLANE_SECRET_KEY is reported as such, not as corrupt data', async () => {
    const { db } = await testDatabase();
    const t = await makeTenant(db);
    await new Vault({ db, keys: new LocalKeyProvider({ secret: randomBytes(32), versions: dbKeyVersionStore(db) }) }).getOrCreateTenantKey(t);
    const wrong = new Vault({ db, keys: new LocalKeyProvider({ secret: randomBytes(32), versions: dbKeyVersionStore(db) }) });
    await assert.rejects(wrong.getOrCreateTenantKey(t), (err: unknown) => {
      assert.ok(err instanceof MasterKeyMismatchError);
      assert.match(err.message, /restore the original value/);
      return true;
    });
  });

  test('rotation re-wraps every key online and loses nothing, with reads running throughout', async () => {
    const { db } = await testDatabase();
    const secretKey = randomBytes(32);
    const provider = () => new LocalKeyProvider({ secret: secretKey, versions: dbKeyVersionStore(db) });
    const writer = new Vault({ db, keys: provider() });
    const stored: { tenant: string; id: string; version: number; sealed: SealedCredential; value: string }[] = [];
    for (let i = 0; i < 30; i++) {
      const tenant = await makeTenant(db);
      for (let j = 0; j < 3; j++) {
        const id = randomUUID();
        const value = `secret-${i}-${j}-${randomBytes(8).toString('hex')}`;
        stored.push({ tenant, id, version: 1, sealed: await writer.sealCredential(tenant, id, 1, value), value });
      }
    }
    await writer.sealPlatformSecret('oidc.client_secret', 'platform-canary-1');

    // Readers in other "processes" (no cache) open credentials continuously while two rotations run.
    const readers = [new Vault({ db, keys: provider(), cacheTtlMs: 0 }), new Vault({ db, keys: provider(), cacheTtlMs: 0 })];
    let stop = false;
    let reads = 0;
    const readLoop = async (v: Vault) => {
      let i = 0;
      while (!stop) {
        const s = stored[i++ % stored.length];
        assert.ok(s);
        assert.equal(await v.openCredential(s.tenant, s.id, s.version, s.sealed), s.value);
        assert.equal(await v.openPlatformSecret('oidc.client_secret'), 'platform-canary-1');
        reads++;
      }
    };
    const loops = readers.map(readLoop);
    // The rotation runs from yet another instance, as `clawplane vault rotate` would.
    const rotator = new Vault({ db, keys: provider() });
    const first = await rotator.rotate({ actor: 'cli' });
    const second = await rotator.rotate({ actor: 'cli' });
    stop = true;
    await Promise.all(loops);

    assert.ok(reads > 0, 'reads ran during the rotations');
    assert.deepEqual([first.version, first.tenantKeys, first.platformSecrets, first.failed], [2, 30, 1, []]);
    assert.deepEqual([second.version, second.tenantKeys, second.failed], [3, 30, []]);
    const status = await writer.status();
    assert.equal(status.currentVersion, 3);
    assert.deepEqual(
      status.versions.map((v) => [v.version, v.tenantKeys, v.platformSecrets]),
      [
        [1, 0, 0],
        [2, 0, 0],
        [3, 30, 1],
      ],
    );
    const fresh = new Vault({ db, keys: provider(), cacheTtlMs: 0 });
    for (const s of stored) assert.equal(await fresh.openCredential(s.tenant, s.id, s.version, s.sealed), s.value);
    const audit = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM audit_events WHERE action = 'vault.rotate' AND actor = 'cli'`);
    assert.equal(audit.rows[0]?.n, 2);
  });

  test('platform secrets: round-trip, replace, tamper detection and a clear not-found', async () => {
    const { db } = await testDatabase();
    const vault = new Vault({ db, keys: new LocalKeyProvider({ secret: randomBytes(32), versions: dbKeyVersionStore(db) }) });
    await vault.sealPlatformSecret('oidc.client_secret', 'first');
    await vault.sealPlatformSecret('oidc.client_secret', 'second');
    assert.equal(await vault.openPlatformSecret('oidc.client_secret'), 'second');
    await assert.rejects(vault.openPlatformSecret('nope'), { code: 'not_found' });
    await assert.rejects(vault.sealPlatformSecret('Bad Name', 'x'), { code: 'validation_failed' });
    const audit = await db.query<{ detail: unknown }>(`SELECT detail FROM audit_events WHERE action = 'platform_secret.set'`);
    assert.equal(audit.rowCount, 2);
    assert.ok(!JSON.stringify(audit.rows).includes('second'));
    // Putting back an older version's ciphertext (a replay) does not open.
    await db.query('UPDATE platform_secrets SET version = 1');
    await assert.rejects(vault.openPlatformSecret('oidc.client_secret'), DecryptionError);
  });
});
