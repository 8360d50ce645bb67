import { request } from '../api.ts';
import type { components } from '../api.gen.ts';
import { Async } from '../components/ui.tsx';
import { useMe } from '../session.tsx';
import { useResource } from '../useResource.ts';

type DoctorReport = components['schemas']['DoctorReport'];

const MARK = { ok: '✓', warn: '!', fail: '✗', skip: '–' } as const;
const LABEL = { ok: 'ok', warn: 'warning', fail: 'failed', skip: 'not checked' } as const;

/** Platform health (platform admins): the `clawplane doctor` report, each check with its fix. */
export function HealthPage() {
  const me = useMe();
  if (!me.user.platformAdmin) {
    return (
      <section>
        <h1>Health</h1>
        <p className="notice info">The installation&apos;s health report is for platform admins.</p>
      </section>
    );
  }
  return <Report />;
}

function Report() {
  const report = useResource(() => request<DoctorReport>('GET', '/api/v1/platform/doctor'), []);
  return (
    <section>
      <h1>Health</h1>
      <p>
        What <code>clawplane doctor</code> checks: sandbox prerequisites, the database, the secret key, runtimes, sandboxes, the broker, public ports, disk
        space and the clock.
      </p>
      <Async resource={report} what="the health report">
        {(r) => (
          <>
            <p className={`notice ${r.ok ? 'ok' : 'error'}`} role="status" aria-label="Health status">
              {r.ok ? 'All checks passed' : `${r.checks.filter((c) => c.status === 'fail').length} check(s) failed`} ({new Date(r.at).toLocaleString()}).
            </p>
            <table>
              <thead>
                <tr>
                  <th scope="col">Check</th>
                  <th scope="col">Result</th>
                  <th scope="col">Found</th>
                  <th scope="col">Fix</th>
                </tr>
              </thead>
              <tbody>
                {r.checks.map((c) => (
                  <tr key={c.id} data-check={c.id} data-status={c.status}>
                    <td>{c.title}</td>
                    <td aria-label={LABEL[c.status]}>
                      {MARK[c.status]} {LABEL[c.status]}
                    </td>
                    <td>{c.detail}</td>
                    <td>{c.status === 'warn' || c.status === 'fail' ? <code>{c.fix}</code> : null}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Async>
      <button type="button" className="secondary" disabled={report.loading} onClick={report.reload}>
        {report.loading ? 'Checking…' : 'Check again'}
      </button>
    </section>
  );
}
