import { useState, type FormEvent } from 'react';
import { AGENT_TYPES, HIGH_RISK_AGENT_TYPES, tasksApi, type Agent, type AgentType } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, formatDate, useAction } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

const TRUST: Record<number, string> = { 0: '0: never dispatched', 1: '1: low', 2: '2: medium', 3: '3: high' };

/**
 * Agent definitions (issue 8): what task dispatch matches against. Everyone in the tenant reads them;
 * members and tenant admins define, change and delete them. The risk class follows the agent type.
 */
export function AgentsTab({ tenant, role }: TabProps) {
  const slug = tenant.slug;
  const agents = useResource(async () => (role ? tasksApi.agents(slug) : undefined), [slug, role]);
  const [editing, setEditing] = useState<string | undefined>(undefined);
  if (!role) return <NotAMember what="agents" />;
  const canEdit = role !== 'viewer' && tenant.status === 'active';
  return (
    <>
      {canEdit ? (
        <AgentForm key="new" slug={slug} onSaved={agents.reload} />
      ) : (
        <p className="notice info">
          {role === 'viewer' ? 'Defining agents needs the member or tenant admin role.' : 'The tenant is suspended: agents cannot be changed.'}
        </p>
      )}
      <h2>Agents</h2>
      <Async resource={agents} what="agents">
        {(d) =>
          !d || d.items.length === 0 ? (
            <Empty>No agents yet.{canEdit ? ' Define one above; tasks are dispatched to agents by name or capability.' : ''}</Empty>
          ) : (
            <table>
              <caption className="sr-only">Agents</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Type</th>
                  <th scope="col">Capabilities</th>
                  <th scope="col">Model</th>
                  <th scope="col">Trust</th>
                  <th scope="col">Risk</th>
                  <th scope="col">Changed</th>
                  {canEdit ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {d.items.map((a) => (
                  <tr key={a.id} aria-selected={a.id === editing}>
                    <td>{a.name}</td>
                    <td>{a.agentType}</td>
                    <td>{a.capabilities.length ? a.capabilities.join(', ') : '—'}</td>
                    <td>{a.model ? <code>{a.model}</code> : <span className="muted">model route</span>}</td>
                    <td className="num">{a.trustLevel}</td>
                    <td>
                      <span className={`badge ${a.riskClass === 'high' ? 'badge-warning' : ''}`}>{a.riskClass}</span>
                    </td>
                    <td>{formatDate(a.updatedAt)}</td>
                    {canEdit ? (
                      <td className="cell-actions">
                        <button
                          type="button"
                          className="secondary"
                          aria-expanded={a.id === editing}
                          onClick={() => setEditing(a.id === editing ? undefined : a.id)}
                        >
                          Edit <span className="sr-only">{a.name}</span>
                        </button>
                        <ConfirmButton
                          label="Delete"
                          confirmLabel={`Delete ${a.name}`}
                          onConfirm={async () => {
                            await tasksApi.removeAgent(slug, a.id);
                            if (editing === a.id) setEditing(undefined);
                            agents.reload();
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
      {canEdit && editing ? (
        <EditAgent
          key={editing}
          slug={slug}
          agent={agents.data?.items.find((a) => a.id === editing)}
          onSaved={() => (setEditing(undefined), agents.reload())}
          onCancel={() => setEditing(undefined)}
        />
      ) : null}
    </>
  );
}

function EditAgent({ slug, agent, onSaved, onCancel }: { slug: string; agent: Agent | undefined; onSaved: () => void; onCancel: () => void }) {
  if (!agent) return null;
  return <AgentForm slug={slug} agent={agent} onSaved={onSaved} onCancel={onCancel} />;
}

/** Defines a new agent, or (with `agent`) changes one; the name of an existing agent cannot change. */
function AgentForm({ slug, agent, onSaved, onCancel }: { slug: string; agent?: Agent; onSaved: () => void; onCancel?: () => void }) {
  const [name, setName] = useState(agent?.name ?? '');
  const [agentType, setAgentType] = useState<AgentType>(agent?.agentType ?? 'chat');
  const [capabilities, setCapabilities] = useState(agent?.capabilities.join(', ') ?? '');
  const [model, setModel] = useState(agent?.model ?? '');
  const [trust, setTrust] = useState(String(agent?.trustLevel ?? 1));
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const action = useAction();
  const highRisk = HIGH_RISK_AGENT_TYPES.includes(agentType);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setSaved(undefined);
      const body = {
        agentType,
        capabilities: capabilities
          .split(',')
          .map((c) => c.trim())
          .filter(Boolean),
        model: model.trim() || null,
        trustLevel: Number(trust),
      };
      if (agent) {
        await tasksApi.updateAgent(slug, agent.id, body);
      } else {
        const a = await tasksApi.createAgent(slug, { name: name.trim(), ...body });
        setSaved(`Defined agent ${a.name}.`);
        setName('');
        setCapabilities('');
        setModel('');
      }
      onSaved();
    });
  };
  const label = agent ? `Edit agent ${agent.name}` : 'Define an agent';
  return (
    <form className="card" onSubmit={submit} aria-label={label}>
      <h2>{label}</h2>
      <div className="row">
        {agent ? null : (
          <Field label="Agent name" hint='Lowercase letters, digits and inner hyphens, e.g. "researcher". Cannot change later.'>
            {(id, d) => <input id={id} aria-describedby={d} required maxLength={40} value={name} onChange={(e) => setName(e.target.value)} />}
          </Field>
        )}
        <Field label="Agent type" hint={highRisk ? 'High risk: runs in the tenant’s separate high-risk sandbox.' : 'Shell and browser agents are high risk.'}>
          {(id, d) => (
            // Edit opens this form below the list: focus moves to it, so keyboard users land where they edit.
            <select
              id={id}
              aria-describedby={d}
              autoFocus={agent !== undefined}
              value={agentType}
              onChange={(e) => setAgentType(AGENT_TYPES.find((t) => t === e.target.value) ?? 'chat')}
            >
              {AGENT_TYPES.map((t) => (
                <option key={t}>{t}</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Trust level" hint="Dispatch prefers higher trust.">
          {(id, d) => (
            <select id={id} aria-describedby={d} value={trust} onChange={(e) => setTrust(e.target.value)}>
              {[0, 1, 2, 3].map((n) => (
                <option key={n} value={String(n)}>
                  {TRUST[n]}
                </option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <div className="row">
        <Field label="Capabilities" hint='Comma-separated, e.g. "summarise, slack.post"'>
          {(id, d) => <input id={id} aria-describedby={d} value={capabilities} onChange={(e) => setCapabilities(e.target.value)} />}
        </Field>
        <Field label="Model override (optional)" hint="Empty: the tenant's model route decides.">
          {(id, d) => <input id={id} aria-describedby={d} maxLength={200} value={model} onChange={(e) => setModel(e.target.value)} />}
        </Field>
      </div>
      <p className="small muted" aria-live="polite">
        Risk class: <strong>{highRisk ? 'high' : 'standard'}</strong>
      </p>
      <ErrorMessage error={action.error} />
      {saved && !action.error ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      <div className="actions">
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Saving…' : agent ? 'Save agent' : 'Define agent'}
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
