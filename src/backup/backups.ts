/**
 * Backups and cold resume (issue 7). A backup is a tar.gz of an instance's state directories, as the
 * sandbox driver exports it: its state as is when the instance is stopped (exportState), or from
 * OpenClaw's own `backup create` run inside the sandbox when it is running (exportLiveState) — never
 * live SQLite files. Restores go back through the driver (importState).
 * It is encrypted under the tenant's data key (crypto.ts) and put in the object store (types.ts).
 * Taken on every stop (the reconciler's `stopped` lifecycle event, src/instances/lifecycle.ts), by the idle reaper before it stops an
 * instance, periodically for running instances (`start`), and on request; the newest `retain` per
 * instance are kept. Restore writes a
 * backup into a stopped instance, or into a new one (another id, so another path), and starts it.
 * A backup that fails its tag or checksum is refused before anything is touched.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { scrubHostDetails } from '../observability/host-details.ts';
import { appendAudit } from '../audit/log.ts';
import { containing, keysetPage, type Sorts } from '../db/keyset.ts';
import type { Db } from '../db/pool.ts';
import { ClawplaneError, ConflictError, NotFoundError } from '../errors.ts';
import type { Audited, Instance, InstanceRow, InstanceService } from '../instances/instances.ts';
import { publicInstance } from '../instances/instances.ts';
import type { SandboxDriver } from '../sandbox/types.ts';
import type { Vault } from '../vault/vault.ts';
import { BackupCorruptedError, decryptFile, encryptFile } from './crypto.ts';
import type { BackupMetrics } from './metrics.ts';
import { ObjectMissingError, type ObjectStore } from './types.ts';

export const BACKUP_REASONS = ['manual', 'stop', 'idle', 'periodic'] as const;
export type BackupReason = (typeof BACKUP_REASONS)[number];

export interface Backup {
  id: string;
  tenantId: string;
  instanceId: string;
  instanceName: string;
  runtimeVersion: string;
  reason: BackupReason;
  sizeBytes: number;
  sha256: string;
  durationMs: number;
  createdAt: string;
}

interface Row {
  id: string;
  tenant_id: string;
  instance_id: string;
  instance_name: string;
  runtime_version: string;
  reason: BackupReason;
  object_key: string;
  size_bytes: string;
  sha256: string;
  duration_ms: number;
  created_at: Date;
}

/** The order a backup list offers (newest first by default). */
export const BACKUP_SORTS = {
  createdAt: [
    { sql: 'b.created_at', type: 'timestamptz' },
    { sql: 'b.id', type: 'uuid' },
  ],
} satisfies Sorts;

const toBackup = (r: Row): Backup => ({
  id: r.id,
  tenantId: r.tenant_id,
  instanceId: r.instance_id,
  instanceName: r.instance_name,
  runtimeVersion: r.runtime_version,
  reason: r.reason,
  sizeBytes: Number(r.size_bytes),
  sha256: r.sha256,
  durationMs: r.duration_ms,
  createdAt: r.created_at.toISOString(),
});

export interface BackupServiceOptions {
  db: Db;
  vault: Vault;
  store: ObjectStore;
  instances: InstanceService;
  driver: SandboxDriver;
  /** Prepares an instance's sandbox storage (idempotent), so a restore can fill a never-started instance. */
  prepare: (row: InstanceRow) => Promise<void>;
  /** Root-only scratch directory for archives in flight. */
  tmpDir: string;
  /** Backups kept per instance (older ones are deleted). */
  retain: number;
  /** Periodic backups: running instances whose newest backup is older than this get one; 0 = off. */
  intervalMs?: number;
  log: Logger;
  metrics: BackupMetrics;
  /** Whether this replica holds the instance's lease (the periodic sweep backs up only those); default: all. */
  owns?: (instanceId: string) => boolean;
}

export class BackupService {
  readonly #o: BackupServiceOptions;
  /** One backup or restore at a time per instance. */
  readonly #busy = new Map<string, Promise<unknown>>();
  /** Why the next stop of an instance happens (the idle reaper says "idle"); default "stop". */
  readonly #nextReason = new Map<string, BackupReason>();

  constructor(opts: BackupServiceOptions) {
    this.#o = opts;
  }

  #timer: NodeJS.Timeout | undefined;
  #sweep: Promise<unknown> | undefined;

  /** Starts the periodic sweep (checks every interval/10, at least every 10 s, at most every 10 min). */
  start(): void {
    const every = this.#o.intervalMs ?? 0;
    if (every <= 0 || this.#timer) return;
    const tick = Math.min(600_000, Math.max(10_000, Math.floor(every / 10)));
    this.#timer = setInterval(() => {
      this.#sweep ??= this.periodicSweep(every)
        .catch((err: unknown) => this.#o.log.error({ err }, 'periodic backup sweep failed'))
        .finally(() => (this.#sweep = undefined));
    }, tick);
    this.#timer.unref();
  }

  /** Stops the sweep and waits for a backup in flight. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#sweep;
  }

  /**
   * Backs up, one at a time, every running instance whose newest backup (or, with none, its creation)
   * is older than `maxAgeMs`. A failure is logged and retried at the next sweep; the previous backup
   * stays the latest. Returns the instances backed up.
   */
  async periodicSweep(maxAgeMs: number): Promise<string[]> {
    const due = await this.#o.db.query<{ tenant_id: string; id: string }>(
      `SELECT i.tenant_id, i.id FROM instances i
        WHERE i.status = 'running' AND i.desired_state = 'running'
          AND COALESCE((SELECT max(b.created_at) FROM instance_backups b WHERE b.tenant_id = i.tenant_id AND b.instance_id = i.id), i.created_at)
              <= now() - make_interval(secs => $1::double precision / 1000)
        ORDER BY i.created_at, i.id`,
      [maxAgeMs],
    );
    const done: string[] = [];
    for (const r of due.rows) {
      if (this.#o.owns && !this.#o.owns(r.id)) continue; // another replica's instance: its owner backs it up
      try {
        await this.create(r.tenant_id, r.id, 'periodic', { actor: 'system:backups' });
        done.push(r.id);
      } catch (err) {
        this.#o.log.warn(
          { err, tenant_id: r.tenant_id, instance_id: r.id },
          'periodic backup failed; retried at the next sweep, the previous backup is still the latest',
        );
      }
    }
    return done;
  }

  get storeKind(): string {
    return this.#o.store.kind;
  }

  /** One page of a tenant's (or one instance's) backups, searched by instance name, filtered by reason. */
  async page(
    tenantId: string,
    p: { limit: number; cursor?: string | undefined; sort: string; q?: string | undefined; reason?: BackupReason | undefined; instanceId?: string | undefined },
  ): Promise<{ items: Backup[]; nextCursor: string | null }> {
    const where = ['b.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    const add = (sql: string, v: unknown) => {
      vals.push(v);
      where.push(sql.replace('?', `$${vals.length}`));
    };
    if (p.instanceId !== undefined) add('b.instance_id = ?', p.instanceId);
    if (p.reason !== undefined) add('b.reason = ?', p.reason);
    if (p.q !== undefined) add('b.instance_name ILIKE ?', containing(p.q));
    return keysetPage(this.#o.db, {
      ...p,
      sorts: BACKUP_SORTS,
      from: 'instance_backups b',
      select: 'b.*',
      where,
      vals,
      map: (x) => toBackup(x as unknown as Row),
    });
  }

  async list(tenantId: string, instanceId?: string): Promise<Backup[]> {
    const r = instanceId
      ? await this.#o.db.query<Row>('SELECT * FROM instance_backups WHERE tenant_id = $1 AND instance_id = $2 ORDER BY created_at DESC', [tenantId, instanceId])
      : await this.#o.db.query<Row>('SELECT * FROM instance_backups WHERE tenant_id = $1 ORDER BY created_at DESC', [tenantId]);
    return r.rows.map(toBackup);
  }

  async get(tenantId: string, id: string): Promise<Backup> {
    return toBackup(await this.#row(tenantId, id));
  }

  async #row(tenantId: string, id: string): Promise<Row> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) throw new NotFoundError('Backup');
    const r = await this.#o.db.query<Row>('SELECT * FROM instance_backups WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
    if (!r.rows[0]) throw new NotFoundError('Backup');
    return r.rows[0];
  }

  /** Resolves when no backup or restore of the instance is in flight (a wake waits for it). */
  async settled(instanceId: string): Promise<void> {
    await this.#busy.get(instanceId)?.catch(() => undefined);
  }

  /** The next stop of this instance is backed up with this reason (the idle reaper's "idle"). */
  expectStop(instanceId: string, reason: BackupReason): void {
    this.#nextReason.set(instanceId, reason);
  }

  /** The reconciler's hook after an instance stopped: back it up (failures are logged, the stop stands). */
  async onStopped(row: InstanceRow): Promise<void> {
    const reason = this.#nextReason.get(row.id) ?? 'stop';
    this.#nextReason.delete(row.id);
    try {
      await this.create(row.tenantId, row.id, reason, { actor: 'system' });
    } catch (err) {
      this.#o.log.error({ err, instance_id: row.id, tenant_id: row.tenantId }, 'backup after stop failed; the previous backup is still the latest');
    }
  }

  #exclusive<T>(instanceId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#busy.get(instanceId) ?? Promise.resolve();
    const p = prev.catch(() => undefined).then(fn);
    this.#busy.set(instanceId, p);
    void p
      .finally(() => {
        if (this.#busy.get(instanceId) === p) this.#busy.delete(instanceId);
      })
      .catch(() => undefined);
    return p;
  }

  async #assertStopped(row: InstanceRow, what: string): Promise<void> {
    const live = row.sandbox ? await this.#o.driver.status(row.sandbox) : undefined;
    if (row.status !== 'stopped' || live?.running) {
      throw new ConflictError(
        `Instance "${row.name}" is ${row.status}: ${what} works on a stopped gateway's state (never live databases). Stop it first (POST …/instances/${row.id}/stop), then retry.`,
        'instance_not_stopped',
      );
    }
  }

  /**
   * Backs up an instance now: a stopped one by packing its state, a running one through OpenClaw's own
   * `backup create` inside its sandbox (never live database files either way). An instance that is
   * starting or stopping is refused (409): retry when it settles.
   */
  async create(tenantId: string, instanceId: string, reason: BackupReason, by: Audited): Promise<Backup> {
    return this.#exclusive(instanceId, async () => {
      const row = await this.#o.instances.get(tenantId, instanceId);
      const live = row.sandbox ? await this.#o.driver.status(row.sandbox) : undefined;
      const running = row.status === 'running' && row.desiredState === 'running' && row.sandbox !== null && live?.running === true;
      const stopped = row.status === 'stopped' && live?.running !== true;
      if (!running && !stopped) {
        const doing = row.desiredState === 'stopped' || row.desiredState === 'destroyed' ? 'stopping' : row.status;
        throw new ConflictError(
          `Instance "${row.name}" is ${doing}: a backup is made of a running gateway (through OpenClaw's own backup) or of a stopped one's state. Retry when it has settled.`,
          'instance_busy',
        );
      }
      const t0 = performance.now();
      const id = randomUUID();
      const key = `${tenantId}/${instanceId}/${id}.cpbk`;
      await mkdir(this.#o.tmpDir, { recursive: true, mode: 0o700 });
      const tar = path.join(this.#o.tmpDir, `${id}.tar.gz`);
      const enc = path.join(this.#o.tmpDir, `${id}.cpbk`);
      try {
        try {
          const archive =
            running && row.sandbox ? await this.#o.driver.exportLiveState(row.sandbox) : await this.#o.driver.exportState({ tenantId, instanceId });
          await pipeline(archive, createWriteStream(tar, { mode: 0o600 }));
        } catch (err) {
          if (err instanceof ClawplaneError) throw err;
          // Deployed but never started: there is no state yet, which is not an outage.
          if (!running && ((err as NodeJS.ErrnoException).code === 'ENOENT' || /No such file or directory/.test((err as Error).message))) {
            throw new ConflictError(
              `Instance "${row.name}" has no state to back up yet: it has never been started. Start it once, then back it up.`,
              'nothing_to_back_up',
            );
          }
          // tar's or the driver's words name host paths and uids: they go to the log (with the request id), not to the tenant.
          this.#o.log.error({ err, tenant_id: tenantId, instance_id: instanceId, request_id: by.requestId }, 'archiving an instance state for a backup failed');
          throw new ClawplaneError(
            'backup_failed',
            503,
            `The state of instance "${row.name}" could not be archived (the server's log has the cause under this request's id). The previous backup is still the latest; retry, and ask an operator if it fails again.`,
            { cause: err },
          );
        }
        const sha = await encryptFile(await this.#o.vault.getOrCreateTenantKey(tenantId), tenantId, id, tar, enc);
        const size = await this.#o.store.put(key, enc);
        const durationMs = Math.round(performance.now() - t0);
        const b = await this.#o.db.tx(async (tx) => {
          const r = await tx.query<Row>(
            `INSERT INTO instance_backups (id, tenant_id, instance_id, instance_name, runtime_version, reason, object_key, size_bytes, sha256, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *`,
            [id, tenantId, instanceId, row.name, row.runtimeVersion, reason, key, size, sha, durationMs],
          );
          await appendAudit(tx, {
            actor: by.actor,
            tenantId,
            action: 'instance.backup',
            target: `instance:${instanceId}`,
            decision: 'success',
            detail: { backupId: id, reason, live: running, sizeBytes: size, store: this.#o.store.kind },
            requestId: by.requestId ?? null,
          });
          return toBackup(r.rows[0] as Row);
        });
        this.#o.metrics.bytes.set({ tenant: tenantId }, size);
        this.#o.metrics.seconds.observe({ tenant: tenantId, reason }, durationMs / 1000);
        this.#o.log.info(
          { tenant_id: tenantId, instance_id: instanceId, backup_id: id, reason, live: running, bytes: size, ms: durationMs, store: this.#o.store.kind },
          'instance backed up',
        );
        await this.#prune(tenantId, instanceId);
        return b;
      } finally {
        await rm(tar, { force: true });
        await rm(enc, { force: true });
      }
    });
  }

  async #prune(tenantId: string, instanceId: string): Promise<void> {
    const old = await this.#o.db.query<Row>('SELECT * FROM instance_backups WHERE tenant_id = $1 AND instance_id = $2 ORDER BY created_at DESC OFFSET $3', [
      tenantId,
      instanceId,
      this.#o.retain,
    ]);
    for (const r of old.rows) {
      await this.#o.store.delete(r.object_key);
      await this.#o.db.query('DELETE FROM instance_backups WHERE tenant_id = $1 AND id = $2', [tenantId, r.id]);
    }
  }

  /**
   * Restores a backup into the stopped instance `target.instanceId`, or into a new instance named
   * `target.name` (created stopped on the backup's runtime version), then starts it unless start=false.
   */
  async restore(
    tenantId: string,
    backupId: string,
    target: { instanceId?: string | undefined; name?: string | undefined; start?: boolean | undefined },
    by: Audited,
  ): Promise<{ instance: Instance; backup: Backup }> {
    const b = await this.#row(tenantId, backupId);
    let row = target.instanceId ? await this.#o.instances.get(tenantId, target.instanceId) : undefined;
    if (row) await this.#assertStopped(row, 'a restore');
    await mkdir(this.#o.tmpDir, { recursive: true, mode: 0o700 });
    const enc = path.join(this.#o.tmpDir, `${randomUUID()}.in.cpbk`);
    const tar = `${enc}.tar.gz`;
    try {
      try {
        await this.#o.store.get(b.object_key, enc);
      } catch (err) {
        if (err instanceof ObjectMissingError) throw new BackupCorruptedError(b.id, 'its object is missing from the object store');
        throw err;
      }
      // Verified in full before any instance is created or touched: a bad backup changes nothing.
      await decryptFile(await this.#o.vault.getOrCreateTenantKey(tenantId), tenantId, b.id, enc, tar, b.sha256);
      if (!row) {
        const created = await this.#o.instances.deploy(tenantId, { name: target.name ?? b.instance_name, runtimeVersion: b.runtime_version, start: false }, by);
        row = await this.#o.instances.get(tenantId, created.id);
      }
      const into = row;
      await this.#exclusive(into.id, async () => {
        await this.#assertStopped(await this.#o.instances.get(tenantId, into.id), 'a restore');
        await this.#o.prepare(into);
        await this.#o.driver.importState({ tenantId, instanceId: into.id }, createReadStream(tar));
      });
    } catch (err) {
      // The audit is tenant-readable: a known error's words, never a tool's output with host paths.
      await this.#audit(tenantId, row?.id ?? null, b.id, 'failure', by, {
        reason: err instanceof ClawplaneError ? scrubHostDetails(err.message) : 'the restore failed (see the server log for this request id)',
      });
      if (!(err instanceof ClawplaneError))
        this.#o.log.error({ err, tenant_id: tenantId, backup_id: b.id, request_id: by.requestId }, 'restoring a backup failed');
      throw err;
    } finally {
      await rm(enc, { force: true });
      await rm(tar, { force: true });
    }
    await this.#audit(tenantId, row.id, b.id, 'success', by, { fromInstance: b.instance_id });
    const instance =
      target.start === false ? publicInstance(await this.#o.instances.get(tenantId, row.id)) : await this.#o.instances.start(tenantId, row.id, by);
    return { instance, backup: toBackup(b) };
  }

  async #audit(tenantId: string, instanceId: string | null, backupId: string, decision: string, by: Audited, detail: Record<string, unknown>): Promise<void> {
    await this.#o.db.tx((tx) =>
      appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'instance.restore',
        target: instanceId ? `instance:${instanceId}` : `backup:${backupId}`,
        decision,
        detail: { backupId, ...detail },
        requestId: by.requestId ?? null,
      }),
    );
  }
}
