import { useEffect } from 'react';
import { Empty } from '../components/ui.tsx';
import { navigate } from '../router.tsx';
import { useMe } from '../session.tsx';

/** `/`: platform admins go to the tenant list, members to their first tenant. */
export function HomePage() {
  const me = useMe();
  const first = me.user.memberships[0];
  const target = me.user.platformAdmin ? '/tenants' : first ? `/tenants/${first.slug}` : null;
  useEffect(() => {
    if (target) navigate(target, { replace: true });
  }, [target]);
  if (target) return null;
  return (
    <section>
      <h1>Welcome</h1>
      <Empty>You are not a member of any tenant yet. Ask a tenant admin to add {me.user.email}.</Empty>
    </section>
  );
}
