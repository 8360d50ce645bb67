import path from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ConversationArchive } from '../archive/archive.ts';
import { BackupService } from '../backup/backups.ts';
import { FsObjectStore } from '../backup/fs-store.ts';
import { createBackupMetrics } from '../backup/metrics.ts';
import { S3ObjectStore } from '../backup/s3-store.ts';
import type { ObjectStore } from '../backup/types.ts';
import type { Config } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import type { OnboardingService } from '../identity/onboarding.ts';
import type { InstanceServices, InstanceSettings } from '../instances/setup.ts';
import { registerHostRoot } from '../observability/host-details.ts';
import type { Vault } from '../vault/vault.ts';
import { GatewayGate } from './access.ts';
import { Activity } from './activity.ts';
import { IngressService } from './ingress.ts';
import { createIngressMetrics } from './metrics.ts';
import { IdleReaper } from './reaper.ts';
import { Waker } from './wake.ts';

/** Ingress and backup settings from the parsed configuration (issue 7). */
export type IngressSettings = Config['ingress'];

export function ingressSettings(config: Pick<Config, 'dataDir' | 'ingress'>): IngressSettings {
  const i = config.ingress;
  return { ...i, backupDir: path.resolve(i.backupDir || path.join(config.dataDir, 'backups')) };
}

export interface IngressServices {
  /** The one check before anything reaches or wakes a tenant's gateway. */
  gate: GatewayGate;
  archive: ConversationArchive;
  ingress: IngressService;
  backups: BackupService;
  reaper: IdleReaper;
  /** Last use of instances (the idle reaper's clock), shared through the database. */
  activity: Activity;
}

export function createObjectStore(s: IngressSettings): ObjectStore {
  if (s.backupStore === 'fs') return new FsObjectStore(s.backupDir);
  return new S3ObjectStore({
    endpoint: s.s3.endpoint,
    region: s.s3.region,
    bucket: s.s3.bucket,
    prefix: s.s3.prefix,
    accessKeyId: s.s3.accessKeyId,
    secretAccessKey: s.s3.secretAccessKey,
    forcePathStyle: s.s3.forcePathStyle,
  });
}

/** Builds the archive, the ingress (with wake on demand), backups and the idle reaper (not started). */
export function createIngressServices(opts: {
  db: Db;
  events: EventChannel;
  vault: Vault;
  onboarding: OnboardingService;
  instances: InstanceServices;
  instanceSettings: InstanceSettings;
  settings: IngressSettings;
  dataDir: string;
  registry: Registry;
  log: Logger;
}): IngressServices {
  const { db, log, settings: s } = opts;
  // Error bodies and status reasons never show where these live (observability/host-details.ts).
  registerHostRoot(path.resolve(opts.dataDir));
  registerHostRoot(opts.instanceSettings.sandboxRoot);
  const { instances, sandboxes, reconciler } = opts.instances;
  const archive = new ConversationArchive(db);
  // Last use in the database too: the replica holding an instance's lease reaps it, whoever serves it.
  const activity = new Activity({ db, log });
  const metrics = createIngressMetrics(opts.registry);
  const backups = new BackupService({
    db,
    vault: opts.vault,
    store: createObjectStore(s),
    instances,
    driver: sandboxes,
    prepare: async (row) => sandboxes.prepare(await reconciler.spec(row, row.runtimeVersion)),
    tmpDir: path.resolve(opts.dataDir, 'run', 'backups'),
    retain: s.backupRetain,
    intervalMs: s.backupIntervalMs,
    log,
    metrics: createBackupMetrics(opts.registry),
    // The periodic sweep backs up only the instances whose lease this replica holds.
    owns: (id) => reconciler.owns(id),
  });
  reconciler.lifecycle.on('stopped', ({ row }) => backups.onStopped(row));
  const waker = new Waker({ instances, metrics, log, timeoutMs: s.wakeTimeoutMs, settled: (id) => backups.settled(id) });
  const ingress = new IngressService({ instances, driver: sandboxes, archive, activity, waker, log, events: opts.events });
  const reaper = new IdleReaper({
    instances,
    // Running instances, claimed: each is reaped by the one replica holding its lease.
    candidates: () => reconciler.claimed('running'),
    activity,
    metrics,
    log,
    intervalMs: s.idleCheckIntervalMs,
    idleTimeoutMs: async (tenantId) => {
      const own = await opts.db.query<{ m: number | null }>('SELECT idle_timeout_minutes AS m FROM tenants WHERE id = $1', [tenantId]);
      const m = own.rows[0]?.m;
      if (m !== null && m !== undefined) return m * 60_000;
      return s.idleTimeoutMs > 0 ? s.idleTimeoutMs : (await opts.onboarding.agentDefaults()).idleTimeoutMinutes * 60_000;
    },
    expectStop: (id, reason) => backups.expectStop(id, reason),
    suspend: (row, why) => reconciler.suspend(row.id, 'system:idle-reaper', why),
  });
  reconciler.lifecycle.on('resumed', ({ row, outcome }) => {
    metrics.resumes.inc({ tenant: row.tenantId, outcome: outcome.resumed ? 'resumed' : 'cold_start' });
    if (outcome.resumed) metrics.resumeSeconds.observe({ tenant: row.tenantId }, outcome.ms / 1000);
  });
  return { gate: new GatewayGate(db), archive, ingress, backups, reaper, activity };
}
