import { useState, type FormEvent } from 'react';
import { api, CREDENTIAL_TYPES, type Credential, type CredentialType, type Skill } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, formatDate, Pager, SearchBox, StatusBadge, useAction } from '../../components/ui.tsx';
import { useDebounced, usePaged } from '../../usePaged.ts';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/** A date input's value (local day) as the end of that day, in the ISO form the API takes. */
function endOfDay(date: string): string | undefined {
  return date ? new Date(`${date}T23:59:59`).toISOString() : undefined;
}

/** Credentials: forms from the skill registry, values write-only, shown as the last 4 at most. */
export function CredentialsTab({ tenant, role }: TabProps) {
  const [showRevoked, setShowRevoked] = useState(false);
  const [search, setSearch] = useState('');
  const q = useDebounced(search.trim());
  const credentials = usePaged(
    (cursor) => (role ? api.credentials.list(tenant.slug, showRevoked, { q: q || undefined, cursor }) : Promise.resolve({ items: [], nextCursor: null })),
    [tenant.slug, showRevoked, role, q],
  );
  if (!role) return <NotAMember what="credentials" />;
  const admin = role === 'tenant_admin';
  return (
    <>
      {admin ? (
        <div className="two-col">
          <ConnectSkill slug={tenant.slug} onSaved={credentials.reload} />
          <AddCredential slug={tenant.slug} onSaved={credentials.reload} />
        </div>
      ) : (
        <p className="notice info">Adding, replacing and revoking credentials needs the tenant admin role.</p>
      )}
      <div className="heading-row">
        <h2>Credentials</h2>
        <label className="inline">
          <input type="checkbox" checked={showRevoked} onChange={(e) => setShowRevoked(e.target.checked)} /> Show revoked
        </label>
      </div>
      <div className="list-controls" role="search">
        <SearchBox label="Find credentials" placeholder="name" value={search} onChange={setSearch} />
      </div>
      <Async resource={credentials} what="credentials">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No credentials yet.{admin ? ' Connect a skill or add an API key above.' : ''}</Empty>
          ) : (
            <table>
              <caption className="sr-only">Credentials</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Type</th>
                  <th scope="col">Skill</th>
                  <th scope="col">Value</th>
                  <th scope="col">Status</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Last used</th>
                  {admin ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {items.map((c) => (
                  <CredentialRow key={c.id} c={c} slug={tenant.slug} admin={admin} onChanged={credentials.reload} />
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      <Pager label="Credentials" page={credentials.page} next={credentials.next} prev={credentials.prev} />
    </>
  );
}

function CredentialRow({ c, slug, admin, onChanged }: { c: Credential; slug: string; admin: boolean; onChanged: () => void }) {
  const [replacing, setReplacing] = useState(false);
  return (
    <tr>
      <td>{c.name}</td>
      <td>{c.type}</td>
      <td>{c.skill ?? '—'}</td>
      <td>
        <code aria-label={c.last4 ? `hidden, ends in ${c.last4}` : 'hidden'}>••••{c.last4}</code>
      </td>
      <td>
        <StatusBadge status={c.status} />
        {c.expiresSoon ? <span className="badge badge-warning">expires soon</span> : null}
      </td>
      <td>{c.expiresAt ? formatDate(c.expiresAt) : 'never'}</td>
      <td>{formatDate(c.lastUsedAt)}</td>
      {admin ? (
        <td>
          {c.status === 'active' ? (
            <div className="cell-actions">
              {replacing ? (
                <ReplaceValue slug={slug} c={c} onDone={() => (setReplacing(false), onChanged())} onCancel={() => setReplacing(false)} />
              ) : (
                <button type="button" className="secondary" onClick={() => setReplacing(true)}>
                  Replace value
                </button>
              )}
              <ConfirmButton
                label="Revoke"
                confirmLabel={`Revoke ${c.name}`}
                onConfirm={async () => {
                  await api.credentials.revoke(slug, c.id);
                  onChanged();
                }}
              />
            </div>
          ) : null}
        </td>
      ) : null}
    </tr>
  );
}

function ReplaceValue({ slug, c, onDone, onCancel }: { slug: string; c: Credential; onDone: () => void; onCancel: () => void }) {
  const [value, setValue] = useState('');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await api.credentials.replaceValue(slug, c.id, value);
      setValue('');
      onDone();
    });
  };
  return (
    <form onSubmit={submit} aria-label={`Replace the value of ${c.name}`} className="compact">
      <Field label="New value">
        {(id) => <input id={id} type="password" autoComplete="off" required value={value} onChange={(e) => setValue(e.target.value)} />}
      </Field>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        Save
      </button>
      <button type="button" className="secondary" onClick={onCancel}>
        Cancel
      </button>
    </form>
  );
}

function ConnectSkill({ slug, onSaved }: { slug: string; onSaved: () => void }) {
  const skills = useResource(() => api.skills(), []);
  return (
    <div className="card">
      <h2>Connect a skill</h2>
      <Async resource={skills} what="skills">
        {({ items }) => (items.length === 0 ? <Empty>No skills are registered.</Empty> : <SkillForm skills={items} slug={slug} onSaved={onSaved} />)}
      </Async>
    </div>
  );
}

function SkillForm({ skills, slug, onSaved }: { skills: Skill[]; slug: string; onSaved: () => void }) {
  const [skillId, setSkillId] = useState(skills[0]?.id ?? '');
  const [values, setValues] = useState<Record<string, string>>({});
  const [expires, setExpires] = useState('');
  const [stored, setStored] = useState<string[] | undefined>(undefined);
  const action = useAction();
  const skill = skills.find((s) => s.id === skillId);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!skill) return;
    setStored(undefined);
    const body: Record<string, string | string[]> = {};
    for (const f of skill.fields) {
      const v = (values[f.name] ?? '').trim();
      if (!v) continue;
      body[f.name] =
        f.type === 'list'
          ? v
              .split(',')
              .map((x) => x.trim())
              .filter(Boolean)
          : v;
    }
    void action.run(async () => {
      const r = await api.credentials.connectSkill(slug, skill.id, { values: body, ...(endOfDay(expires) ? { expiresAt: endOfDay(expires) } : {}) });
      setValues({});
      setStored(r.items.map((c) => c.name));
      onSaved();
    });
  };

  return (
    <form onSubmit={submit} aria-label="Connect a skill">
      <Field label="Skill">
        {(id) => (
          <select
            id={id}
            value={skillId}
            onChange={(e) => {
              setSkillId(e.target.value);
              setValues({});
              action.clear();
            }}
          >
            {skills.map((s) => (
              <option key={s.id} value={s.id}>
                {s.label}
              </option>
            ))}
          </select>
        )}
      </Field>
      {skill ? <p className="hint">{skill.description}</p> : null}
      {skill?.fields.map((f) => (
        <Field
          key={`${skill.id}.${f.name}`}
          label={`${f.label}${f.required ? '' : ' (optional)'}`}
          hint={[
            f.help,
            f.patternHint ? `Format: ${f.patternHint}.` : '',
            f.type === 'list' ? 'Separate several with commas.' : '',
            f.secret ? 'Write-only: stored encrypted, never shown again.' : '',
          ]
            .filter(Boolean)
            .join(' ')}
        >
          {(id, d) => (
            <input
              id={id}
              aria-describedby={d}
              type={f.secret ? 'password' : 'text'}
              autoComplete="off"
              spellCheck={false}
              required={f.required}
              value={values[f.name] ?? ''}
              onChange={(e) => setValues((s) => ({ ...s, [f.name]: e.target.value }))}
            />
          )}
        </Field>
      ))}
      <Field label="Expires on (optional)" hint="You will see a warning two weeks before.">
        {(id, d) => <input id={id} aria-describedby={d} type="date" value={expires} onChange={(e) => setExpires(e.target.value)} />}
      </Field>
      <ErrorMessage error={action.error} />
      {stored ? (
        <p className="notice ok" role="status">
          Stored {stored.join(', ')}. Values are not shown again.
        </p>
      ) : null}
      <button type="submit" disabled={action.busy || !skill}>
        {action.busy ? 'Saving…' : `Connect ${skill?.label ?? ''}`}
      </button>
    </form>
  );
}

function AddCredential({ slug, onSaved }: { slug: string; onSaved: (c: Credential) => void }) {
  const [name, setName] = useState('');
  const [type, setType] = useState<CredentialType>('api_key');
  const [value, setValue] = useState('');
  const [expires, setExpires] = useState('');
  const [stored, setStored] = useState<string | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setStored(undefined);
    void action.run(async () => {
      const c = await api.credentials.create(slug, { name: name.trim(), type, value, ...(endOfDay(expires) ? { expiresAt: endOfDay(expires) } : {}) });
      setName('');
      setValue('');
      setStored(c.name);
      onSaved(c);
    });
  };
  return (
    <form className="card" onSubmit={submit} aria-label="Add a credential">
      <h2>Add a credential</h2>
      <p className="hint">For an LLM provider's API key or any other secret. Values are write-only.</p>
      <Field label="Credential name" hint='Letters, digits, "_", ".", ":" or "-", e.g. openai-key.'>
        {(id, d) => <input id={id} aria-describedby={d} required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />}
      </Field>
      <Field label="Type">
        {(id) => (
          <select id={id} value={type} onChange={(e) => setType(e.target.value as CredentialType)}>
            {CREDENTIAL_TYPES.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Value" hint="Stored encrypted; only its last 4 characters are ever shown.">
        {(id, d) => <input id={id} aria-describedby={d} type="password" autoComplete="off" required value={value} onChange={(e) => setValue(e.target.value)} />}
      </Field>
      <Field label="Expires on (optional)">{(id) => <input id={id} type="date" value={expires} onChange={(e) => setExpires(e.target.value)} />}</Field>
      <ErrorMessage error={action.error} />
      {stored ? (
        <p className="notice ok" role="status">
          Stored {stored}. The value is not shown again.
        </p>
      ) : null}
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Saving…' : 'Add credential'}
      </button>
    </form>
  );
}
