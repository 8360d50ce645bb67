import os from 'node:os';
import type { Logger } from 'pino';
import type { Config, Role } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import { TenantOperator } from '../operator/tenants.ts';
import { WorkClaims } from '../replicas/claims.ts';
import { loadKubeConfig } from '../sandbox/drivers/kubernetes/api.ts';
import type { Services } from './services.ts';

/**
 * One moving part of a process: started when `clawplane serve` starts, stopped in the reverse order when it
 * stops. Only the parts of a process's roles are started (docs/operations/replicas.md).
 */
export interface RolePart {
  /** What it is, for logs: `reconciler`, `idle reaper`… */
  name: string;
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}

/** How often rows without a vector of their tenant's current embedding model are looked for (docs/adr/0007). */
const KNOWLEDGE_SWEEP_MS = 30_000;
/** How often idle chat sessions and finished tasks are looked for to summarise (docs/adr/0007). */
const INGEST_SWEEP_MS = 60_000;

export interface RoleContext {
  config: Config;
  db: Db;
  log: Logger;
  services: Services;
  replicaId: string;
  /** Where the broker's TCP listener is, once the broker part started (for the start-up log line). */
  onBrokerUrl?: (url: string) => void;
}

/**
 * The parts each role runs, in start order: the one place that says what a role is. Every process also binds
 * the task and lane workflows (a workflow recovered or dequeued here needs its steps), with their housekeeping
 * only on workers, and closes the broker's per-sandbox sockets when it stops.
 */
export function roleParts(roles: ReadonlySet<Role>, ctx: RoleContext): RolePart[] {
  const { services: s, config } = ctx;
  const worker = roles.has('worker');
  const parts: RolePart[] = [
    {
      name: 'broker',
      start: async () => {
        // The broker on a TCP port too (sandboxes reaching it over the network); per-sandbox sockets need no config.
        if (roles.has('broker') && config.broker.port !== undefined) ctx.onBrokerUrl?.(await s.broker.listenTcp(config.broker.port, config.broker.host));
      },
      stop: () => s.broker.close(),
    },
    // Task workflows recovered or dequeued since launch wait for this (src/tasks/workflow.ts).
    { name: 'task runtime', start: () => s.taskRuntime.start(undefined, { housekeeping: worker }), stop: () => s.taskRuntime.stop() },
    { name: 'lane runtime', start: () => s.laneRuntime.start({ worker, intervalMs: config.lanes.tickMs }), stop: () => s.laneRuntime.stop() },
    // Last use is written to the database in batches; the last batch is written when the process stops.
    { name: 'activity', start: () => undefined, stop: () => s.activity.stop() },
  ];
  if (roles.has('reconciler')) {
    parts.push(
      // Adopts sandboxes that outlived the previous control plane before anything could start duplicates.
      { name: 'reconciler', start: () => s.reconciler.start(), stop: () => s.reconciler.stop() },
      { name: 'backup sweep', start: () => s.backups.start(), stop: () => s.backups.stop() },
      { name: 'pool scaler', start: () => s.poolScaler.start(), stop: () => s.poolScaler.stop() },
      { name: 'idle reaper', start: () => s.reaper.start(), stop: () => s.reaper.stop() },
    );
  }
  if (worker) {
    parts.push(
      { name: 'knowledge indexer', start: () => s.knowledgeIndexer.start(KNOWLEDGE_SWEEP_MS), stop: () => s.knowledgeIndexer.stop() },
      { name: 'session ingest', start: () => s.sessionIngest.start(INGEST_SWEEP_MS), stop: () => s.sessionIngest.stop() },
    );
  }
  if (roles.has('operator')) {
    // Tenant and ExecutorPool resources → the database, one active operator at a time (docs/adr/0011-kubernetes.md).
    const node = config.replica.node ?? os.hostname();
    const operator = new TenantOperator(loadKubeConfig(config.instances.kubernetes.kubeconfig), {
      namespace: config.instances.kubernetes.controlNamespace,
      tenants: s.tenants,
      pools: s.pools,
      instances: s.instances,
      tiers: Object.keys(config.instances.kubernetes.runtimeClasses),
      claims: new WorkClaims(ctx.db, { owner: ctx.replicaId, node, ttlMs: config.replica.expireMs }),
      log: ctx.log.child({ component: 'operator' }),
    });
    parts.push({ name: 'operator', start: () => operator.start(), stop: () => operator.stop() });
  }
  return parts;
}

/** Starts the parts in order; if one fails, stops those already started (in reverse) and throws. */
export async function startParts(parts: readonly RolePart[], log: Logger): Promise<() => Promise<void>> {
  const started: RolePart[] = [];
  const stopAll = async () => {
    for (const p of started.toReversed()) {
      try {
        await p.stop();
      } catch (err) {
        log.warn({ err, part: p.name }, `could not stop the ${p.name} cleanly`);
      }
    }
    started.length = 0;
  };
  try {
    for (const p of parts) {
      await p.start();
      started.push(p);
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  return stopAll;
}
