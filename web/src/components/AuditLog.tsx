/** The audit log with filters and "older" paging; the tenant tab and the platform page both use it. */
import { Fragment, useEffect, useState, type FormEvent, type ReactNode } from 'react';
import type { AuditEvent, AuditFilters, AuditPage } from '../api.ts';
import { Empty, ErrorMessage, Field, Loading, StatusBadge, useAction } from './ui.tsx';

const DECISIONS = ['success', 'failure', 'allow', 'deny', 'requires_approval', 'approved', 'expired'];
const PAGE = 50;

/** A datetime-local value (local time) as an ISO instant, or undefined when empty. */
const iso = (local: string) => (local ? new Date(local).toISOString() : undefined);

export function AuditLog(props: {
  load: (f: AuditFilters) => Promise<AuditPage>;
  extraFilters?: (set: (patch: Partial<AuditFilters>) => void, f: AuditFilters) => ReactNode;
  showTenant?: (tenantId: string | null) => string;
}) {
  const { load } = props;
  const [form, setForm] = useState({ action: '', decision: '', actor: '', since: '', until: '' });
  const [extra, setExtra] = useState<AuditFilters>({});
  const [applied, setApplied] = useState<AuditFilters>({ limit: PAGE });
  const [items, setItems] = useState<AuditEvent[] | undefined>(undefined);
  const [next, setNext] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  const more = useAction();
  const [open, setOpen] = useState<number | undefined>(undefined);

  useEffect(() => {
    let live = true;
    setItems(undefined);
    setError(undefined);
    load(applied).then(
      (p) => live && (setItems(p.items), setNext(p.nextBefore)),
      (e: unknown) => live && setError(e),
    );
    return () => {
      live = false;
    };
  }, [load, applied]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    setApplied({
      ...extra,
      limit: PAGE,
      action: form.action.trim() || undefined,
      decision: form.decision || undefined,
      actor: form.actor.trim() || undefined,
      since: iso(form.since),
      until: iso(form.until),
    });
  };
  const older = () =>
    void more.run(async () => {
      if (next === null) return;
      const p = await load({ ...applied, before: next });
      setItems((prev) => [...(prev ?? []), ...p.items]);
      setNext(p.nextBefore);
    });

  return (
    <>
      <form onSubmit={submit} aria-label="Filter audit events" className="card">
        <div className="row">
          <Field label="Action starts with" hint='e.g. "auth." or "token.create"'>
            {(id, d) => <input id={id} aria-describedby={d} value={form.action} onChange={(e) => setForm({ ...form, action: e.target.value })} />}
          </Field>
          <Field label="Decision">
            {(id) => (
              <select id={id} value={form.decision} onChange={(e) => setForm({ ...form, decision: e.target.value })}>
                <option value="">Any</option>
                {DECISIONS.map((d) => (
                  <option key={d} value={d}>
                    {d}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Actor">{(id) => <input id={id} value={form.actor} onChange={(e) => setForm({ ...form, actor: e.target.value })} />}</Field>
          <Field label="From">
            {(id) => <input id={id} type="datetime-local" value={form.since} onChange={(e) => setForm({ ...form, since: e.target.value })} />}
          </Field>
          <Field label="Until">
            {(id) => <input id={id} type="datetime-local" value={form.until} onChange={(e) => setForm({ ...form, until: e.target.value })} />}
          </Field>
          {props.extraFilters?.((patch) => setExtra((x) => ({ ...x, ...patch })), extra)}
        </div>
        <button type="submit">Apply filters</button>
      </form>
      <ErrorMessage error={error} />
      {error === undefined && items === undefined ? <Loading what="audit events" /> : null}
      {items && items.length === 0 ? <Empty>No audit events match.</Empty> : null}
      {items && items.length > 0 ? (
        <table className="audit">
          <caption className="sr-only">Audit events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              {props.showTenant ? <th scope="col">Tenant</th> : null}
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Decision</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            {items.map((e) => (
              <Fragment key={e.seq}>
                <tr>
                  <td className="num">{e.seq}</td>
                  <td>
                    <time dateTime={e.ts}>{new Date(e.ts).toLocaleString()}</time>
                  </td>
                  <td>{e.actor}</td>
                  {props.showTenant ? <td>{props.showTenant(e.tenantId)}</td> : null}
                  <td>
                    <code>{e.action}</code>
                  </td>
                  <td className="small">{e.target ?? '—'}</td>
                  <td>{e.decision ? <StatusBadge status={e.decision} /> : '—'}</td>
                  <td>
                    {Object.keys(e.detail).length ? (
                      <button type="button" className="link" aria-expanded={open === e.seq} onClick={() => setOpen(open === e.seq ? undefined : e.seq)}>
                        {open === e.seq ? 'Hide' : 'Show'} <span className="sr-only">detail of event {e.seq}</span>
                      </button>
                    ) : (
                      '—'
                    )}
                  </td>
                </tr>
                {open === e.seq ? (
                  <tr>
                    <td colSpan={props.showTenant ? 8 : 7}>
                      <pre className="code">{JSON.stringify(e.detail, null, 2)}</pre>
                      {e.requestId ? <span className="small muted">request {e.requestId}</span> : null}
                    </td>
                  </tr>
                ) : null}
              </Fragment>
            ))}
          </tbody>
        </table>
      ) : null}
      <ErrorMessage error={more.error} />
      {items && next !== null ? (
        <button type="button" className="secondary" disabled={more.busy} onClick={older}>
          {more.busy ? 'Loading…' : 'Older events'}
        </button>
      ) : null}
    </>
  );
}
