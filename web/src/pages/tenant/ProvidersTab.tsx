import { useState, type FormEvent } from 'react';
import { api, type ConnectionTest, type Credential, type ModelRoute, type Provider, type ProviderKind, type RouteScope, type RouteTarget } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, useAction } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/** LLM providers: add one with its key (stored as a credential), test the connection, enable, delete. */
export function ProvidersTab({ tenant, role }: TabProps) {
  const slug = tenant.slug;
  const data = useResource(async () => {
    if (!role) return undefined;
    const [providers, kinds, credentials] = await Promise.all([
      api.providers.list(slug),
      api.providerKinds(),
      api.credentials.list(slug, false, { limit: 200 }),
    ]);
    return { providers: providers.items, kinds: kinds.items, credentials: credentials.items };
  }, [slug, role]);
  if (!role) return <NotAMember what="LLM providers" />;
  const admin = role === 'tenant_admin';
  return (
    <Async resource={data} what="providers">
      {(d) =>
        d ? (
          <>
            {admin ? (
              <AddProvider slug={slug} kinds={d.kinds} credentials={d.credentials} onSaved={data.reload} />
            ) : (
              <p className="notice info">Changing providers needs the tenant admin role.</p>
            )}
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
            <ModelRoutes slug={slug} admin={admin} providers={d.providers} />
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
        <dd>
          {p.credentialId ? (
            key ? (
              <>
                {key.name} <code>••••{key.last4}</code>
              </>
            ) : (
              'a credential that is no longer active'
            )
          ) : (
            'none'
          )}
        </dd>
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
      <Field
        label={kind?.defaultBaseUrl ? 'Base URL (optional)' : 'Base URL'}
        hint={kind?.defaultBaseUrl ? `Default: ${kind.defaultBaseUrl}` : 'The API root including its version, e.g. http://llm.internal:11434/v1'}
      >
        {(id, d) => (
          <input
            id={id}
            aria-describedby={d}
            type="url"
            required={!kind?.defaultBaseUrl}
            placeholder={kind?.defaultBaseUrl ?? ''}
            value={baseUrl}
            onChange={(e) => setBaseUrl(e.target.value)}
          />
        )}
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
          {(id, d) => (
            <input
              id={id}
              aria-describedby={d}
              type="password"
              autoComplete="off"
              required={kind?.keyRequired !== false}
              value={newKey}
              onChange={(e) => setNewKey(e.target.value)}
            />
          )}
        </Field>
      ) : null}
      <Field label="Default model (optional)">
        {(id) => <input id={id} maxLength={200} value={defaultModel} onChange={(e) => setDefaultModel(e.target.value)} />}
      </Field>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Adding…' : 'Add provider'}
      </button>
    </form>
  );
}

// ---- Model routes ----

const SCOPE_LABEL: Record<RouteScope, string> = { tenant: 'Tenant default', agent: 'Agent', skill: 'Skill' };
const routeName = (r: { scope: RouteScope; scopeName: string }) => (r.scope === 'tenant' ? 'Tenant default' : `${SCOPE_LABEL[r.scope]} ${r.scopeName}`);

/**
 * Model routes (issue 4): which (provider, model) the broker calls, tried in order (a primary, then its
 * fallbacks). A skill's route wins over an agent's, an agent's over the tenant default.
 */
function ModelRoutes({ slug, admin, providers }: { slug: string; admin: boolean; providers: Provider[] }) {
  // Deleting a provider deletes the routes through it: reload when the providers change.
  const routes = useResource(() => api.providers.routes(slug), [slug, providers.map((p) => p.id).join()]);
  const [editing, setEditing] = useState<ModelRoute | undefined>(undefined);
  const [formKey, setFormKey] = useState(0);
  const providerName = (id: string) => providers.find((p) => p.id === id)?.name ?? 'a deleted provider';
  return (
    <section className="card" aria-labelledby="routes-h">
      <h2 id="routes-h">Model routes</h2>
      <p className="hint">
        Which provider and model answer a model call: a skill&apos;s route first, then the agent&apos;s, then the tenant default. The first target is tried
        first; the others are fallbacks, in order, when it fails.
      </p>
      <Async resource={routes} what="model routes">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No model routes: calls go to the model the agent asks for, on the tenant&apos;s provider.</Empty>
          ) : (
            <table>
              <caption className="sr-only">Model routes</caption>
              <thead>
                <tr>
                  <th scope="col">Route</th>
                  <th scope="col">Targets, in order</th>
                  {admin ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {items.map((r) => (
                  <tr key={`${r.scope}:${r.scopeName}`}>
                    <td>{routeName(r)}</td>
                    <td>
                      <ol className="targets" aria-label={`Targets of ${routeName(r)}`}>
                        {r.targets.map((t, i) => (
                          <li key={i}>
                            {providerName(t.providerId)} · <code>{t.model}</code>
                            {i > 0 ? <span className="small muted"> (fallback)</span> : null}
                          </li>
                        ))}
                      </ol>
                    </td>
                    {admin ? (
                      <td className="cell-actions">
                        <button type="button" className="secondary" onClick={() => (setEditing(r), setFormKey((k) => k + 1))}>
                          Edit <span className="sr-only">{routeName(r)}</span>
                        </button>
                        <ConfirmButton
                          label="Remove"
                          confirmLabel={`Remove ${routeName(r)}`}
                          onConfirm={async () => {
                            await api.providers.setRoute(slug, { scope: r.scope, ...(r.scope === 'tenant' ? {} : { scopeName: r.scopeName }), targets: [] });
                            routes.reload();
                          }}
                        />
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      {admin ? (
        providers.length === 0 ? (
          <Empty>Add a provider above to route models to it.</Empty>
        ) : (
          <RouteForm
            key={formKey}
            slug={slug}
            providers={providers}
            initial={editing}
            onSaved={() => routes.reload()}
            onCancel={editing ? () => (setEditing(undefined), setFormKey((k) => k + 1)) : undefined}
          />
        )
      ) : null}
    </section>
  );
}

function RouteForm(props: { slug: string; providers: Provider[]; initial: ModelRoute | undefined; onSaved: () => void; onCancel: (() => void) | undefined }) {
  const first = props.providers[0];
  const blank = (): RouteTarget => ({ providerId: first?.id ?? '', model: first?.defaultModel ?? '' });
  const [scope, setScope] = useState<RouteScope>(props.initial?.scope ?? 'tenant');
  const [scopeName, setScopeName] = useState(props.initial?.scopeName ?? '');
  const [targets, setTargets] = useState<RouteTarget[]>(props.initial?.targets.length ? props.initial.targets : [blank()]);
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const action = useAction();
  const setTarget = (i: number, patch: Partial<RouteTarget>) => setTargets((ts) => ts.map((t, j) => (j === i ? { ...t, ...patch } : t)));
  const defaultOf = (providerId: string) => props.providers.find((p) => p.id === providerId)?.defaultModel ?? '';
  // A model left empty or at the old provider's default follows the new provider's default.
  const changeProvider = (i: number, providerId: string) =>
    setTargets((ts) =>
      ts.map((t, j) => (j === i ? { providerId, model: t.model.trim() === '' || t.model === defaultOf(t.providerId) ? defaultOf(providerId) : t.model } : t)),
    );
  const move = (i: number, by: -1 | 1) =>
    setTargets((ts) => {
      const next = [...ts];
      const [t] = next.splice(i, 1);
      if (t) next.splice(i + by, 0, t);
      return next;
    });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setSaved(undefined);
      const r = await api.providers.setRoute(props.slug, {
        scope,
        ...(scope === 'tenant' ? {} : { scopeName: scopeName.trim() }),
        targets: targets.map((t) => ({ providerId: t.providerId, model: t.model.trim() })),
      });
      setSaved(`Saved ${routeName(r)}: ${r.targets.length} target${r.targets.length === 1 ? '' : 's'}.`);
      props.onSaved();
    });
  };
  return (
    <form onSubmit={submit} aria-label="Set a model route">
      <h3>{props.initial ? `Change ${routeName(props.initial)}` : 'Set a model route'}</h3>
      <div className="row">
        <Field label="Applies to">
          {(id) => (
            <select
              id={id}
              value={scope}
              disabled={props.initial !== undefined}
              onChange={(e) => setScope(e.target.value === 'agent' ? 'agent' : e.target.value === 'skill' ? 'skill' : 'tenant')}
            >
              <option value="tenant">Tenant default</option>
              <option value="agent">One agent</option>
              <option value="skill">One skill</option>
            </select>
          )}
        </Field>
        {scope === 'tenant' ? null : (
          <Field label={scope === 'agent' ? 'Agent' : 'Skill'} hint={scope === 'agent' ? 'The agent’s name, e.g. main' : 'The skill id, e.g. github'}>
            {(id, d) => (
              <input
                id={id}
                aria-describedby={d}
                required
                readOnly={props.initial !== undefined}
                value={scopeName}
                onChange={(e) => setScopeName(e.target.value)}
              />
            )}
          </Field>
        )}
      </div>
      <ol className="route-targets" aria-label="Targets, in order">
        {targets.map((t, i) => {
          const n = i + 1;
          return (
            <li key={i} className="row">
              <Field label={`Provider ${n}`}>
                {(id) => (
                  <select id={id} autoFocus={i === 0 && props.initial !== undefined} value={t.providerId} onChange={(e) => changeProvider(i, e.target.value)}>
                    {props.providers.map((p) => (
                      <option key={p.id} value={p.id}>
                        {p.name}
                        {p.enabled ? '' : ' (disabled)'}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
              <Field label={`Model ${n}`} hint={n === 1 ? 'Tried first' : 'Fallback'}>
                {(id, d) => (
                  <input
                    id={id}
                    aria-describedby={d}
                    required
                    value={t.model}
                    placeholder="e.g. gpt-4o-mini"
                    onChange={(e) => setTarget(i, { model: e.target.value })}
                  />
                )}
              </Field>
              <div className="actions">
                <button type="button" className="secondary" aria-label={`Move target ${n} up`} disabled={i === 0} onClick={() => move(i, -1)}>
                  ↑
                </button>
                <button type="button" className="secondary" aria-label={`Move target ${n} down`} disabled={i === targets.length - 1} onClick={() => move(i, 1)}>
                  ↓
                </button>
                <button
                  type="button"
                  className="secondary danger-text"
                  aria-label={`Remove target ${n}`}
                  disabled={targets.length === 1}
                  onClick={() => setTargets((ts) => ts.filter((_, j) => j !== i))}
                >
                  Remove
                </button>
              </div>
            </li>
          );
        })}
      </ol>
      <ErrorMessage error={action.error} />
      {saved && !action.error ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      <div className="actions">
        <button type="button" className="secondary" disabled={targets.length >= 16} onClick={() => setTargets((ts) => [...ts, blank()])}>
          Add a fallback
        </button>
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Save route'}
        </button>
        {props.onCancel ? (
          <button type="button" className="secondary" onClick={props.onCancel}>
            Cancel
          </button>
        ) : null}
      </div>
    </form>
  );
}
