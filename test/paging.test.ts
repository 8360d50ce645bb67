/**
 * Lists that page (keyset cursors): every item exactly once and in order while rows are created and
 * deleted between requests, limit bounds, search, status filter, sorts, and a 400 naming the parameter
 * for a garbage or foreign cursor.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiClient, onboard } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

interface Page<T> {
  items: T[];
  nextCursor: string | null;
}
interface TenantItem {
  id: string;
  slug: string;
  name: string;
  status: string;
  createdAt: string;
  stats: { instances: { running: number; total: number } };
}

/** Every page of a list, following nextCursor; `between` runs after each page (concurrent writers). */
async function pageAll<T>(
  client: ApiClient,
  path: string,
  between: (n: number) => Promise<void> = () => Promise.resolve(),
): Promise<{ items: T[]; pages: number }> {
  const items: T[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page: Page<T> = await client.json<Page<T>>('GET', cursor === null ? path : `${path}${sep}cursor=${encodeURIComponent(cursor)}`);
    items.push(...page.items);
    cursor = page.nextCursor;
    pages++;
    await between(pages);
    assert.ok(pages < 1000, 'paging terminates');
  } while (cursor !== null);
  return { items, pages };
}

async function expect400(client: ApiClient, path: string, field: string): Promise<string> {
  const res = await client.call('GET', path);
  const body = (await res.json()) as { code: string; message: string; details?: { issues?: { path: string }[] } };
  assert.equal(res.status, 400, `${path}: ${JSON.stringify(body)}`);
  assert.equal(body.code, 'validation_failed');
  assert.ok(
    body.details?.issues?.some((i) => i.path === field),
    `${path} names ${field}: ${JSON.stringify(body)}`,
  );
  return body.message;
}

describe('paged lists', async () => {
  const server = await startTestServer();
  const admin = await onboard(server);
  const { tenants } = server.services;
  const by = { actor: 'test' };
  const N = 43;
  const made: { id: string; slug: string }[] = [];
  for (let i = 0; i < N; i++) {
    // Names repeat (sort by name needs the id to break ties) and run against slug order.
    made.push(await tenants.create({ slug: `org-${String(i).padStart(3, '0')}`, name: `Team ${String((N - i) % 7)}` }, by));
  }

  test('the tenant list pages by slug: every tenant once, in order, while tenants are created and deleted between pages', async () => {
    const deleted = new Set<string>();
    const { items, pages } = await pageAll<TenantItem>(admin, '/api/v1/tenants?limit=5', async (n) => {
      // Before and after the cursor: a new tenant sorting first, one sorting last, and a deletion of a
      // tenant not yet seen; none may shift another tenant onto a second page or off every page.
      await tenants.create({ slug: `aaa-new-${n}`, name: 'new' }, by);
      await tenants.create({ slug: `zzz-new-${n}`, name: 'new' }, by);
      const victim = made[made.length - n];
      if (victim && n % 2 === 0) {
        await tenants.remove(victim.id, by);
        deleted.add(victim.slug);
      }
    });
    assert.ok(pages >= N / 5, `${pages} pages`);
    const slugs = items.map((t) => t.slug);
    assert.equal(new Set(slugs).size, slugs.length, 'no tenant twice');
    assert.deepEqual(slugs, [...slugs].sort(), 'in slug order');
    for (const t of made) {
      if (!deleted.has(t.slug)) assert.ok(slugs.includes(t.slug), `${t.slug} listed`);
    }
    assert.ok(deleted.size > 0);
    // Every page holds at most the limit.
    const first = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants?limit=5');
    assert.equal(first.items.length, 5);
    assert.ok(first.nextCursor);
  });

  test('sort by name (ties broken by id) and by creation, both directions, each tenant once', async () => {
    const all = (await pageAll<TenantItem>(admin, '/api/v1/tenants?limit=200')).items;
    for (const sort of ['name', '-name', 'createdAt', '-createdAt'] as const) {
      const { items } = await pageAll<TenantItem>(admin, `/api/v1/tenants?limit=4&sort=${sort}`);
      assert.equal(items.length, all.length, sort);
      assert.equal(new Set(items.map((t) => t.id)).size, items.length, `${sort}: no tenant twice`);
      const key = sort.endsWith('name') ? (t: TenantItem) => t.name : (t: TenantItem) => t.createdAt;
      for (let i = 1; i < items.length; i++) {
        const [a, b] = [key(items[i - 1] as TenantItem), key(items[i] as TenantItem)];
        if (sort.startsWith('-')) assert.ok(a.localeCompare(b, 'en') >= 0 || a >= b, `${sort}: ${a} before ${b}`);
        else assert.ok(a.localeCompare(b, 'en') <= 0 || a <= b, `${sort}: ${a} before ${b}`);
      }
    }
  });

  test('search by slug or name, filter by status; figures are those of each tenant', async () => {
    const found = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants?q=ORG-00');
    assert.deepEqual(
      found.items.map((t) => t.slug),
      ['org-000', 'org-001', 'org-002', 'org-003', 'org-004', 'org-005', 'org-006', 'org-007', 'org-008', 'org-009'],
    );
    const byName = await pageAll<TenantItem>(admin, '/api/v1/tenants?q=team%203&limit=2');
    assert.ok(byName.items.length > 0);
    assert.ok(byName.items.every((t) => t.name === 'Team 3'));
    const literal = await admin.json<Page<TenantItem>>('GET', `/api/v1/tenants?q=${encodeURIComponent('org-00%')}`);
    assert.equal(literal.items.length, 0, '% is matched literally');

    await tenants.setStatus((made[3] as { id: string }).id, 'suspended', by);
    const suspended = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants?status=suspended');
    assert.deepEqual(
      suspended.items.map((t) => t.slug),
      ['org-003'],
    );
    const active = await pageAll<TenantItem>(admin, '/api/v1/tenants?status=active&limit=50');
    assert.ok(!active.items.some((t) => t.slug === 'org-003'));

    await server.services.instances.deploy((made[5] as { id: string }).id, { name: 'one', start: false }, by);
    const page = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants?q=org-00&limit=10');
    for (const t of page.items) assert.equal(t.stats.instances.total, t.slug === 'org-005' ? 1 : 0, t.slug);
  });

  test('a garbage cursor, a cursor of another sort, or a limit out of bounds is a 400 naming the parameter', async () => {
    const msg = await expect400(admin, '/api/v1/tenants?cursor=not-a-cursor', 'query.cursor');
    assert.match(msg, /nextCursor/);
    await expect400(admin, '/api/v1/tenants?cursor=%25%25%25', 'query.cursor');
    await expect400(admin, `/api/v1/tenants?cursor=${Buffer.from('["slug",1]').toString('base64url')}`, 'query.cursor');
    await expect400(admin, `/api/v1/tenants?cursor=${Buffer.from('["slug","a","b"]').toString('base64url')}`, 'query.cursor');
    await expect400(admin, `/api/v1/tenants?sort=createdAt&cursor=${Buffer.from('["createdAt","yesterday","x"]').toString('base64url')}`, 'query.cursor');
    const bySlug = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants?limit=2');
    await expect400(admin, `/api/v1/tenants?sort=name&cursor=${bySlug.nextCursor ?? ''}`, 'query.cursor');
    await expect400(admin, '/api/v1/tenants?limit=0', 'query.limit');
    await expect400(admin, '/api/v1/tenants?limit=201', 'query.limit');
    await expect400(admin, '/api/v1/tenants?limit=ten', 'query.limit');
    await expect400(admin, '/api/v1/tenants?sort=secret', 'query.sort');
    await expect400(admin, '/api/v1/tenants?status=deleted', 'query.status');
    const dflt = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants');
    assert.equal(dflt.items.length, 50, 'the default page size');
    const max = await admin.json<Page<TenantItem>>('GET', '/api/v1/tenants?limit=200');
    assert.ok(max.items.length > 50 && max.items.length <= 200);
  });

  test('a member pages through their own tenants only', async () => {
    const mine = ['org-010', 'org-011', 'org-012'];
    let userId = '';
    for (const slug of mine)
      userId = (await admin.json<{ userId: string }>('POST', `/api/v1/tenants/${slug}/members`, { email: 'pager@example.test', role: 'viewer' }, 201)).userId;
    const client = new ApiClient(server.url);
    client.cookies.set('clawplane_session', (await server.services.sessions.create(userId, {})).id);
    const { items } = await pageAll<TenantItem>(client, '/api/v1/tenants?limit=2');
    assert.deepEqual(
      items.map((t) => t.slug),
      mine,
    );
  });

  test('every other growing list of a tenant pages by cursor (each item once), and refuses a garbage cursor naming it', async () => {
    const t = await tenants.create({ slug: 'big', name: 'Big', quotas: { maxInstances: 20 } }, by);
    const s = server.services;
    for (let i = 0; i < 7; i++) {
      await admin.json(
        'POST',
        '/api/v1/tenants/big/members',
        { email: `m${i}@big.test`, role: i === 0 ? 'tenant_admin' : 'viewer', displayName: `Member ${i}` },
        201,
      );
      await s.tokens.create(t.id, { name: `token-${i}`, role: 'viewer', createdBy: null }, by);
      await s.credentials.create(t.id, { name: `key-${i}`, type: 'api_key', value: `sk-paging-${i}-0123456789abcdef` }, by);
      const inst = await s.instances.deploy(t.id, { name: `inst-${i}`, start: false }, by);
      await server.db.query(
        `INSERT INTO instance_backups (id, tenant_id, instance_id, instance_name, runtime_version, reason, object_key, size_bytes, sha256, duration_ms) VALUES (gen_random_uuid(), $1, $2, $3, '2026.9.6', $4, 'k', 0, '', 0)`,
        [t.id, inst.id, `inst-${i}`, i % 2 ? 'manual' : 'periodic'],
      );
      await s.tasks.create(t.id, { capability: 'nobody-has-it', input: `task ${i}` }, by);
    }
    const base = '/api/v1/tenants/big';
    const owner = new ApiClient(server.url, { bearer: (await s.tokens.create(t.id, { name: 'owner', role: 'tenant_admin', createdBy: null }, by)).token });
    const lists: [string, number, (x: Record<string, unknown>) => string][] = [
      [`${base}/members`, 7, (x) => String(x['userId'])],
      [`${base}/tokens`, 8, (x) => String(x['id'])],
      [`${base}/credentials`, 7, (x) => String(x['id'])],
      [`${base}/instances`, 7, (x) => String(x['id'])],
      [`${base}/backups`, 7, (x) => String(x['id'])],
      [`${base}/tasks`, 7, (x) => String(x['id'])],
      [`${base}/audit`, 0, (x) => String(x['seq'])],
    ];
    for (const [path, n, id] of lists) {
      const { items, pages } = await pageAll<Record<string, unknown>>(owner, `${path}?limit=2`);
      const ids = items.map(id);
      assert.equal(new Set(ids).size, ids.length, `${path}: each item once`);
      if (n) assert.equal(ids.length, n, path);
      else assert.ok(ids.length > 20, `${path}: ${ids.length}`);
      assert.ok(pages >= Math.ceil(ids.length / 2), `${path}: ${pages} pages`);
      await expect400(owner, `${path}?cursor=garbage`, 'query.cursor');
      await expect400(owner, `${path}?limit=100000`, 'query.limit');
    }
    const audit = await pageAll<{ seq: number }>(owner, `${base}/audit?limit=3`);
    assert.deepEqual(
      audit.items.map((e) => e.seq),
      [...audit.items.map((e) => e.seq)].sort((a, b) => b - a),
      'audit newest first',
    );

    const members = await owner.json<Page<{ email: string; role: string }>>('GET', `${base}/members?q=MEMBER%203`);
    assert.deepEqual(
      members.items.map((m) => m.email),
      ['m3@big.test'],
    );
    const admins = await owner.json<Page<{ email: string }>>('GET', `${base}/members?role=tenant_admin`);
    assert.deepEqual(
      admins.items.map((m) => m.email),
      ['m0@big.test'],
    );
    const tok = await owner.json<Page<{ name: string }>>('GET', `${base}/tokens?sort=name&q=token-`);
    assert.deepEqual(
      tok.items.map((x) => x.name),
      ['token-0', 'token-1', 'token-2', 'token-3', 'token-4', 'token-5', 'token-6'],
    );
    const revokedId = (await owner.json<Page<{ id: string }>>('GET', `${base}/tokens?q=token-5`)).items[0]?.id;
    await owner.json('DELETE', `${base}/tokens/${revokedId ?? ''}`);
    assert.deepEqual(
      (await owner.json<Page<{ name: string }>>('GET', `${base}/tokens?status=revoked`)).items.map((x) => x.name),
      ['token-5'],
    );
    assert.equal((await owner.json<Page<{ name: string }>>('GET', `${base}/tokens?status=active&q=token-`)).items.length, 6);
    const creds = await owner.json<Page<{ name: string }>>('GET', `${base}/credentials?sort=-name&q=key-`);
    assert.deepEqual(
      creds.items.map((x) => x.name),
      ['key-6', 'key-5', 'key-4', 'key-3', 'key-2', 'key-1', 'key-0'],
    );
    const inst = await owner.json<Page<{ name: string }>>('GET', `${base}/instances?q=inst-4&status=stopped`);
    assert.deepEqual(
      inst.items.map((x) => x.name),
      ['inst-4'],
    );
    const manual = await owner.json<Page<{ instanceName: string }>>('GET', `${base}/backups?reason=manual&sort=createdAt`);
    assert.deepEqual(
      manual.items.map((x) => x.instanceName),
      ['inst-1', 'inst-3', 'inst-5'],
    );
    // A cursor of one list is not a cursor of another order.
    const firstTasks = await owner.json<Page<unknown>>('GET', `${base}/tasks?limit=2`);
    await expect400(owner, `${base}/tasks?sort=createdAt&cursor=${firstTasks.nextCursor ?? ''}`, 'query.cursor');
  });
});
