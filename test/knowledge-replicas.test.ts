/**
 * Knowledge across replicas (docs/adr/0007-knowledge-search.md): two `clawplane serve` processes on one
 * PostgreSQL. A memory written through replica 1 is found through replica 2 by words and by meaning in the
 * very next request (each replica's in-memory index catches up by embed_seq before every search); an edit
 * and a delete through replica 1 show through replica 2 just as soon (the rows are read back with every
 * search; the event channel drops the stale vectors from the other replica's index).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { ApiClient } from './helpers/client.ts';
import { testDatabase } from './helpers/db.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { onboardVia, sharedSecretKey, startReplica, via, type Replica } from './helpers/replicas.ts';

interface Memory {
  id: number;
  content: string;
  embedded: boolean;
}
interface Page {
  items: Memory[];
  mode: string | null;
}

describe('knowledge on two replicas', async () => {
  const fake = await startFakeLlm();
  const database = await testDatabase({ autoDrop: false });
  const secretKey = sharedSecretKey();
  const env = { CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1' };
  const r1 = await startReplica({ name: 'k1', databaseUrl: database.url, secretKey, env });
  const r2 = await startReplica({ name: 'k2', databaseUrl: database.url, secretKey, env });
  after(() => database.drop());
  after(() => fake.close());
  let one: ApiClient;
  let two: ApiClient;
  const api = (p: string) => `/api/v1/tenants/kn${p}`;
  const search = async (c: ApiClient, q: string, mode: string) =>
    (await c.json<Page>('GET', api(`/memories?q=${encodeURIComponent(q)}&mode=${mode}`))).items.map((m) => m.content);

  test('set-up: a tenant with an embeddings route (the fake provider)', async () => {
    const { admin } = await onboardVia(r1, 'kn');
    one = admin;
    two = via(admin, r2 as Replica);
    const p = await one.json<{ id: string }>('POST', api('/providers'), { kind: 'openai_compatible', name: 'fake-embed', baseUrl: fake.baseUrl }, 201);
    await one.json('PUT', api('/model-routes'), { scope: 'skill', scopeName: 'embeddings', targets: [{ providerId: p.id, model: 'embed-v1' }] });
    // Both replicas have searched (and loaded their index) before the writes below.
    const seed = await one.json<Memory>('POST', api('/memories'), { content: 'The customer pays every invoice by bank transfer' }, 201);
    assert.ok(seed.embedded);
    for (const c of [one, two]) assert.deepEqual(await search(c, 'billing', 'meaning'), ['The customer pays every invoice by bank transfer']);
  });

  test('a memory written through replica 1 is found through replica 2 at once, by words and by meaning', async () => {
    const m = await one.json<Memory>('POST', api('/memories'), { content: 'Our delivery truck gets serviced at the garage on Fridays' }, 201);
    assert.ok(m.embedded);
    assert.deepEqual(await search(two, 'truck', 'words'), [m.content], 'by words');
    // No word of the query is in the memory: only its meaning matches (vehicles ~ truck, repair ~ garage).
    assert.deepEqual(await search(two, 'vehicles', 'meaning'), [m.content], 'by meaning');
    assert.equal((await search(two, 'automobile repair', 'hybrid'))[0], m.content, 'hybrid');
  });

  test('an edit and a delete through replica 1 show through replica 2 at once', async () => {
    const m = await one.json<Memory>('POST', api('/memories'), { content: 'The sedan needs new tyres' }, 201);
    assert.ok((await search(two, 'automobile', 'meaning')).includes('The sedan needs new tyres'));
    // Re-written: now about pets, not cars.
    const edited = await one.json<Memory>('PATCH', api(`/memories/${m.id}`), { content: 'The puppy needs a new collar' });
    assert.ok(edited.embedded);
    assert.ok(!(await search(two, 'automobile', 'meaning')).includes('The sedan needs new tyres'), 'the old text is not found by its old meaning');
    assert.ok(!(await search(two, 'automobile', 'meaning')).includes('The puppy needs a new collar'), 'nor the new text by the old vector');
    assert.deepEqual(await search(two, 'dog', 'meaning'), ['The puppy needs a new collar'], 'the new text by its meaning');
    assert.deepEqual(await search(two, 'collar', 'words'), ['The puppy needs a new collar']);
    assert.equal((await one.call('DELETE', api(`/memories/${m.id}`))).status, 204);
    assert.deepEqual(await search(two, 'dog', 'meaning'), [], 'deleted: gone by meaning');
    assert.deepEqual(await search(two, 'collar', 'words'), [], 'and by words');
    assert.equal((await two.call('GET', api(`/memories/${m.id}`))).status, 404);
  });
});
