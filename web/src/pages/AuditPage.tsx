import { useCallback, useState } from 'react';
import { api, api2, type AuditFilters } from '../api.ts';
import { AuditLog } from '../components/AuditLog.tsx';
import { Async, Field, SearchBox } from '../components/ui.tsx';
import { useMe } from '../session.tsx';
import { useDebounced } from '../usePaged.ts';
import { useResource } from '../useResource.ts';

/** Platform audit (platform admins): the hash chain's verification up top, then every event. */
export function AuditPage() {
  const me = useMe();
  if (!me.user.platformAdmin) {
    return (
      <section>
        <h1>Audit log</h1>
        <p className="notice info">The platform audit log is for platform admins; tenant admins find theirs on the tenant&apos;s Audit tab.</p>
      </section>
    );
  }
  return <PlatformAudit />;
}

function PlatformAudit() {
  const verify = useResource(() => api2.audit.verify(), []);
  // A platform may hold a hundred thousand tenants: the filter offers the first matches of a search.
  const [tenantSearch, setTenantSearch] = useState('');
  const q = useDebounced(tenantSearch.trim());
  const tenants = useResource(() => api.tenants.list({ q: q || undefined, limit: 20 }), [q]);
  const load = useCallback((f: AuditFilters) => api2.audit.platform(f), []);
  const names = new Map((tenants.data?.items ?? []).map((t) => [t.id, t.slug]));
  return (
    <section>
      <h1>Audit log</h1>
      <div className="card" aria-labelledby="chain-h">
        <h2 id="chain-h">Hash chain</h2>
        <Async resource={verify} what="the chain verification">
          {(v) =>
            v.ok ? (
              <p className="notice ok" role="status" aria-label="Chain status">
                <strong>Chain ok:</strong> {v.checked.toLocaleString('en-US')} events checked, none altered or missing.
              </p>
            ) : (
              <div className="notice error" role="alert" aria-label="Chain status">
                <strong>Chain broken</strong> after {v.checked.toLocaleString('en-US')} events checked
                {v.firstBad ? (
                  <>
                    : first bad event #{v.firstBad.seq}: {v.firstBad.reason}
                  </>
                ) : null}
                . The log may have been tampered with: investigate before trusting later events.
              </div>
            )
          }
        </Async>
        <button type="button" className="secondary" disabled={verify.loading} onClick={verify.reload}>
          {verify.loading ? 'Verifying…' : 'Verify again'}
        </button>
      </div>
      <AuditLog
        load={load}
        showTenant={(id) => (id ? (names.get(id) ?? id) : 'platform')}
        extraFilters={(set, f) => (
          <>
            <SearchBox label="Find a tenant" value={tenantSearch} onChange={setTenantSearch} />
            <Field label="Tenant">
              {(id) => (
                <select id={id} value={f.tenantId ?? ''} onChange={(e) => set({ tenantId: e.target.value || undefined })}>
                  <option value="">All</option>
                  {tenants.data?.items.map((t) => (
                    <option key={t.id} value={t.id}>
                      {t.name} ({t.slug})
                    </option>
                  ))}
                </select>
              )}
            </Field>
          </>
        )}
      />
    </section>
  );
}
