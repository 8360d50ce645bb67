import { useState, type FormEvent } from 'react';
import { api, type ConnectionTest, type Credential, type Provider, type ProviderKind } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, useAction } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/** LLM providers: add one with its key (stored as a credential), test the connection, enable, delete. */
export function ProvidersTab({ tenant, role }: TabProps) {
  const slug = tenant.slug;
  const data = useResource(
    async () => {
      if (!role) return undefined;
      const [providers, kinds, credentials] = await Promise.all([api.providers.list(slug), api.providerKinds(), api.credentials.list(slug, false)]);
      return { providers: providers.items, kinds: kinds.items, credentials: credentials.items };
    },
    [slug, role],
  );
  if (!role) return <NotAMember what="LLM providers" />;
  const admin = role === 'tenant_admin';
  return (
    <Async resource={data} what="providers">
      {(d) =>
        d ? (
          <>
            {admin ? <AddProvider slug={slug} kinds={d.kinds} credentials={d.credentials} onSaved={data.reload} /> : <p className="notice info">Changing providers needs the tenant admin role.</p>}
            <h2>Providers</h2>
            {d.providers.length === 0 ? (
              <Empty>No LLM provider yet. {admin ? 'Add one above; its agents cannot answer without one.' : 'Ask a tenant admin to add one.'}</Empty>
            ) : (
              <ul className="cards">
                {d.providers.map((p) => (
                  <ProviderCard key={p.id} p={p} slug={slug} admin={admin} kinds={d.kinds} credentials={d.credentials} onChanged={data.reload} />
                ))}
              </ul>
            )}
          </>
        ) : null
      }
    </Async>
  );
}

function ProviderCard(props: { p: Provider; slug: string; admin: boolean; kinds: ProviderKind[]; credentials: Credential[]; onChanged: () => void }) {
  const { p, slug } = props;
  const [result, setResult] = useState<ConnectionTest | undefined>(undefined);
  const test = useAction();
  const toggle = useAction();
  const key = props.credentials.find((c) => c.id === p.credentialId);
  const kind = props.kinds.find((k) => k.kind === p.kind);
  return (
    <li className="card" aria-label={`Provider ${p.name}`}>
      <div className="heading-row">
        <h3>{p.name}</h3>
        <span className={`badge badge-${p.enabled ? 'active' : 'suspended'}`}>{p.enabled ? 'enabled' : 'disabled'}</span>
      </div>
      <dl className="facts">
        <dt>Kind</dt>
        <dd>{kind?.label ?? p.kind}</dd>
        <dt>Base URL</dt>
        <dd>
          <code>{p.baseUrl}</code>
        </dd>
        <dt>API key</dt>
        <dd>{p.credentialId ? key ? <>{key.name} <code>••••{key.last4}</code></> : 'a credential that is no longer active' : 'none'}</dd>
        <dt>Default model</dt>
        <dd>{p.defaultModel ?? '—'}</dd>
      </dl>
      {props.admin ? (
        <div className="actions">
          <button type="button" disabled={test.busy} onClick={() => void test.run(async () => setResult(await api.providers.test(slug, p.id)))}>
            {test.busy ? 'Testing…' : 'Test connection'}
          </button>
          <button
            type="button"
            className="secondary"
            disabled={toggle.busy}
            onClick={() =>
              void toggle.run(async () => {
                await api.providers.update(slug, p.id, { enabled: !p.enabled });
                props.onChanged();
              })
            }
          >
            {p.enabled ? 'Disable' : 'Enable'}
          </button>
          <ConfirmButton
            label="Delete"
            confirmLabel={`Delete ${p.name}`}
            onConfirm={async () => {
              await api.providers.remove(slug, p.id);
              props.onChanged();
            }}
          />
        </div>
      ) : null}
      <ErrorMessage error={test.error ?? toggle.error} />
      {result ? <TestResult r={result} /> : null}
    </li>
  );
}

function TestResult({ r }: { r: ConnectionTest }) {
  if (r.ok) {
    const shown = (r.models ?? []).slice(0, 8);
    return (
      <div className="notice ok" role="status">
        <strong>Connection works</strong> ({Math.round(r.latencyMs)} ms): {r.modelCount ?? 0} models available
        {shown.length ? `, e.g. ${shown.join(', ')}` : ''}.
      </div>
    );
  }
  return (
    <div className="notice error" role="status">
      <strong>Connection failed</strong> ({Math.round(r.latencyMs)} ms): {r.error?.message ?? 'no details'}
    </div>
  );
}

const NEW_KEY = '__new__';
const NO_KEY = '';

function AddProvider(props: { slug: string; kinds: ProviderKind[]; credentials: Credential[]; onSaved: () => void }) {
  const [kindId, setKindId] = useState(props.kinds[0]?.kind ?? '');
  const [name, setName] = useState('');
  const [baseUrl, setBaseUrl] = useState('');
  const [keyChoice, setKeyChoice] = useState(NEW_KEY);
  const [newKey, setNewKey] = useState('');
  const [defaultModel, setDefaultModel] = useState('');
  const action = useAction();
  const kind = props.kinds.find((k) => k.kind === kindId);
  const apiKeys = props.credentials.filter((c) => c.status === 'active');

  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      let credentialId: string | undefined = keyChoice === NEW_KEY || keyChoice === NO_KEY ? undefined : keyChoice;
      if (keyChoice === NEW_KEY && newKey) {
        // The key becomes a credential first; the provider refers to it by id (the API never takes a key inline).
        const c = await api.credentials.create(props.slug, { name: `${name.trim()}-api-key`, type: 'api_key', value: newKey });
        credentialId = c.id;
      }
      await api.providers.create(props.slug, {
        kind: kindId,
        name: name.trim(),
        ...(baseUrl.trim() ? { baseUrl: baseUrl.trim() } : {}),
        ...(credentialId ? { credentialId } : {}),
        ...(defaultModel.trim() ? { defaultModel: defaultModel.trim() } : {}),
      });
      setName('');
      setBaseUrl('');
      setNewKey('');
      setDefaultModel('');
      props.onSaved();
    });
  };

  return (
    <form className="card" onSubmit={submit} aria-label="Add an LLM provider">
      <h2>Add an LLM provider</h2>
      <div className="row">
        <Field label="Kind">
          {(id) => (
            <select id={id} value={kindId} onChange={(e) => setKindId(e.target.value)}>
              {props.kinds.map((k) => (
                <option key={k.kind} value={k.kind}>
                  {k.label}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Provider name" hint="e.g. main or openai-eu">
          {(id, d) => <input id={id} aria-describedby={d} required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
      </div>
      <Field label={kind?.defaultBaseUrl ? 'Base URL (optional)' : 'Base URL'} hint={kind?.defaultBaseUrl ? `Default: ${kind.defaultBaseUrl}` : 'The API root including its version, e.g. http://llm.internal:11434/v1'}>
        {(id, d) => <input id={id} aria-describedby={d} type="url" required={!kind?.defaultBaseUrl} placeholder={kind?.defaultBaseUrl ?? ''} value={baseUrl} onChange={(e) => setBaseUrl(e.target.value)} />}
      </Field>
      <Field label="API key">
        {(id) => (
          <select id={id} value={keyChoice} onChange={(e) => setKeyChoice(e.target.value)}>
            <option value={NEW_KEY}>Enter a new key</option>
            {apiKeys.map((c) => (
              <option key={c.id} value={c.id}>
                {c.name} (••••{c.last4})
              </option>
            ))}
            {kind?.keyRequired === false ? <option value={NO_KEY}>No key</option> : null}
          </select>
        )}
      </Field>
      {keyChoice === NEW_KEY ? (
        <Field label="New API key" hint="Stored encrypted as a credential; never shown again.">
          {(id, d) => <input id={id} aria-describedby={d} type="password" autoComplete="off" required={kind?.keyRequired !== false} value={newKey} onChange={(e) => setNewKey(e.target.value)} />}
        </Field>
      ) : null}
      <Field label="Default model (optional)">{(id) => <input id={id} maxLength={200} value={defaultModel} onChange={(e) => setDefaultModel(e.target.value)} />}</Field>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Adding…' : 'Add provider'}
      </button>
    </form>
  );
}
