import { useState, type FormEvent } from 'react';
import { api, TENANT_ROLES, type ApiToken, type TenantRole } from '../../api.ts';
import {
  Async,
  ConfirmButton,
  CopyButton,
  Empty,
  ErrorMessage,
  Field,
  formatDate,
  Pager,
  ROLE_LABEL,
  SearchBox,
  StatusBadge,
  useAction,
} from '../../components/ui.tsx';
import { useDebounced, usePaged } from '../../usePaged.ts';
import { NeedsAdmin, NotAMember, type TabProps } from './TenantPage.tsx';

function tokenStatus(t: ApiToken): 'active' | 'revoked' | 'expired' {
  if (t.revokedAt) return 'revoked';
  if (t.expiresAt && new Date(t.expiresAt).getTime() <= Date.now()) return 'expired';
  return 'active';
}

/** API tokens: mint (the token is shown once, here, and never again), list by prefix, revoke. */
export function TokensTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="API tokens" />;
  if (role !== 'tenant_admin') return <NeedsAdmin what="API tokens" role={role} />;
  return <Tokens slug={tenant.slug} />;
}

function Tokens({ slug }: { slug: string }) {
  const [search, setSearch] = useState('');
  const q = useDebounced(search.trim());
  const tokens = usePaged((cursor) => api.tokens.list(slug, { q: q || undefined, cursor }), [slug, q]);
  // Held in memory only: leaving or reloading the page forgets it, as the server already has.
  const [fresh, setFresh] = useState<{ token: string; name: string } | undefined>(undefined);
  return (
    <>
      <CreateToken
        slug={slug}
        onCreated={(token, info) => {
          setFresh({ token, name: info.name });
          tokens.reload();
        }}
      />
      {fresh ? (
        <div className="card reveal" role="status" aria-label="New API token">
          <h2>Your new token "{fresh.name}"</h2>
          <p>
            <strong>Copy it now: it is shown only this once.</strong> Clawplane keeps only a hash of it.
          </p>
          <div className="secret-row">
            <code className="secret" data-testid="new-token">
              {fresh.token}
            </code>
            <CopyButton text={fresh.token} />
          </div>
          <p className="hint">
            Use it as <code>Authorization: Bearer &lt;token&gt;</code>.
          </p>
          <button type="button" className="secondary" onClick={() => setFresh(undefined)}>
            I have copied it
          </button>
        </div>
      ) : null}
      <h2>Tokens</h2>
      <div className="list-controls" role="search">
        <SearchBox label="Find tokens" placeholder="name" value={search} onChange={setSearch} />
      </div>
      <Async resource={tokens} what="API tokens">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No API tokens yet. Create one above for scripts and CI.</Empty>
          ) : (
            <table>
              <caption className="sr-only">API tokens</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Token</th>
                  <th scope="col">Role</th>
                  <th scope="col">Status</th>
                  <th scope="col">Created</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Last used</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {items.map((t) => {
                  const status = tokenStatus(t);
                  return (
                    <tr key={t.id}>
                      <td>{t.name}</td>
                      <td>
                        <code title="Only the first characters are kept for display">{t.display.replace(/…$/, '')}••••••••</code>
                      </td>
                      <td>{ROLE_LABEL[t.role]}</td>
                      <td>
                        <StatusBadge status={status} />
                      </td>
                      <td>{formatDate(t.createdAt)}</td>
                      <td>{t.expiresAt ? formatDate(t.expiresAt) : 'never'}</td>
                      <td>{formatDate(t.lastUsedAt)}</td>
                      <td>
                        {status === 'active' ? (
                          <ConfirmButton
                            label="Revoke"
                            confirmLabel={`Revoke "${t.name}"`}
                            onConfirm={async () => {
                              await api.tokens.revoke(slug, t.id);
                              tokens.reload();
                            }}
                          />
                        ) : null}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )
        }
      </Async>
      <Pager label="Tokens" page={tokens.page} next={tokens.next} prev={tokens.prev} />
    </>
  );
}

function CreateToken({ slug, onCreated }: { slug: string; onCreated: (token: string, info: ApiToken) => void }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState<TenantRole>('member');
  const [days, setDays] = useState('90');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const r = await api.tokens.create(slug, { name: name.trim(), role, ...(days.trim() ? { expiresInDays: Number(days) } : {}) });
      setName('');
      onCreated(r.token, r.info);
    });
  };
  return (
    <form className="card inline-form" onSubmit={submit} aria-label="Create an API token">
      <h2>Create an API token</h2>
      <div className="row">
        <Field label="Token name">{(id) => <input id={id} required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />}</Field>
        <Field label="Role">
          {(id) => (
            <select id={id} value={role} onChange={(e) => setRole(e.target.value as TenantRole)}>
              {TENANT_ROLES.map((r) => (
                <option key={r} value={r}>
                  {ROLE_LABEL[r]}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Expires after (days)" hint="Empty: never expires.">
          {(id, d) => <input id={id} aria-describedby={d} type="number" min={1} max={3650} value={days} onChange={(e) => setDays(e.target.value)} />}
        </Field>
      </div>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Creating…' : 'Create token'}
      </button>
    </form>
  );
}
