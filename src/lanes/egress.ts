import type { EgressRestriction } from '../broker/egress.ts';
import type { Queryable } from '../db/pool.ts';
import { covers } from './rules.ts';

/** The rule a lane step's refused egress names. */
export const PROJECT_HOSTS_RULE = 'project.hosts';

/**
 * The host part of a repository entry (`github.com/acme/app` → `github.com`, `*.acme.test/x` → `*.acme.test`,
 * `*` → `*`): a tunnel (CONNECT) shows only the host, so that is as far as a repository entry can be enforced.
 */
export function repositoryHost(entry: string): string {
  const i = entry.indexOf('/');
  return i > 0 ? entry.slice(0, i) : entry;
}

/**
 * Projects say where their lanes may go (docs/lanes.md, "Projects reach only their hosts"): while a step of a
 * lane runs, the tenant's sandboxes may reach only hosts within that project's `hosts` and the hosts of its
 * `repositories` (patterns as in the platform rules), on top of the tenant's egress allow-list. A tunnel does
 * not say which turn opened it, and the gateway serves one turn at a time, so every running step of the tenant
 * must admit the host (fail closed).
 */
export function laneEgressRestriction(db: Queryable): EgressRestriction {
  return async (tenantId, host, port) => {
    const r = await db.query<{ lane: string; step: string; project: string; hosts: string[]; repositories: string[] }>(
      `SELECT l.name AS lane, s.name AS step, p.name AS project, p.hosts, p.repositories
         FROM lane_run_steps s JOIN lane_runs r ON r.id = s.run_id JOIN lanes l ON l.id = r.lane_id JOIN projects p ON p.id = l.project_id
        WHERE s.tenant_id = $1 AND s.status = 'running'`,
      [tenantId],
    );
    for (const x of r.rows) {
      const patterns = [...x.hosts, ...x.repositories.map(repositoryHost)];
      if (patterns.some((p) => covers(p, host) || covers(p, `${host}:${port}`))) continue;
      return {
        rule: PROJECT_HOSTS_RULE,
        message: `Refused by rule "${PROJECT_HOSTS_RULE}": ${host}:${port} is not within the hosts of project "${x.project}" (step "${x.step}" of lane "${x.lane}" is running; allowed: ${patterns.length ? patterns.join(', ') : 'none'}). A tenant admin can add it to the project.`,
      };
    }
    return null;
  };
}
