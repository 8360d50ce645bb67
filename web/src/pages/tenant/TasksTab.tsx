import { useCallback, useEffect, useRef, useState, type FormEvent } from 'react';
import { PRIORITIES, TASK_STATUSES, TASK_TERMINAL, tasksApi, type Priority, type Task, type TraceEvent } from '../../api.ts';
import { Async, Empty, ErrorMessage, Field, formatDate, Loading, StatusBadge, useAction } from '../../components/ui.tsx';
import { useResource, useVisibleInterval } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/** How often the inbox and the task list refresh while the page is visible. */
const POLL_MS = 3000;
const PAGE = 25;

/** Tasks: the approvals inbox, a new task, the list with filters, and one task's live trace. */
export function TasksTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="tasks" />;
  return <Tasks slug={tenant.slug} canOperate={role !== 'viewer' && tenant.status === 'active'} />;
}

function Tasks({ slug, canOperate }: { slug: string; canOperate: boolean }) {
  const [filters, setFilters] = useState({ status: '', priority: '', agent: '' });
  const [selected, setSelected] = useState<string | undefined>(undefined);
  const [pages, setPages] = useState<{ items: Task[]; next: string | null } | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [tick, setTick] = useState(0);
  const more = useAction();
  const reload = () => setTick((n) => n + 1);
  // What the shown list was loaded for, and how many rows it holds: a refresh of the same filters reloads
  // as many rows as are shown ("Older tasks" pages included), new filters start again at one page.
  const shown = useRef({ key: '', count: PAGE });
  const inFlight = useRef(false);

  useEffect(() => {
    let live = true;
    const key = JSON.stringify([slug, filters]);
    const limit = shown.current.key === key ? Math.min(200, Math.max(PAGE, shown.current.count)) : PAGE;
    inFlight.current = true;
    tasksApi
      .list(slug, { ...filters, limit })
      .then(
        (r) => {
          if (!live) return;
          shown.current = { key, count: r.items.length };
          setError(undefined);
          setPages((prev) =>
            prev && JSON.stringify(prev.items) === JSON.stringify(r.items) && prev.next === r.nextCursor ? prev : { items: r.items, next: r.nextCursor },
          );
        },
        (e: unknown) => live && setError(e),
      )
      .finally(() => {
        if (live) inFlight.current = false;
      });
    return () => {
      live = false;
      inFlight.current = false;
    };
  }, [slug, filters, tick]);
  // Live: statuses change and new tasks arrive while the tab is open.
  useVisibleInterval(() => {
    if (!inFlight.current && !more.busy) reload();
  }, POLL_MS);

  return (
    <>
      <Inbox slug={slug} canOperate={canOperate} onDecided={reload} />
      {canOperate ? <CreateTask slug={slug} onCreated={(t) => (setSelected(t.id), reload())} /> : null}
      <h2>Tasks</h2>
      <p className="hint">The inbox and this list refresh on their own every few seconds.</p>
      <form className="inline-form" aria-label="Filter tasks" onSubmit={(e) => e.preventDefault()}>
        <Field label="Status">
          {(id) => (
            <select id={id} value={filters.status} onChange={(e) => setFilters({ ...filters, status: e.target.value })}>
              <option value="">Any</option>
              {TASK_STATUSES.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Priority">
          {(id) => (
            <select id={id} value={filters.priority} onChange={(e) => setFilters({ ...filters, priority: e.target.value })}>
              <option value="">Any</option>
              {PRIORITIES.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Agent (name or id)">
          {(id) => <input id={id} value={filters.agent} onChange={(e) => setFilters({ ...filters, agent: e.target.value.trim() })} />}
        </Field>
        <button type="button" className="secondary" onClick={reload}>
          Refresh
        </button>
      </form>
      <ErrorMessage error={error} />
      {!pages && error === undefined ? <Loading what="tasks" /> : null}
      {pages && pages.items.length === 0 ? <Empty>No tasks{filters.status || filters.priority || filters.agent ? ' match' : ' yet'}.</Empty> : null}
      {pages && pages.items.length > 0 ? (
        <table>
          <caption className="sr-only">Tasks, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Task</th>
              <th scope="col">Status</th>
              <th scope="col">Agent / capability</th>
              <th scope="col">Priority</th>
              <th scope="col">Created</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {pages.items.map((t) => (
              <tr key={t.id} aria-selected={t.id === selected}>
                <td className="small">{t.input.length > 80 ? `${t.input.slice(0, 80)}…` : t.input}</td>
                <td>
                  <StatusBadge status={t.status} />
                  {t.statusReason ? <div className="small muted">{t.statusReason}</div> : null}
                </td>
                <td>{t.requestedAgent ?? t.capability ?? '—'}</td>
                <td>{t.priority}</td>
                <td>{formatDate(t.createdAt)}</td>
                <td>
                  <button
                    type="button"
                    className="secondary"
                    aria-expanded={t.id === selected}
                    onClick={() => setSelected(t.id === selected ? undefined : t.id)}
                  >
                    {t.id === selected ? 'Hide' : 'Open'} <span className="sr-only">task {t.id}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <ErrorMessage error={more.error} />
      {pages?.next ? (
        <button
          type="button"
          className="secondary"
          disabled={more.busy}
          onClick={() =>
            void more.run(async () => {
              const r = await tasksApi.list(slug, { ...filters, limit: PAGE, cursor: pages.next ?? undefined });
              const items = [...pages.items, ...r.items];
              shown.current = { ...shown.current, count: items.length };
              setPages({ items, next: r.nextCursor });
            })
          }
        >
          Older tasks
        </button>
      ) : null}
      {selected ? <TaskDetail key={selected} slug={slug} id={selected} canOperate={canOperate} onChanged={reload} /> : null}
    </>
  );
}

function Inbox({ slug, canOperate, onDecided }: { slug: string; canOperate: boolean; onDecided: () => void }) {
  const inbox = useResource(() => tasksApi.inbox(slug), [slug], { pollMs: POLL_MS });
  return (
    <section className="card" aria-labelledby="inbox-h">
      <h2 id="inbox-h">Approvals inbox</h2>
      <Async resource={inbox} what="approvals">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>Nothing waits for a person.</Empty>
          ) : (
            <ul className="policies" aria-label="Pending approvals">
              {items.map((a) => (
                <li key={a.id}>
                  <strong>{a.summary}</strong> <span className="badge">{a.kind}</span> <code>{a.tool}</code>
                  <div className="small muted">
                    Task: {a.taskInput.slice(0, 120)} · asked {formatDate(a.createdAt)} · expires {formatDate(a.expiresAt)}
                  </div>
                  {canOperate ? (
                    <Decide slug={slug} taskId={a.taskId} approvalId={a.id} label={a.summary} onDone={() => (inbox.reload(), onDecided())} />
                  ) : null}
                </li>
              ))}
            </ul>
          )
        }
      </Async>
    </section>
  );
}

function Decide({ slug, taskId, approvalId, label, onDone }: { slug: string; taskId: string; approvalId: string; label: string; onDone: () => void }) {
  const [comment, setComment] = useState('');
  const action = useAction();
  const decide = (op: 'approve' | 'reject') =>
    void action.run(async () => {
      await tasksApi.decide(slug, taskId, op, { approvalId, ...(comment.trim() ? { comment: comment.trim() } : {}) });
      onDone();
    });
  return (
    <div className="inline-form">
      <Field label="Comment (optional)">
        {(id) => <input id={id} aria-label={`Comment on ${label}`} value={comment} onChange={(e) => setComment(e.target.value)} />}
      </Field>
      <button type="button" disabled={action.busy} onClick={() => decide('approve')}>
        Approve
      </button>
      <button type="button" className="danger" disabled={action.busy} onClick={() => decide('reject')}>
        Reject
      </button>
      <ErrorMessage error={action.error} />
    </div>
  );
}

function CreateTask({ slug, onCreated }: { slug: string; onCreated: (t: Task) => void }) {
  const agents = useResource(() => tasksApi.agents(slug), [slug]);
  const [input, setInput] = useState('');
  const [agent, setAgent] = useState('');
  const [capability, setCapability] = useState('');
  const [priority, setPriority] = useState<Priority>('normal');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const t = await tasksApi.create(slug, { input, priority, ...(agent ? { agent } : {}), ...(capability.trim() ? { capability: capability.trim() } : {}) });
      setInput('');
      onCreated(t);
    });
  };
  return (
    <form className="card" onSubmit={submit} aria-label="Create a task">
      <h2>New task</h2>
      <Field label="What should be done">{(id) => <textarea id={id} required rows={3} value={input} onChange={(e) => setInput(e.target.value)} />}</Field>
      <div className="row">
        <Field label="Agent" hint="Or leave it to dispatch by capability.">
          {(id, d) => (
            <select id={id} aria-describedby={d} value={agent} onChange={(e) => setAgent(e.target.value)}>
              <option value="">Any (by capability)</option>
              {agents.data?.items.map((a) => (
                <option key={a.id} value={a.name}>
                  {a.name} ({a.agentType}: {a.capabilities.join(', ')})
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Capability" hint='e.g. "summarise"'>
          {(id, d) => <input id={id} aria-describedby={d} value={capability} onChange={(e) => setCapability(e.target.value)} />}
        </Field>
        <Field label="Priority">
          {(id) => (
            <select id={id} value={priority} onChange={(e) => setPriority(PRIORITIES.find((p) => p === e.target.value) ?? 'normal')}>
              {PRIORITIES.map((p) => (
                <option key={p}>{p}</option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <ErrorMessage error={agents.error} />
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Creating…' : 'Create task'}
      </button>
    </form>
  );
}

/** One task, its approvals and its trace, live: the trace streams (SSE) until the task ends. */
function TaskDetail({ slug, id, canOperate, onChanged }: { slug: string; id: string; canOperate: boolean; onChanged: () => void }) {
  const task = useResource(() => tasksApi.get(slug, id), [slug, id]);
  const approvals = useResource(() => tasksApi.approvals(slug, id), [slug, id]);
  const [trace, setTrace] = useState<TraceEvent[]>([]);
  const [ended, setEnded] = useState(false);
  const [streamError, setStreamError] = useState<unknown>(undefined);
  const cancel = useAction();
  const { reload: reloadTask } = task;
  const { reload: reloadApprovals } = approvals;
  const reload = useCallback(() => (reloadTask(), reloadApprovals()), [reloadTask, reloadApprovals]);
  useEffect(() => {
    const ac = new AbortController();
    setTrace([]);
    tasksApi
      .follow(slug, id, ac.signal, (event, data) => {
        if (event === 'end') {
          setEnded(true);
          reload();
          return;
        }
        const e = JSON.parse(data) as TraceEvent;
        setTrace((t) => [...t, e]);
        reload();
      })
      .catch((e: unknown) => {
        if (!ac.signal.aborted) setStreamError(e);
      });
    return () => ac.abort();
  }, [slug, id, reload]);
  return (
    <section className="card" aria-label="Task detail">
      <Async resource={task} what="the task">
        {(t) => (
          <>
            <h2>
              Task <StatusBadge status={t.status} />
            </h2>
            <p className="small muted">
              {t.statusReason} · {t.attempts} attempt{t.attempts === 1 ? '' : 's'} · {t.inputTokens + t.outputTokens} tokens · ${t.costUsd.toFixed(4)}
              {t.confidence !== null ? ` · confidence ${t.confidence}` : ''}
            </p>
            <pre className="code">{t.input}</pre>
            {t.output ? (
              <>
                <h3>Output</h3>
                <pre className="code">{t.output}</pre>
              </>
            ) : null}
            {canOperate && !TASK_TERMINAL.includes(t.status) ? (
              <button
                type="button"
                className="secondary danger-text"
                disabled={cancel.busy}
                onClick={() => void cancel.run(async () => (await tasksApi.cancel(slug, id), task.reload(), onChanged()))}
              >
                Cancel task
              </button>
            ) : null}
            <ErrorMessage error={cancel.error} />
          </>
        )}
      </Async>
      <h3>Approvals</h3>
      <Async resource={approvals} what="approvals">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>None asked.</Empty>
          ) : (
            <ul className="policies">
              {items.map((a) => (
                <li key={a.id}>
                  {a.summary} <StatusBadge status={a.status} />
                  {a.decidedBy ? (
                    <span className="small muted">
                      {' '}
                      by {a.decidedBy}
                      {a.comment ? `: "${a.comment}"` : ''}
                    </span>
                  ) : null}
                </li>
              ))}
            </ul>
          )
        }
      </Async>
      <h3>Trace {ended ? null : <span className="spinner" aria-label="live" />}</h3>
      <ErrorMessage error={streamError} />
      {trace.length === 0 ? (
        <Empty>{ended ? 'No trace.' : 'Waiting for the first step…'}</Empty>
      ) : (
        <ol className="timeline" aria-label="Trace">
          {trace.map((e) => (
            <li key={e.id}>
              <time dateTime={e.at}>{formatDate(e.at)}</time> <code>{e.step}</code> {e.kind}{' '}
              {Object.keys(e.detail).length ? <span className="small muted">{JSON.stringify(e.detail).slice(0, 200)}</span> : null}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
