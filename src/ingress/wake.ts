/**
 * Wake on demand (issue 7): a request for an instance that is not running starts it and holds the
 * request until it is ready. Concurrent wakes of one instance share one start (one promise per
 * instance); a start that fails reports the instance's status reason.
 */
import type { Logger } from 'pino';
import { ClawplaneError } from '../errors.ts';
import type { Audited, InstanceRow, InstanceService } from '../instances/instances.ts';
import { assertAccess, type GatewayAccess } from './access.ts';
import type { IngressMetrics } from './metrics.ts';

export class WakeFailedError extends ClawplaneError {
  constructor(name: string, reason: string) {
    super(
      'instance_wake_failed',
      503,
      `Instance "${name}" could not be started: ${reason}. See its events and logs (GET …/instances/{id}/events, …/logs), fix the cause, and retry.`,
    );
  }
}

export class WakeTimeoutError extends ClawplaneError {
  constructor(name: string, ms: number, status: string, reason: string) {
    super(
      'instance_wake_timeout',
      504,
      `Instance "${name}" was not ready within ${Math.round(ms / 1000)} s (status ${status}: ${reason}). Retry shortly; it keeps starting in the background.`,
    );
  }
}

export type WakeProgress = 'waking' | 'ready';

export interface WakerOptions {
  instances: InstanceService;
  metrics: IngressMetrics;
  log: Logger;
  /** How long a request may be held while its instance starts (CLAWPLANE_WAKE_TIMEOUT_MS). */
  timeoutMs: number;
  /** Resolves when no backup or restore of the instance is in flight (a wake must not race one). */
  settled: (instanceId: string) => Promise<void>;
  pollMs?: number;
}

export class Waker {
  readonly #o: WakerOptions;
  readonly #waking = new Map<string, Promise<InstanceRow>>();

  constructor(opts: WakerOptions) {
    this.#o = opts;
  }

  /** True when the row can serve now (no wake needed). */
  static ready(row: InstanceRow): boolean {
    return row.status === 'running' && row.desiredState === 'running' && row.sandbox !== null;
  }

  /**
   * Resolves with the running row; `onProgress('waking')` is called when this request had to wait.
   * Only with the gate's decision for the row's tenant (ingress/access.ts).
   */
  async ensureReady(access: GatewayAccess, row: InstanceRow, onProgress?: (p: WakeProgress) => void): Promise<InstanceRow> {
    assertAccess(access, row.tenantId);
    const by = access.by;
    if (Waker.ready(row)) return row;
    onProgress?.('waking');
    let p = this.#waking.get(row.id);
    if (!p) {
      p = this.#wake(row, by).finally(() => this.#waking.delete(row.id));
      this.#waking.set(row.id, p);
    }
    const ready = await p;
    onProgress?.('ready');
    return ready;
  }

  async #wake(row: InstanceRow, by: Audited): Promise<InstanceRow> {
    const t0 = performance.now();
    const tenant = row.tenantId;
    try {
      await this.#o.settled(row.id);
      let cur = (await this.#o.instances.byId(row.id)) ?? row;
      if (cur.desiredState !== 'running' || cur.status === 'stopped' || cur.status === 'error') {
        this.#o.log.info({ tenant_id: tenant, instance_id: row.id, status: cur.status }, 'waking an instance for an incoming request');
        await this.#o.instances.start(tenant, row.id, { actor: by.actor, requestId: by.requestId });
      }
      const deadline = Date.now() + this.#o.timeoutMs;
      for (;;) {
        cur = (await this.#o.instances.byId(row.id)) ?? cur;
        if (Waker.ready(cur)) break;
        if (cur.status === 'error') throw new WakeFailedError(cur.name, cur.statusReason);
        if (cur.desiredState !== 'running')
          throw new WakeFailedError(cur.name, `it was ${cur.desiredState === 'destroyed' ? 'destroyed' : 'stopped'} while starting`);
        if (Date.now() > deadline) throw new WakeTimeoutError(cur.name, this.#o.timeoutMs, cur.status, cur.statusReason);
        // Short: the reconciler marks the row running as soon as the supervisor reports the gateway ready,
        // and every poll here is one indexed read (issue 7: wake within 10% of a raw OpenClaw boot).
        await new Promise((r) => setTimeout(r, this.#o.pollMs ?? 50));
      }
      this.#o.metrics.wakes.inc({ tenant, outcome: 'ready' });
      this.#o.metrics.wakeSeconds.observe({ tenant }, (performance.now() - t0) / 1000);
      return cur;
    } catch (err) {
      this.#o.metrics.wakes.inc({ tenant, outcome: err instanceof WakeTimeoutError ? 'timeout' : 'failed' });
      throw err;
    }
  }
}
