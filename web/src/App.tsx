/**
 * The console shell: boots from /onboarding and /auth/me, then routes. Pages live in pages/, one file
 * per page; a page for a new API (instances, chat, tasks, approvals, audit, usage) adds a route below
 * and, if it belongs to a tenant, a tab in pages/tenant/TenantPage.tsx.
 */
import { useCallback, useEffect, useMemo, useState } from 'react';
import { api, ApiError, onUnauthenticated, setCsrfToken, type Me, type OnboardingState } from './api.ts';
import { ErrorMessage, Loading } from './components/ui.tsx';
import { Layout } from './components/Layout.tsx';
import { LoginPage } from './pages/LoginPage.tsx';
import { NotFoundPage } from './pages/NotFoundPage.tsx';
import { OnboardingPage } from './pages/OnboardingPage.tsx';
import { SettingsPage } from './pages/SettingsPage.tsx';
import { AuditPage } from './pages/AuditPage.tsx';
import { ReplicasPage } from './pages/ReplicasPage.tsx';
import { HealthPage } from './pages/HealthPage.tsx';
import { GovernancePage } from './pages/GovernancePage.tsx';
import { TenantsPage } from './pages/TenantsPage.tsx';
import { TenantPage } from './pages/tenant/TenantPage.tsx';
import { HomePage } from './pages/HomePage.tsx';
import { match, navigate, useLocation } from './router.tsx';
import { SessionContext, type Session } from './session.tsx';

async function loadMe(): Promise<Me | null> {
  try {
    const me = await api.auth.me();
    setCsrfToken(me.csrfToken);
    return me;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export function App() {
  const [boot, setBoot] = useState<{ me: Me | null; onboarding: OnboardingState } | undefined>(undefined);
  const [bootError, setBootError] = useState<unknown>(undefined);
  const { path } = useLocation();

  const start = useCallback(() => {
    setBootError(undefined);
    Promise.all([api.onboarding.state(), loadMe()]).then(
      ([onboarding, me]) => setBoot({ onboarding, me }),
      (err: unknown) => setBootError(err),
    );
  }, []);
  useEffect(start, [start]);
  // A 401 anywhere means the session ended (expired, or signed out elsewhere): back to sign-in.
  useEffect(() => onUnauthenticated(() => setBoot((b) => (b ? { ...b, me: null } : b))), []);

  const session = useMemo<Session | null>(() => {
    if (!boot) return null;
    return {
      me: boot.me,
      onboarding: boot.onboarding,
      signedIn: (me) => {
        setCsrfToken(me.csrfToken);
        setBoot((b) => (b ? { ...b, me } : b));
      },
      setOnboarding: (onboarding) => setBoot((b) => (b ? { ...b, onboarding } : b)),
      refresh: async () => {
        const me = await loadMe();
        setBoot((b) => (b ? { ...b, me } : b));
      },
      signOut: async () => {
        try {
          await api.auth.logout();
        } finally {
          setCsrfToken(undefined);
          setBoot((b) => (b ? { ...b, me: null } : b));
          navigate('/login');
        }
      },
    };
  }, [boot]);

  if (bootError !== undefined) {
    return (
      <main className="centered">
        <h1>Clawplane</h1>
        <ErrorMessage error={bootError} />
        <button type="button" onClick={start}>
          Try again
        </button>
      </main>
    );
  }
  if (!session) {
    return (
      <main className="centered">
        <Loading what="Clawplane" />
      </main>
    );
  }
  return (
    <SessionContext value={session}>
      <Routes path={path} session={session} />
    </SessionContext>
  );
}

function Routes({ path, session }: { path: string; session: Session }) {
  if (!session.onboarding.complete) return <OnboardingPage />;
  if (!session.me) return <LoginPage />;
  let page;
  let m: Record<string, string> | null;
  if (path === '/onboarding') return <OnboardingPage />;
  if (path === '/' || path === '/login') page = <HomePage />;
  else if (path === '/tenants') page = <TenantsPage />;
  else if (path === '/settings') page = <SettingsPage />;
  else if (path === '/audit') page = <AuditPage />;
  else if (path === '/replicas') page = <ReplicasPage />;
  else if (path === '/health') page = <HealthPage />;
  else if (path === '/governance') page = <GovernancePage />;
  else if ((m = match('/tenants/:slug', path))) page = <TenantPage slug={m['slug'] ?? ''} tab="overview" />;
  else if ((m = match('/tenants/:slug/:tab', path))) page = <TenantPage slug={m['slug'] ?? ''} tab={m['tab'] ?? ''} />;
  else page = <NotFoundPage />;
  return <Layout>{page}</Layout>;
}
