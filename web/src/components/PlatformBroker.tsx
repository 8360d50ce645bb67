/** Platform settings for the broker: the default LLM provider (key write-only) and the model price table. */
import { useState, type FormEvent } from 'react';
import { api, api2, ApiError, type ConnectionTest, type DefaultProvider, type ModelPrice, type ProviderKind, type ProviderKindName } from '../api.ts';
import { useResource } from '../useResource.ts';
import { Async, Empty, ErrorMessage, Field, useAction } from './ui.tsx';

export function DefaultProviderForm() {
  const data = useResource(async () => {
    const [current, kinds] = await Promise.all([api2.defaultProvider.get(), api.providerKinds()]);
    return { current, kinds: kinds.items };
  }, []);
  return (
    <Async resource={data} what="the default provider">
      {(d) => <ProviderForm current={d.current} kinds={d.kinds} onSaved={data.reload} />}
    </Async>
  );
}

function ProviderForm({ current, kinds, onSaved }: { current: DefaultProvider | null; kinds: ProviderKind[]; onSaved: () => void }) {
  const [kind, setKind] = useState(current?.kind ?? kinds[0]?.kind ?? 'openai');
  const [baseUrl, setBaseUrl] = useState(current && current.baseUrl !== kinds.find((k) => k.kind === current.kind)?.defaultBaseUrl ? current.baseUrl : '');
  const [apiKey, setApiKey] = useState('');
  const [model, setModel] = useState(current?.defaultModel ?? '');
  const [test, setTest] = useState<ConnectionTest | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      setTest(undefined);
      try {
        const r = await api2.defaultProvider.save({
          kind,
          defaultModel: model.trim(),
          ...(baseUrl.trim() ? { baseUrl: baseUrl.trim() } : {}),
          ...(apiKey ? { apiKey } : {}),
        });
        setTest(r.test);
        setApiKey('');
        onSaved();
      } catch (err) {
        setApiKey('');
        throw err;
      }
    });
  };
  const selected = kinds.find((k) => k.kind === kind);
  return (
    <>
      {current ? (
        <p className="small">
          In use: <strong>{current.name}</strong> at <code>{current.baseUrl}</code>, model <code>{current.defaultModel}</code>; key{' '}
          {current.keySet ? 'stored (never shown)' : 'not set'}.
        </p>
      ) : (
        <Empty>No default provider: tenants without their own provider cannot call models.</Empty>
      )}
      <form onSubmit={submit} aria-label="Default LLM provider">
        <Field label="Provider">
          {(id) => (
            <select id={id} value={kind} onChange={(e) => setKind(e.target.value as ProviderKindName)}>
              {kinds.map((k) => (
                <option key={k.kind} value={k.kind}>
                  {k.label}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Base URL" hint={selected?.defaultBaseUrl ? `Empty: ${selected.defaultBaseUrl}` : 'Required for this kind.'}>
          {(id, d) => <input id={id} aria-describedby={d} value={baseUrl} placeholder="https://…/v1" onChange={(e) => setBaseUrl(e.target.value)} />}
        </Field>
        <Field label="API key" hint={current?.keySet ? 'Empty: keep the stored key. Write-only: it is never shown.' : 'Write-only: it is never shown.'}>
          {(id, d) => <input id={id} aria-describedby={d} type="password" autoComplete="off" value={apiKey} onChange={(e) => setApiKey(e.target.value)} />}
        </Field>
        <Field label="Default model">
          {(id) => <input id={id} required value={model} placeholder="gpt-4o-mini" onChange={(e) => setModel(e.target.value)} />}
        </Field>
        <ErrorMessage error={action.error} />
        {action.error instanceof ApiError && action.error.code === 'provider_test_failed' ? (
          <p className="small muted">The stored provider (if any) is unchanged.</p>
        ) : null}
        {test?.ok ? (
          <p className="notice ok" role="status">
            Saved. Connection works ({test.latencyMs} ms{test.modelCount !== undefined ? `, ${test.modelCount} models available` : ''}).
          </p>
        ) : null}
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Testing the connection…' : 'Test and save provider'}
        </button>
      </form>
    </>
  );
}

export function PricesCard() {
  const prices = useResource(() => api2.broker.prices(), []);
  const [editing, setEditing] = useState<ModelPrice | undefined>(undefined);
  return (
    <>
      <p className="hint">USD per million tokens; the broker meters cost with these. A model id, or a prefix ending in * (e.g. gpt-4o*).</p>
      <Async resource={prices} what="prices">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No prices: model calls are metered at $0.</Empty>
          ) : (
            <table>
              <caption className="sr-only">Model prices</caption>
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col">Input</th>
                  <th scope="col">Output</th>
                  <th scope="col">Edit</th>
                </tr>
              </thead>
              <tbody>
                {items.map((p) => (
                  <tr key={p.model}>
                    <td>
                      <code>{p.model}</code>
                    </td>
                    <td className="num">${p.inputUsdPerMtok}</td>
                    <td className="num">${p.outputUsdPerMtok}</td>
                    <td>
                      <button type="button" className="secondary" aria-label={`Edit price of ${p.model}`} onClick={() => setEditing(p)}>
                        Edit
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      <PriceForm key={editing?.model ?? ''} initial={editing} onSaved={() => (setEditing(undefined), prices.reload())} />
    </>
  );
}

function PriceForm({ initial, onSaved }: { initial: ModelPrice | undefined; onSaved: () => void }) {
  const [model, setModel] = useState(initial?.model ?? '');
  const [input, setInput] = useState(initial ? String(initial.inputUsdPerMtok) : '');
  const [output, setOutput] = useState(initial ? String(initial.outputUsdPerMtok) : '');
  const [saved, setSaved] = useState<string | undefined>(undefined);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const p = await api2.broker.setPrice(model.trim(), { inputUsdPerMtok: Number(input), outputUsdPerMtok: Number(output) });
      setSaved(`Price of ${p.model} saved.`);
      onSaved();
    });
  };
  return (
    <form onSubmit={submit} aria-label="Set a model price">
      <h3>{initial ? `Change ${initial.model}` : 'Set a price'}</h3>
      <div className="row">
        <Field label="Model">
          {(id) => <input id={id} required value={model} readOnly={initial !== undefined} onChange={(e) => setModel(e.target.value)} />}
        </Field>
        <Field label="Input (USD / M tokens)">
          {(id) => <input id={id} type="number" min={0} step="any" required value={input} onChange={(e) => setInput(e.target.value)} />}
        </Field>
        <Field label="Output (USD / M tokens)">
          {(id) => <input id={id} type="number" min={0} step="any" required value={output} onChange={(e) => setOutput(e.target.value)} />}
        </Field>
      </div>
      <ErrorMessage error={action.error} />
      {saved ? (
        <p className="notice ok" role="status">
          {saved}
        </p>
      ) : null}
      <button type="submit" disabled={action.busy}>
        Save price
      </button>
    </form>
  );
}
