import { useState, type FormEvent } from 'react';
import { api, type Quotas } from '../../api.ts';
import { ErrorMessage, Field, formatDate, useAction } from '../../components/ui.tsx';
import { navigate } from '../../router.tsx';
import type { TabProps } from './TenantPage.tsx';

/** Status and quotas; platform admins suspend, resume, edit quotas and delete here. */
export function OverviewTab({ tenant, platformAdmin, reloadTenant }: TabProps) {
  return (
    <>
      <dl className="facts">
        <dt>Slug</dt>
        <dd>
          <code>{tenant.slug}</code>
        </dd>
        <dt>Status</dt>
        <dd>{tenant.status === 'active' ? 'Active' : 'Suspended: members can read, but no new work starts'}</dd>
        <dt>Created</dt>
        <dd>{formatDate(tenant.createdAt)}</dd>
      </dl>
      {platformAdmin ? <StatusControl slug={tenant.slug} status={tenant.status} onChange={reloadTenant} /> : null}
      <h2>Quotas</h2>
      {platformAdmin ? <QuotasForm slug={tenant.slug} quotas={tenant.quotas} onSaved={reloadTenant} /> : <QuotasView quotas={tenant.quotas} />}
      {platformAdmin ? <DeleteTenant slug={tenant.slug} /> : null}
    </>
  );
}

function StatusControl({ slug, status, onChange }: { slug: string; status: 'active' | 'suspended'; onChange: () => void }) {
  const [reason, setReason] = useState('');
  const action = useAction();
  const toggle = () =>
    void action.run(async () => {
      if (status === 'active') await api.tenants.suspend(slug, reason.trim() || undefined);
      else await api.tenants.resume(slug);
      setReason('');
      onChange();
    });
  return (
    <div className="card">
      <h2>{status === 'active' ? 'Suspend' : 'Resume'}</h2>
      {status === 'active' ? (
        <Field label="Reason (optional, kept in the audit log)">
          {(id) => <input id={id} maxLength={500} value={reason} onChange={(e) => setReason(e.target.value)} />}
        </Field>
      ) : null}
      <ErrorMessage error={action.error} />
      <button type="button" className={status === 'active' ? 'danger' : ''} disabled={action.busy} onClick={toggle}>
        {status === 'active' ? 'Suspend tenant' : 'Resume tenant'}
      </button>
    </div>
  );
}

const QUOTA_FIELDS: { key: keyof Quotas; label: string; nullable: boolean; step?: string; empty?: string; hint?: string }[] = [
  { key: 'maxInstances', label: 'Max instances', nullable: false },
  { key: 'maxConcurrentTasks', label: 'Max concurrent tasks', nullable: false },
  { key: 'maxStorageBytes', label: 'Max storage (bytes)', nullable: false },
  { key: 'dailyTokenBudget', label: 'Daily token budget', nullable: true },
  { key: 'dailyCostBudgetUsd', label: 'Daily cost budget (USD)', nullable: true, step: '0.01' },
  {
    key: 'idleTimeoutMinutes',
    label: 'Idle timeout (minutes)',
    nullable: true,
    empty: "the platform's default",
    hint: "Empty: the platform's default · 0: never stop",
  },
];

function QuotasView({ quotas }: { quotas: Quotas }) {
  return (
    <dl className="facts">
      {QUOTA_FIELDS.map((f) => (
        <div key={f.key} className="fact">
          <dt>{f.label}</dt>
          <dd>{quotas[f.key] ?? f.empty ?? 'unlimited'}</dd>
        </div>
      ))}
    </dl>
  );
}

function QuotasForm({ slug, quotas, onSaved }: { slug: string; quotas: Quotas; onSaved: () => void }) {
  const [v, setV] = useState<Record<keyof Quotas, string>>(() => {
    const out = {} as Record<keyof Quotas, string>;
    for (const f of QUOTA_FIELDS) out[f.key] = quotas[f.key] === null ? '' : String(quotas[f.key]);
    return out;
  });
  const [saved, setSaved] = useState(false);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSaved(false);
    const patch: Record<string, number | null> = {};
    for (const f of QUOTA_FIELDS) patch[f.key] = v[f.key].trim() === '' && f.nullable ? null : Number(v[f.key]);
    void action.run(async () => {
      await api.tenants.update(slug, { quotas: patch as Partial<Quotas> });
      setSaved(true);
      onSaved();
    });
  };
  return (
    <form onSubmit={submit} aria-label="Quotas" className="grid-form">
      {QUOTA_FIELDS.map((f) => (
        <Field key={f.key} label={f.label} hint={f.hint ?? (f.nullable ? 'Empty: unlimited' : undefined)}>
          {(id, d) => (
            <input
              id={id}
              aria-describedby={d}
              type="number"
              min={0}
              step={f.step ?? '1'}
              required={!f.nullable}
              value={v[f.key]}
              onChange={(e) => setV((s) => ({ ...s, [f.key]: e.target.value }))}
            />
          )}
        </Field>
      ))}
      <div className="full">
        <ErrorMessage error={action.error} />
        {saved ? (
          <p className="notice ok" role="status">
            Quotas saved.
          </p>
        ) : null}
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Save quotas'}
        </button>
      </div>
    </form>
  );
}

function DeleteTenant({ slug }: { slug: string }) {
  const [confirm, setConfirm] = useState('');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await api.tenants.remove(slug, confirm);
      navigate('/tenants');
    });
  };
  return (
    <form className="card danger-zone" onSubmit={submit} aria-label="Delete tenant">
      <h2>Delete tenant</h2>
      <p>This deletes the tenant and everything it owns: members' access, tokens, credentials and providers. It cannot be undone.</p>
      <Field label={`Type the slug "${slug}" to confirm`}>
        {(id) => <input id={id} autoComplete="off" value={confirm} onChange={(e) => setConfirm(e.target.value)} />}
      </Field>
      <ErrorMessage error={action.error} />
      <button type="submit" className="danger" disabled={action.busy || confirm !== slug}>
        Delete tenant
      </button>
    </form>
  );
}
