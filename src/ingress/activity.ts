import type { Logger } from 'pino';
import type { Queryable } from '../db/pool.ts';

/** How often (at most) this process writes an instance's last use to the database. */
export const ACTIVITY_WRITE_MS = 2000;

/**
 * What counts as activity for the idle reaper (issue 7): any ingress traffic (each request, each WebSocket
 * frame) and anything still in flight (a streaming answer, an open run). Kept in memory for this process and
 * written to `instances.last_active_at` at most every `writeMs` per instance, in one batched statement, so the
 * replica that owns an instance's lease sees use through every other replica (docs/adr/0009-replica-coordination.md).
 * While work is in flight here, each write period records "now" again. Without a database (tests), memory only.
 */
export class Activity {
  readonly #last = new Map<string, number>();
  readonly #inflight = new Map<string, number>();
  /** When each instance's last use was last written, and uses not yet written. */
  readonly #written = new Map<string, number>();
  readonly #pending = new Set<string>();
  readonly #db: Queryable | undefined;
  readonly #log: Logger | undefined;
  readonly #writeMs: number;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  constructor(o: { db?: Queryable; log?: Logger; writeMs?: number } = {}) {
    this.#db = o.db;
    this.#log = o.log;
    this.#writeMs = o.writeMs ?? ACTIVITY_WRITE_MS;
  }

  touch(instanceId: string): void {
    const now = Date.now();
    this.#last.set(instanceId, now);
    if (!this.#db) return;
    // The first use in a write period is written at once (the next flush); later ones ride on the next period.
    // Every use is written by the next flush (one batched statement per writeMs): a use soon after the last
    // write must not be lost when no later use comes.
    this.#pending.add(instanceId);
    this.#timer ??= setInterval(() => void this.flush(), this.#writeMs).unref();
  }

  /** Marks work in flight until the returned function is called (idempotent). */
  begin(instanceId: string): () => void {
    this.touch(instanceId);
    this.#inflight.set(instanceId, (this.#inflight.get(instanceId) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.touch(instanceId);
      const n = (this.#inflight.get(instanceId) ?? 1) - 1;
      if (n <= 0) this.#inflight.delete(instanceId);
      else this.#inflight.set(instanceId, n);
    };
  }

  busy(instanceId: string): boolean {
    return (this.#inflight.get(instanceId) ?? 0) > 0;
  }

  /** Last activity seen by this process (ms since epoch), or undefined when none since it started. */
  last(instanceId: string): number | undefined {
    return this.#last.get(instanceId);
  }

  forget(instanceId: string): void {
    this.#last.delete(instanceId);
    this.#written.delete(instanceId);
    this.#pending.delete(instanceId);
  }

  /**
   * Writes the uses not yet written (and "now" for work in flight here) in one statement. Never moves
   * last_active_at backwards. A failure keeps them for the next flush.
   */
  async flush(): Promise<void> {
    if (!this.#db) return;
    if (this.#flushing) return this.#flushing;
    const now = Date.now();
    for (const id of this.#inflight.keys()) if (now - (this.#written.get(id) ?? 0) >= this.#writeMs) this.#pending.add(id);
    if (this.#pending.size === 0) return;
    const ids = [...this.#pending];
    this.#pending.clear();
    const at = ids.map((id) => (this.#inflight.has(id) ? now : (this.#last.get(id) ?? now)) / 1000);
    this.#flushing = this.#db
      .query(
        `UPDATE instances i SET last_active_at = GREATEST(i.last_active_at, to_timestamp(u.at))
           FROM unnest($1::uuid[], $2::double precision[]) AS u(id, at) WHERE i.id = u.id`,
        [ids, at],
      )
      .then(
        () => {
          for (const id of ids) this.#written.set(id, now);
        },
        (err: unknown) => {
          for (const id of ids) this.#pending.add(id);
          this.#log?.warn({ err: (err as Error).message, instances: ids.length }, 'could not record instance activity; retrying');
        },
      )
      .finally(() => (this.#flushing = undefined));
    return this.#flushing;
  }

  /** Stops the write timer after a last flush. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }
}
