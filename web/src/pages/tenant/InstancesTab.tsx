import { useEffect, useRef, useState, type FormEvent } from 'react';
import { api2, TRANSITIONAL, type Instance, type LogLine } from '../../api.ts';
import { Async, Empty, ErrorMessage, Field, formatDate, Pager, SearchBox, StatusBadge, useAction } from '../../components/ui.tsx';
import { useDebounced, usePaged } from '../../usePaged.ts';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/** How often the list is re-read while an instance is provisioning, upgrading or being destroyed. */
const POLL_MS = 2000;

export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u] ?? 'B'}`;
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** Uptime: since the oldest executor that is up started. */
function uptime(i: Instance): string {
  if (i.status !== 'running' || !i.health) return '—';
  const starts = i.health.executors.filter((e) => e.startedAt && e.state !== 'stopped').map((e) => new Date(e.startedAt ?? '').getTime());
  if (starts.length === 0) return '—';
  return formatDuration(Date.now() - Math.min(...starts));
}

/** Instances: the tenant's OpenClaw gateways with their lifecycle, logs and history. */
export function InstancesTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="instances" />;
  return <Instances slug={tenant.slug} canOperate={role !== 'viewer' && tenant.status === 'active'} suspended={tenant.status !== 'active'} />;
}

function Instances({ slug, canOperate, suspended }: { slug: string; canOperate: boolean; suspended: boolean }) {
  const [search, setSearch] = useState('');
  const q = useDebounced(search.trim());
  const list = usePaged((cursor) => api2.instances.list(slug, { q: q || undefined, cursor }), [slug, q]);
  const [selected, setSelected] = useState<string | undefined>(undefined);
  const busy = list.data?.items.some((i) => TRANSITIONAL.includes(i.status) || (i.desiredState === 'running' && i.status === 'stopped')) ?? false;
  const { reload } = list;
  // Poll while the reconciler is converging, so "provisioning…" turns into "running" (or an error) by itself.
  useEffect(() => {
    if (!busy) return;
    const t = setInterval(reload, POLL_MS);
    return () => clearInterval(t);
  }, [busy, reload]);
  const current = list.data?.items.find((i) => i.id === selected);
  return (
    <>
      {suspended ? <p className="notice info">The tenant is suspended: its instances cannot be deployed or started.</p> : null}
      {canOperate ? <DeployForm slug={slug} onDeployed={(i) => (setSelected(i.id), list.reload())} /> : null}
      <h2>Instances</h2>
      <div className="list-controls" role="search">
        <SearchBox label="Find instances" placeholder="name" value={search} onChange={setSearch} />
      </div>
      {busy ? (
        <p className="notice info" role="status">
          Waking… the reconciler is working on an instance; this list refreshes every {POLL_MS / 1000} s.
        </p>
      ) : null}
      <Async resource={list} what="instances">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No instances yet. {canOperate ? 'Deploy one above: it runs an OpenClaw gateway for this tenant.' : ''}</Empty>
          ) : (
            <table>
              <caption className="sr-only">Instances</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Status</th>
                  <th scope="col">Runtime</th>
                  <th scope="col">Uptime</th>
                  <th scope="col">Memory</th>
                  <th scope="col">Updated</th>
                  <th scope="col">Details</th>
                </tr>
              </thead>
              <tbody>
                {items.map((i) => (
                  <tr key={i.id} aria-selected={i.id === selected}>
                    <td>{i.name}</td>
                    <td>
                      <StatusBadge status={i.status} />
                      {TRANSITIONAL.includes(i.status) ? <span className="spinner" aria-hidden="true" /> : null}
                      {i.statusReason ? <div className="small muted">{i.statusReason}</div> : null}
                    </td>
                    <td>
                      <code>{i.runtimeVersion}</code>
                      {i.previousRuntimeVersion ? <div className="small muted">was {i.previousRuntimeVersion}</div> : null}
                    </td>
                    <td>{uptime(i)}</td>
                    <td>{formatBytes(i.health?.supervisorRssBytes)}</td>
                    <td>{formatDate(i.updatedAt)}</td>
                    <td>
                      <button
                        type="button"
                        className="secondary"
                        aria-expanded={i.id === selected}
                        onClick={() => setSelected(i.id === selected ? undefined : i.id)}
                      >
                        {i.id === selected ? `Hide ${i.name}` : `Manage ${i.name}`}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      <Pager label="Instances" page={list.page} next={list.next} prev={list.prev} />
      {current ? (
        <InstanceDetail
          key={current.id}
          slug={slug}
          instance={current}
          canOperate={canOperate}
          onChanged={list.reload}
          onGone={() => (setSelected(undefined), list.reload())}
        />
      ) : null}
    </>
  );
}

function DeployForm({ slug, onDeployed }: { slug: string; onDeployed: (i: Instance) => void }) {
  const [name, setName] = useState('main');
  const [version, setVersion] = useState('');
  const [executors, setExecutors] = useState('1');
  const [start, setStart] = useState(true);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const i = await api2.instances.deploy(slug, {
        name: name.trim(),
        executors: Number(executors),
        start,
        ...(version.trim() ? { runtimeVersion: version.trim() } : {}),
      });
      onDeployed(i);
    });
  };
  return (
    <form className="card" onSubmit={submit} aria-label="Deploy an instance">
      <h2>Deploy an instance</h2>
      <div className="row">
        <Field label="Instance name" hint='Lowercase letters, digits and inner hyphens, e.g. "main".'>
          {(id, d) => <input id={id} aria-describedby={d} required value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Field label="OpenClaw version (optional)" hint="e.g. openclaw@2026.6.1; empty: the platform default.">
          {(id, d) => <input id={id} aria-describedby={d} value={version} onChange={(e) => setVersion(e.target.value)} />}
        </Field>
        <Field label="Gateway processes">
          {(id) => <input id={id} type="number" min={1} max={8} required value={executors} onChange={(e) => setExecutors(e.target.value)} />}
        </Field>
      </div>
      <label className="check">
        <input type="checkbox" checked={start} onChange={(e) => setStart(e.target.checked)} /> Start it now
      </label>
      <ErrorMessage error={action.error} />
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Deploying…' : 'Deploy'}
      </button>
    </form>
  );
}

function InstanceDetail({
  slug,
  instance: i,
  canOperate,
  onChanged,
  onGone,
}: {
  slug: string;
  instance: Instance;
  canOperate: boolean;
  onChanged: () => void;
  onGone: () => void;
}) {
  const events = useResource(() => api2.instances.events(slug, i.id), [slug, i.id, i.status, i.updatedAt]);
  const action = useAction();
  const op = (what: 'stop' | 'start' | 'restart' | 'suspend') => void action.run(async () => (await api2.instances.op(slug, i.id, what), onChanged()));
  const running = i.desiredState === 'running';
  return (
    <section className="card" aria-label={`Instance ${i.name}`}>
      <h2>
        {i.name} <StatusBadge status={i.status} />
      </h2>
      <p className="muted">
        {i.statusReason ? `${i.statusReason.replace(/\.$/, '')}.` : 'No status reason recorded.'} Desired state: <strong>{i.desiredState}</strong>.{' '}
        {i.executors} gateway process{i.executors === 1 ? '' : 'es'}.
        {i.health ? ` Health: ${i.health.ready ? 'ready' : 'not ready'} (checked ${formatDate(i.healthCheckedAt)}).` : ''}
      </p>
      {canOperate ? (
        <div className="actions spaced">
          <button type="button" disabled={action.busy || running} onClick={() => op('start')}>
            {/* A suspended instance starts from its process snapshot (issue 10). */}
            {i.status === 'suspended' ? 'Resume' : 'Start'}
          </button>
          <button type="button" className="secondary" disabled={action.busy || !running} onClick={() => op('stop')}>
            Stop
          </button>
          <button type="button" className="secondary" disabled={action.busy || !running} onClick={() => op('restart')}>
            Restart
          </button>
          {/* Warm resume (issue 10): the API says why when this host cannot suspend. */}
          <button type="button" className="secondary" disabled={action.busy || i.status !== 'running'} onClick={() => op('suspend')}>
            Suspend
          </button>
        </div>
      ) : null}
      <ErrorMessage error={action.error} />
      {canOperate ? <UpgradeForm slug={slug} instance={i} onDone={onChanged} /> : null}
      {i.health && i.health.executors.length > 0 ? (
        <>
          <h3>Gateway processes</h3>
          <table>
            <caption className="sr-only">Gateway processes of {i.name}</caption>
            <thead>
              <tr>
                <th scope="col">Process</th>
                <th scope="col">State</th>
                <th scope="col">Restarts</th>
                <th scope="col">Started</th>
                <th scope="col">Last exit</th>
              </tr>
            </thead>
            <tbody>
              {i.health.executors.map((e) => (
                <tr key={e.id}>
                  <td>{e.id}</td>
                  <td>
                    <StatusBadge status={e.state} />
                  </td>
                  <td>{e.restarts}</td>
                  <td>{formatDate(e.startedAt)}</td>
                  <td>{e.lastExit ? `${e.lastExit.signal ?? `code ${String(e.lastExit.code)}`} at ${formatDate(e.lastExit.at)}` : '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
      <h3>History</h3>
      <Async resource={events} what="the history">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No status changes yet.</Empty>
          ) : (
            <ol className="timeline" aria-label={`History of ${i.name}`}>
              {[...items].reverse().map((e, n) => (
                <li key={`${e.at}-${n}`}>
                  <time dateTime={e.at}>{formatDate(e.at)}</time> {e.fromStatus ?? '—'} → <StatusBadge status={e.toStatus} />{' '}
                  <span className="muted">{e.reason}</span> <span className="small muted">by {e.actor}</span>
                </li>
              ))}
            </ol>
          )
        }
      </Async>
      <Logs slug={slug} instance={i} />
      {canOperate ? <DestroyForm slug={slug} instance={i} onDestroyed={onGone} /> : null}
    </section>
  );
}

function UpgradeForm({ slug, instance: i, onDone }: { slug: string; instance: Instance; onDone: () => void }) {
  const [version, setVersion] = useState('');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await api2.instances.upgrade(slug, i.id, version.trim());
      setVersion('');
      onDone();
    });
  };
  return (
    <form onSubmit={submit} aria-label={`Upgrade ${i.name}`} className="inline-form">
      {/* No runtime list API yet: the version is typed (the server checks it exists and is intact). */}
      <Field label="Upgrade to version" hint={`Currently ${i.runtimeVersion}. State is kept; a version that fails its health check is rolled back.`}>
        {(id, d) => <input id={id} aria-describedby={d} required value={version} placeholder="openclaw@…" onChange={(e) => setVersion(e.target.value)} />}
      </Field>
      <button type="submit" className="secondary" disabled={action.busy}>
        {action.busy ? 'Upgrading…' : 'Upgrade'}
      </button>
      <ErrorMessage error={action.error} />
    </form>
  );
}

/** Destroying needs the instance's name typed: a slip of the mouse cannot delete a gateway. */
function DestroyForm({ slug, instance: i, onDestroyed }: { slug: string; instance: Instance; onDestroyed: () => void }) {
  const [typed, setTyped] = useState('');
  const [deleteState, setDeleteState] = useState(false);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await api2.instances.destroy(slug, i.id, deleteState);
      onDestroyed();
    });
  };
  return (
    <form onSubmit={submit} aria-label={`Destroy ${i.name}`} className="danger-zone">
      <h3>Destroy</h3>
      <Field label={`Type "${i.name}" to destroy this instance`}>
        {(id) => <input id={id} autoComplete="off" value={typed} onChange={(e) => setTyped(e.target.value)} />}
      </Field>
      <label className="check">
        <input type="checkbox" checked={deleteState} onChange={(e) => setDeleteState(e.target.checked)} /> Also delete its sessions, memory and workspace
      </label>
      <ErrorMessage error={action.error} />
      <button type="submit" className="danger" disabled={action.busy || typed !== i.name}>
        {action.busy ? 'Destroying…' : `Destroy ${i.name}`}
      </button>
    </form>
  );
}

/** The last lines of the supervisor and gateway logs; "Follow" streams new ones (SSE). */
function Logs({ slug, instance: i }: { slug: string; instance: Instance }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [follow, setFollow] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [loaded, setLoaded] = useState(false);
  const box = useRef<HTMLPreElement>(null);

  useEffect(() => {
    if (follow) return;
    let live = true;
    api2.instances.logs(slug, i.id).then(
      (r) => live && (setLines(r.items), setLoaded(true), setError(undefined)),
      (e: unknown) => live && (setError(e), setLoaded(true)),
    );
    return () => {
      live = false;
    };
  }, [slug, i.id, follow]);

  useEffect(() => {
    if (!follow) return;
    setLines([]);
    setError(undefined);
    const es = new EventSource(api2.instances.followUrl(slug, i.id, 100));
    es.addEventListener('log', (ev) => {
      const l = JSON.parse((ev as MessageEvent<string>).data) as LogLine;
      setLines((prev) => [...prev.slice(-999), l]);
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setError(new Error('The log stream closed. Turn "Follow" off and on to reconnect.'));
    };
    return () => es.close();
  }, [slug, i.id, follow]);

  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines, follow]);

  return (
    <>
      <h3>Logs</h3>
      <label className="check">
        <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} /> Follow (live)
      </label>
      <ErrorMessage error={error} />
      {!loaded && !follow ? (
        <p className="loading">Loading logs…</p>
      ) : lines.length === 0 ? (
        <Empty>{follow ? 'Waiting for log lines…' : 'No log lines.'}</Empty>
      ) : (
        <pre className="logs" ref={box} tabIndex={0} aria-label={`Logs of ${i.name}`}>
          {lines.map((l) => `[${l.source}] ${l.line}`).join('\n')}
        </pre>
      )}
    </>
  );
}
