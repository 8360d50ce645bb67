import { useState, type FormEvent } from 'react';
import { api, TENANT_ROLES, type Member, type TenantRole } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, formatDate, Pager, ROLE_LABEL, SearchBox, useAction } from '../../components/ui.tsx';
import { useMe, useSession } from '../../session.tsx';
import { useDebounced, usePaged } from '../../usePaged.ts';
import type { TabProps } from './TenantPage.tsx';

/** Members and their roles; tenant admins and platform admins add, change and remove them. */
export function MembersTab({ tenant, role, platformAdmin }: TabProps) {
  const me = useMe();
  const { refresh } = useSession();
  const [search, setSearch] = useState('');
  const q = useDebounced(search.trim());
  const members = usePaged((cursor) => api.members.list(tenant.slug, { q: q || undefined, cursor }), [tenant.slug, q]);
  const canManage = platformAdmin || role === 'tenant_admin';
  // Your own membership shows in the navigation and decides what other tabs show.
  const changed = async (userId?: string) => {
    members.reload();
    if (userId === undefined || userId === me.user.id) await refresh();
  };
  return (
    <>
      {canManage ? <AddMember slug={tenant.slug} onAdded={(m) => changed(m.userId)} /> : null}
      <h2>Members</h2>
      <div className="list-controls" role="search">
        <SearchBox label="Find members" placeholder="email or name" value={search} onChange={setSearch} />
      </div>
      <Async resource={members} what="members">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No members yet.{canManage ? ' Add the first one above.' : ''}</Empty>
          ) : (
            <table>
              <caption className="sr-only">Members of {tenant.name}</caption>
              <thead>
                <tr>
                  <th scope="col">Email</th>
                  <th scope="col">Name</th>
                  <th scope="col">Role</th>
                  <th scope="col">Source</th>
                  <th scope="col">Added</th>
                  {canManage ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {items.map((m) => (
                  <MemberRow key={m.userId} member={m} slug={tenant.slug} canManage={canManage} onChanged={() => changed(m.userId)} />
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      <Pager label="Members" page={members.page} next={members.next} prev={members.prev} />
    </>
  );
}

function MemberRow({ member, slug, canManage, onChanged }: { member: Member; slug: string; canManage: boolean; onChanged: () => Promise<void> }) {
  const action = useAction();
  const setRole = (r: TenantRole) =>
    void action.run(async () => {
      await api.members.changeRole(slug, member.userId, r);
      await onChanged();
    });
  return (
    <tr>
      <td>{member.email}</td>
      <td>{member.displayName || '—'}</td>
      <td>
        {canManage ? (
          <>
            <select aria-label={`Role of ${member.email}`} value={member.role} disabled={action.busy} onChange={(e) => setRole(e.target.value as TenantRole)}>
              {TENANT_ROLES.map((r) => (
                <option key={r} value={r}>
                  {ROLE_LABEL[r]}
                </option>
              ))}
            </select>
            <ErrorMessage error={action.error} />
          </>
        ) : (
          ROLE_LABEL[member.role]
        )}
      </td>
      <td>{member.source === 'oidc' ? 'single sign-on' : 'added by hand'}</td>
      <td>{formatDate(member.createdAt)}</td>
      {canManage ? (
        <td>
          <ConfirmButton
            label="Remove"
            confirmLabel={`Remove ${member.email}`}
            onConfirm={async () => {
              await api.members.remove(slug, member.userId);
              await onChanged();
            }}
          />
        </td>
      ) : null}
    </tr>
  );
}

function AddMember({ slug, onAdded }: { slug: string; onAdded: (m: Member) => Promise<void> }) {
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [role, setRole] = useState<TenantRole>('member');
  const [added, setAdded] = useState<string | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setAdded(undefined);
    void action.run(async () => {
      const m = await api.members.add(slug, { email: email.trim(), role, ...(displayName.trim() ? { displayName: displayName.trim() } : {}) });
      setAdded(m.email);
      setEmail('');
      setDisplayName('');
      await onAdded(m);
    });
  };
  return (
    <form className="card inline-form" onSubmit={submit} aria-label="Add a member">
      <h2>Add a member</h2>
      <p className="hint">People who have not signed in yet are added ahead of time and get access when they first sign in.</p>
      <div className="row">
        <Field label="Email">{(id) => <input id={id} type="email" required value={email} onChange={(e) => setEmail(e.target.value)} />}</Field>
        <Field label="Display name (optional)">
          {(id) => <input id={id} maxLength={100} value={displayName} onChange={(e) => setDisplayName(e.target.value)} />}
        </Field>
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
      </div>
      <ErrorMessage error={action.error} />
      {added ? (
        <p className="notice ok" role="status">
          Added {added}.
        </p>
      ) : null}
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Adding…' : 'Add member'}
      </button>
    </form>
  );
}
