import { useState, type FormEvent } from 'react';
import { LANE_KINDS, LANE_RUN_ENDED, lanesApi, type Lane, type LaneInput, type LaneKind, type LaneRun, type Project } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, formatDate, StatusBadge, useAction } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/** How often the run list refreshes while the page is visible (runs change status on their own). */
const POLL_MS = 3000;
const list = (text: string) =>
  text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);

/** Lanes (docs/lanes.md): projects, the lanes in them, and their runs with each step's live status. */
export function LanesTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="lanes" />;
  return <Lanes slug={tenant.slug} admin={role === 'tenant_admin'} canOperate={role !== 'viewer' && tenant.status === 'active'} />;
}

function Lanes({ slug, admin, canOperate }: { slug: string; admin: boolean; canOperate: boolean }) {
  const projects = useResource(() => lanesApi.projects(slug), [slug]);
  const lanes = useResource(() => lanesApi.lanes(slug), [slug]);
  const runs = useResource(() => lanesApi.runs(slug, { limit: 25 }), [slug], { pollMs: POLL_MS });
  return (
    <>
      <section className="card" aria-labelledby="projects-h">
        <h2 id="projects-h">Projects</h2>
        <p className="hint">
          What this tenant's lanes may work on. The platform's rules can only be narrowed: a broader entry is refused with the rule's name.
        </p>
        <Async resource={projects} what="projects">
          {({ items }) =>
            items.length === 0 ? <Empty>No projects yet.</Empty> : <ProjectTable slug={slug} items={items} admin={admin} onChanged={projects.reload} />
          }
        </Async>
        {admin ? <CreateProject slug={slug} onCreated={projects.reload} /> : null}
      </section>
      <section className="card" aria-labelledby="lanes-h">
        <h2 id="lanes-h">Lanes</h2>
        <Async resource={lanes} what="lanes">
          {({ items }) =>
            items.length === 0 ? (
              <Empty>No lanes yet.</Empty>
            ) : (
              <LaneTable slug={slug} items={items} admin={admin} canOperate={canOperate} onChanged={() => (lanes.reload(), runs.reload())} />
            )
          }
        </Async>
        {admin && lanes.data && !lanes.data.items.some((l) => l.name === 'doctor') ? (
          <EnableDoctor slug={slug} onEnabled={() => (lanes.reload(), projects.reload())} />
        ) : null}
        {admin && projects.data && projects.data.items.length > 0 ? <CreateLane slug={slug} projects={projects.data.items} onCreated={lanes.reload} /> : null}
      </section>
      <section className="card" aria-labelledby="runs-h">
        <h2 id="runs-h">Runs</h2>
        <p className="hint">Newest first; this list refreshes on its own every few seconds.</p>
        <Async resource={runs} what="runs">
          {({ items }) =>
            items.length === 0 ? <Empty>No runs yet.</Empty> : <RunTable slug={slug} items={items} canOperate={canOperate} onChanged={runs.reload} />
          }
        </Async>
      </section>
    </>
  );
}

/** The built-in doctor lane: hourly checks Clawplane computes itself (docs/lanes.md, "The doctor lane"). */
function EnableDoctor({ slug, onEnabled }: { slug: string; onEnabled: () => void }) {
  const action = useAction();
  return (
    <div className="stack">
      <p className="hint">
        The doctor lane checks every hour, without an agent or a model call, the instance's health, budgets near their caps and credentials about to expire;
        each run lists what it found.
      </p>
      <ErrorMessage error={action.error} />
      <button
        type="button"
        className="secondary"
        disabled={action.busy}
        onClick={() => void action.run(async () => (await lanesApi.setDoctorLane(slug, true), onEnabled()))}
      >
        Enable the doctor lane
      </button>
    </div>
  );
}

const SEVERITY_BADGE = { ok: 'badge-ok', warn: 'badge-warning', fail: 'badge-error' } as const;

function ProjectTable({ slug, items, admin, onChanged }: { slug: string; items: Project[]; admin: boolean; onChanged: () => void }) {
  return (
    <table>
      <caption className="sr-only">Projects</caption>
      <thead>
        <tr>
          <th scope="col">Project</th>
          <th scope="col">Hosts</th>
          <th scope="col">Repositories</th>
          <th scope="col">Data sources</th>
          <th scope="col">Lane kinds</th>
          <th scope="col">Runs per day</th>
          {admin ? <th scope="col">Actions</th> : null}
        </tr>
      </thead>
      <tbody>
        {items.map((p) => (
          <tr key={p.id}>
            <td>
              <strong>{p.name}</strong>
              {p.description ? <div className="small muted">{p.description}</div> : null}
            </td>
            <td className="small">{p.hosts.join(', ') || '—'}</td>
            <td className="small">{p.repositories.join(', ') || '—'}</td>
            <td className="small">{p.dataSources.join(', ') || '—'}</td>
            <td className="small">{p.laneKinds.join(', ') || '—'}</td>
            <td>{p.runsPerDay}</td>
            {admin ? (
              <td>
                <ConfirmButton
                  label={`Delete project ${p.name}`}
                  confirmLabel="Delete"
                  onConfirm={async () => (await lanesApi.removeProject(slug, p.id), onChanged())}
                />
              </td>
            ) : null}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CreateProject({ slug, onCreated }: { slug: string; onCreated: () => void }) {
  const [f, setF] = useState({ name: '', hosts: '', repositories: '', dataSources: '', runsPerDay: 24, kinds: [] as LaneKind[] });
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await lanesApi.createProject(slug, {
        name: f.name.trim(),
        hosts: list(f.hosts),
        repositories: list(f.repositories),
        dataSources: list(f.dataSources),
        laneKinds: f.kinds,
        runsPerDay: f.runsPerDay,
      });
      setF({ name: '', hosts: '', repositories: '', dataSources: '', runsPerDay: 24, kinds: [] });
      onCreated();
    });
  };
  return (
    <form className="stack" aria-label="New project" onSubmit={submit}>
      <h3>New project</h3>
      <Field label="Name">{(id) => <input id={id} required value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} />}</Field>
      <Field label="Hosts" hint="Comma-separated; exact, prefix* or *.suffix">
        {(id, d) => <input id={id} aria-describedby={d} value={f.hosts} onChange={(e) => setF({ ...f, hosts: e.target.value })} />}
      </Field>
      <Field label="Repositories" hint="Comma-separated, e.g. github.com/acme/*">
        {(id, d) => <input id={id} aria-describedby={d} value={f.repositories} onChange={(e) => setF({ ...f, repositories: e.target.value })} />}
      </Field>
      <Field label="Data sources" hint="Comma-separated URL prefixes, e.g. data.acme.com/exports">
        {(id, d) => <input id={id} aria-describedby={d} value={f.dataSources} onChange={(e) => setF({ ...f, dataSources: e.target.value })} />}
      </Field>
      <Field label="Runs per day">
        {(id) => <input id={id} type="number" min={0} value={f.runsPerDay} onChange={(e) => setF({ ...f, runsPerDay: Number(e.target.value) })} />}
      </Field>
      <fieldset>
        <legend>Lane kinds</legend>
        {LANE_KINDS.map((k) => (
          <label key={k} className="inline">
            <input
              type="checkbox"
              checked={f.kinds.includes(k)}
              onChange={(e) => setF({ ...f, kinds: e.target.checked ? [...f.kinds, k] : f.kinds.filter((x) => x !== k) })}
            />{' '}
            {k}
          </label>
        ))}
      </fieldset>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        Create project
      </button>
    </form>
  );
}

function LaneTable({ slug, items, admin, canOperate, onChanged }: { slug: string; items: Lane[]; admin: boolean; canOperate: boolean; onChanged: () => void }) {
  const action = useAction();
  return (
    <>
      <ErrorMessage error={action.error} />
      <table>
        <caption className="sr-only">Lanes</caption>
        <thead>
          <tr>
            <th scope="col">Lane</th>
            <th scope="col">Project / kind</th>
            <th scope="col">Schedule</th>
            <th scope="col">Next slot</th>
            <th scope="col">State</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {items.map((l) => (
            <tr key={l.id}>
              <td>
                <strong>{l.name}</strong>
                <div className="small muted">
                  {l.steps.length} step(s){l.steps.some((s) => s.requiresApproval) ? ', some need approval' : ''}
                </div>
              </td>
              <td>
                {l.project} / {l.kind}
              </td>
              <td>{l.schedule ? <code>{l.schedule}</code> : 'on demand'}</td>
              <td>{l.schedule && l.enabled ? formatDate(l.nextSlotAt) : '—'}</td>
              <td>
                <StatusBadge status={l.enabled ? 'enabled' : 'disabled'} /> {l.readOnly ? <span className="badge">read-only</span> : null}
              </td>
              <td>
                {canOperate ? (
                  <button type="button" disabled={action.busy} onClick={() => void action.run(async () => (await lanesApi.runNow(slug, l.id), onChanged()))}>
                    Run now <span className="sr-only">{l.name}</span>
                  </button>
                ) : null}{' '}
                {admin ? (
                  <button
                    type="button"
                    className="secondary"
                    disabled={action.busy}
                    onClick={() => void action.run(async () => (await lanesApi.updateLane(slug, l.id, { enabled: !l.enabled }), onChanged()))}
                  >
                    {l.enabled ? 'Disable' : 'Enable'} <span className="sr-only">{l.name}</span>
                  </button>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

const STEPS_EXAMPLE = '[{"name": "check", "capability": "ops", "input": "Check the instance", "requiresApproval": false}]';

function CreateLane({ slug, projects, onCreated }: { slug: string; projects: Project[]; onCreated: () => void }) {
  const [f, setF] = useState({
    name: '',
    project: projects[0]?.name ?? '',
    kind: (projects[0]?.laneKinds[0] ?? 'analysis') as LaneKind,
    schedule: '',
    catchUp: 'skip' as 'skip' | 'run-once',
    readOnly: true,
    harmless: false,
    steps: STEPS_EXAMPLE,
  });
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      let steps: LaneInput['steps'];
      try {
        steps = JSON.parse(f.steps) as LaneInput['steps'];
      } catch {
        throw new Error('Steps must be a JSON list, e.g. ' + STEPS_EXAMPLE);
      }
      await lanesApi.createLane(slug, {
        name: f.name.trim(),
        project: f.project,
        kind: f.kind,
        schedule: f.schedule.trim() || null,
        catchUp: f.catchUp,
        readOnly: f.readOnly,
        harmless: f.harmless,
        steps,
      });
      setF({ ...f, name: '' });
      onCreated();
    });
  };
  return (
    <form className="stack" aria-label="New lane" onSubmit={submit}>
      <h3>New lane</h3>
      <Field label="Lane name">{(id) => <input id={id} required value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} />}</Field>
      <Field label="Project">
        {(id) => (
          <select id={id} value={f.project} onChange={(e) => setF({ ...f, project: e.target.value })}>
            {projects.map((p) => (
              <option key={p.id}>{p.name}</option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Kind">
        {(id) => (
          <select id={id} value={f.kind} onChange={(e) => setF({ ...f, kind: e.target.value as LaneKind })}>
            {LANE_KINDS.map((k) => (
              <option key={k}>{k}</option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Schedule" hint="Five-field cron in the tenant's time zone, e.g. 0 2 * * *; empty: on demand only">
        {(id, d) => <input id={id} aria-describedby={d} value={f.schedule} onChange={(e) => setF({ ...f, schedule: e.target.value })} />}
      </Field>
      <Field label="After downtime">
        {(id) => (
          <select id={id} value={f.catchUp} onChange={(e) => setF({ ...f, catchUp: e.target.value as 'skip' | 'run-once' })}>
            <option value="skip">skip missed slots</option>
            <option value="run-once">run the latest missed slot once</option>
          </select>
        )}
      </Field>
      <label className="inline">
        <input type="checkbox" checked={f.readOnly} onChange={(e) => setF({ ...f, readOnly: e.target.checked })} /> Read-only (write tools forbidden)
      </label>
      <label className="inline">
        <input type="checkbox" checked={f.harmless} onChange={(e) => setF({ ...f, harmless: e.target.checked })} /> Harmless (enabled when created)
      </label>
      <Field
        label="Steps (JSON)"
        hint="Each step: name, agent or capability, input, requiresApproval; or name and check (instance-health, budgets, credentials)"
      >
        {(id, d) => <textarea id={id} aria-describedby={d} rows={4} value={f.steps} onChange={(e) => setF({ ...f, steps: e.target.value })} />}
      </Field>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        Create lane
      </button>
    </form>
  );
}

function RunTable({ slug, items, canOperate, onChanged }: { slug: string; items: LaneRun[]; canOperate: boolean; onChanged: () => void }) {
  const action = useAction();
  return (
    <>
      <ErrorMessage error={action.error} />
      <table>
        <caption className="sr-only">Lane runs, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Lane</th>
            <th scope="col">Status</th>
            <th scope="col">Steps</th>
            <th scope="col">Started</th>
            <th scope="col">Tokens / cost</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {items.map((r) => (
            <tr key={r.id} aria-label={`Run of ${r.lane}`}>
              <td>
                <strong>{r.lane}</strong>
                <div className="small muted">
                  {r.trigger}
                  {r.slotAt ? ` · slot ${formatDate(r.slotAt)}` : ''}
                </div>
              </td>
              <td>
                <StatusBadge status={r.status} />
                {r.reason ? <div className="small muted">{r.reason}</div> : null}
              </td>
              <td>
                <ol className="small">
                  {r.steps.map((s) => (
                    <li key={s.index}>
                      {s.name}: <StatusBadge status={s.status} />
                      {s.reason ? <span className="muted"> {s.reason}</span> : null}
                      {s.findings && s.findings.length > 0 ? (
                        <ul aria-label={`Findings of step ${s.name}`}>
                          {s.findings.map((f, i) => (
                            <li key={i}>
                              <span className={`badge ${SEVERITY_BADGE[f.severity]}`}>{f.severity}</span> {f.subject}: {f.message}
                            </li>
                          ))}
                        </ul>
                      ) : null}
                      {canOperate && s.status === 'waiting_approval' && !s.decidedBy ? (
                        <>
                          {' '}
                          <button
                            type="button"
                            disabled={action.busy}
                            onClick={() => void action.run(async () => (await lanesApi.decide(slug, r.id, s.index, 'approve'), onChanged()))}
                          >
                            Approve <span className="sr-only">step {s.name}</span>
                          </button>{' '}
                          <button
                            type="button"
                            className="danger"
                            disabled={action.busy}
                            onClick={() => void action.run(async () => (await lanesApi.decide(slug, r.id, s.index, 'reject'), onChanged()))}
                          >
                            Reject <span className="sr-only">step {s.name}</span>
                          </button>
                        </>
                      ) : null}
                    </li>
                  ))}
                </ol>
              </td>
              <td>{formatDate(r.startedAt ?? r.createdAt)}</td>
              <td className="small">
                {(r.inputTokens + r.outputTokens).toLocaleString('en-US')} · ${r.costUsd.toFixed(4)}
              </td>
              <td>
                {canOperate && !LANE_RUN_ENDED.includes(r.status) ? (
                  <ConfirmButton
                    label={`Cancel run of ${r.lane}`}
                    confirmLabel="Cancel run"
                    onConfirm={async () => (await lanesApi.cancel(slug, r.id), onChanged())}
                  />
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
