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

/**
 * Sign-in, people and tenants: what authentication and the identity routes use. The CLI's identity commands
 * build this group alone (with the vault it seals OIDC secrets in).
 */
export interface IdentityServices {
  tenants: TenantService;
  users: UserService;
  sessions: SessionService;
  tokens: ApiTokenService;
  onboarding: OnboardingService;
  oidc: OidcService;
}

/** Sealed secrets and where model calls may go: the vault and what is built on it. */
export interface SecretServices {
  vault: Vault;
  credentials: CredentialService;
  providers: ProviderService;
  skills: SkillRegistry;
  /** The SSRF rules every user-supplied URL goes through (provider test connection, the broker). */
  egress: EgressPolicy;
  /** The platform's default LLM provider (onboarding step 3), for tenants without their own. */
  platformProvider: PlatformProvider;
}

/** The broker role's parts: the only way out of a sandbox, and the policy and grants it enforces. */
export interface BrokerServices {
  /** Tool policy: the Cedar baseline, tenant restrictions, the tool registry. */
  policy: PolicyService;
  /** Short-lived scoped tool grants for sandboxes; the broker mounts their routes. */
  grants: GrantService;
  /** The grant signing keys, sealed in the vault, shared by every replica, rotated with an overlap. */
  grantKeys: GrantKeyring;
  /** LLM proxy, budgets, metering. */
  broker: Broker;
  /** The MAC'd tag by which a task turn's model calls are metered to the task at the broker. */
  taskTags: TaskTags;
  /** Tenant-admin settings of the broker: caps, egress allow-list, skill endpoints. */
  brokerGovernance: BrokerGovernance;
  /** Approval requests posted to the tenant's Telegram/Slack chat with its own bot credential. */
  approvalDelivery: ApprovalDelivery;
}

/**
 * Every service of the control plane, built once from the database and configuration by createServices, in
 * groups (docs/architecture.md, "Composition"). Routes receive only the members they name (src/api/app.ts);
 * which loops run in a process is decided by its roles (src/server/roles.ts).
 */
export interface Services
  extends IdentityServices,
    SecretServices,
    BrokerServices,
    InstanceServices,
    IngressServices,
    TaskServices,
    KnowledgeServices,
    LaneServices {
  /** The typed event channel: cache invalidations and reactions, in this process and across replicas. */
  events: EventChannel;
  /** Summaries of finished conversations and tasks into the archive (docs/adr/0007). */
  sessionIngest: SessionIngest;
}

/** What every group is built from. */
interface Base {
  db: Db;
  /** The event channel every cache and reaction goes through (started by the server; a CLI only publishes). */
  events: EventChannel;
  log?: Logger | undefined;
}

/** The vault and the secrets built on it. */
export function createSecretServices(opts: Base & { secretKey: Buffer; egressAllowHosts?: readonly string[] | undefined }): SecretServices {
  const { db, events } = opts;
  const vault = new Vault({ db, keys: new LocalKeyProvider({ secret: opts.secretKey, versions: dbKeyVersionStore(db) }) });
  const skills = createSkillRegistry();
  const egress: EgressPolicy = { allowedHosts: [...(opts.egressAllowHosts ?? [])] };
  const credentials = new CredentialService({ db, vault, skills, events });
  const providers = new ProviderService({ db, credentials, egress, events });
  const platformProvider = new PlatformProvider({ db, vault, providers, events });
  return { vault, credentials, providers, skills, egress, platformProvider };
}

/** Tenants, users, sessions, API tokens, onboarding and OIDC sign-in (its client secret sealed in the vault). */
export function createIdentityServices(opts: Base & { vault: Vault; dataDir: string; publicOrigin: string }): IdentityServices {
  const { db, events, vault } = opts;
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
  return {
    tenants: new TenantService(db),
    users: new UserService(db),
    sessions: new SessionService(db),
    tokens: new ApiTokenService(db, events),
    onboarding: new OnboardingService(db, opts.dataDir, vault),
    oidc: new OidcService({ db, secrets: platformSecrets, redirectUri: `${opts.publicOrigin}/api/v1/auth/oidc/callback` }),
  };
}

/** The broker with its policy, grants and governance mounted on it (it listens only when its role starts it). */
export function createBrokerServices(
  opts: Base & {
    secrets: SecretServices;
    secretKey: Buffer;
    dataDir: string;
    publicOrigin: string;
    registry?: Registry | undefined;
    settings?: { reserveTokens: number; grantKeyRotateMs: number } | undefined;
    chatApis?: ChatApis | undefined;
  },
): BrokerServices {
  const { db, events } = opts;
  const { vault, credentials, providers, egress, platformProvider } = opts.secrets;
  const log = opts.log ?? createLogger('silent');
  const policy = new PolicyService(db, events);
  // Task tags: how a task turn's model calls are metered to the task through the gateway (src/broker/task-tag.ts).
  const taskTags = new TaskTags(opts.secretKey);
  const broker = new Broker({
    taskTags,
    // Heartbeat and cron caps on scheduled model calls (docs/adr/0013-gateway-config-versions.md, "Caps").
    scheduledCaps: new ScheduledCaps(db),
    platformProvider,
    db,
    events,
    log,
    registry: opts.registry ?? new Registry(),
    providers,
    credentials,
    egress,
    runDir: path.resolve(opts.dataDir, 'run', 'broker'),
    ...(opts.settings ? { reserveTokens: opts.settings.reserveTokens } : {}),
  });
  // Grant keys are sealed in the vault and shared by every replica; the old key verifies for the longest grant lifetime.
  const grantKeys = new GrantKeyring({
    db,
    vault,
    events,
    log,
    rotateAfterMs: opts.settings?.grantKeyRotateMs ?? 24 * 3_600_000,
    overlapSeconds: GRANT_MAX_TTL_SECONDS,
  });
  const grants = new GrantService({ db, policy, keys: grantKeys });
  mountGrants(broker, grants);
  // Read-only lanes forbid write tools for their steps' turns, on top of the tenant's Cedar decision.
  grants.restrict(readOnlyRestriction(db, policy.tools));
  // A running lane step's sandbox reaches only its project's hosts, on top of the tenant's egress allow-list.
  broker.egress.restrict(laneEgressRestriction(db));
  const approvalDelivery = new ApprovalDelivery({
    db,
    credentials,
    upstreams: broker.upstreams,
    apis: opts.chatApis ?? { telegram: 'https://api.telegram.org', slack: 'https://slack.com/api' },
    publicOrigin: opts.publicOrigin,
    log,
  });
  return { policy, grants, grantKeys, broker, taskTags, brokerGovernance: new BrokerGovernance({ db, events, policy: egress }), approvalDelivery };
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
  /** Runtimes, sandboxes, instances; default: the configuration defaults below dataDir. */
  instances?: InstanceSettings;
  /** Ingress, wake, idle reaper, backups; default: the configuration defaults below dataDir. */
  ingress?: IngressSettings;
  /** Durable tasks; default: the configuration defaults. */
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
  const log = opts.log ?? createLogger('silent');
  const secrets = createSecretServices({ db, events, log, secretKey: opts.secretKey, egressAllowHosts: opts.egressAllowHosts });
  const identity = createIdentityServices({ db, events, log, vault: secrets.vault, dataDir: opts.dataDir, publicOrigin: opts.publicOrigin });
  const brokerServices = createBrokerServices({
    db,
    events,
    log,
    secrets,
    secretKey: opts.secretKey,
    dataDir: opts.dataDir,
    publicOrigin: opts.publicOrigin,
    registry: opts.registry,
    settings: opts.broker,
    chatApis: opts.chatApis,
  });
  const { broker, policy, approvalDelivery, taskTags } = brokerServices;
  const { vault, egress, providers, platformProvider } = secrets;
  const { onboarding } = identity;
  const settings = opts.instances ?? instanceSettings({ dataDir: opts.dataDir, instances: parseConfig({}).instances });
  const instances = createInstanceServices({
    db,
    vault,
    events,
    onboarding,
    broker,
    settings,
    log,
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
    log,
  });
  // Agent memory, findings and search by meaning; embeddings go through the broker (docs/adr/0007).
  const knowledge = createKnowledgeServices({ db, events, proxy: broker.proxy, agents: new AgentService(db), log });
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
    log,
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
    log: log.child({ component: 'ingest' }),
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
    log,
    node: instances.instances.node,
    ...(opts.claims ? { claims: opts.claims } : {}),
    clock: opts.laneClock,
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
  return { ...secrets, ...identity, ...brokerServices, ...instances, ...ingress, ...tasks, ...lanes, ...knowledge, sessionIngest, events };
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
