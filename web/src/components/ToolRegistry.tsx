/** The platform's tool registry (platform admins change it) and the tool-policy baseline, read-only here. */
import { useState, type FormEvent } from 'react';
import { api2, TOOL_RISKS, type Tool } from '../api.ts';
import { useResource } from '../useResource.ts';
import { Async, Empty, ErrorMessage, Field, StatusBadge, useAction } from './ui.tsx';

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
const scopes = (t: Tool) =>
  [
    t.channels.length ? `channels: ${t.channels.join(', ')}` : '',
    t.repos.length ? `repos: ${t.repos.join(', ')}` : '',
    t.hosts.length ? `hosts: ${t.hosts.join(', ')}` : '',
  ]
    .filter(Boolean)
    .join(' · ') || 'any';

export function ToolRegistryCard() {
  const tools = useResource(() => api2.policy.tools(), []);
  const [editing, setEditing] = useState<Tool | undefined>(undefined);
  const [formKey, setFormKey] = useState(0);
  const edit = (t: Tool | undefined) => (setEditing(t), setFormKey((k) => k + 1));
  return (
    <>
      <p className="hint">
        Every tool the policy decides on: its risk class and group (what Cedar policies match, e.g. <code>resource.group == &quot;web&quot;</code>) and the
        channels, repositories and hosts it may be used with (empty: any).
      </p>
      <Async resource={tools} what="the tool registry">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No tools registered: every tool use is refused as unknown.</Empty>
          ) : (
            <table>
              <caption className="sr-only">Tool registry</caption>
              <thead>
                <tr>
                  <th scope="col">Tool</th>
                  <th scope="col">Risk</th>
                  <th scope="col">Group</th>
                  <th scope="col">Description</th>
                  <th scope="col">Scopes</th>
                  <th scope="col">Edit</th>
                </tr>
              </thead>
              <tbody>
                {items.map((t) => (
                  <tr key={t.name} aria-selected={t.name === editing?.name}>
                    <td>
                      <code>{t.name}</code>
                    </td>
                    <td>
                      <span className={`badge ${t.risk === 'high' || t.risk === 'critical' ? 'badge-warning' : ''}`}>{t.risk}</span>
                    </td>
                    <td>{t.group}</td>
                    <td className="small">{t.description}</td>
                    <td className="small">{scopes(t)}</td>
                    <td>
                      <button type="button" className="secondary" aria-label={`Edit tool ${t.name}`} onClick={() => edit(t)}>
                        Edit
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      <ToolForm key={formKey} initial={editing} onSaved={tools.reload} onCancel={editing ? () => edit(undefined) : undefined} />
    </>
  );
}

function ToolForm({ initial, onSaved, onCancel }: { initial: Tool | undefined; onSaved: () => void; onCancel: (() => void) | undefined }) {
  const [name, setName] = useState(initial?.name ?? '');
  const [risk, setRisk] = useState<Tool['risk']>(initial?.risk ?? 'low');
  const [group, setGroup] = useState(initial?.group ?? '');
  const [description, setDescription] = useState(initial?.description ?? '');
  const [channels, setChannels] = useState(initial?.channels.join(', ') ?? '');
  const [repos, setRepos] = useState(initial?.repos.join(', ') ?? '');
  const [hosts, setHosts] = useState(initial?.hosts.join(', ') ?? '');
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setSaved(undefined);
      const t = await api2.policy.saveTool(name.trim(), {
        risk,
        group: group.trim(),
        description: description.trim(),
        channels: list(channels),
        repos: list(repos),
        hosts: list(hosts),
      });
      setSaved(`Saved tool ${t.name}.`);
      onSaved();
    });
  };
  return (
    <form onSubmit={submit} aria-label="Add or change a tool">
      <h3>{initial ? `Change ${initial.name}` : 'Add a tool'}</h3>
      <div className="row">
        <Field label="Tool name" hint='e.g. "web_fetch" or "github.push"'>
          {(id, d) => (
            <input
              id={id}
              aria-describedby={d}
              required
              maxLength={100}
              readOnly={initial !== undefined}
              value={name}
              onChange={(e) => setName(e.target.value)}
            />
          )}
        </Field>
        <Field label="Risk">
          {(id) => (
            <select id={id} autoFocus={initial !== undefined} value={risk} onChange={(e) => setRisk(TOOL_RISKS.find((r) => r === e.target.value) ?? 'low')}>
              {TOOL_RISKS.map((r) => (
                <option key={r}>{r}</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Group" hint='e.g. "web", "fs", "runtime"'>
          {(id, d) => <input id={id} aria-describedby={d} required maxLength={50} value={group} onChange={(e) => setGroup(e.target.value)} />}
        </Field>
      </div>
      <Field label="Description (optional)">
        {(id) => <input id={id} maxLength={500} value={description} onChange={(e) => setDescription(e.target.value)} />}
      </Field>
      <div className="row">
        <Field label="Channels" hint="Comma-separated; empty: any">
          {(id, d) => <input id={id} aria-describedby={d} value={channels} onChange={(e) => setChannels(e.target.value)} />}
        </Field>
        <Field label="Repositories" hint="Comma-separated; empty: any">
          {(id, d) => <input id={id} aria-describedby={d} value={repos} onChange={(e) => setRepos(e.target.value)} />}
        </Field>
        <Field label="Hosts" hint="Comma-separated; empty: any">
          {(id, d) => <input id={id} aria-describedby={d} value={hosts} onChange={(e) => setHosts(e.target.value)} />}
        </Field>
      </div>
      <ErrorMessage error={action.error} />
      {saved && !action.error ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      <div className="actions">
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Save tool'}
        </button>
        {onCancel ? (
          <button type="button" className="secondary" onClick={onCancel}>
            Cancel
          </button>
        ) : null}
      </div>
    </form>
  );
}

/** The baseline, read-only: the console does not edit Cedar baselines (PUT /api/v1/policy/baseline does). */
export function BaselineCard() {
  return (
    <>
      <p className="hint">
        Applies to every tenant; tenants can only narrow it. Read-only here: change it through the API (<code>PUT /api/v1/policy/baseline</code>).
      </p>
      <BaselinePolicies />
    </>
  );
}

/** The platform's baseline policies as a list (the platform Governance page and each tenant's). */
export function BaselinePolicies() {
  const baseline = useResource(() => api2.policy.baseline(), []);
  return (
    <Async resource={baseline} what="the baseline">
      {({ policies }) =>
        policies.length === 0 ? (
          <Empty>The baseline is empty: every tool use is denied unless a policy permits it.</Empty>
        ) : (
          <ul className="policies" aria-label="Baseline policies">
            {policies.map((p) => (
              <li key={p.id}>
                <code>baseline/{p.id}</code> <StatusBadge status={p.effect} />
                {p.approval ? <span className="badge">needs approval</span> : null}
                <div className="small">{p.description}</div>
                <details>
                  <summary>Cedar</summary>
                  <pre className="code">{p.cedar}</pre>
                </details>
              </li>
            ))}
          </ul>
        )
      }
    </Async>
  );
}
