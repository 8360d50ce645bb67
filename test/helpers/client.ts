import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { TestServer } from './server.ts';

/** Every error body (and every instance status) the suite's API calls produced, scanned for host details when a test server stops. */
export const seenBodies: { what: string; text: string }[] = [];

/** Keeps an error body, or an instance's answer (status reasons), for the host-detail scan; the response stays readable. */
export function keepForScan(what: string, res: Response): void {
  if (res.status < 400 && !/\/instances(\/|$|\?)/.test(what)) return;
  if ((res.headers.get('content-type') ?? '').includes('event-stream')) return;
  void res
    .clone()
    .text()
    .then((text) => seenBodies.push({ what: `${what} → ${res.status}`, text }))
    .catch(() => undefined);
}

/** A caller of the API as a browser or script would be: a cookie jar and CSRF header, or a bearer token. */
export class ApiClient {
  readonly base: string;
  cookies = new Map<string, string>();
  csrf: string | undefined;
  bearer: string | undefined;

  constructor(base: string, opts: { bearer?: string } = {}) {
    this.base = base;
    this.bearer = opts.bearer;
  }

  async call(method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    const h: Record<string, string> = { ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    if (this.cookies.size) h['cookie'] = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (this.csrf && method !== 'GET') h['x-csrf-token'] ??= this.csrf;
    if (this.bearer) h['authorization'] = `Bearer ${this.bearer}`;
    const res = await fetch(this.base + p, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), redirect: 'manual' });
    keepForScan(`${method} ${p}`, res);
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const [k, ...v] = (pair ?? '').split('=');
      if (!k) continue;
      if (/max-age=0/i.test(c) || v.join('=') === '') this.cookies.delete(k.trim());
      else this.cookies.set(k.trim(), v.join('='));
    }
    return res;
  }

  /** Calls and parses JSON, failing loudly (with the body) when the status is not the expected one. */
  async json<T = Record<string, unknown>>(method: string, p: string, body?: unknown, expect = 200): Promise<T> {
    const res = await this.call(method, p, body);
    const text = await res.text();
    if (res.status !== expect) throw new Error(`${method} ${p}: expected ${expect}, got ${res.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }
}

export const ADMIN_EMAIL = 'admin@example.test';
export const ADMIN_PASSWORD = 'correct horse battery staple';

export async function setupCode(server: TestServer): Promise<string> {
  return (await readFile(path.join(server.config.dataDir, 'setup-code'), 'utf8')).trim();
}

/** Runs first-boot onboarding (OIDC and provider skipped) and returns the signed-in admin. */
export async function onboard(server: TestServer): Promise<ApiClient> {
  const admin = new ApiClient(server.url);
  const r = await admin.json<{ csrfToken: string }>('POST', '/api/v1/onboarding/admin', {
    email: ADMIN_EMAIL,
    password: ADMIN_PASSWORD,
    setupCode: await setupCode(server),
  });
  admin.csrf = r.csrfToken;
  await admin.json('POST', '/api/v1/onboarding/oidc', { skip: true });
  await admin.json('POST', '/api/v1/onboarding/provider', { skip: true });
  await admin.json('POST', '/api/v1/onboarding/defaults', {});
  return admin;
}

/** Two tenants, A and B, each with a tenant admin token client and ids to attack each other with. */
export async function twoTenants(server: TestServer, admin: ApiClient): Promise<{ a: TenantFixture; b: TenantFixture }> {
  const make = async (slug: string): Promise<TenantFixture> => {
    const t = await admin.json<{ id: string; slug: string }>('POST', '/api/v1/tenants', { slug, name: slug.toUpperCase() }, 201);
    const m = await admin.json<{ userId: string }>('POST', `/api/v1/tenants/${slug}/members`, { email: `owner@${slug}.test`, role: 'tenant_admin' }, 201);
    // A token minted on the host (the CLI path) stands in for the tenant admin; users from OIDC work alike.
    const { token, info } = await server.services.tokens.create(t.id, { name: 'owner', role: 'tenant_admin', createdBy: m.userId }, { actor: 'test' });
    // A key and a provider using it, so the harness can aim at another tenant's vault ids.
    const by = { actor: 'test', userId: m.userId };
    const credential = await server.services.credentials.create(t.id, { name: 'llm-key', type: 'api_key', value: `sk-fixture-${slug}-0123456789` }, by);
    const provider = await server.services.providers.create(t.id, { kind: 'openai', name: 'main', credentialId: credential.id, defaultModel: 'gpt-4o' }, by);
    // A tool grant, as a sandbox of this tenant would get one, so the harness can aim at its jti.
    const grant = await server.services.grants.request(
      { id: `fixture-${slug}`, tenantId: t.id, instanceId: 'fixture', sandboxId: 'fixture' },
      { tool: 'read', agent: 'main', context: {} },
    );
    if (grant.outcome !== 'granted') throw new Error(`fixture grant for ${slug} was not granted: ${grant.decision.explanation}`);
    // An executor pool (of a type no fixture agent has, so no fixture task is routed to it), so the harness can aim
    // at another tenant's pool id; before the instance, as a pool reserves a sandbox of the tenant's maxInstances.
    const pool = await server.services.pools.create(t.id, { agentType: 'research' }, { actor: 'test' });
    // A swarm rule (for a capability no fixture task asks for), so the harness can aim at its id.
    const swarmRule = await server.services.swarms.create(
      t.id,
      {
        name: 'fixture',
        capability: 'fixture-swarm',
        steps: [
          { agentType: 'chat', capability: 'a' },
          { agentType: 'coding', capability: 'b' },
        ],
      },
      { actor: 'test' },
    );
    // An instance recorded stopped (nothing starts), so the harness can aim at another tenant's instance id.
    const instance = await server.services.instances.deploy(t.id, { name: 'fixture', start: false }, { actor: 'test' });
    // An agent and a task (its capability matches no agent, so it fails at dispatch and nothing runs),
    // so the harness can aim at another tenant's agent and task ids (issue 8).
    const agent = await server.services.agents.create(t.id, { name: 'fixture', capabilities: ['fixture'] }, { actor: 'test' });
    const task = await server.services.tasks.create(t.id, { capability: 'fixture-nobody-has', input: `fixture task of ${slug}` }, { actor: 'test' });
    // An archived conversation and a backup record (no object behind it), so the harness can aim at their ids.
    const sessionId = `fixture-session-${slug}`;
    await server.services.archive.append(t.id, {
      instanceId: instance.id,
      sessionId,
      agent: 'main',
      actor: 'test',
      messages: [{ role: 'user', content: `hello from ${slug}` }],
    });
    // A memory and a finding (knowledge), so the harness can aim at their ids.
    const memory = await server.services.memories.create(t.id, { agent: agent.id, content: `memory of ${slug}` }, { actor: 'test' });
    const finding = await server.services.findings.create(t.id, { title: `finding of ${slug}`, taskId: task.task.id }, { actor: 'test' });
    // A project, an on-demand lane whose one step needs approval, and a run of it parked for that approval.
    const project = await server.services.lanes.createProject(t.id, { name: 'fixture', laneKinds: ['analysis'] }, { actor: 'test' });
    const lane = await server.services.lanes.createLane(
      t.id,
      {
        name: 'fixture',
        project: 'fixture',
        kind: 'analysis',
        steps: [{ name: 'approve-me', capability: 'fixture-nobody-has', input: `lane fixture of ${slug}`, requiresApproval: true }],
      },
      { actor: 'test' },
    );
    const run = await server.services.lanes.trigger(t.id, lane.id, { actor: 'test' });
    // The run reaches its approval step in its own workflow: where this server dequeues workflows (the worker
    // role), wait for it, so "parked" is true when tests look. Without a worker it stays queued, and is never decided.
    // A guard, not a timing assertion: a run that never parks fails the file instead of hanging the suite.
    for (let i = 0; server.config.replica.roles.includes('worker'); i++) {
      const status = (await server.services.lanes.getRun(t.id, run.id)).status;
      if (status === 'waiting_approval') break;
      if (i > 6000) throw new Error(`twoTenants: the fixture lane run of ${slug} is still ${status}, not parked at its approval step`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const backupId = randomUUID();
    await server.db.query(
      `INSERT INTO instance_backups (id, tenant_id, instance_id, instance_name, runtime_version, reason, object_key, size_bytes, sha256, duration_ms) VALUES ($1, $2, $3, 'fixture', '2026.9.6', 'manual', $4, 0, '', 0)`,
      [backupId, t.id, instance.id, `${t.id}/${instance.id}/${backupId}.cpbk`],
    );
    return {
      id: t.id,
      slug,
      ownerId: m.userId,
      tokenId: info.id,
      credentialId: credential.id,
      providerId: provider.id,
      grantJti: grant.jti,
      instanceId: instance.id,
      agentId: agent.id,
      taskId: task.task.id,
      sessionId,
      backupId,
      memoryId: memory.memory.id,
      findingId: finding.id,
      projectId: project.id,
      laneId: lane.id,
      runId: run.id,
      poolId: pool.id,
      swarmRuleId: swarmRule.id,
      client: new ApiClient(server.url, { bearer: token }),
    };
  };
  return { a: await make('tenant-a'), b: await make('tenant-b') };
}

export interface TenantFixture {
  id: string;
  slug: string;
  ownerId: string;
  tokenId: string;
  credentialId: string;
  providerId: string;
  /** jti of a tool grant issued to one of the tenant's sandboxes. */
  grantJti: string;
  /** An instance of the tenant (created stopped). */
  instanceId: string;
  /** An agent definition and a task of the tenant (issue 8). */
  agentId: string;
  taskId: string;
  /** A conversation in the tenant's chat archive. */
  sessionId: string;
  /** A backup record of the tenant (its object does not exist). */
  backupId: string;
  /** A memory and a finding of the tenant (knowledge). */
  memoryId: number;
  findingId: string;
  /** A project, a lane (on demand, disabled) and a run of it parked for an approval. */
  projectId: string;
  laneId: string;
  runId: string;
  /** An executor pool (agent type research). */
  poolId: string;
  /** A swarm rule. */
  swarmRuleId: string;
  client: ApiClient;
}
