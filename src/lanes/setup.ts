import path from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ObjectStore } from '../backup/types.ts';
import type { Db } from '../db/pool.ts';
import { enqueueWorkflow, ensureQueue } from '../durable/engine.ts';
import type { GatewayGate } from '../ingress/access.ts';
import { soloIdentity, WorkClaims, type ClaimIdentity } from '../replicas/claims.ts';
import type { TaskService } from '../tasks/service.ts';
import { LaneScheduler, schedulerMetrics } from './scheduler.ts';
import { LaneService } from './service.ts';
import { LaneSteps } from './steps.ts';
import type { LaneStep } from './types.ts';
import { bindLaneWorkflow, laneRunWorkflow } from './workflow.ts';

/** The DBOS queue lane runs go on (dequeued by worker replicas only). */
export const LANE_QUEUE = 'clawplane.lanes';

export interface LaneServices {
  lanes: LaneService;
  laneRuntime: LaneRuntime;
}

/**
 * The lanes' moving parts in one process: the workflow binding (every process), and on workers the scheduler
 * tick and the housekeeping sweep that starts runs whose workflow never started (a crash between the run's
 * insert and its enqueue).
 */
export class LaneRuntime {
  readonly steps: LaneSteps;
  readonly scheduler: LaneScheduler;
  readonly #db: Db;
  readonly #lanes: LaneService;
  readonly #claims: WorkClaims;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;

  constructor(o: { db: Db; lanes: LaneService; steps: LaneSteps; scheduler: LaneScheduler; claims: WorkClaims; log: Logger }) {
    this.#db = o.db;
    this.#lanes = o.lanes;
    this.steps = o.steps;
    this.scheduler = o.scheduler;
    this.#claims = o.claims;
    this.#log = o.log;
  }

  /** Binds the workflow; with `worker`, also ticks the scheduler and sweeps every `intervalMs`. */
  start(o: { worker: boolean; intervalMs?: number }): void {
    bindLaneWorkflow(this.steps);
    if (!o.worker) return;
    const every = o.intervalMs ?? 15_000;
    this.scheduler.start(every);
    const sweep = async () => {
      try {
        if (!(await this.#claims.claim('lanes.housekeeping', 'sweep', Math.max(this.#claims.id.ttlMs, every * 3)))) return;
        await this.startMissing();
      } catch (err) {
        this.#log.warn({ err: (err as Error).message }, 'lane housekeeping failed; will retry');
      }
    };
    this.#timer = setInterval(() => void sweep(), every);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    const started = this.#timer !== undefined;
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.scheduler.stop();
    if (started) await this.#claims.release('lanes.housekeeping', 'sweep').catch(() => undefined);
  }

  /** Starts queued runs that have no workflow (their lane's current steps; the step rows were made with the run). */
  async startMissing(): Promise<number> {
    const r = await this.#db.query<{ id: string; tenant_id: string; lane_id: string }>(
      `SELECT r.id, r.tenant_id, r.lane_id FROM lane_runs r
        WHERE r.status = 'queued' AND r.created_at < now() - interval '5 seconds'
          AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status w WHERE w.workflow_uuid = r.id::text) LIMIT 100`,
    );
    for (const x of r.rows) {
      const lane = await this.#lanes.getLane(x.tenant_id, x.lane_id);
      await this.#lanes.start(x.tenant_id, x.id, lane.steps);
    }
    return r.rows.length;
  }
}

export function createLaneServices(o: {
  db: Db;
  tasks: TaskService;
  store: ObjectStore;
  gate: GatewayGate;
  flushUsage: () => Promise<void>;
  approvalTtlSeconds: number;
  dataDir: string;
  log: Logger;
  node: string;
  claims?: ClaimIdentity;
  clock?: (() => Date) | undefined;
  registry?: Registry;
}): LaneServices {
  const log = o.log.child({ component: 'lanes' });
  const lanes = new LaneService(o.db);
  // An injected clock (tests) also places new lanes' first slots, so the scheduler and the API agree on "now".
  if (o.clock) lanes.now = o.clock;
  let queue: Promise<void> | undefined;
  lanes.useStarter(async (run: { tenantId: string; runId: string; steps: LaneStep[] }) => {
    queue ??= ensureQueue(LANE_QUEUE, { workerConcurrency: 50 }).catch((err: unknown) => {
      queue = undefined;
      throw err;
    });
    await queue;
    await enqueueWorkflow(laneRunWorkflow, run.runId, { queue: LANE_QUEUE }, run);
  });
  const steps = new LaneSteps({
    db: o.db,
    lanes,
    tasks: o.tasks,
    store: o.store,
    gate: o.gate,
    flushUsage: o.flushUsage,
    approvalTtlSeconds: o.approvalTtlSeconds,
    tmpDir: path.resolve(o.dataDir, 'run', 'lanes'),
    log,
  });
  const scheduler = new LaneScheduler({
    db: o.db,
    lanes,
    log,
    ...(o.clock ? { clock: o.clock } : {}),
    ...(o.registry ? { metrics: schedulerMetrics(o.registry) } : {}),
  });
  const claims = new WorkClaims(o.db, o.claims ?? soloIdentity(o.node));
  return { lanes, laneRuntime: new LaneRuntime({ db: o.db, lanes, steps, scheduler, claims, log }) };
}
