import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { parseCron } from './rules.ts';
import type { LaneService } from './service.ts';
import type { Lane } from './types.ts';

/** What one tick did, for tests and logs. */
export interface TickResult {
  fired: { laneId: string; runId: string; slotAt: string; trigger: 'schedule' | 'catch-up' }[];
  skipped: { laneId: string; slots: number }[];
}

/** The scheduler's metrics on this replica (an operator sees it tick; tests wait for every replica to tick past a time). */
export interface SchedulerMetrics {
  ticks: Counter;
  clock: Gauge;
  fired: Counter<'trigger'>;
}

export function schedulerMetrics(registry: Registry): SchedulerMetrics {
  return {
    ticks: new Counter({ name: 'clawplane_lane_scheduler_ticks_total', help: 'Lane scheduler ticks completed on this replica', registers: [registry] }),
    clock: new Gauge({
      name: 'clawplane_lane_scheduler_clock_seconds',
      help: "The scheduler clock's time (Unix seconds) at this replica's last completed tick",
      registers: [registry],
    }),
    fired: new Counter({
      name: 'clawplane_lane_runs_fired_total',
      help: 'Scheduled lane runs this replica created, by trigger (schedule, catch-up)',
      labelNames: ['trigger'],
      registers: [registry],
    }),
  };
}

/**
 * Fires lanes' scheduled slots (docs/adr/0012-lane-scheduling.md). Each lane stores its next slot; a tick takes
 * the due lanes, and for each one advances `next_slot_at` by compare-and-set and inserts the run in the same
 * transaction; the run row is unique per (lane, slot). However many replicas tick at once, one of them
 * wins each slot and the others change nothing. The clock is injectable (tests).
 *
 * A slot more than `graceMs` in the past when seen was missed (the control plane was down): the lane's
 * `catchUp` rule decides: "run-once" runs the latest missed slot once, "skip" runs nothing; either way the
 * next slot is the first one after now.
 */
export class LaneScheduler {
  readonly #db: Db;
  readonly #lanes: LaneService;
  readonly #log: Logger;
  readonly clock: () => Date;
  readonly graceMs: number;
  readonly #metrics: SchedulerMetrics | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<unknown> | undefined;

  constructor(o: { db: Db; lanes: LaneService; log: Logger; clock?: () => Date; graceMs?: number; metrics?: SchedulerMetrics }) {
    this.#db = o.db;
    this.#lanes = o.lanes;
    this.#log = o.log;
    this.clock = o.clock ?? (() => new Date());
    this.graceMs = o.graceMs ?? 120_000;
    this.#metrics = o.metrics;
  }

  start(intervalMs: number): void {
    const run = () => {
      // One tick at a time per replica: a slow tick is not overtaken by the next one.
      this.#ticking ??= this.tick()
        .catch((err: unknown) => this.#log.warn({ err: (err as Error).message }, 'lane scheduler tick failed; will retry'))
        .finally(() => {
          this.#ticking = undefined;
        });
    };
    this.#timer = setInterval(run, intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#ticking;
  }

  /** Fires every due slot once; then starts the runs this tick created. */
  async tick(): Promise<TickResult> {
    const now = this.clock();
    const out: TickResult = { fired: [], skipped: [] };
    const due = await this.#db.query<{ id: string; tenant_id: string }>(
      `SELECT l.id, l.tenant_id FROM lanes l JOIN tenants t ON t.id = l.tenant_id
        WHERE l.enabled AND l.schedule IS NOT NULL AND l.next_slot_at <= $1 AND t.status = 'active' ORDER BY l.next_slot_at LIMIT 100`,
      [now],
    );
    for (const d of due.rows) {
      try {
        await this.#fire(d.tenant_id, d.id, now, out);
      } catch (err) {
        this.#log.warn({ tenant_id: d.tenant_id, lane_id: d.id, err: (err as Error).message }, 'lane slot could not be fired; will retry');
      }
    }
    for (const f of out.fired) this.#metrics?.fired.inc({ trigger: f.trigger });
    this.#metrics?.ticks.inc();
    this.#metrics?.clock.set(now.getTime() / 1000);
    return out;
  }

  async #fire(tenantId: string, laneId: string, now: Date, out: TickResult): Promise<void> {
    let started: { runId: string; lane: Lane } | undefined;
    await this.#db.tx(async (tx) => {
      const lane = await this.#lanes.getLane(tenantId, laneId, tx);
      if (!lane.enabled || !lane.schedule || !lane.nextSlotAt) return;
      const slot = new Date(lane.nextSlotAt);
      if (slot > now) return;
      const tz = await this.#lanes.timeZone(tenantId, tx);
      const cron = parseCron(lane.schedule, tz, 'schedule');
      const next = cron.nextRun(now);
      // Compare-and-set: only the replica that still sees this slot advances it.
      const cas = await tx.query('UPDATE lanes SET next_slot_at = $3 WHERE tenant_id = $1 AND id = $2 AND next_slot_at = $4 AND enabled', [
        tenantId,
        laneId,
        next,
        slot,
      ]);
      if (cas.rowCount !== 1) return;
      const onTime = now.getTime() - slot.getTime() <= this.graceMs;
      let fireAt: Date | undefined = onTime ? slot : undefined;
      let missed = 0;
      if (!onTime) {
        // Every slot from the stored one up to now was missed; the latest of them is the one "run-once" runs.
        let latest = slot;
        missed = 1;
        for (let s = cron.nextRun(slot); s && s <= now && missed < 100_000; s = cron.nextRun(s)) {
          latest = s;
          missed++;
        }
        if (lane.catchUp === 'run-once') fireAt = latest;
        await appendAudit(tx, {
          actor: 'system:lanes',
          tenantId,
          action: 'lane.slots_missed',
          target: `lane:${laneId}`,
          decision: lane.catchUp === 'run-once' ? 'success' : 'deny',
          detail: { missed, from: slot.toISOString(), catchUp: lane.catchUp, ...(fireAt ? { runs: fireAt.toISOString() } : {}) },
          requestId: null,
        });
        out.skipped.push({ laneId, slots: fireAt ? missed - 1 : missed });
      }
      if (!fireAt) return;
      const run = await this.#lanes.insertRun(tx, lane, onTime ? 'schedule' : 'catch-up', fireAt, { actor: 'system:lanes' });
      if (run) {
        out.fired.push({ laneId, runId: run.id, slotAt: fireAt.toISOString(), trigger: onTime ? 'schedule' : 'catch-up' });
        if (run.status === 'queued') started = { runId: run.id, lane };
      }
    });
    // After commit: the run exists; should this process die now, housekeeping starts it (LaneRuntime).
    if (started) await this.#lanes.start(tenantId, started.runId, started.lane.steps);
  }
}
