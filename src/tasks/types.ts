import type { ExecutorClaim } from '../pools/types.ts';

/**
 * Durable tasks (issue 8): the shapes shared by the task service, the workflow and the executors.
 * One DBOS workflow per task (workflow id = task id); the `tasks` row is what people see.
 */
export const TASK_STATUSES = ['queued', 'dispatched', 'executing', 'waiting_approval', 'delegated', 'completed', 'failed', 'cancelled', 'expired'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
/** Statuses a task never leaves: every status update is guarded by `status NOT IN (TERMINAL)`. */
export const TERMINAL: readonly TaskStatus[] = ['completed', 'failed', 'cancelled', 'expired'];

export const PRIORITIES = ['low', 'normal', 'high', 'urgent'] as const;
export type Priority = (typeof PRIORITIES)[number];
/** DBOS dequeues lower numbers first. */
export const DBOS_PRIORITY: Record<Priority, number> = { urgent: 0, high: 1, normal: 2, low: 3 };

export const AGENT_TYPES = ['chat', 'coding', 'research', 'shell', 'browser'] as const;
export type AgentType = (typeof AGENT_TYPES)[number];
/** Agent types that run in their own sandbox, apart from the tenant's other agents (issue 8, item 5). */
export const HIGH_RISK_TYPES: readonly AgentType[] = ['shell', 'browser'];
export type RiskClass = 'standard' | 'high';

export interface Agent {
  id: string;
  tenantId: string;
  name: string;
  agentType: AgentType;
  capabilities: string[];
  model: string | null;
  /** 0 = quarantined (never dispatched), 1–3: higher is preferred by dispatch. */
  trustLevel: number;
  riskClass: RiskClass;
  createdAt: string;
  updatedAt: string;
}

export interface Task {
  id: string;
  tenantId: string;
  parentId: string | null;
  rootId: string;
  agentId: string | null;
  requestedAgent: string | null;
  capability: string | null;
  input: string;
  priority: Priority;
  /** The agent type the task is for (given, or the named or matching agent's at creation; else set at dispatch). */
  agentType: AgentType | null;
  /** The executor pool and shard that run it (docs/adr/0014-executor-pools.md); null without a pool for its type. */
  poolId: string | null;
  shard: number | null;
  shardKey: string | null;
  /** The pool executor that ran its last turn. */
  executorId: string | null;
  /** The swarm rule that decomposed it into child tasks (src/swarms); null for an ordinary task. */
  swarmRuleId: string | null;
  status: TaskStatus;
  statusReason: string;
  createdBy: string;
  output: string | null;
  confidence: number | null;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  attempts: number;
  createdAt: string;
  dispatchedAt: string | null;
  finishedAt: string | null;
  updatedAt: string;
}

export interface TraceEvent {
  id: number;
  step: string;
  kind: string;
  detail: Record<string, unknown>;
  at: string;
}

export interface TaskMessage {
  role: 'user' | 'assistant' | 'system';
  content: string;
  at: string;
}

export interface Approval {
  id: string;
  taskId: string;
  toolApprovalId: string | null;
  kind: 'tool' | 'exec';
  tool: string;
  summary: string;
  status: 'pending' | 'approved' | 'rejected' | 'expired';
  expiresAt: string;
  decidedBy: string | null;
  decidedAt: string | null;
  comment: string | null;
  createdAt: string;
}

/** Retries, timeouts and queue settings, from the configuration (CLAWPLANE_TASK_*). */
export interface TaskSettings {
  retryAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  taskTimeoutMs: number;
  chainTimeoutMs: number;
  approvalTtlSeconds: number;
  queuePollMs: number;
  workerConcurrency: number;
  /** How often executor pools are scaled to their backlog (src/pools/scaler.ts). */
  poolScaleIntervalMs: number;
}

export const DEFAULT_TASK_SETTINGS: TaskSettings = {
  retryAttempts: 3,
  retryBaseMs: 30_000,
  retryMaxMs: 300_000,
  taskTimeoutMs: 600_000,
  chainTimeoutMs: 1_800_000,
  approvalTtlSeconds: 86_400,
  queuePollMs: 1000,
  workerConcurrency: 100,
  poolScaleIntervalMs: 2000,
};

/** One turn an executor runs for a task. */
export interface Turn {
  tenantId: string;
  taskId: string;
  agent: Agent;
  /** The gateway session of this task, so a turn after an approval continues the same conversation. */
  sessionKey: string;
  /** The task's own input, as its creator wrote it. */
  input: string;
  /** What to send now (the task with recalled memories, or the continuation after an approval). */
  prompt: string;
  attempt: number;
  /** The pool executor this turn was given (the gateway executor sends it to that gateway of the pool's sandbox). */
  executor?: ExecutorClaim | undefined;
  /**
   * Exec commands a person approved for this task just before this turn. The turn that asked for them may be
   * gone (its worker died or stopped): if the gateway asks for one of them again, it is allowed once without
   * asking the person a second time.
   */
  approvedExec?: readonly string[] | undefined;
}

export interface TurnResult {
  output: string;
  /** Approvals the executor saw the gateway ask for (exec.approval.* on its WebSocket protocol). */
  approvals?: { kind: 'exec'; tool: string; summary: string }[];
}

/**
 * Where a task's turn runs (a port: the gateway executor in production, stand-ins in tests). Must
 * honour `signal` (step timeout or cancellation) and may stream progress into the trace.
 */
export interface TaskExecutor {
  readonly name: string;
  run(turn: Turn, ctx: { signal: AbortSignal; trace: (kind: string, detail?: Record<string, unknown>) => Promise<void> }): Promise<TurnResult>;
  /** Lets go of turns held while their tasks are parked (a stopping worker); returns how many. */
  abandonParked?(): number;
}
