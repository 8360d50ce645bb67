import { createHash } from 'node:crypto';
import { z } from 'zod';
import { AGENT_TYPES, type AgentType, type RiskClass } from '../tasks/types.ts';

/**
 * Executor pools (docs/adr/0014-executor-pools.md): per tenant and agent type, the gateway executors that
 * serve that type, split into shards. Executor counts are per shard; a pool starts with greatest(min, 1)
 * executors per shard and scales between min and max with its backlog (src/pools/scaler.ts), in sandboxes
 * of its own of at most `executorsPerSandbox` gateways each (placement.ts).
 */
export const POOL_STATES = ['active', 'paused', 'draining'] as const;
export type PoolState = (typeof POOL_STATES)[number];

/** Gateways one sandbox runs at most (the instance API's executor limit). */
export const MAX_POOL_GATEWAYS = 8;

const fields = {
  minExecutors: z
    .number()
    .int()
    .min(0)
    .max(8)
    .describe('Executors per shard kept running (0: the sandbox may stop when idle; one starts on work). Raising it starts executors at once'),
  maxExecutors: z
    .number()
    .int()
    .min(1)
    .max(8)
    .describe('Executors per shard at most: what the CPU and memory quotas reserve. Lowering it stops the executors above it once they are free'),
  shards: z
    .number()
    .int()
    .min(1)
    .max(8)
    .describe("Shards: a task goes to exactly one, chosen from its shardKey (or its id). Changing it re-routes the pool's unfinished tasks by the new count"),
  cpuMillis: z.number().int().min(100).max(64_000).describe('CPU per executor, in thousandths of a core (a sandbox takes a change at its next start)'),
  memoryMb: z.number().int().min(256).max(262_144).describe('Memory per executor, in MiB (a sandbox takes a change at its next start)'),
  executorsPerSandbox: z
    .number()
    .int()
    .min(1)
    .max(MAX_POOL_GATEWAYS)
    .describe(
      'Executors (gateway processes) one sandbox of the pool runs at most; scaling up fills a sandbox, then starts the next. A change moves no running executor: it places the others',
    ),
  scaleDownAfterSeconds: z
    .number()
    .int()
    .min(1)
    .max(86_400)
    .describe('An executor idle this long with nothing waiting on its shard is stopped (never below minExecutors)'),
};

export const poolInput = z
  .strictObject({
    agentType: z.enum(AGENT_TYPES),
    minExecutors: fields.minExecutors.default(1),
    maxExecutors: fields.maxExecutors.default(1),
    shards: fields.shards.default(1),
    cpuMillis: fields.cpuMillis.default(1000),
    memoryMb: fields.memoryMb.default(1024),
    executorsPerSandbox: fields.executorsPerSandbox.default(MAX_POOL_GATEWAYS),
    scaleDownAfterSeconds: fields.scaleDownAfterSeconds.default(300),
  })
  .refine((p) => p.maxExecutors >= p.minExecutors, { message: 'maxExecutors must be at least minExecutors', path: ['maxExecutors'] });
export type PoolInput = z.input<typeof poolInput>;

/**
 * What may change on a pool: every setting but its agent type (docs/adr/0014-executor-pools.md, Changing a
 * pool). Omitted fields keep their value.
 */
export const poolPatch = z.strictObject({
  minExecutors: fields.minExecutors.optional(),
  maxExecutors: fields.maxExecutors.optional(),
  shards: fields.shards.optional(),
  cpuMillis: fields.cpuMillis.optional(),
  memoryMb: fields.memoryMb.optional(),
  executorsPerSandbox: fields.executorsPerSandbox.optional(),
  scaleDownAfterSeconds: fields.scaleDownAfterSeconds.optional(),
});

export interface Pool {
  id: string;
  tenantId: string;
  agentType: AgentType;
  riskClass: RiskClass;
  minExecutors: number;
  maxExecutors: number;
  shards: number;
  cpuMillis: number;
  memoryMb: number;
  executorsPerSandbox: number;
  scaleDownAfterSeconds: number;
  state: PoolState;
  /** draining with nothing in flight: the pool has stopped. */
  drained: boolean;
  instanceId: string | null;
  /** Tasks waiting for an executor (queued or dispatched), per shard index. */
  queueDepth: number[];
  /** Executors running a turn now. */
  inFlight: number;
  /** Executors running (scaled to), per shard index. */
  activeExecutors: number[];
  /** Sandboxes with at least one running executor. */
  sandboxes: number;
  createdAt: string;
  updatedAt: string;
}

export interface PoolExecutor {
  id: string;
  poolId: string;
  shard: number;
  slot: number;
  /** The pool's sandbox it runs in (0: instance pool-<agentType>, n: pool-<agentType>-<n>). */
  sandbox: number;
  /** The gateway process in that sandbox (the supervisor's executor id). */
  gateway: string;
  /** Scaled up (its gateway runs); an inactive slot is what the pool may still grow into. */
  active: boolean;
  taskId: string | null;
  /** Turns it has run. */
  turns: number;
}

/** The executor a task's turn was given (what the gateway executor sends the turn to). */
export interface ExecutorClaim {
  id: string;
  poolId: string;
  shard: number;
  slot: number;
  gateway: string;
  /** Which of the pool's sandboxes it runs in (0: the first). */
  sandbox: number;
  /** The instance of the executor's sandbox (placement.ts: poolSandboxName); the waker deploys it on first work. */
  instanceName: string;
  /** Gateways that sandbox declares (executorsPerSandbox; the supervisor runs the active ones). */
  gateways: number;
  riskClass: RiskClass;
}

/**
 * The shard of a key: the first 32 bits of its SHA-256, modulo the shard count. Deterministic across
 * processes and versions (a key always lands on the same shard while the count is unchanged).
 */
export function shardOf(key: string, shards: number): number {
  return createHash('sha256').update(key, 'utf8').digest().readUInt32BE(0) % shards;
}
