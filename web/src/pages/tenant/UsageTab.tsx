import { useMemo, useState } from 'react';
import { api2, type UsageRow } from '../../api.ts';
import { DailyChart, type DailySeries } from '../../components/Chart.tsx';
import { Async, Empty, Field } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
const fmtUsd = (n: number) => `$${n < 10 ? n.toFixed(n < 0.1 && n > 0 ? 4 : 2) : n.toFixed(0)}`;
const fmtCalls = (n: number) => (Number.isInteger(n) ? n.toLocaleString('en-US') : '');

/** The days of the window, oldest first, as YYYY-MM-DD (UTC, as the API counts them). */
function windowDays(days: number): string[] {
  const out: string[] = [];
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  for (let i = days - 1; i >= 0; i--) out.push(new Date(today - i * 86_400_000).toISOString().slice(0, 10));
  return out;
}

interface Totals {
  calls: number;
  tokens: number;
  inputTokens: number;
  outputTokens: number;
  cost: number;
}
const zero = (): Totals => ({ calls: 0, tokens: 0, inputTokens: 0, outputTokens: 0, cost: 0 });
function addTo(t: Totals, r: UsageRow): void {
  t.calls += r.calls;
  t.inputTokens += r.inputTokens;
  t.outputTokens += r.outputTokens;
  t.tokens += r.inputTokens + r.outputTokens;
  t.cost += r.costUsd;
}

/** Usage: model tokens, cost and calls per day and per agent, from the broker's metering. */
export function UsageTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="usage" />;
  return <Usage slug={tenant.slug} />;
}

function Usage({ slug }: { slug: string }) {
  const [days, setDays] = useState(7);
  const usage = useResource(() => api2.broker.usage(slug, days), [slug, days]);
  return (
    <>
      <div className="inline-form">
        <Field label="Period">
          {(id) => (
            <select id={id} value={days} onChange={(e) => setDays(Number(e.target.value))}>
              <option value={7}>Last 7 days</option>
              <option value={30}>Last 30 days</option>
              <option value={90}>Last 90 days</option>
            </select>
          )}
        </Field>
        <button type="button" className="secondary" onClick={usage.reload}>
          Refresh
        </button>
        {/* The billing export (docs/usage.md): per UTC day, tokens, cost, tasks, gateway hours, artifact and backup bytes. */}
        <a
          className="button secondary"
          href={`/api/v1/tenants/${encodeURIComponent(slug)}/usage/daily?from=${windowDays(days)[0] ?? ''}&to=${windowDays(days).at(-1) ?? ''}&format=csv`}
          download={`usage-${slug}.csv`}
        >
          Daily usage for billing (CSV)
        </a>
      </div>
      <Async resource={usage} what="usage">
        {({ items }) => (items.length === 0 ? <Empty>No model calls in this period.</Empty> : <UsageView rows={items} days={days} />)}
      </Async>
    </>
  );
}

function UsageView({ rows, days }: { rows: UsageRow[]; days: number }) {
  const view = useMemo(() => {
    const ds = windowDays(days);
    const index = new Map(ds.map((d, i) => [d, i]));
    const agents = [...new Set(rows.map((r) => r.agent || '(none)'))].sort();
    const perAgent = new Map(agents.map((a) => [a, zero()]));
    const perModel = new Map<string, Totals>();
    const total = zero();
    const grid = (pick: (r: UsageRow) => number): DailySeries[] =>
      agents.map((a) => {
        const values = ds.map(() => 0);
        for (const r of rows) {
          const i = index.get(r.day.slice(0, 10));
          if (i !== undefined && (r.agent || '(none)') === a) values[i] = (values[i] ?? 0) + pick(r);
        }
        return { label: a, values };
      });
    for (const r of rows) {
      addTo(total, r);
      const a = perAgent.get(r.agent || '(none)');
      if (a) addTo(a, r);
      const m = perModel.get(r.model) ?? zero();
      addTo(m, r);
      perModel.set(r.model, m);
    }
    return {
      ds,
      total,
      perAgent: [...perAgent.entries()],
      perModel: [...perModel.entries()].sort((a, b) => b[1].cost - a[1].cost),
      tokens: grid((r) => r.inputTokens + r.outputTokens),
      cost: grid((r) => r.costUsd),
      calls: grid((r) => r.calls),
    };
  }, [rows, days]);
  return (
    <>
      <dl className="stats" aria-label="Totals">
        <div>
          <dt>Tokens</dt>
          <dd>{fmtInt(view.total.tokens)}</dd>
        </div>
        <div>
          <dt>Cost</dt>
          <dd>{fmtUsd(view.total.cost)}</dd>
        </div>
        <div>
          <dt>Model calls</dt>
          <dd>{fmtInt(view.total.calls)}</dd>
        </div>
      </dl>
      <div className="charts">
        <DailyChart title="Tokens per day" days={view.ds} series={view.tokens} format={fmtInt} />
        <DailyChart title="Cost per day (USD)" days={view.ds} series={view.cost} format={fmtUsd} />
        <DailyChart title="Model calls per day" days={view.ds} series={view.calls} format={fmtCalls} />
      </div>
      <div className="two-col">
        <TotalsTable caption="Per agent" first="Agent" rows={view.perAgent} />
        <TotalsTable caption="Per model" first="Model" rows={view.perModel} />
      </div>
      <details>
        <summary>Every day, agent and model</summary>
        <table>
          <caption className="sr-only">Usage rows</caption>
          <thead>
            <tr>
              <th scope="col">Day</th>
              <th scope="col">Agent</th>
              <th scope="col">Model</th>
              <th scope="col">Calls</th>
              <th scope="col">Input tokens</th>
              <th scope="col">Output tokens</th>
              <th scope="col">Cost</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={`${r.day}|${r.agent}|${r.model}`}>
                <td>{r.day.slice(0, 10)}</td>
                <td>{r.agent || '(none)'}</td>
                <td>{r.model}</td>
                <td className="num">{fmtInt(r.calls)}</td>
                <td className="num">{fmtInt(r.inputTokens)}</td>
                <td className="num">{fmtInt(r.outputTokens)}</td>
                <td className="num">{fmtUsd(r.costUsd)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </>
  );
}

function TotalsTable({ caption, first, rows }: { caption: string; first: string; rows: [string, Totals][] }) {
  return (
    <table>
      <caption>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">{first}</th>
          <th scope="col">Calls</th>
          <th scope="col">Tokens (in / out)</th>
          <th scope="col">Cost</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(([name, t]) => (
          <tr key={name}>
            <td>{name}</td>
            <td className="num">{fmtInt(t.calls)}</td>
            <td className="num">
              {fmtInt(t.inputTokens)} / {fmtInt(t.outputTokens)}
            </td>
            <td className="num">{fmtUsd(t.cost)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
