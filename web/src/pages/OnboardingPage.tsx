import { useEffect, useState, type FormEvent } from 'react';
import { api, type OnboardingState, type OnboardingStep, type ProviderKindName } from '../api.ts';
import { BUILTIN_DEFAULTS, DefaultsForm } from '../components/DefaultsForm.tsx';
import { OidcForm } from '../components/OidcForm.tsx';
import { ErrorMessage, Field, useAction } from '../components/ui.tsx';
import { navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import { LoginPage } from './LoginPage.tsx';

const STEPS: { name: OnboardingStep | 'done'; label: string }[] = [
  { name: 'admin', label: 'Admin account' },
  { name: 'oidc', label: 'Single sign-on' },
  { name: 'provider', label: 'LLM provider' },
  { name: 'defaults', label: 'Agent defaults' },
  { name: 'done', label: 'Done' },
];

/** First boot: breakglass admin → OIDC (skippable) → LLM provider → default agent settings → done. */
export function OnboardingPage() {
  const session = useSession();
  const { path } = useLocation();
  const state = session.onboarding;
  useEffect(() => {
    if (path !== '/onboarding') navigate('/onboarding', { replace: true });
  }, [path]);

  const current: OnboardingStep | 'done' = state.complete ? 'done' : (state.next ?? 'done');
  if (current !== 'admin' && current !== 'done' && !session.me) {
    return <LoginPage title="Sign in to continue setting up" intro="The admin account exists. Sign in with it to finish onboarding." />;
  }
  const status = (name: OnboardingStep | 'done') =>
    name === 'done' ? (state.complete ? 'done' : 'pending') : (state.steps.find((s) => s.name === name)?.status ?? 'pending');

  return (
    <main className="centered">
      <div className="card wide">
        <h1>Set up Clawplane</h1>
        <ol className="stepper" aria-label="Onboarding steps">
          {STEPS.map((s, i) => (
            <li key={s.name} className={`step-${status(s.name)}`} aria-current={s.name === current ? 'step' : undefined}>
              <span className="num">{i + 1}</span> {s.label}
              {status(s.name) === 'skipped' ? <span className="muted small"> (skipped)</span> : null}
            </li>
          ))}
        </ol>
        {current === 'admin' ? <AdminStep onDone={session.setOnboarding} /> : null}
        {current === 'oidc' ? <OidcStep onDone={session.setOnboarding} /> : null}
        {current === 'provider' ? <ProviderStep onDone={session.setOnboarding} /> : null}
        {current === 'defaults' ? <DefaultsStep onDone={session.setOnboarding} /> : null}
        {current === 'done' ? <DoneStep /> : null}
      </div>
    </main>
  );
}

function AdminStep({ onDone }: { onDone: (s: OnboardingState) => void }) {
  const { signedIn } = useSession();
  const [v, setV] = useState({ email: '', displayName: '', password: '', confirm: '', setupCode: '' });
  const [mismatch, setMismatch] = useState(false);
  const action = useAction();
  const set = (k: keyof typeof v, value: string) => setV((s) => ({ ...s, [k]: value }));

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (v.password !== v.confirm) {
      setMismatch(true);
      return;
    }
    setMismatch(false);
    void action.run(async () => {
      const r = await api.onboarding.admin({
        email: v.email,
        password: v.password,
        setupCode: v.setupCode.trim(),
        ...(v.displayName ? { displayName: v.displayName } : {}),
      });
      // The server signed us in; /auth/me gives the user with the same CSRF token.
      const me = await api.auth.me();
      signedIn({ ...me, csrfToken: r.csrfToken });
      onDone(r.state);
    });
  };

  return (
    <form onSubmit={submit} aria-label="Create the admin account">
      <h2>Create the breakglass admin</h2>
      <p>This account always works, even when single sign-on is down. Keep its password somewhere safe.</p>
      <Field
        label="Setup code"
        hint={
          <>
            Proves you run this server. It is in the file <code>setup-code</code> in the data directory (by default <code>cat .clawplane/setup-code</code> on
            the host), and the server log names the file at first start.
          </>
        }
      >
        {(id, d) => (
          <input
            id={id}
            aria-describedby={d}
            required
            autoComplete="off"
            spellCheck={false}
            value={v.setupCode}
            onChange={(e) => set('setupCode', e.target.value)}
          />
        )}
      </Field>
      <Field label="Email">
        {(id) => <input id={id} type="email" autoComplete="username" required value={v.email} onChange={(e) => set('email', e.target.value)} />}
      </Field>
      <Field label="Display name (optional)">{(id) => <input id={id} value={v.displayName} onChange={(e) => set('displayName', e.target.value)} />}</Field>
      <Field label="Password" hint="At least 12 characters; a long passphrase is best.">
        {(id, d) => (
          <input
            id={id}
            aria-describedby={d}
            type="password"
            autoComplete="new-password"
            required
            value={v.password}
            onChange={(e) => set('password', e.target.value)}
          />
        )}
      </Field>
      <Field label="Repeat the password">
        {(id) => <input id={id} type="password" autoComplete="new-password" required value={v.confirm} onChange={(e) => set('confirm', e.target.value)} />}
      </Field>
      {mismatch ? <ErrorMessage error={new Error('The two passwords differ.')} /> : null}
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Creating…' : 'Create admin and continue'}
      </button>
    </form>
  );
}

function OidcStep({ onDone }: { onDone: (s: OnboardingState) => void }) {
  const skip = useAction();
  return (
    <section aria-labelledby="oidc-h">
      <h2 id="oidc-h">Single sign-on (optional)</h2>
      <p>Let your users sign in with your identity provider (OpenID Connect). You can set this up later under Settings.</p>
      <OidcForm
        initial={null}
        submitLabel="Save and continue"
        onSave={async (input) => onDone(await api.onboarding.oidc(input))}
        extraActions={
          <button
            type="button"
            className="secondary"
            disabled={skip.busy}
            onClick={() => void skip.run(async () => onDone(await api.onboarding.oidc({ skip: true })))}
          >
            Skip for now
          </button>
        }
      />
      <ErrorMessage error={skip.error} />
    </section>
  );
}

function ProviderStep({ onDone }: { onDone: (s: OnboardingState) => void }) {
  const action = useAction();
  const skip = useAction();
  const [kind, setKind] = useState<ProviderKindName>('openai');
  const [baseUrl, setBaseUrl] = useState('');
  const [apiKey, setApiKey] = useState('');
  const [defaultModel, setDefaultModel] = useState('');
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const r = await api.onboarding.provider({ kind, defaultModel, ...(baseUrl ? { baseUrl } : {}), ...(apiKey ? { apiKey } : {}) });
      onDone(r.state);
    });
  };
  return (
    <section aria-labelledby="provider-h">
      <h2 id="provider-h">LLM provider</h2>
      <p>
        The platform&apos;s default provider serves tenants that have not added one of their own (each tenant can add its own under <strong>Providers</strong>).
        The connection is tested before anything is saved; the key is stored encrypted and never shown again.
      </p>
      <form onSubmit={submit}>
        <Field label="Provider">
          {(id) => (
            <select id={id} value={kind} onChange={(e) => setKind(e.target.value as ProviderKindName)}>
              <option value="openai">OpenAI</option>
              <option value="anthropic">Anthropic</option>
              <option value="gemini">Google Gemini</option>
              <option value="mistral">Mistral</option>
              <option value="deepseek">DeepSeek</option>
              <option value="openrouter">OpenRouter</option>
              <option value="openai_compatible">OpenAI-compatible (Ollama, vLLM, llama.cpp)</option>
            </select>
          )}
        </Field>
        <Field label="Base URL" hint="Leave empty for the provider's public API.">
          {(id, d) => <input id={id} aria-describedby={d} value={baseUrl} onChange={(e) => setBaseUrl(e.target.value)} placeholder="https://…/v1" />}
        </Field>
        <Field label="API key">{(id) => <input id={id} type="password" autoComplete="off" value={apiKey} onChange={(e) => setApiKey(e.target.value)} />}</Field>
        <Field label="Default model">
          {(id) => <input id={id} required value={defaultModel} onChange={(e) => setDefaultModel(e.target.value)} placeholder="gpt-4o-mini" />}
        </Field>
        <ErrorMessage error={action.error} />
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Testing the connection…' : 'Test and save'}
        </button>{' '}
        <button
          type="button"
          className="secondary"
          disabled={skip.busy}
          onClick={() => void skip.run(async () => onDone((await api.onboarding.provider({ skip: true })).state))}
        >
          Skip for now
        </button>
        <ErrorMessage error={skip.error} />
      </form>
    </section>
  );
}

function DefaultsStep({ onDone }: { onDone: (s: OnboardingState) => void }) {
  return (
    <section aria-labelledby="defaults-h">
      <h2 id="defaults-h">Default agent settings</h2>
      <p>Every new tenant's agent starts with these. You can change them later under Settings.</p>
      <DefaultsForm initial={BUILTIN_DEFAULTS} submitLabel="Finish setup" onSave={async (d) => onDone(await api.onboarding.defaults(d))} />
    </section>
  );
}

function DoneStep() {
  return (
    <section aria-labelledby="done-h">
      <h2 id="done-h">Clawplane is ready</h2>
      <p>Next, create a tenant for each team, add its members and give it an LLM provider.</p>
      <button type="button" onClick={() => navigate('/tenants')}>
        Go to tenants
      </button>
    </section>
  );
}
