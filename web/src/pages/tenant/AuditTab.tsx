import { useCallback } from 'react';
import { api2, type AuditFilters } from '../../api.ts';
import { AuditLog } from '../../components/AuditLog.tsx';
import { NeedsAdmin, type TabProps } from './TenantPage.tsx';

/** The tenant's audit events, for its admins (and platform admins, who manage tenants). */
export function AuditTab({ tenant, role }: TabProps) {
  const slug = tenant.slug;
  const load = useCallback((f: AuditFilters) => api2.audit.tenant(slug, f), [slug]);
  if (role && role !== 'tenant_admin') return <NeedsAdmin what="the audit log" role={role} />;
  return (
    <>
      <p className="hint">Every change and sign-in in this tenant, newest first. Secrets never appear here.</p>
      <AuditLog load={load} />
    </>
  );
}
