import { poolsApi, type ExecutorPool } from '../../api.ts';
import { Async, Empty, ErrorMessage, useAction } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/**
 * Executor pools (docs/adr/0014-executor-pools.md): per agent type, its shards, what waits and what runs.
 * Members and tenant admins pause (start nothing new), drain (finish in flight, refuse new tasks) and resume.
 * Defining pools reserves quota and is done through the API (POST …/pools).
 */
export function PoolsTab({ tenant, role }: TabProps) {
  const slug = tenant.slug;
  const pools = useResource(async () => (role ? poolsApi.list(slug) : undefined), [slug, role], { pollMs: 5000 });
  const action = useAction();
  if (!role) return <NotAMember what="executor pools" />;
  const canOperate = role !== 'viewer' && tenant.status === 'active';
  const op = (p: ExecutorPool, which: 'pause' | 'drain' | 'resume') =>
    action.run(async () => {
      await poolsApi.setState(slug, p.id, which);
      pools.reload();
    });
  return (
    <>
      <h2>Executor pools</h2>
      <ErrorMessage error={action.error} />
      <Async resource={pools} what="executor pools">
        {(d) =>
          !d || d.items.length === 0 ? (
            <Empty>
              No executor pools: tasks run on the tenant's shared instance (shell and browser agents on their own). Define pools with POST /api/v1/tenants/
              {slug}/pools.
            </Empty>
          ) : (
            <table>
              <caption className="sr-only">Executor pools</caption>
              <thead>
                <tr>
                  <th scope="col">Agent type</th>
                  <th scope="col">Risk</th>
                  <th scope="col">Shards</th>
                  <th scope="col">Running per shard</th>
                  <th scope="col">Sandboxes</th>
                  <th scope="col">Waiting per shard</th>
                  <th scope="col">In flight</th>
                  <th scope="col">State</th>
                  {canOperate ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {d.items.map((p) => (
                  <tr key={p.id}>
                    <td>{p.agentType}</td>
                    <td>
                      <span className={`badge ${p.riskClass === 'high' ? 'badge-warning' : ''}`}>{p.riskClass}</span>
                    </td>
                    <td className="num">{p.shards}</td>
                    <td className="num">
                      {p.activeExecutors.join(' / ')} ({p.minExecutors}–{p.maxExecutors})
                    </td>
                    <td className="num">{p.sandboxes}</td>
                    <td className="num">{p.queueDepth.join(' / ')}</td>
                    <td className="num">{p.inFlight}</td>
                    <td>{p.drained ? 'drained' : p.state}</td>
                    {canOperate ? (
                      <td className="cell-actions">
                        {p.state === 'active' ? (
                          <>
                            <button type="button" className="secondary" disabled={action.busy} onClick={() => void op(p, 'pause')}>
                              Pause <span className="sr-only">{p.agentType}</span>
                            </button>
                            <button type="button" className="secondary" disabled={action.busy} onClick={() => void op(p, 'drain')}>
                              Drain <span className="sr-only">{p.agentType}</span>
                            </button>
                          </>
                        ) : (
                          <button type="button" className="secondary" disabled={action.busy} onClick={() => void op(p, 'resume')}>
                            Resume <span className="sr-only">{p.agentType}</span>
                          </button>
                        )}
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
    </>
  );
}
