import { useState, type FormEvent } from 'react';
import type { AgentDefaults } from '../api.ts';
import { ErrorMessage, Field, useAction } from './ui.tsx';

export const BUILTIN_DEFAULTS: AgentDefaults = { agentName: 'main', defaultModel: null, execPolicy: 'deny', idleTimeoutMinutes: 30 };

/** Default agent settings every new tenant starts with; used by onboarding and the settings page. */
export function DefaultsForm(props: { initial: AgentDefaults; submitLabel: string; onSave: (d: AgentDefaults) => Promise<void> }) {
  const [agentName, setAgentName] = useState(props.initial.agentName);
  const [defaultModel, setDefaultModel] = useState(props.initial.defaultModel ?? '');
  const [execPolicy, setExecPolicy] = useState(props.initial.execPolicy);
  const [idle, setIdle] = useState(String(props.initial.idleTimeoutMinutes));
  const action = useAction();

  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(() => props.onSave({ agentName, defaultModel: defaultModel.trim() || null, execPolicy, idleTimeoutMinutes: Number(idle) }));
  };

  return (
    <form onSubmit={submit} aria-label="Default agent settings">
      <Field label="Agent name" hint="Lowercase letters, digits and hyphens, starting with a letter.">
        {(id, d) => <input id={id} aria-describedby={d} required value={agentName} onChange={(e) => setAgentName(e.target.value)} />}
      </Field>
      <Field label="Default model" hint="e.g. claude-sonnet-4 or gpt-4o; empty: each tenant's provider default.">
        {(id, d) => <input id={id} aria-describedby={d} value={defaultModel} onChange={(e) => setDefaultModel(e.target.value)} />}
      </Field>
      <Field label="Shell commands">
        {(id) => (
          <select id={id} value={execPolicy} onChange={(e) => setExecPolicy(e.target.value === 'ask' ? 'ask' : 'deny')}>
            <option value="deny">Denied</option>
            <option value="ask">Allowed after a human approves</option>
          </select>
        )}
      </Field>
      <Field label="Idle timeout (minutes)" hint="An idle agent gateway is stopped after this long and woken on the next request.">
        {(id, d) => <input id={id} aria-describedby={d} type="number" min={1} max={10080} required value={idle} onChange={(e) => setIdle(e.target.value)} />}
      </Field>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Saving…' : props.submitLabel}
      </button>
    </form>
  );
}
