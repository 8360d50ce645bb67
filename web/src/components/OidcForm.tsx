import { useState, type FormEvent, type ReactNode } from 'react';
import type { OidcSettings, OidcSettingsInput } from '../api.ts';
import { ErrorMessage, Field, useAction } from './ui.tsx';

/** Single sign-on settings, used by onboarding and the settings page. The client secret is write-only. */
export function OidcForm(props: {
  initial: OidcSettings | null;
  submitLabel: string;
  onSave: (input: OidcSettingsInput) => Promise<void>;
  extraActions?: ReactNode;
}) {
  const i = props.initial;
  const [v, setV] = useState({
    enabled: i?.enabled ?? true,
    issuer: i?.issuer ?? '',
    clientId: i?.clientId ?? '',
    clientSecret: '',
    displayName: i?.displayName ?? 'Single sign-on',
    scopes: i?.scopes ?? 'openid email profile',
    tenantClaim: i?.tenantClaim ?? 'clawplane_tenants',
    groupsClaim: i?.groupsClaim ?? 'groups',
    allowInsecureHttp: i?.allowInsecureHttp ?? false,
  });
  const action = useAction();
  const set = <K extends keyof typeof v>(k: K, value: (typeof v)[K]) => setV((s) => ({ ...s, [k]: value }));
  const redirectUri = i?.redirectUri ?? `${location.origin}/api/v1/auth/oidc/callback`;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const { clientSecret, ...rest } = v;
    void action.run(() => props.onSave(clientSecret ? { ...rest, clientSecret } : rest));
  };

  return (
    <form onSubmit={submit} aria-label="Single sign-on settings">
      <p className="hint">
        Register Clawplane at your identity provider with the redirect URI <code>{redirectUri}</code>.
      </p>
      <Field label="Issuer URL" hint="e.g. https://login.example.com/realms/main">
        {(id, d) => <input id={id} aria-describedby={d} type="url" required value={v.issuer} onChange={(e) => set('issuer', e.target.value)} />}
      </Field>
      <Field label="Client ID">{(id) => <input id={id} required value={v.clientId} onChange={(e) => set('clientId', e.target.value)} />}</Field>
      <Field label="Client secret" hint={i?.clientSecretSet ? 'A secret is stored; leave empty to keep it.' : 'Leave empty for a public client.'}>
        {(id, d) => (
          <input
            id={id}
            aria-describedby={d}
            type="password"
            autoComplete="new-password"
            value={v.clientSecret}
            onChange={(e) => set('clientSecret', e.target.value)}
          />
        )}
      </Field>
      <Field label="Button label" hint='Shown on the sign-in page as "Sign in with …"'>
        {(id, d) => <input id={id} aria-describedby={d} required value={v.displayName} onChange={(e) => set('displayName', e.target.value)} />}
      </Field>
      <Field label="Scopes">{(id) => <input id={id} value={v.scopes} onChange={(e) => set('scopes', e.target.value)} />}</Field>
      <Field label="Tenant claim" hint="The ID token claim listing the tenants (and roles) a user belongs to.">
        {(id, d) => <input id={id} aria-describedby={d} required value={v.tenantClaim} onChange={(e) => set('tenantClaim', e.target.value)} />}
      </Field>
      <Field label="Groups claim" hint="The claim listing a user's groups; a tenant's members by group (its Tenant resource) map them to roles.">
        {(id, d) => <input id={id} aria-describedby={d} required value={v.groupsClaim} onChange={(e) => set('groupsClaim', e.target.value)} />}
      </Field>
      <div className="checks">
        <label>
          <input type="checkbox" checked={v.enabled} onChange={(e) => set('enabled', e.target.checked)} /> Enabled
        </label>
        <label>
          <input type="checkbox" checked={v.allowInsecureHttp} onChange={(e) => set('allowInsecureHttp', e.target.checked)} /> Allow an http:// issuer (testing
          only)
        </label>
      </div>
      <ErrorMessage error={action.error} />
      <div className="actions">
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Checking the issuer…' : props.submitLabel}
        </button>
        {props.extraActions}
      </div>
    </form>
  );
}
