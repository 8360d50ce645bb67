import type { Logger } from 'pino';
import type { TaskTags } from '../broker/task-tag.ts';
import type { Registry } from 'prom-client';
import type { Db, Queryable } from '../db/pool.ts';
import type { GatewayGate } from '../ingress/access.ts';
import type { InstanceService } from '../instances/instances.ts';
import type { EgressPolicy } from '../net/ssrf.ts';
import { soloIdentity, WorkClaims, type ClaimIdentity } from '../replicas/claims.ts';
import type { SandboxDriver } from '../sandbox/types.ts';
import type { Vault } from '../vault/vault.ts';
import { ExecutorClaims } from '../pools/executors.ts';
import { registerPoolGauges } from '../pools/metrics.ts';
import { PoolScaler } from '../pools/scaler.ts';
import { PoolService } from '../pools/service.ts';
import type { EventChannel } from '../events/channel.ts';
import { SwarmRuleService } from '../swarms/rules.ts';
import { AgentService } from './agents.ts';
import { ApprovalService } from './approvals.ts';
import { GatewayExecutor, instanceWaker, type WakeFn } from './gateway-executor.ts';
import { registerQueueDepthGauge, TaskQueues } from './queues.ts';
import { TaskService } from './service.ts';
import { TaskSteps, type RecallFn } from './steps.ts';
import { TaskStore } from './store.ts';
import type { TaskExecutor, TaskSettings } from './types.ts';
import { ApprovalWebhooks } from './webhook.ts';
import type { ApprovalChat } from '../governance/approval-delivery.ts';
import { bindTaskWorkflow } from './workflow.ts';

/** Everything of issue 8 the API and the server need. */
export interface TaskServices {
  tasks: TaskService;
  agents: AgentService;
  approvals: ApprovalService;
  /** Executor pools per agent type, their shards, pause and drain (docs/adr/0014-executor-pools.md). */
  pools: PoolService;
  /** Swarm rules: capabilities a tenant decomposes into child tasks for several agent types (src/swarms). */
  swarms: SwarmRuleService;
  /** The workflow's step bodies; `useExecutor` swaps where turns run (tests install stand-ins). */
  taskRuntime: TaskRuntime;
  /** Scales executor pools between min and max (started with the reconciler role). */
  poolScaler: PoolScaler;
}

export class TaskRuntime {
  readonly steps: TaskSteps;
  readonly #tasks: TaskService;
  readonly #log: Logger;
  readonly #claims: WorkClaims | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(steps: TaskSteps, tasks: TaskService, log: Logger, claims?: WorkClaims) {
    this.steps = steps;
    this.#tasks = tasks;
    this.#log = log;
    this.#claims = claims;
  }

  useExecutor(e: TaskExecutor): void {
    this.steps.executor = e;
  }

  /**
   * Binds the workflow to these services (every process: a workflow recovered here waits for it) and, unless
   * `housekeeping` is false (a process without the worker role), starts the housekeeping sweep.
   */
  start(intervalMs = 5000, opts: { housekeeping?: boolean } = {}): void {
    bindTaskWorkflow(this.steps);
    if (opts.housekeeping === false) return;
    const tick = async () => {
      try {
        // One worker sweeps at a time (a lease renewed by each sweep of its holder; lapses if it dies).
        if (this.#claims && !(await this.#claims.claim('tasks.housekeeping', 'sweep', Math.max(this.#claims.id.ttlMs, intervalMs * 3)))) return;
        await this.#tasks.reconcileEnded();
        await this.#tasks.enqueueMissing();
      } catch (err) {
        this.#log.warn({ err: (err as Error).message }, 'task housekeeping failed; will retry');
      }
    };
    this.#timer = setInterval(() => void tick(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    // Turns parked at an approval would go with this process anyway: let the gateways end them now.
    this.steps.executor.abandonParked?.();
    const started = this.#timer !== undefined;
    clearInterval(this.#timer);
    this.#timer = undefined;
    // Hand the sweep over at once (best effort: otherwise it lapses after the expiry).
    if (started && this.#claims) void this.#claims.release('tasks.housekeeping', 'sweep').catch(() => undefined);
  }
}

export function createTaskServices(o: {
  db: Db;
  vault: Vault;
  egress: EgressPolicy;
  log: Logger;
  registry: Registry;
  settings: TaskSettings;
  instances: InstanceService;
  sandboxes: SandboxDriver;
  gate: GatewayGate;
  readyTimeoutMs: number;
  flushUsage: () => Promise<void>;
  /** The tag a turn carries so the broker meters its model calls to the task (src/broker/task-tag.ts). */
  taskTags: TaskTags;
  wake?: WakeFn;
  /** Memory recall before a task (src/knowledge: words and meaning); default: by words only. */
  recall?: RecallFn;
  /** This replica as a claimer (housekeeping lease, one turn per gateway across workers); default: this process alone. */
  claims?: ClaimIdentity;
  /** Where approval requests are also posted (the tenant's Telegram/Slack chats). */
  approvalChat?: ApprovalChat;
  /** Tells every replica's reconciler that an instance's desired executors changed. */
  events?: EventChannel;
}): TaskServices {
  const log = o.log.child({ component: 'tasks' });
  const store = new TaskStore(o.db);
  const agents = new AgentService(o.db);
  const webhooks = new ApprovalWebhooks({ db: o.db, vault: o.vault, egress: o.egress, log, chat: o.approvalChat });
  const approvals = new ApprovalService({ db: o.db, webhooks });
  const queues = new TaskQueues({ pollMs: o.settings.queuePollMs, workerConcurrency: o.settings.workerConcurrency });
  const wake = o.wake ?? instanceWaker({ gate: o.gate, instances: o.instances, sandboxes: o.sandboxes, readyTimeoutMs: o.readyTimeoutMs });
  const claims = new WorkClaims(o.db, o.claims ?? soloIdentity(o.instances.node));
  const events = o.events;
  /** Pool sandboxes whose executor set changed: every replica's reconciler looks at once. */
  const publish = events
    ? async (tx: Queryable, ids: string[]) => {
        for (const instanceId of ids) await events.publish(tx, 'instance.changed', { instanceId });
      }
    : undefined;
  const pools = new PoolService(o.db, publish ? { publish } : {});
  const executorClaims = new ExecutorClaims(o.db, claims.id.ttlMs);
  const executor = new GatewayExecutor({ wake, db: o.db, log, flushUsage: o.flushUsage, taskTags: o.taskTags, claims: claims.id });
  // OpenClaw's exec approvals (exec mode ask): a rejection or expiry refuses the held command on the gateway.
  approvals.onDecided((_tenant, taskId, a, decision) => {
    if (a.kind === 'exec') void executor.decided(taskId, decision);
  });
  const steps = new TaskSteps({
    db: o.db,
    store,
    agents,
    approvals,
    settings: o.settings,
    log,
    executor,
    flushUsage: o.flushUsage,
    ...(o.recall ? { recall: o.recall } : {}),
    pools: { pools, claims: executorClaims, owner: claims.id.owner },
  });
  const swarms = new SwarmRuleService(o.db);
  const tasks = new TaskService({ db: o.db, store, agents, approvals, queues, pools, swarms });
  registerQueueDepthGauge(o.registry, o.db);
  registerPoolGauges(o.registry, o.db);
  const poolScaler = new PoolScaler({
    db: o.db,
    log: o.log.child({ component: 'pools' }),
    intervalMs: o.settings.poolScaleIntervalMs,
    ...(publish ? { publish } : {}),
    // A sandbox left with no executor stops (the next claim of one of its executors starts it again).
    onScaled: async (boxes) => {
      for (const b of boxes.filter((x) => x.active === 0)) {
        const inst = (await o.instances.list(b.tenantId)).find((i) => i.name === b.instanceName && i.desiredState === 'running');
        if (inst) await o.instances.stop(b.tenantId, inst.id, { actor: 'system:pool-scaler' }, 'its pool scaled every executor in it down');
      }
    },
  });
  return { tasks, agents, approvals, pools, swarms, taskRuntime: new TaskRuntime(steps, tasks, log, claims), poolScaler };
}
