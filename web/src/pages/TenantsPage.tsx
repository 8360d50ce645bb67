import { useState, type FormEvent } from 'react';
import { api, type Tenant, type TenantListItem } from '../api.ts';
import { Async, Empty, ErrorMessage, Field, formatDate, Pager, SearchBox, StatusBadge, useAction } from '../components/ui.tsx';
import { Link } from '../router.tsx';
import { useMe } from '../session.tsx';
import { useDebounced, usePaged } from '../usePaged.ts';

const SORTS = [
  ['slug', 'Slug'],
  ['name', 'Name'],
  ['-createdAt', 'Newest'],
  ['createdAt', 'Oldest'],
] as const;

/**
 * All tenants (platform admins) or your own, a page at a time, searched by slug or name and filtered
 * by status (a platform may hold a hundred thousand: the API pages, and so does this table).
 */
export function TenantsPage() {
  const me = useMe();
  const [search, setSearch] = useState('');
  const [status, setStatus] = useState<'' | Tenant['status']>('');
  const [sort, setSort] = useState<string>('slug');
  const q = useDebounced(search.trim());
  // Instance counts and today's usage move: refresh while the page is open.
  const tenants = usePaged(
    (cursor) => api.tenants.list({ q: q || undefined, status: status || undefined, sort, cursor, limit: PAGE_SIZE }),
    [q, status, sort],
    { pollMs: 15_000 },
  );
  const filtered = q !== '' || status !== '';
  return (
    <section>
      <h1>Tenants</h1>
      {me.user.platformAdmin ? <CreateTenant onCreated={tenants.reload} /> : null}
      <h2>{me.user.platformAdmin ? 'All tenants' : 'Your tenants'}</h2>
      <div className="list-controls" role="search">
        <SearchBox label="Find tenants" placeholder="slug or name" value={search} onChange={setSearch} />
        <div className="field">
          <label htmlFor="tenant-status">Status</label>
          <select id="tenant-status" value={status} onChange={(e) => setStatus(e.target.value as '' | Tenant['status'])}>
            <option value="">Any</option>
            <option value="active">Active</option>
            <option value="suspended">Suspended</option>
          </select>
        </div>
        <div className="field">
          <label htmlFor="tenant-sort">Sort by</label>
          <select id="tenant-sort" value={sort} onChange={(e) => setSort(e.target.value)}>
            {SORTS.map(([v, label]) => (
              <option key={v} value={v}>
                {label}
              </option>
            ))}
          </select>
        </div>
      </div>
      <Async resource={tenants} what="tenants">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>{filtered ? 'No tenant matches.' : `No tenants yet.${me.user.platformAdmin ? ' Create the first one above.' : ''}`}</Empty>
          ) : (
            <TenantTable items={items} />
          )
        }
      </Async>
      <Pager label="Tenants" page={tenants.page} next={tenants.next} prev={tenants.prev} />
    </section>
  );
}

const PAGE_SIZE = 50;

const int = new Intl.NumberFormat('en-US');

function TenantTable({ items }: { items: TenantListItem[] }) {
  return (
    <table>
      <caption className="sr-only">Tenants</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Slug</th>
          <th scope="col">Status</th>
          <th scope="col">Instances</th>
          <th scope="col">Usage today (UTC)</th>
          <th scope="col">Max instances</th>
          <th scope="col">Daily token budget</th>
          <th scope="col">Created</th>
        </tr>
      </thead>
      <tbody>
        {items.map((t) => (
          <tr key={t.id}>
            <td>
              <Link to={`/tenants/${t.slug}`}>{t.name}</Link>
            </td>
            <td>
              <code>{t.slug}</code>
            </td>
            <td>
              <StatusBadge status={t.status} />
            </td>
            <td>
              {t.stats.instances.running} running / {t.stats.instances.total}
            </td>
            <td>
              {int.format(t.stats.usageToday.tokens)} tokens · ${t.stats.usageToday.costUsd.toFixed(2)}
            </td>
            <td>{t.quotas.maxInstances}</td>
            <td>{t.quotas.dailyTokenBudget ?? 'unlimited'}</td>
            <td>{formatDate(t.createdAt)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CreateTenant({ onCreated }: { onCreated: () => void }) {
  const [slug, setSlug] = useState('');
  const [name, setName] = useState('');
  const [created, setCreated] = useState<Tenant | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setCreated(undefined);
    void action.run(async () => {
      const t = await api.tenants.create({ slug: slug.trim(), name: name.trim() });
      setCreated(t);
      setSlug('');
      setName('');
      onCreated();
    });
  };
  return (
    <form className="card inline-form" onSubmit={submit} aria-label="Create a tenant">
      <h2>Create a tenant</h2>
      <div className="row">
        <Field label="Name">{(id) => <input id={id} required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} />}</Field>
        <Field label="Slug" hint='Lowercase letters, digits and inner hyphens, e.g. "acme-prod". Used in URLs; cannot change.'>
          {(id, d) => <input id={id} aria-describedby={d} required maxLength={40} value={slug} onChange={(e) => setSlug(e.target.value)} />}
        </Field>
      </div>
      <ErrorMessage error={action.error} />
      {created ? (
        <p className="notice ok" role="status">
          Created tenant <Link to={`/tenants/${created.slug}`}>{created.name}</Link>.
        </p>
      ) : null}
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Creating…' : 'Create tenant'}
      </button>
    </form>
  );
}
