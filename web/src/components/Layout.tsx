import type { ReactNode } from 'react';
import { Link, useLocation } from '../router.tsx';
import { useMe, useSession } from '../session.tsx';

/** Header with the navigation a signed-in user has, and the page below it. */
export function Layout({ children }: { children: ReactNode }) {
  const me = useMe();
  const { signOut } = useSession();
  const { path } = useLocation();
  const current = (to: string) => (path === to || path.startsWith(`${to}/`) ? 'page' : undefined);
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/" className="brand">
          Clawplane
        </Link>
        <nav aria-label="Main">
          {me.user.platformAdmin ? (
            <>
              <Link to="/tenants" aria-current={path === '/tenants' ? 'page' : undefined}>
                Tenants
              </Link>
              <Link to="/governance" aria-current={current('/governance')}>
                Governance
              </Link>
              <Link to="/audit" aria-current={current('/audit')}>
                Audit
              </Link>
              <Link to="/replicas" aria-current={current('/replicas')}>
                Replicas
              </Link>
              <Link to="/health" aria-current={current('/health')}>
                Health
              </Link>
              <Link to="/settings" aria-current={current('/settings')}>
                Settings
              </Link>
            </>
          ) : null}
          {me.user.memberships.map((m) => (
            <Link key={m.tenantId} to={`/tenants/${m.slug}`} aria-current={current(`/tenants/${m.slug}`)}>
              {m.name}
            </Link>
          ))}
        </nav>
        <div className="who">
          <span title={me.user.email}>{me.user.displayName || me.user.email}</span>
          {me.user.platformAdmin ? <span className="badge">platform admin</span> : null}
          <button type="button" className="secondary" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" className="page">
        {children}
      </main>
    </>
  );
}
