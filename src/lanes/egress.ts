import type { EgressRestriction } from '../broker/egress.ts';
import type { Queryable } from '../db/pool.ts';
import { covers } from './rules.ts';
import type { Project } from './types.ts';

/** The rules a lane step's refused egress names (docs/lanes.md, "Projects reach only what they list"). */
export const PROJECT_HOSTS_RULE = 'project.hosts';
export const PROJECT_REPOSITORIES_RULE = 'project.repositories';
export const PROJECT_DATA_SOURCES_RULE = 'project.dataSources';

/**
 * Hosts whose URLs name a repository of another host: GitHub's REST API, raw files and archives all name
 * `github.com/{owner}/{repo}` repositories.
 */
const GIT_ALIASES: Record<string, string> = { 'api.github.com': 'github.com', 'raw.githubusercontent.com': 'github.com', 'codeload.github.com': 'github.com' };
/** API hosts: only their `/repos/{owner}/{repo}` paths name a repository. */
const API_HOSTS = new Set(['api.github.com']);

/** An allow-list entry split into its host part and its path part (null: the whole host). A scheme is ignored. */
const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

export function splitEntry(raw: string): { host: string; path: string | null } {
  const s = raw.replace(SCHEME, '');
  const i = s.indexOf('/');
  if (i < 0) return { host: s.toLowerCase(), path: null };
  const path = s.slice(i);
  return { host: s.slice(0, i).toLowerCase(), path: path === '/' || path === '/*' ? null : path };
}

/** The host part of a repository entry (`github.com/acme/app` → `github.com`, `*` → `*`). */
export function repositoryHost(entry: string): string {
  return splitEntry(entry).host;
}

/**
 * The repository a URL names, as `host/owner/repo` in lower case (GitHub and GitLab names are case-insensitive),
 * or null when it names none. Understood: `/{owner}/{repo}[.git]/…` (web and smart-HTTP git), GitHub's REST
 * `/repos/{owner}/{repo}` (also under `/api/v3`, GitHub Enterprise), GitLab's `/api/v4/projects/{owner%2Frepo}`;
 * `api.github.com`, `raw.githubusercontent.com` and `codeload.github.com` name repositories of `github.com`.
 */
export function repositoryOf(host: string, path: string): string | null {
  const h = host.toLowerCase();
  const canonical = GIT_ALIASES[h] ?? h;
  const segs = path.split('/').filter((s) => s !== '');
  const key = (owner: string | undefined, repo: string | undefined) =>
    owner && repo ? `${canonical}/${owner}/${repo.replace(/\.git$/i, '')}`.toLowerCase() : null;
  if (segs[0] === 'repos') return key(segs[1], segs[2]);
  if (segs[0] === 'api' && segs[1] === 'v3' && segs[2] === 'repos') return key(segs[3], segs[4]);
  if (segs[0] === 'api' && segs[1] === 'v4' && segs[2] === 'projects' && segs[3]) {
    let id: string;
    try {
      id = decodeURIComponent(segs[3]);
    } catch {
      return null;
    }
    const [owner, ...rest] = id.split('/');
    return rest.length ? key(owner, rest.join('/')) : null;
  }
  if (API_HOSTS.has(h) || segs[0] === 'api') return null;
  return key(segs[0], segs[1]);
}

type Lists = Pick<Project, 'name' | 'hosts' | 'repositories' | 'dataSources'>;
export interface Refusal {
  rule: string;
  why: string;
  /** For `project.hosts`: every host the project names. */
  allowed?: string;
}

const hostIn = (pattern: string, host: string, port: number) => covers(pattern, host) || covers(pattern, `${host}:${port}`);

/** Whether a data source entry (a URL prefix: `host/path`, `host/path*`) admits `host[:port]/path`. */
function inDataSource(entry: string, host: string, port: number, path: string): boolean {
  const e = splitEntry(entry);
  if (!hostIn(e.host, host, port)) return false;
  // An encoded separator could be decoded upstream into a path outside the prefix.
  if (/%2f|%5c/i.test(path)) return false;
  if (e.path === null) return true;
  if (e.path.endsWith('*')) return path.startsWith(e.path.slice(0, -1));
  return path === e.path || path.startsWith(e.path.endsWith('/') ? e.path : `${e.path}/`);
}

/**
 * Whether a project admits a way out of a lane step (docs/lanes.md, "Projects reach only what they list").
 * `path` is the URL path when the broker sees it (skill routes), undefined for a tunnel (CONNECT shows only the
 * host). Rules, in order:
 * - a URL within a data source the project lists is admitted;
 * - repositories restrict their hosts: on a host a repository entry names (or its API/raw/archive alias), a URL
 *   naming a repository must name one the project lists (`project.repositories`), whatever `hosts` says; a
 *   tunnel there is refused unless the project lists every repository on it (`host/*`): it would hide which;
 * - `hosts` admit the whole host;
 * - a data source is a URL prefix (`data.acme.com/exports` admits `…/exports/…`, never `/exports2`), so any
 *   other URL on a data-source host is refused (`project.dataSources`); so is a tunnel to a host reached only
 *   through path-limited data sources: it would hide the path.
 */
export function judgeEgress(p: Lists, rawHost: string, port: number, path?: string): Refusal | null {
  const host = rawHost.toLowerCase();
  const canonical = GIT_ALIASES[host] ?? host;
  const repos = p.repositories
    .map((r) => ({ raw: r.replace(SCHEME, '').toLowerCase(), ...splitEntry(r) }))
    .filter((e) => hostIn(e.host, canonical, port) || hostIn(e.host, host, port));
  const repoWide = repos.some((e) => e.path === null);
  const inHosts = p.hosts.some((h) => hostIn(h.toLowerCase(), host, port));
  const data = p.dataSources.filter((d) => hostIn(splitEntry(d).host, host, port));
  const listed = (xs: string[]) => (xs.length ? xs.join(', ') : 'none');
  // A data source the project lists is admitted even on a repository host: the tenant named that prefix.
  if (path !== undefined && data.some((d) => inDataSource(d, host, port, path))) return null;
  if (repos.length && !repoWide) {
    if (path === undefined) {
      return {
        rule: PROJECT_REPOSITORIES_RULE,
        why: `${host}:${port} hosts repositories and project "${p.name}" allows only some of them (${listed(repos.map((e) => e.raw))}); a tunnel would hide which repository is reached, so call it through a skill endpoint (/skills/<name>/…), where the broker sees the path`,
      };
    }
    const repo = repositoryOf(host, path);
    if (repo !== null) {
      if (repos.some((e) => covers(e.raw, repo))) return null;
      return {
        rule: PROJECT_REPOSITORIES_RULE,
        why: `repository ${repo} is not among the repositories of project "${p.name}" (${listed(repos.map((e) => e.raw))})`,
      };
    }
  }
  if (inHosts || repoWide) return null;
  if (data.length) {
    if (path === undefined) {
      if (data.some((d) => splitEntry(d).path === null)) return null;
      return {
        rule: PROJECT_DATA_SOURCES_RULE,
        why: `${host}:${port} is reachable only through the data sources of project "${p.name}" (${listed(data)}); a tunnel would hide the path, so call it through a skill endpoint (/skills/<name>/…)`,
      };
    }
    return { rule: PROJECT_DATA_SOURCES_RULE, why: `${host}${path} is not within the data sources of project "${p.name}" (${listed(data)})` };
  }
  if (repos.length) {
    return {
      rule: PROJECT_REPOSITORIES_RULE,
      why: `${host}${path ?? ''} names no repository, and project "${p.name}" allows only its repositories on ${host} (${listed(repos.map((e) => e.raw))})`,
    };
  }
  const allowed = [...p.hosts, ...p.repositories.map(repositoryHost), ...p.dataSources.map((d) => splitEntry(d).host)];
  return { rule: PROJECT_HOSTS_RULE, why: `${host}:${port} is not within the hosts of project "${p.name}"`, allowed: listed([...new Set(allowed)]) };
}

/**
 * Projects say where their lanes may go: while a step of a lane runs, the tenant's sandboxes may reach only what
 * that project admits (`judgeEgress`), on top of the tenant's egress allow-list. A tunnel does not say which
 * turn opened it, and the gateway serves one turn at a time, so every running step of the tenant must admit
 * the way out (fail closed). Check steps run no turn (no task), so they restrict nothing.
 */
export function laneEgressRestriction(db: Queryable): EgressRestriction {
  return async (tenantId, host, port, path) => {
    const r = await db.query<{ lane: string; step: string; project: string; hosts: string[]; repositories: string[]; data_sources: string[] }>(
      `SELECT l.name AS lane, s.name AS step, p.name AS project, p.hosts, p.repositories, p.data_sources
         FROM lane_run_steps s JOIN lane_runs r ON r.id = s.run_id JOIN lanes l ON l.id = r.lane_id JOIN projects p ON p.id = l.project_id
        WHERE s.tenant_id = $1 AND s.status = 'running' AND s.task_id IS NOT NULL`,
      [tenantId],
    );
    for (const x of r.rows) {
      const refused = judgeEgress({ name: x.project, hosts: x.hosts, repositories: x.repositories, dataSources: x.data_sources }, host, port, path);
      if (!refused) continue;
      const running = `step "${x.step}" of lane "${x.lane}" is running${refused.allowed === undefined ? '' : `; allowed: ${refused.allowed}`}`;
      return { rule: refused.rule, message: `Refused by rule "${refused.rule}": ${refused.why} (${running}). A tenant admin can add it to the project.` };
    }
    return null;
  };
}
