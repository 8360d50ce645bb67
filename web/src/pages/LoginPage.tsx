import { useState, type FormEvent } from 'react';
import { api } from '../api.ts';
import { ErrorMessage, Field, useAction } from '../components/ui.tsx';
import { navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import { useResource } from '../useResource.ts';

/** Sign-in: the breakglass admin's password, or single sign-on when a platform admin set it up. */
export function LoginPage({ title = 'Sign in to Clawplane', intro }: { title?: string; intro?: string }) {
  const { signedIn } = useSession();
  const { path } = useLocation();
  const providers = useResource(() => api.auth.providers(), []);
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const action = useAction();
  const returnTo = path === '/login' || path === '/' ? '/' : path;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const me = await api.auth.login(email, password);
      signedIn(me);
      navigate(returnTo, { replace: true });
    });
  };

  const oidc = providers.data?.oidc;
  return (
    <main className="centered">
      <div className="card narrow">
        <h1>{title}</h1>
        {intro ? <p>{intro}</p> : null}
        {oidc?.enabled ? (
          <>
            <a className="button block" href={api.auth.oidcStartUrl(returnTo)}>
              Sign in with {oidc.displayName}
            </a>
            <p className="divider">
              <span>or with the admin password</span>
            </p>
          </>
        ) : null}
        <form onSubmit={submit} aria-label="Sign in">
          <Field label="Email">
            {(id) => <input id={id} type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} />}
          </Field>
          <Field label="Password">
            {(id) => <input id={id} type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />}
          </Field>
          <ErrorMessage error={action.error} />
          <button type="submit" disabled={action.busy}>
            {action.busy ? 'Signing in…' : 'Sign in'}
          </button>
        </form>
      </div>
    </main>
  );
}
