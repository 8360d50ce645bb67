/**
 * The idle reaper (issue 7): an instance with no ingress traffic and nothing in flight for longer than
 * the idle timeout is stopped; the reconciler's stop hook backs it up first-thing after the gateway
 * exits (reason "idle"), so nothing is lost and the next request wakes it with its state.
 * The timeout is the tenant's own `idleTimeoutMinutes` when set, else CLAWPLANE_IDLE_TIMEOUT_MS when set,
 * else the platform's agent default `idleTimeoutMinutes` (0 = never).
 */
import type { Logger } from 'pino';
import type { BackupReason } from '../backup/backups.ts';
import type { InstanceRow, InstanceService } from '../instances/instances.ts';
import { idleReason } from '../instances/reasons.ts';
import type { Activity } from './activity.ts';
import type { IngressMetrics } from './metrics.ts';

export interface ReaperOptions {
  instances: InstanceService;
  /** The running instances this replica may reap (claimed, docs/adr/0009-replica-coordination.md); default: all. */
  candidates?: () => Promise<InstanceRow[]>;
  activity: Activity;
  metrics: IngressMetrics;
  log: Logger;
  /** A tenant's idle timeout in ms now (0: never reap). Read every sweep so a settings change applies at once. */
  idleTimeoutMs: (tenantId: string) => Promise<number>;
  intervalMs: number;
  /** Tells the backup hook why the coming stop happens. */
  expectStop: (instanceId: string, reason: BackupReason) => void;
  /**
   * Suspends the instance to a process snapshot instead (issue 10) when the driver can; otherwise
   * resolves with why not, and the instance is stopped as before.
   */
  suspend?: (row: InstanceRow, why: string) => Promise<{ suspended: true; dumpMs: number; imageBytes: number } | { suspended: false; reason: string }>;
}

export class IdleReaper {
  readonly #o: ReaperOptions;
  readonly #seen = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #sweep: Promise<void> | undefined;

  constructor(opts: ReaperOptions) {
    this.#o = opts;
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.#sweep ??= this.sweep()
        .then(() => undefined)
        .catch((err: unknown) => this.#o.log.error({ err }, 'idle sweep failed'))
        .finally(() => (this.#sweep = undefined));
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#sweep;
  }

  /** One pass: stops every running instance idle for longer than the timeout. */
  async sweep(): Promise<string[]> {
    const now = Date.now();
    const timeouts = new Map<string, number>();
    const stopped: string[] = [];
    const running = new Set<string>();
    for (const row of await (this.#o.candidates?.() ?? this.#o.instances.running())) {
      running.add(row.id);
      // Idle since the last traffic through any replica (last_active_at, written by each within seconds; a
      // start sets it too, so a start long after the last use is not idle). An instance taken over from a
      // dead replica is judged by the same column. Only with no evidence at all (a row from before
      // last_active_at existed) does the time this replica first saw it running count.
      const evidence = Math.max(this.#o.activity.last(row.id) ?? 0, row.lastActiveAt?.getTime() ?? 0);
      if (evidence === 0 && !this.#seen.has(row.id)) this.#seen.set(row.id, now);
      const since = Math.max(evidence, this.#seen.get(row.id) ?? 0);
      let timeout = timeouts.get(row.tenantId);
      if (timeout === undefined) {
        timeout = await this.#o.idleTimeoutMs(row.tenantId);
        timeouts.set(row.tenantId, timeout);
      }
      if (timeout <= 0 || this.#o.activity.busy(row.id) || now - since < timeout) continue;
      const why = idleReason(now - since);
      const s = this.#o.suspend ? await this.#o.suspend(row, why) : { suspended: false as const, reason: 'warm resume is off' };
      if (s.suspended) {
        this.#o.log.info({ tenant_id: row.tenantId, instance_id: row.id, idleMs: now - since }, 'suspended an idle instance to a process snapshot');
        this.#o.metrics.idleSuspends.inc({ tenant: row.tenantId });
        this.#o.metrics.suspendSeconds.observe({ tenant: row.tenantId }, s.dumpMs / 1000);
        this.#o.metrics.snapshotBytes.set({ tenant: row.tenantId }, s.imageBytes);
      } else {
        this.#o.log.info(
          { tenant_id: row.tenantId, instance_id: row.id, idleMs: now - since, notSuspended: s.reason },
          'stopping an idle instance (it is backed up on stop)',
        );
        this.#o.expectStop(row.id, 'idle');
        await this.#o.instances.stop(row.tenantId, row.id, { actor: 'system:idle-reaper' }, why);
        this.#o.metrics.idleStops.inc({ tenant: row.tenantId });
      }
      this.#o.activity.forget(row.id);
      this.#seen.delete(row.id);
      stopped.push(row.id);
    }
    for (const id of this.#seen.keys()) if (!running.has(id)) this.#seen.delete(id);
    return stopped;
  }
}
