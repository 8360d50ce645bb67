import { useState, type FormEvent } from 'react';
import { api, api2, tasksApi, type BrokerLimit, type EgressHost, type PolicyDecision, type PolicyRestriction, type TenantPolicy } from '../../api.ts';
import { Async, ConfirmButton, CopyButton, Empty, ErrorMessage, Field, formatDate, StatusBadge, useAction } from '../../components/ui.tsx';
import { BaselinePolicies } from '../../components/ToolRegistry.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/**
 * Governance: what the tenant's agents may do. Tool policy (the platform baseline, read-only; the
 * tenant's forbid-only restrictions; explain a decision; effective tools), model-call caps, the egress
 * allow-list, skill endpoints and the approval webhook. Everyone in the tenant reads; tenant admins change.
 */
export function GovernanceTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="governance settings" />;
  const admin = role === 'tenant_admin';
  return (
    <>
      {admin ? null : <p className="notice info">You can read these settings; changing them needs the tenant admin role.</p>}
      <nav className="subnav" aria-label="Governance sections">
        <a href="#policy">Tool policy</a> <a href="#explain">Explain a decision</a> <a href="#caps">Caps</a> <a href="#egress">Egress</a>{' '}
        <a href="#skills">Skill endpoints</a> <a href="#webhook">Approval webhook</a>
      </nav>
      <ToolPolicy slug={tenant.slug} admin={admin} />
      <Explain slug={tenant.slug} />
      <Caps slug={tenant.slug} admin={admin} />
      <Egress slug={tenant.slug} admin={admin} />
      <SkillEndpoints slug={tenant.slug} admin={admin} />
      <ApprovalWebhook slug={tenant.slug} admin={admin} />
    </>
  );
}

function ToolPolicy({ slug, admin }: { slug: string; admin: boolean }) {
  const policy = useResource(() => api2.policy.get(slug), [slug]);
  return (
    <section id="policy" aria-labelledby="policy-h">
      <h2 id="policy-h">Tool policy</h2>
      <div className="two-col">
        <div className="card">
          <h3>Platform baseline</h3>
          <p className="hint">Set by the platform admins; applies to every tenant. Read-only here.</p>
          <BaselinePolicies />
        </div>
        <div className="card">
          <h3>This tenant&apos;s restrictions</h3>
          <p className="hint">Restrictions can only forbid (narrow the baseline); a permit is refused.</p>
          <Async resource={policy} what="the tenant's policy">
            {(p) => <Restrictions slug={slug} policy={p} admin={admin} onSaved={policy.reload} />}
          </Async>
        </div>
      </div>
      <EffectiveTools slug={slug} version={policy.data?.version} />
    </section>
  );
}

function Restrictions({ slug, policy, admin, onSaved }: { slug: string; policy: TenantPolicy; admin: boolean; onSaved: () => void }) {
  const save = useAction();
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const [id, setId] = useState('');
  const [description, setDescription] = useState('');
  const [cedar, setCedar] = useState('forbid (principal, action, resource)\nwhen { resource.group == "web" };');
  const [agent, setAgent] = useState('');
  const [channel, setChannel] = useState('');

  const put = (execPolicy: 'deny' | 'ask', policies: PolicyRestriction[], message: string) =>
    save.run(async () => {
      setSaved(undefined);
      await api2.policy.save(slug, { execPolicy, policies });
      setSaved(message);
      onSaved();
    });

  const add = (e: FormEvent) => {
    e.preventDefault();
    const scope: PolicyRestriction['scope'] = {};
    if (agent.trim()) scope.agent = agent.trim();
    if (channel.trim()) scope.channel = channel.trim();
    const next: PolicyRestriction = { id: id.trim(), description: description.trim(), cedar, ...(scope.agent || scope.channel ? { scope } : {}) };
    void put(policy.execPolicy, [...policy.policies.filter((p) => p.id !== next.id), next], `Saved restriction ${next.id}.`).then(() => undefined);
  };

  return (
    <>
      <p className="small muted">
        Version {policy.version}, updated {formatDate(policy.updatedAt)}.
      </p>
      <Field label="Shell and exec tools">
        {(fid) => (
          <select
            id={fid}
            disabled={!admin || save.busy}
            value={policy.execPolicy}
            onChange={(e) => void put(e.target.value === 'ask' ? 'ask' : 'deny', policy.policies, 'Exec setting saved.')}
          >
            <option value="deny">Never</option>
            <option value="ask">Only after a person approves each use</option>
          </select>
        )}
      </Field>
      {policy.policies.length === 0 ? (
        <Empty>No restrictions: the baseline applies as is.</Empty>
      ) : (
        <ul className="policies" aria-label="Tenant restrictions">
          {policy.policies.map((p) => (
            <li key={p.id}>
              <code>tenant/{p.id}</code>
              {p.scope?.agent ? <span className="badge">agent {p.scope.agent}</span> : null}
              {p.scope?.channel ? <span className="badge">channel {p.scope.channel}</span> : null}
              <div className="small">{p.description}</div>
              <pre className="code">{p.cedar}</pre>
              {admin ? (
                <ConfirmButton
                  label="Remove"
                  confirmLabel={`Remove ${p.id}`}
                  onConfirm={() =>
                    put(
                      policy.execPolicy,
                      policy.policies.filter((x) => x.id !== p.id),
                      `Removed restriction ${p.id}.`,
                    )
                  }
                />
              ) : null}
            </li>
          ))}
        </ul>
      )}
      {saved && !save.error ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      {admin ? (
        <form onSubmit={add} aria-label="Add a restriction">
          <h4>Add or replace a restriction</h4>
          <Field label="Policy id" hint='Lowercase letters, digits and hyphens, e.g. "no-web". The same id replaces.'>
            {(fid, d) => <input id={fid} aria-describedby={d} required value={id} onChange={(e) => setId(e.target.value)} />}
          </Field>
          <Field label="Description (optional)">{(fid) => <input id={fid} value={description} onChange={(e) => setDescription(e.target.value)} />}</Field>
          <Field label="Cedar policy" hint="One forbid policy over principal (the agent), action (the tool) and resource (its group and scopes).">
            {(fid, d) => <textarea id={fid} aria-describedby={d} required rows={4} className="mono" value={cedar} onChange={(e) => setCedar(e.target.value)} />}
          </Field>
          <div className="row">
            <Field label="Only for agent (optional)">{(fid) => <input id={fid} value={agent} onChange={(e) => setAgent(e.target.value)} />}</Field>
            <Field label="Only in channel (optional)">{(fid) => <input id={fid} value={channel} onChange={(e) => setChannel(e.target.value)} />}</Field>
          </div>
          <ErrorMessage error={save.error} />
          <button type="submit" disabled={save.busy}>
            {save.busy ? 'Saving…' : 'Save restriction'}
          </button>
        </form>
      ) : (
        <ErrorMessage error={save.error} />
      )}
    </>
  );
}

/** Re-read when the tenant's policy changes (its version). */
function EffectiveTools({ slug, version }: { slug: string; version: number | undefined }) {
  const [agent, setAgent] = useState('main');
  const [shown, setShown] = useState('main');
  const tools = useResource(() => api2.policy.effectiveTools(slug, shown), [slug, shown, version]);
  return (
    <div className="card">
      <h3>Effective tools</h3>
      <form
        className="inline-form"
        aria-label="Effective tools of an agent"
        onSubmit={(e) => {
          e.preventDefault();
          setShown(agent.trim() || 'main');
        }}
      >
        <Field label="Agent">{(id) => <input id={id} value={agent} onChange={(e) => setAgent(e.target.value)} />}</Field>
        <button type="submit" className="secondary">
          Show
        </button>
      </form>
      <Async resource={tools} what="effective tools">
        {(t) => (
          <dl className="tool-lists">
            <dt>Allowed</dt>
            <dd>{t.allow.length ? t.allow.map((x) => <code key={x}>{x}</code>) : '—'}</dd>
            <dt>Needs approval</dt>
            <dd>{t.requiresApproval.length ? t.requiresApproval.map((x) => <code key={x}>{x}</code>) : '—'}</dd>
            <dt>Denied</dt>
            <dd>{t.deny.length ? t.deny.map((x) => <code key={x}>{x}</code>) : '—'}</dd>
          </dl>
        )}
      </Async>
    </div>
  );
}

function Explain({ slug }: { slug: string }) {
  const tools = useResource(() => api2.policy.tools(), []);
  const [tool, setTool] = useState('');
  const [agent, setAgent] = useState('main');
  const [channel, setChannel] = useState('');
  const [repo, setRepo] = useState('');
  const [host, setHost] = useState('');
  const [decision, setDecision] = useState<PolicyDecision | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setDecision(undefined);
      const context: Record<string, string> = {};
      if (channel.trim()) context['channel'] = channel.trim();
      if (repo.trim()) context['repo'] = repo.trim();
      if (host.trim()) context['host'] = host.trim();
      setDecision(await api2.policy.explain(slug, { tool: tool.trim(), agent: agent.trim() || 'main', context }));
    });
  };
  return (
    <section id="explain" className="card" aria-labelledby="explain-h">
      <h2 id="explain-h">Explain a decision</h2>
      <p className="hint">Decides a sample tool use with the current policies and says why. Nothing is granted.</p>
      <form onSubmit={submit} aria-label="Explain a decision">
        <div className="row">
          <Field label="Tool" hint={tools.data ? `${tools.data.items.length} tools in the registry.` : undefined}>
            {(id, d) => (
              <>
                <input id={id} aria-describedby={d} required list="tool-names" value={tool} onChange={(e) => setTool(e.target.value)} placeholder="web_fetch" />
                <datalist id="tool-names">
                  {tools.data?.items.map((x) => (
                    <option key={x.name} value={x.name}>
                      {x.group}, {x.risk}
                    </option>
                  ))}
                </datalist>
              </>
            )}
          </Field>
          <Field label="Agent">{(id) => <input id={id} value={agent} onChange={(e) => setAgent(e.target.value)} />}</Field>
          <Field label="Channel (optional)">{(id) => <input id={id} value={channel} onChange={(e) => setChannel(e.target.value)} />}</Field>
          <Field label="Repository (optional)">{(id) => <input id={id} value={repo} onChange={(e) => setRepo(e.target.value)} />}</Field>
          <Field label="Host (optional)">{(id) => <input id={id} value={host} onChange={(e) => setHost(e.target.value)} />}</Field>
        </div>
        <ErrorMessage error={action.error} />
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Deciding…' : 'Explain'}
        </button>
      </form>
      {decision ? (
        <div className="decision" role="status" aria-label="Decision">
          <p>
            Outcome: <StatusBadge status={decision.outcome} />
          </p>
          <p>
            Determining policies:{' '}
            {decision.policyIds.length ? (
              decision.policyIds.map((p) => (
                <code key={p} className="policy-id">
                  {p}
                </code>
              ))
            ) : (
              <span className="muted">none (default deny)</span>
            )}
          </p>
          <p>{decision.explanation}</p>
          {decision.errors.length ? <ErrorMessage error={new Error(decision.errors.join('; '))} /> : null}
        </div>
      ) : null}
    </section>
  );
}

// ---- Caps ----

interface CapRow {
  agent: string;
  dailyTokens: string;
  dailyCostUsd: string;
  requestsPerMinute: string;
  maxCallsPerTask: string;
}
const toRow = (l: BrokerLimit): CapRow => ({
  agent: l.agent,
  dailyTokens: l.dailyTokens === null ? '' : String(l.dailyTokens),
  dailyCostUsd: l.dailyCostUsd === null ? '' : String(l.dailyCostUsd),
  requestsPerMinute: l.requestsPerMinute === null ? '' : String(l.requestsPerMinute),
  maxCallsPerTask: l.maxCallsPerTask === null ? '' : String(l.maxCallsPerTask),
});
const num = (s: string): number | null => (s.trim() === '' ? null : Number(s));
const CAP_FIELDS: { key: keyof Omit<CapRow, 'agent'>; label: string; step: string }[] = [
  { key: 'dailyTokens', label: 'Tokens per day', step: '1' },
  { key: 'dailyCostUsd', label: 'Cost per day (USD)', step: '0.01' },
  { key: 'requestsPerMinute', label: 'Requests per minute', step: '1' },
  { key: 'maxCallsPerTask', label: 'Model calls per task', step: '1' },
];

function Caps({ slug, admin }: { slug: string; admin: boolean }) {
  const limits = useResource(() => api2.broker.limits(slug), [slug]);
  return (
    <section id="caps" className="card" aria-labelledby="caps-h">
      <h2 id="caps-h">Model-call caps</h2>
      <p className="hint">
        Per agent; the agent &quot;(whole tenant)&quot; caps the sum of all agents. Empty = no cap. The platform&apos;s daily budgets still apply.
      </p>
      <Async resource={limits} what="caps">
        {({ items }) => <CapsForm slug={slug} initial={items} admin={admin} />}
      </Async>
    </section>
  );
}

/** Holds its rows itself: after a save they are what the server answered (a reload of the list would reset the form). */
function CapsForm({ slug, initial, admin }: { slug: string; initial: BrokerLimit[]; admin: boolean }) {
  const [rows, setRows] = useState<CapRow[]>(() =>
    initial.length ? initial.map(toRow) : [toRow({ agent: '', dailyTokens: null, dailyCostUsd: null, requestsPerMinute: null, maxCallsPerTask: null })],
  );
  const action = useAction();
  const [saved, setSaved] = useState(false);
  const set = (i: number, patch: Partial<CapRow>) => setRows((rs) => rs.map((r, n) => (n === i ? { ...r, ...patch } : r)));
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setSaved(false);
      const items = rows.map((r) => ({
        agent: r.agent.trim(),
        dailyTokens: num(r.dailyTokens),
        dailyCostUsd: num(r.dailyCostUsd),
        requestsPerMinute: num(r.requestsPerMinute),
        maxCallsPerTask: num(r.maxCallsPerTask),
      }));
      const r = await api2.broker.saveLimits(slug, items);
      setRows(r.items.map(toRow));
      setSaved(true);
    });
  };
  return (
    <form onSubmit={submit} aria-label="Model-call caps">
      <table>
        <caption className="sr-only">Caps per agent</caption>
        <thead>
          <tr>
            <th scope="col">Agent</th>
            {CAP_FIELDS.map((f) => (
              <th scope="col" key={f.key}>
                {f.label}
              </th>
            ))}
            {admin ? <th scope="col">Remove</th> : null}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => {
            const who = r.agent.trim() || 'whole tenant';
            return (
              <tr key={i}>
                <td>
                  <input
                    aria-label={`Agent of cap row ${i + 1}`}
                    placeholder="(whole tenant)"
                    disabled={!admin}
                    value={r.agent}
                    onChange={(e) => set(i, { agent: e.target.value })}
                  />
                </td>
                {CAP_FIELDS.map((f) => (
                  <td key={f.key}>
                    <input
                      aria-label={`${f.label}, ${who}`}
                      type="number"
                      min={0}
                      step={f.step}
                      disabled={!admin}
                      value={r[f.key]}
                      onChange={(e) => set(i, { [f.key]: e.target.value })}
                    />
                  </td>
                ))}
                {admin ? (
                  <td>
                    <button
                      type="button"
                      className="secondary"
                      aria-label={`Remove caps of ${who}`}
                      onClick={() => setRows((rs) => rs.filter((_, n) => n !== i))}
                    >
                      Remove
                    </button>
                  </td>
                ) : null}
              </tr>
            );
          })}
        </tbody>
      </table>
      {rows.length === 0 ? <Empty>No caps.</Empty> : null}
      <ErrorMessage error={action.error} />
      {saved ? (
        <p className="notice ok" role="status">
          Caps saved.
        </p>
      ) : null}
      {admin ? (
        <div className="actions">
          <button
            type="button"
            className="secondary"
            onClick={() => setRows((rs) => [...rs, { agent: '', dailyTokens: '', dailyCostUsd: '', requestsPerMinute: '', maxCallsPerTask: '' }])}
          >
            Add an agent
          </button>
          <button type="submit" disabled={action.busy}>
            {action.busy ? 'Saving…' : 'Save caps'}
          </button>
        </div>
      ) : null}
    </form>
  );
}

// ---- Egress ----

function Egress({ slug, admin }: { slug: string; admin: boolean }) {
  const hosts = useResource(() => api2.broker.egress(slug), [slug]);
  return (
    <section id="egress" className="card" aria-labelledby="egress-h">
      <h2 id="egress-h">Egress allow-list</h2>
      <p className="hint">
        Hosts the tenant&apos;s sandboxes may reach through the broker&apos;s HTTPS proxy. Private and cloud-metadata addresses stay refused whatever is listed.
      </p>
      <Async resource={hosts} what="the egress allow-list">
        {({ items }) => <EgressForm slug={slug} initial={items} admin={admin} />}
      </Async>
    </section>
  );
}

function EgressForm({ slug, initial, admin }: { slug: string; initial: EgressHost[]; admin: boolean }) {
  const [items, setItems] = useState(initial);
  const [host, setHost] = useState('');
  const [port, setPort] = useState('443');
  const action = useAction();
  const [saved, setSaved] = useState(false);
  const save = (next: EgressHost[]) =>
    action.run(async () => {
      setSaved(false);
      const r = await api2.broker.saveEgress(slug, next);
      setItems(r.items);
      setSaved(true);
    });
  const add = (e: FormEvent) => {
    e.preventDefault();
    void save([...items, { host: host.trim(), port: Number(port) }]).then(() => setHost(''));
  };
  return (
    <>
      {items.length === 0 ? (
        <Empty>No hosts: sandboxes cannot reach the internet (model calls go through the broker regardless).</Empty>
      ) : (
        <ul className="chips" aria-label="Allowed hosts">
          {items.map((h) => (
            <li key={`${h.host}:${h.port}`}>
              <code>
                {h.host}:{h.port === 0 ? '*' : h.port}
              </code>
              {admin ? (
                <button
                  type="button"
                  className="link"
                  aria-label={`Remove ${h.host}:${h.port}`}
                  disabled={action.busy}
                  onClick={() => void save(items.filter((x) => x !== h))}
                >
                  ×
                </button>
              ) : null}
            </li>
          ))}
        </ul>
      )}
      {admin ? (
        <form onSubmit={add} className="inline-form" aria-label="Allow a host">
          <Field label="Host" hint="e.g. api.github.com or *.slack.com">
            {(id, d) => <input id={id} aria-describedby={d} required value={host} onChange={(e) => setHost(e.target.value)} />}
          </Field>
          <Field label="Port" hint="0 = any port">
            {(id, d) => (
              <input id={id} aria-describedby={d} type="number" min={0} max={65535} required value={port} onChange={(e) => setPort(e.target.value)} />
            )}
          </Field>
          <button type="submit" disabled={action.busy}>
            Allow host
          </button>
        </form>
      ) : null}
      <ErrorMessage error={action.error} />
      {saved && !action.error ? (
        <p className="notice ok" role="status">
          Egress allow-list saved.
        </p>
      ) : null}
    </>
  );
}

// ---- Skill endpoints ----

function SkillEndpoints({ slug, admin }: { slug: string; admin: boolean }) {
  const endpoints = useResource(() => api2.broker.skillEndpoints(slug), [slug]);
  const credentials = useResource(() => api.credentials.list(slug, false, { limit: 200 }), [slug]);
  const credName = (id: string | null) => (id ? (credentials.data?.items.find((c) => c.id === id)?.name ?? id) : '—');
  const remove = useAction();
  return (
    <section id="skills" className="card" aria-labelledby="skills-h">
      <h2 id="skills-h">Skill endpoints</h2>
      <p className="hint">
        Skill APIs the broker reverse-proxies for sandboxes (<code>/skills/&lt;name&gt;/…</code>), adding the tenant&apos;s credential so it never enters the
        sandbox.
      </p>
      <Async resource={endpoints} what="skill endpoints">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No skill endpoints.</Empty>
          ) : (
            <table>
              <caption className="sr-only">Skill endpoints</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Base URL</th>
                  <th scope="col">Credential</th>
                  <th scope="col">Auth</th>
                  {admin ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {items.map((s) => (
                  <tr key={s.name}>
                    <td>{s.name}</td>
                    <td>
                      <code>{s.baseUrl}</code>
                    </td>
                    <td>{credName(s.credentialId)}</td>
                    <td>{s.authStyle === 'bearer' ? 'Authorization: Bearer' : `${s.headerName ?? ''} header`}</td>
                    {admin ? (
                      <td>
                        <ConfirmButton
                          label="Remove"
                          confirmLabel={`Remove ${s.name}`}
                          onConfirm={() => remove.run(async () => (await api2.broker.removeSkillEndpoint(slug, s.name), endpoints.reload()))}
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
      <ErrorMessage error={remove.error} />
      {admin ? <SkillEndpointForm slug={slug} credentials={credentials.data?.items ?? []} onSaved={endpoints.reload} /> : null}
    </section>
  );
}

function SkillEndpointForm({ slug, credentials, onSaved }: { slug: string; credentials: { id: string; name: string }[]; onSaved: () => void }) {
  const [name, setName] = useState('');
  const [baseUrl, setBaseUrl] = useState('');
  const [credentialId, setCredentialId] = useState('');
  const [authStyle, setAuthStyle] = useState<'bearer' | 'header'>('bearer');
  const [headerName, setHeaderName] = useState('');
  const action = useAction();
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setSaved(undefined);
      const r = await api2.broker.putSkillEndpoint(slug, name.trim(), {
        baseUrl: baseUrl.trim(),
        credentialId: credentialId || null,
        authStyle,
        headerName: authStyle === 'header' ? headerName.trim() || null : null,
      });
      setSaved(`Saved skill endpoint ${r.name}.`);
      setName('');
      setBaseUrl('');
      onSaved();
    });
  };
  return (
    <form onSubmit={submit} aria-label="Add a skill endpoint">
      <h3>Add or replace a skill endpoint</h3>
      <div className="row">
        <Field label="Skill name" hint="Lowercase letters, digits, _ and -">
          {(id, d) => <input id={id} aria-describedby={d} required value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Field label="Base URL">
          {(id) => <input id={id} type="url" required value={baseUrl} placeholder="https://api.example.com" onChange={(e) => setBaseUrl(e.target.value)} />}
        </Field>
        <Field label="Credential">
          {(id) => (
            <select id={id} value={credentialId} onChange={(e) => setCredentialId(e.target.value)}>
              <option value="">None</option>
              {credentials.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.name}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Sent as">
          {(id) => (
            <select id={id} value={authStyle} onChange={(e) => setAuthStyle(e.target.value === 'header' ? 'header' : 'bearer')}>
              <option value="bearer">Authorization: Bearer</option>
              <option value="header">A header of its own</option>
            </select>
          )}
        </Field>
        {authStyle === 'header' ? (
          <Field label="Header name">
            {(id) => <input id={id} required value={headerName} placeholder="X-Api-Key" onChange={(e) => setHeaderName(e.target.value)} />}
          </Field>
        ) : null}
      </div>
      <ErrorMessage error={action.error} />
      {saved ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      <button type="submit" disabled={action.busy}>
        Save skill endpoint
      </button>
    </form>
  );
}

// ---- Approval webhook ----

/**
 * Where approval requests and decisions are posted (issue 8), signed with HMAC-SHA256. The API answers a
 * new signing key with each save, once: it is shown then, with a copy button, and never again.
 */
function ApprovalWebhook({ slug, admin }: { slug: string; admin: boolean }) {
  const hook = useResource(() => tasksApi.webhook(slug), [slug]);
  const [url, setUrl] = useState('');
  const [fresh, setFresh] = useState<{ url: string; signingKey: string } | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setFresh(undefined);
      setFresh(await tasksApi.setWebhook(slug, url.trim()));
      setUrl('');
      hook.reload();
    });
  };
  return (
    <section id="webhook" className="card" aria-labelledby="webhook-h">
      <h2 id="webhook-h">Approval webhook</h2>
      <p className="hint">
        When a task waits for a person, and when someone decides, Clawplane posts the event to this URL, signed in the <code>X-Clawplane-Signature</code> header
        (<code>t=&lt;unix time&gt;,v1=&lt;HMAC-SHA256 of &quot;t.body&quot;&gt;</code>).
      </p>
      <Async resource={hook} what="the approval webhook">
        {({ url: current }) =>
          current ? (
            <p>
              Approvals are posted to <code>{current}</code>.
            </p>
          ) : (
            <Empty>No webhook: approvals wait in the Tasks tab&apos;s inbox only.</Empty>
          )
        }
      </Async>
      {fresh ? (
        <div className="reveal inset" role="status" aria-label="New signing key">
          <p>
            <strong>Copy the signing key now: it is shown only this once.</strong> Saving the webhook again makes a new one.
          </p>
          <div className="secret-row">
            <code className="secret" data-testid="webhook-key">
              {fresh.signingKey}
            </code>
            <CopyButton text={fresh.signingKey} />
          </div>
          <button type="button" className="secondary" onClick={() => setFresh(undefined)}>
            I have copied it
          </button>
        </div>
      ) : null}
      {admin ? (
        <form onSubmit={submit} className="inline-form" aria-label="Set the approval webhook">
          <Field label="Webhook URL" hint="https://…; saving makes a new signing key.">
            {(id, d) => (
              <input
                id={id}
                aria-describedby={d}
                type="url"
                required
                maxLength={2000}
                value={url}
                placeholder="https://hooks.example.com/clawplane"
                onChange={(e) => setUrl(e.target.value)}
              />
            )}
          </Field>
          <button type="submit" disabled={action.busy}>
            {action.busy ? 'Saving…' : 'Save webhook'}
          </button>
        </form>
      ) : null}
      <ErrorMessage error={action.error} />
    </section>
  );
}
