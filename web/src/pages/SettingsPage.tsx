import { useState } from 'react';
import { api } from '../api.ts';
import { DefaultProviderForm, PricesCard } from '../components/PlatformBroker.tsx';
import { DefaultsForm } from '../components/DefaultsForm.tsx';
import { OidcForm } from '../components/OidcForm.tsx';
import { Async } from '../components/ui.tsx';
import { useMe } from '../session.tsx';
import { useResource } from '../useResource.ts';

/** Platform settings (platform admins): single sign-on, default agent settings, the default LLM provider, model prices. */
export function SettingsPage() {
  const me = useMe();
  const oidc = useResource(() => api.platform.oidc(), []);
  const defaults = useResource(() => api.platform.agentDefaults(), []);
  const [saved, setSaved] = useState<string | undefined>(undefined);
  if (!me.user.platformAdmin) {
    return (
      <section>
        <h1>Settings</h1>
        <p className="notice info">Platform settings are for platform admins.</p>
      </section>
    );
  }
  return (
    <section>
      <h1>Platform settings</h1>
      {saved ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      <div className="two-col">
        <div className="card">
          <h2>Single sign-on (OIDC)</h2>
          <Async resource={oidc} what="single sign-on settings">
            {(s) => (
              <OidcForm
                initial={s}
                submitLabel="Save single sign-on"
                onSave={async (input) => {
                  await api.platform.saveOidc(input);
                  setSaved('Single sign-on saved.');
                  oidc.reload();
                }}
              />
            )}
          </Async>
        </div>
        <div className="card">
          <h2>Default agent settings</h2>
          <Async resource={defaults} what="agent defaults">
            {(d) => (
              <DefaultsForm
                initial={d}
                submitLabel="Save agent defaults"
                onSave={async (v) => {
                  await api.platform.saveAgentDefaults(v);
                  setSaved('Agent defaults saved.');
                  defaults.reload();
                }}
              />
            )}
          </Async>
        </div>
      </div>
      <div className="two-col">
        <div className="card">
          <h2>Default LLM provider</h2>
          <DefaultProviderForm />
        </div>
        <div className="card">
          <h2>Model prices</h2>
          <PricesCard />
        </div>
      </div>
    </section>
  );
}
