import { api2 } from '../api.ts';
import { Async } from '../components/ui.tsx';
import { useMe } from '../session.tsx';
import { useResource } from '../useResource.ts';

/** The control-plane replicas on this database (platform admins): roles, node, heartbeat, takeovers. */
export function ReplicasPage() {
  const me = useMe();
  if (!me.user.platformAdmin) {
    return (
      <section>
        <h1>Replicas</h1>
        <p className="notice info">The control-plane replicas are shown to platform admins.</p>
      </section>
    );
  }
  return <ReplicaList />;
}

function ReplicaList() {
  const replicas = useResource(() => api2.replicas.list(), []);
  return (
    <section>
      <h1>Replicas</h1>
      <p>
        Every <code>clawplane serve</code> process on this database. A replica silent longer than its expiry is dead: its claims lapse and one live replica
        takes over its workflows.
      </p>
      <Async resource={replicas} what="the replicas">
        {(r) => (
          <table aria-label="Replicas">
            <thead>
              <tr>
                <th scope="col">Replica</th>
                <th scope="col">State</th>
                <th scope="col">Roles</th>
                <th scope="col">Node</th>
                <th scope="col">Version</th>
                <th scope="col">Started</th>
                <th scope="col">Last heartbeat</th>
                <th scope="col">Taken over by</th>
              </tr>
            </thead>
            <tbody>
              {r.items.map((x) => (
                <tr key={x.id}>
                  <td>
                    <code>{x.id}</code>
                    {x.self ? <span className="badge">this one</span> : null}
                  </td>
                  <td>{x.state}</td>
                  <td>{x.roles.join(', ')}</td>
                  <td>{x.node}</td>
                  <td>{x.version}</td>
                  <td>{new Date(x.startedAt).toLocaleString()}</td>
                  <td>{new Date(x.heartbeatAt).toLocaleString()}</td>
                  <td>{x.recoveredBy ? `${x.recoveredBy} (${x.recoveredWorkflows ?? 0} workflows)` : ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Async>
    </section>
  );
}
