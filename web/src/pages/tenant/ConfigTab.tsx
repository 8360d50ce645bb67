import { useState } from 'react';
import { api2, type GatewayConfigVersion } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, formatDate, Pager, StatusBadge, useAction } from '../../components/ui.tsx';
import { usePaged } from '../../usePaged.ts';
import { useResource } from '../../useResource.ts';
import type { TabProps } from './TenantPage.tsx';

/**
 * The gateway configuration history (docs/adr/0013-gateway-config-versions.md): every version with its author,
 * reason, status and diff; tenant admins approve or reject pending ones (not their own) and roll back to any.
 */
export function ConfigTab({ tenant, role, platformAdmin }: TabProps) {
  const slug = tenant.slug;
  const versions = usePaged((cursor) => api2.gatewayConfig.list(slug, { cursor }), [slug]);
  const rules = useResource(() => api2.gatewayConfig.rules(slug), [slug]);
  const canManage = platformAdmin || role === 'tenant_admin';
  const [open, setOpen] = useState<number | null>(null);
  return (
    <>
      <h2>Gateway configuration</h2>
      <Async resource={rules} what="review rules">
        {(r) => (
          <p className="hint">
            {r.review.length ? `Changes of kind ${r.review.join(', ')} wait for a second tenant admin.` : 'Every change applies at once.'}{' '}
            {r.heartbeatMinMinutes !== null ? `Heartbeat cap: every ${r.heartbeatMinMinutes} minutes at most.` : 'No heartbeat cap.'}{' '}
            {r.cronMinMinutes !== null ? `Cron cap: each job at most every ${r.cronMinMinutes} minutes.` : 'No cron cap.'}{' '}
            {Object.entries(r.agentCaps)
              .map(
                ([agent, c]) =>
                  `Agent ${agent}: ${[c.heartbeatMinMinutes ? `heartbeat every ${c.heartbeatMinMinutes} min` : '', c.cronMinMinutes ? `cron every ${c.cronMinMinutes} min` : ''].filter(Boolean).join(', ') || 'the tenant caps'}.`,
              )
              .join(' ')}{' '}
            Scheduled model calls beyond a cap are refused by the broker with the cap&apos;s name. A version that does not come up healthy is rolled back to the
            last known good one by itself.
          </p>
        )}
      </Async>
      <Async resource={versions} what="configuration versions">
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No version yet: the first start of a gateway records one.</Empty>
          ) : (
            <table>
              <caption className="sr-only">Configuration versions of {tenant.name}</caption>
              <thead>
                <tr>
                  <th scope="col">Version</th>
                  <th scope="col">Status</th>
                  <th scope="col">Kinds</th>
                  <th scope="col">Author</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Created</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {items.map((v) => (
                  <VersionRow
                    key={v.id}
                    v={v}
                    slug={slug}
                    canManage={canManage}
                    open={open === v.number}
                    onToggle={() => setOpen(open === v.number ? null : v.number)}
                    onChanged={versions.reload}
                  />
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      <Pager label="Configuration versions" page={versions.page} next={versions.next} prev={versions.prev} />
    </>
  );
}

function VersionRow({
  v,
  slug,
  canManage,
  open,
  onToggle,
  onChanged,
}: {
  v: GatewayConfigVersion;
  slug: string;
  canManage: boolean;
  open: boolean;
  onToggle: () => void;
  onChanged: () => void;
}) {
  const action = useAction();
  const act = (fn: () => Promise<unknown>) =>
    action.run(async () => {
      await fn();
      onChanged();
    });
  return (
    <>
      <tr>
        <td>{v.number}</td>
        <td>
          <StatusBadge status={v.status} />
          {v.statusReason ? <div className="hint">{v.statusReason}</div> : null}
          {v.appliedHow ? (
            <div className="hint">{v.appliedHow === 'hot' ? 'Applied without a restart (reloaded in place).' : 'Applied by a gateway start.'}</div>
          ) : null}
        </td>
        <td>{v.kinds.join(', ')}</td>
        <td>{v.author}</td>
        <td>{v.reason}</td>
        <td>{formatDate(v.createdAt)}</td>
        <td>
          <button type="button" className="secondary" aria-expanded={open} onClick={onToggle}>
            {open ? 'Hide changes' : `Changes (${v.diff.length})`}
          </button>
          {canManage && v.status === 'pending' ? (
            <>
              <button type="button" disabled={action.busy} onClick={() => void act(() => api2.gatewayConfig.approve(slug, v.number))}>
                Approve
              </button>
              <ConfirmButton
                label="Reject"
                confirmLabel={`Reject version ${v.number}`}
                onConfirm={() => act(() => api2.gatewayConfig.reject(slug, v.number, 'rejected in the console'))}
              />
            </>
          ) : null}
          {canManage && v.status !== 'pending' ? (
            <ConfirmButton
              label="Roll back to this"
              confirmLabel={`Roll back to version ${v.number}`}
              onConfirm={() => act(() => api2.gatewayConfig.rollback(slug, v.number, `rolled back to version ${v.number} in the console`))}
            />
          ) : null}
          <ErrorMessage error={action.error} />
        </td>
      </tr>
      {open ? (
        <tr>
          <td colSpan={7}>
            {v.diff.length === 0 ? (
              <Empty>No change against the version before.</Empty>
            ) : (
              <ul className="diff">
                {v.diff.map((d) => (
                  <li key={`${d.op}:${d.path}`}>
                    <code>{d.path}</code> {d.op}
                    {d.op !== 'added' ? (
                      <>
                        {' '}
                        from <code>{JSON.stringify(d.from)}</code>
                      </>
                    ) : null}
                    {d.op !== 'removed' ? (
                      <>
                        {' '}
                        to <code>{JSON.stringify(d.to)}</code>
                      </>
                    ) : null}
                  </li>
                ))}
              </ul>
            )}
          </td>
        </tr>
      ) : null}
    </>
  );
}
