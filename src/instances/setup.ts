import type { ToolRestrictions } from '../runtime/config.ts';
import path from 'node:path';
import type { Logger } from 'pino';
import type { SandboxBroker } from '../broker/types.ts';
import type { KubernetesSettings, WarmResume } from '../config/schema.ts';
import { reachableDir } from '../config/host-dirs.ts';
import type { Config } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import type { OnboardingService } from '../identity/onboarding.ts';
import { RuntimeStore } from '../runtime/store.ts';
import { createSandboxDriver } from '../sandbox/drivers/factory.ts';
import { tenantTier } from '../tenancy/tenants.ts';
import type { SandboxDriver, SandboxDriverName } from '../sandbox/types.ts';
import type { ClaimIdentity } from '../replicas/claims.ts';
import type { Vault } from '../vault/vault.ts';
import { InstanceService } from './instances.ts';
import { CredentialRotator } from './credentials.ts';
import { Reconciler } from './reconciler.ts';
import { poolSandboxLimits, poolSandboxRun } from '../pools/sandboxes.ts';
import { GatewayConfigService } from '../governance/versions.ts';
import type { ApprovalChat } from '../governance/approval-delivery.ts';

/** The settings of runtimes, sandboxes and the reconciler, from the parsed configuration (issue 6). */
export interface InstanceSettings {
  runtimeCache: string;
  runtimeDefaultVersion: string;
  runtimeNodeVersion: string;
  sandboxDriver: SandboxDriverName;
  dockerSocket: string;
  /** With sandboxDriver kubernetes (docs/adr/0011-kubernetes.md). */
  kubernetes?: KubernetesSettings;
  sandboxImage: string;
  sandboxRoot: string;
  sandboxUidBase: number;
  sandboxMemoryBytes: number;
  sandboxPids: number;
  sandboxCpus: number;
  sandboxDataBytes: number;
  sandboxNproc: number;
  sandboxNofile: number;
  sandboxTmpBytes: number;
  /** Warm resume: sandboxes start suspendable (true), not (false), or where CRIU works here ('auto'). */
  warmResume: WarmResume;
  criuBin: string;
  reconcileIntervalMs: number;
  instanceReadyTimeoutMs: number;
}

export function instanceSettings(config: Pick<Config, 'dataDir' | 'instances'> & Partial<Pick<Config, 'sharedDir'>>): InstanceSettings {
  const i = config.instances;
  // Sandbox uids must reach both: as root with a closed parent (a checkout in /root), they default to the shared dir.
  const shared = (name: string) => reachableDir(config.dataDir, name, config.sharedDir ?? '/var/lib/clawplane').dir;
  return {
    ...i,
    runtimeCache: path.resolve(i.runtimeCache || shared('runtimes')),
    sandboxRoot: path.resolve(i.sandboxRoot || shared('sandboxes')),
  };
}

export interface InstanceServices {
  runtimes: RuntimeStore;
  sandboxes: SandboxDriver;
  instances: InstanceService;
  reconciler: Reconciler;
  rotator: CredentialRotator;
  /** Versioned gateway configuration: history, diffs, review, apply/check/rollback (docs/adr/0013). */
  gatewayConfig: GatewayConfigService;
}

/** Builds the runtime store, the configured sandbox driver, the instance service and its reconciler (not started). */
export function createInstanceServices(opts: {
  db: Db;
  vault: Vault;
  events: EventChannel;
  onboarding: OnboardingService;
  broker: SandboxBroker | undefined;
  settings: InstanceSettings;
  log: Logger;
  toolRestrictions?: (tenantId: string, agent: string) => Promise<ToolRestrictions>;
  /** Who this process is when it claims instances (docs/adr/0009-replica-coordination.md); default: a single process. */
  claims?: ClaimIdentity;
  /** Where configuration reviews are also posted (the tenant's Telegram/Slack chats). */
  approvalChat?: ApprovalChat;
}): InstanceServices {
  const s = opts.settings;
  const runtimes = new RuntimeStore({ dir: s.runtimeCache, nodePackageVersion: s.runtimeNodeVersion });
  const sandboxes = createSandboxDriver(s, { broker: opts.broker, log: opts.log, tierOf: (tenantId) => tenantTier(opts.db, tenantId) });
  const instances = new InstanceService({
    db: opts.db,
    vault: opts.vault,
    runtimes,
    defaultRuntimeVersion: s.runtimeDefaultVersion,
    uidBase: s.sandboxUidBase,
    events: opts.events,
    ...(opts.claims ? { node: opts.claims.node } : {}),
  });
  const gatewayConfig = new GatewayConfigService({
    db: opts.db,
    events: opts.events,
    layout: sandboxes.layout,
    log: opts.log,
    ...(opts.approvalChat ? { chat: opts.approvalChat } : {}),
    live: async (tenantId) => {
      const defaults = await opts.onboarding.agentDefaults();
      return { defaults, restrictions: opts.toolRestrictions ? await opts.toolRestrictions(tenantId, defaults.agentName) : { deny: [], execDenied: false } };
    },
  });
  const reconciler = new Reconciler({
    gatewayConfig,
    instances,
    driver: sandboxes,
    runtimes,
    agentDefaults: () => opts.onboarding.agentDefaults(),
    ...(opts.toolRestrictions ? { toolRestrictions: opts.toolRestrictions } : {}),
    log: opts.log,
    intervalMs: s.reconcileIntervalMs,
    readyTimeoutMs: s.instanceReadyTimeoutMs,
    ...(opts.claims ? { claims: opts.claims } : {}),
    // A pool's sandbox runs the executors its pool scaled to (docs/adr/0014-executor-pools.md).
    executorsToRun: (row) => poolSandboxRun(opts.db, row.tenantId, row.name),
    // …with its executors' CPU and memory reservations as the sandbox's limits.
    sandboxLimits: (row) => poolSandboxLimits(opts.db, row.tenantId, row.name, row.executors),
  });
  opts.events.on('instance.changed', () => reconciler.kick());
  const credentials = new CredentialRotator({ db: opts.db, instances, driver: sandboxes, log: opts.log });
  // A resumed gateway still holds the tokens its snapshot was taken with: new ones before it serves.
  reconciler.lifecycle.on('resuming', async ({ row, handle }) => {
    await credentials.rotateSandbox(row.tenantId, row.id, handle, { actor: 'system:resume' }, 'resume');
  });
  return { runtimes, sandboxes, instances, reconciler, rotator: credentials, gatewayConfig };
}
