import type { ReactNode } from 'react';
import { api, type Tenant, type TenantRole } from '../../api.ts';
import { Async, StatusBadge } from '../../components/ui.tsx';
import { Link } from '../../router.tsx';
import { useMe } from '../../session.tsx';
import { useResource } from '../../useResource.ts';
import { NotFoundPage } from '../NotFoundPage.tsx';
import { AgentsTab } from './AgentsTab.tsx';
import { AuditTab } from './AuditTab.tsx';
import { ChatTab } from './ChatTab.tsx';
import { ConfigTab } from './ConfigTab.tsx';
import { CredentialsTab } from './CredentialsTab.tsx';
import { GovernanceTab } from './GovernanceTab.tsx';
import { InstancesTab } from './InstancesTab.tsx';
import { KnowledgeTab } from './KnowledgeTab.tsx';
import { LanesTab } from './LanesTab.tsx';
import { MembersTab } from './MembersTab.tsx';
import { OverviewTab } from './OverviewTab.tsx';
import { PoolsTab } from './PoolsTab.tsx';
import { ProvidersTab } from './ProvidersTab.tsx';
import { TasksTab } from './TasksTab.tsx';
import { TokensTab } from './TokensTab.tsx';
import { UsageTab } from './UsageTab.tsx';

/** What a tab gets: the tenant, your role in it (none for a platform admin who is not a member). */
export interface TabProps {
  tenant: Tenant;
  role: TenantRole | undefined;
  platformAdmin: boolean;
  reloadTenant: () => void;
}

/**
 * One tenant's pages as tabs. A later API (instances, chat, tasks, approvals, governance, audit, usage)
 * adds an entry here and a file beside this one.
 */
const TABS: { id: string; label: string; render: (p: TabProps) => ReactNode }[] = [
  { id: 'overview', label: 'Overview', render: (p) => <OverviewTab {...p} /> },
  { id: 'instances', label: 'Instances', render: (p) => <InstancesTab {...p} /> },
  { id: 'chat', label: 'Chat', render: (p) => <ChatTab {...p} /> },
  { id: 'tasks', label: 'Tasks', render: (p) => <TasksTab {...p} /> },
  { id: 'agents', label: 'Agents', render: (p) => <AgentsTab {...p} /> },
  { id: 'pools', label: 'Pools', render: (p) => <PoolsTab {...p} /> },
  { id: 'knowledge', label: 'Knowledge', render: (p) => <KnowledgeTab {...p} /> },
  { id: 'lanes', label: 'Lanes', render: (p) => <LanesTab {...p} /> },
  { id: 'members', label: 'Members', render: (p) => <MembersTab {...p} /> },
  { id: 'tokens', label: 'API tokens', render: (p) => <TokensTab {...p} /> },
  { id: 'credentials', label: 'Credentials', render: (p) => <CredentialsTab {...p} /> },
  { id: 'providers', label: 'Providers', render: (p) => <ProvidersTab {...p} /> },
  { id: 'governance', label: 'Governance', render: (p) => <GovernanceTab {...p} /> },
  { id: 'configuration', label: 'Configuration', render: (p) => <ConfigTab {...p} /> },
  { id: 'usage', label: 'Usage', render: (p) => <UsageTab {...p} /> },
  { id: 'audit', label: 'Audit', render: (p) => <AuditTab {...p} /> },
];

export function TenantPage({ slug, tab }: { slug: string; tab: string }) {
  const me = useMe();
  const tenant = useResource(() => api.tenants.get(slug), [slug]);
  const current = TABS.find((t) => t.id === tab);
  if (!current) return <NotFoundPage />;
  const role = me.user.memberships.find((m) => m.slug === slug)?.role;
  return (
    <Async resource={tenant} what="the tenant">
      {(t) => (
        <section>
          <p className="crumbs">{me.user.platformAdmin ? <Link to="/tenants">Tenants</Link> : 'Tenant'} /</p>
          <h1>
            {t.name} <StatusBadge status={t.status} />
          </h1>
          <nav className="tabs" aria-label="Tenant sections">
            {TABS.map((x) => (
              <Link
                key={x.id}
                to={x.id === 'overview' ? `/tenants/${t.slug}` : `/tenants/${t.slug}/${x.id}`}
                aria-current={x.id === current.id ? 'page' : undefined}
              >
                {x.label}
              </Link>
            ))}
          </nav>
          <div className="tab-body">{current.render({ tenant: t, role, platformAdmin: me.user.platformAdmin, reloadTenant: tenant.reload })}</div>
        </section>
      )}
    </Async>
  );
}

/** Shown on tabs a platform admin who is not a member cannot open (by design: no access to tenant data). */
export function NotAMember({ what }: { what: string }) {
  return (
    <p className="notice info">
      Platform admins manage tenants but cannot see a tenant's {what}. To work with them, add yourself on the <strong>Members</strong> tab.
    </p>
  );
}

/** Shown when your role is too weak for a section. */
export function NeedsAdmin({ what, role }: { what: string; role: TenantRole }) {
  return (
    <p className="notice info">
      Managing {what} needs the tenant admin role; you are {role.replace('_', ' ')}.
    </p>
  );
}
