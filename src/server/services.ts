import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { ApiTokenService } from '../identity/api-tokens.ts';
import { OidcService, type PlatformSecrets } from '../identity/oidc.ts';
import { OnboardingService } from '../identity/onboarding.ts';
import { SessionService } from '../identity/sessions.ts';
import { UserService } from '../identity/users.ts';
import { TenantService } from '../tenancy/tenants.ts';
import { dbKeyVersionStore, LocalKeyProvider } from '../vault/local-key-provider.ts';
import { Vault } from '../vault/vault.ts';
import { CredentialService } from '../vault/credentials.ts';
import { ProviderService } from '../vault/providers.ts';
import { createSkillRegistry, type SkillRegistry } from '../vault/skills.ts';
import type { EgressPolicy } from '../net/ssrf.ts';
import { NotFoundError } from '../errors.ts';
import { parseConfig } from '../config/schema.ts';
import { PolicyService } from '../policy/service.ts';
import type { ToolRestrictions } from '../runtime/config.ts';
import { GRANT_MAX_TTL_SECONDS, GrantService, grantRoutes } from '../broker/grants.ts';
import { GrantKeyring } from '../broker/grant-keys.ts';
import { TaskTags } from '../broker/task-tag.ts';
import { getRequestListener } from '@hono/node-server';
import path from 'node:path';
import { Registry } from 'prom-client';
import { Broker } from '../broker/broker.ts';
import { BrokerGovernance } from '../broker/governance.ts';
import { PlatformProvider } from '../broker/platform-provider.ts';
import { createLogger, type Logger } from '../observability/logger.ts';
import type { ClaimIdentity } from '../replicas/claims.ts';
import { createInstanceServices, instanceSettings, type InstanceServices, type InstanceSettings } from '../instances/setup.ts';
import { createIngressServices, createObjectStore, ingressSettings, type IngressServices, type IngressSettings } from '../ingress/setup.ts';
import { createLaneServices, type LaneServices } from '../lanes/setup.ts';
import { laneEgressRestriction } from '../lanes/egress.ts';
import { readOnlyRestriction } from '../lanes/read-only.ts';
import { createTaskServices, type TaskServices } from '../tasks/setup.ts';
import { DEFAULT_TASK_SETTINGS, type TaskSettings } from '../tasks/types.ts';
import { AgentService } from '../tasks/agents.ts';
import { createKnowledgeServices, type KnowledgeServices } from '../knowledge/setup.ts';
import { knowledgeBrokerRoutes } from '../knowledge/broker-routes.ts';
import { SessionIngest, type IngestSettings } from '../knowledge/ingest.ts';
import { governanceBrokerRoutes } from '../governance/broker-routes.ts';
import { ScheduledCaps } from '../governance/scheduled.ts';
import { ApprovalDelivery, type ChatApis } from '../governance/approval-delivery.ts';

/** Every service the API and CLI use, built once from the database and configuration. */
export interface Services extends InstanceServices, IngressServices, TaskServices, KnowledgeServices, LaneServices {
  /** The typed event channel: cache invalidations and reactions, in this process and across replicas. */
  events: EventChannel;
  /** Summaries of finished conversations and tasks into the archive (docs/adr/0007). */
  sessionIngest: SessionIngest;
  tenants: TenantService;
  users: UserService;
  sessions: SessionService;
  tokens: ApiTokenService;
  onboarding: OnboardingService;
  oidc: OidcService;
  vault: Vault;
  credentials: CredentialService;
  providers: ProviderService;
  skills: SkillRegistry;
  /** The SSRF rules every user-supplied URL goes through (provider test connection, the broker). */
  egress: EgressPolicy;
  /** Tool policy: the Cedar baseline, tenant restrictions, the tool registry (issue 5). */
  policy: PolicyService;
  /** Short-lived scoped tool grants for sandboxes (issue 5); the broker mounts its routes. */
  grants: GrantService;
  /** The grant signing keys, sealed in the vault, shared by every replica, rotated with an overlap. */
  grantKeys: GrantKeyring;
  /** The only way out of a sandbox: LLM proxy, budgets, metering (issue 5). */
  broker: Broker;
  /** The MAC'd tag by which a task turn's model calls are metered to the task at the broker. */
  taskTags: TaskTags;
  /** Tenant-admin settings of the broker: caps, egress allow-list, skill endpoints. */
  brokerGovernance: BrokerGovernance;
  /** The platform's default LLM provider (onboarding step 3), for tenants without their own. */
  platformProvider: PlatformProvider;
  /** Approval requests posted to the tenant's Telegram/Slack chat with its own bot credential. */
  approvalDelivery: ApprovalDelivery;
}

export function createServices(opts: {
  db: Db;
  /** The event channel every cache and reaction goes through (started by the server; a CLI only publishes). */
  events: EventChannel;
  secretKey: Buffer;
  dataDir: string;
  publicOrigin: string;
  egressAllowHosts?: readonly string[];
  log?: Logger;
  registry?: Registry;
  /** Runtimes, sandboxes, instances (issue 6); default: the configuration defaults below dataDir. */
  instances?: InstanceSettings;
  /** Ingress, wake, idle reaper, backups (issue 7); default: the configuration defaults below dataDir. */
  ingress?: IngressSettings;
  /** Durable tasks (issue 8); default: the configuration defaults. */
  tasks?: TaskSettings;
  /** Budget reservations and grant key rotation; default: the configuration defaults. */
  broker?: { reserveTokens: number; grantKeyRotateMs: number };
  /** This replica as a claimer of work (docs/adr/0009-replica-coordination.md); default: a single process. */
  claims?: ClaimIdentity;
  /** Session ingestion; default: the configuration defaults. */
  ingest?: IngestSettings;
  /** The lane scheduler's clock (tests inject one, docs/adr/0012-lane-scheduling.md); default: the real clock. */
  laneClock?: (() => Date) | undefined;
  /** The chat APIs approval requests are posted to; default: Telegram's and Slack's. */
  chatApis?: ChatApis;
}): Services {
  const { db, events } = opts;
  const vault = new Vault({ db, keys: new LocalKeyProvider({ secret: opts.secretKey, versions: dbKeyVersionStore(db) }) });
  const platformSecrets: PlatformSecrets = {
    seal: (name, plaintext) => vault.sealPlatformSecret(name, plaintext),
    open: async (name) => {
      try {
        return await vault.openPlatformSecret(name);
      } catch (err) {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      }
    },
  };
  const skills = createSkillRegistry();
  const egress: EgressPolicy = { allowedHosts: [...(opts.egressAllowHosts ?? [])] };
  const credentials = new CredentialService({ db, vault, skills, events });
  const policy = new PolicyService(db, events);
  const providers = new ProviderService({ db, credentials, egress, events });
  const platformProvider = new PlatformProvider({ db, vault, providers, events });
  // Task tags: how a task turn's model calls are metered to the task through the gateway (src/broker/task-tag.ts).
  const taskTags = new TaskTags(opts.secretKey);
  const broker = new Broker({
    taskTags,
    // Heartbeat and cron caps on scheduled model calls (docs/adr/0013-gateway-config-versions.md, "Caps").
    scheduledCaps: new ScheduledCaps(db),
    platformProvider,
    db,
    events,
    log: opts.log ?? createLogger('silent'),
    registry: opts.registry ?? new Registry(),
    providers,
    credentials,
    egress,
    runDir: path.resolve(opts.dataDir, 'run', 'broker'),
    ...(opts.broker ? { reserveTokens: opts.broker.reserveTokens } : {}),
  });
  // Grant keys are sealed in the vault and shared by every replica; the old key verifies for the longest grant lifetime.
  const grantKeys = new GrantKeyring({
    db,
    vault,
    events,
    log: opts.log ?? createLogger('silent'),
    rotateAfterMs: opts.broker?.grantKeyRotateMs ?? 24 * 3_600_000,
    overlapSeconds: GRANT_MAX_TTL_SECONDS,
  });
  const grants = new GrantService({ db, policy, keys: grantKeys });
  mountGrants(broker, grants);
  // Read-only lanes forbid write tools for their steps' turns, on top of the tenant's Cedar decision.
  grants.restrict(readOnlyRestriction(db, policy.tools));
  // A running lane step's sandbox reaches only its project's hosts, on top of the tenant's egress allow-list.
  broker.egress.restrict(laneEgressRestriction(db));
  const onboarding = new OnboardingService(db, opts.dataDir, vault);
  const settings = opts.instances ?? instanceSettings({ dataDir: opts.dataDir, instances: parseConfig({}).instances });
  const approvalDelivery = new ApprovalDelivery({
    db,
    credentials,
    upstreams: broker.upstreams,
    apis: opts.chatApis ?? { telegram: 'https://api.telegram.org', slack: 'https://slack.com/api' },
    publicOrigin: opts.publicOrigin,
    log: opts.log ?? createLogger('silent'),
  });
  const instances = createInstanceServices({
    db,
    vault,
    events,
    onboarding,
    broker,
    settings,
    log: opts.log ?? createLogger('silent'),
    toolRestrictions: (tenantId, agent) => gatewayToolRestrictions(policy, tenantId, agent),
    approvalChat: approvalDelivery,
    ...(opts.claims ? { claims: opts.claims } : {}),
  });
  const ingressConfig = opts.ingress ?? ingressSettings({ dataDir: opts.dataDir, ingress: parseConfig({}).ingress });
  const ingress = createIngressServices({
    db,
    events,
    vault,
    onboarding,
    instances,
    instanceSettings: settings,
    settings: ingressConfig,
    dataDir: opts.dataDir,
    registry: opts.registry ?? new Registry(),
    log: opts.log ?? createLogger('silent'),
  });
  // Agent memory, findings and search by meaning; embeddings go through the broker (docs/adr/0007).
  const knowledge = createKnowledgeServices({ db, events, proxy: broker.proxy, agents: new AgentService(db), log: opts.log ?? createLogger('silent') });
  mountKnowledge(broker, knowledge, (tenantId, agent, tool) => policy.decide(tenantId, { agent, tool, context: {} }));
  mountOnBroker(broker, '/governance/', governanceBrokerRoutes({ gatewayConfig: instances.gatewayConfig, resolve: (t) => broker.tokens.resolve(t) }).fetch);
  events.on('routes.changed', ({ tenantId }) => {
    knowledge.embeddings.forget(tenantId ?? undefined);
    // A new embeddings route means re-embedding: start now rather than at the next interval.
    knowledge.knowledgeIndexer.kick();
  });
  const tasks = createTaskServices({
    db,
    vault,
    egress,
    log: opts.log ?? createLogger('silent'),
    registry: opts.registry ?? new Registry(),
    settings: opts.tasks ?? DEFAULT_TASK_SETTINGS,
    instances: instances.instances,
    sandboxes: instances.sandboxes,
    gate: ingress.gate,
    readyTimeoutMs: settings.instanceReadyTimeoutMs,
    flushUsage: () => broker.usage.flush(),
    taskTags,
    approvalChat: approvalDelivery,
    events,
    ...(opts.claims ? { claims: opts.claims } : {}),
    recall: async (tenantId, agentId, text, ctx) =>
      (await knowledge.memories.recall(tenantId, agentId, text, ctx)).map((m) => ({ id: m.id, content: m.content })),
  });
  const sessionIngest = new SessionIngest({
    db,
    proxy: broker.proxy,
    // The tenant's summaries route, else its default route, else the platform's provider (as the broker routes).
    routes: {
      resolveRoute: async (tenantId, who) => {
        const r = await providers.resolveRoute(tenantId, who);
        if (r.length > 0) return r;
        const f = await platformProvider.target();
        return f ? [f] : [];
      },
    },
    memories: knowledge.memories,
    indexer: knowledge.knowledgeIndexer,
    log: (opts.log ?? createLogger('silent')).child({ component: 'ingest' }),
    settings: opts.ingest ?? parseConfig({}).ingest,
    ...(opts.claims ? { owner: opts.claims.owner } : {}),
  });
  // Lanes: scheduled pipelines of tasks; artifacts go to the object store backups use (docs/lanes.md).
  const lanes = createLaneServices({
    db,
    tasks: tasks.tasks,
    store: createObjectStore(ingressConfig),
    gate: ingress.gate,
    flushUsage: () => broker.usage.flush(),
    approvalTtlSeconds: (opts.tasks ?? DEFAULT_TASK_SETTINGS).approvalTtlSeconds,
    dataDir: opts.dataDir,
    log: opts.log ?? createLogger('silent'),
    node: instances.instances.node,
    ...(opts.claims ? { claims: opts.claims } : {}),
    clock: opts.laneClock,
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
  return {
    ...instances,
    ...ingress,
    ...tasks,
    ...lanes,
    ...knowledge,
    sessionIngest,
    approvalDelivery,
    events,
    taskTags,
    tenants: new TenantService(db),
    users: new UserService(db),
    sessions: new SessionService(db),
    tokens: new ApiTokenService(db, events),
    onboarding,
    oidc: new OidcService({ db, secrets: platformSecrets, redirectUri: `${opts.publicOrigin}/api/v1/auth/oidc/callback` }),
    vault,
    credentials,
    providers,
    broker,
    platformProvider,
    brokerGovernance: new BrokerGovernance({ db, events, policy: egress }),
    skills,
    egress,
    policy,
    grants,
    grantKeys,
  };
}

/**
 * Serves POST /broker/grants on every broker socket and port. On a per-sandbox socket the token must be
 * that sandbox's own; a stopped sandbox's grants are revoked with its token.
 */
function mountGrants(broker: Broker, grants: GrantService): void {
  const listener = getRequestListener(grantRoutes({ grants, sandboxes: broker.tokens }).fetch);
  broker.extend(async (req, res, boundTo) => {
    if (!(req.url ?? '').startsWith('/broker/')) return false;
    if (boundTo !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      const caller = m?.[1] ? await broker.tokens.resolve(m[1]) : undefined;
      if (caller?.id !== boundTo) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'unauthenticated', message: "This socket belongs to another sandbox: send this sandbox's own broker token." }));
        return true;
      }
    }
    await listener(req, res);
    return true;
  });
  broker.onSandboxClosed((tenantId, startId) => grants.revokeSandbox(tenantId, startId, { actor: `sandbox:${startId}`, reason: 'sandbox stopped' }));
}

/**
 * Serves /knowledge/* (agent memory and findings) on every broker socket and port, for the tenant of the
 * caller's broker token; on a per-sandbox socket the token must be that sandbox's own.
 */
function mountKnowledge(
  broker: Broker,
  knowledge: KnowledgeServices,
  decide: (tenantId: string, agent: string, tool: string) => Promise<{ outcome: string; explanation: string }>,
): void {
  mountOnBroker(
    broker,
    '/knowledge/',
    knowledgeBrokerRoutes({ memories: knowledge.memories, findings: knowledge.findings, resolve: (t) => broker.tokens.resolve(t), decide }).fetch,
  );
}

/**
 * Serves `prefix`* with `fetch` on every broker socket and port, for the tenant of the caller's broker token; on
 * a per-sandbox socket the token must be that sandbox's own.
 */
function mountOnBroker(broker: Broker, prefix: string, fetch: (req: Request) => Response | Promise<Response>): void {
  const listener = getRequestListener(fetch);
  broker.extend(async (req, res, boundTo) => {
    if (!(req.url ?? '').startsWith(prefix)) return false;
    if (boundTo !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      const caller = m?.[1] ? await broker.tokens.resolve(m[1]) : undefined;
      if (caller?.id !== boundTo) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'unauthenticated', message: "This socket belongs to another sandbox: send this sandbox's own broker token." }));
        return true;
      }
    }
    await listener(req, res);
    return true;
  });
}

/** The tenant's Cedar decisions as config restrictions: denied tools, and tools needing approval (a
 * gateway cannot park those), are removed; exec is denied when the policy denies it. */
export async function gatewayToolRestrictions(policy: PolicyService, tenantId: string, agent: string): Promise<ToolRestrictions> {
  const l = await policy.effectiveToolLists(tenantId, agent);
  return { deny: [...l.deny, ...l.requiresApproval.filter((t) => t !== 'exec')], execDenied: l.deny.includes('exec') };
}
