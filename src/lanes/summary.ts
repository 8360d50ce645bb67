import { z } from 'zod';
import { FINDING_SEVERITIES, LANE_CHECKS, type Run } from './types.ts';

/**
 * `summary.json`, written once per run under `artifacts/<tenant id>/lanes/<lane>/<stamp>/` (docs/lane-summary.md).
 * Versioned: a reader checks `schemaVersion`; fields are only added within a version.
 */
export const SUMMARY_SCHEMA_VERSION = 1;

const stepSummary = z.object({
  index: z.number().int(),
  name: z.string(),
  status: z.enum(['pending', 'waiting_approval', 'running', 'succeeded', 'failed', 'skipped']),
  reason: z.string(),
  taskId: z.string().nullable(),
  requiresApproval: z.boolean(),
  approvedBy: z.string().nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  durationMs: z.number().int().nullable(),
  inputTokens: z.number().int(),
  outputTokens: z.number().int(),
  costUsd: z.number(),
  modelCalls: z.number().int(),
  artifactBytes: z.number().int(),
  /** A check step's check and findings (the doctor lane); null for agent steps. Added within version 1 (older documents read as null). */
  check: z.enum(LANE_CHECKS).nullable().default(null),
  findings: z
    .array(z.object({ check: z.enum(LANE_CHECKS), severity: z.enum(FINDING_SEVERITIES), subject: z.string(), message: z.string() }))
    .nullable()
    .default(null),
});

export const laneSummary = z.object({
  schemaVersion: z.literal(SUMMARY_SCHEMA_VERSION),
  tenantId: z.string(),
  lane: z.object({ id: z.string(), name: z.string() }),
  run: z.object({ id: z.string(), trigger: z.enum(['schedule', 'catch-up', 'manual']), slotAt: z.string().nullable(), createdBy: z.string() }),
  status: z.enum(['succeeded', 'failed', 'cancelled']),
  reason: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string(),
  durationMs: z.number().int().nullable(),
  /** Steps that ran a task (succeeded or failed after starting one). */
  jobCount: z.number().int(),
  steps: z.array(stepSummary),
  tokens: z.object({ input: z.number().int(), output: z.number().int(), total: z.number().int() }),
  costUsd: z.number(),
  modelCalls: z.number().int(),
  /** Bytes of the run's other artifacts (step outputs); the summary's own size is not included. */
  artifactBytes: z.number().int(),
  /** Findings of its check steps by severity (all zero for a lane without checks). Added within version 1. */
  findings: z.object({ ok: z.number().int(), warn: z.number().int(), fail: z.number().int() }).default({ ok: 0, warn: 0, fail: 0 }),
});
export type LaneSummary = z.infer<typeof laneSummary>;

const ms = (a: string | null, b: string | null) => (a && b ? Date.parse(b) - Date.parse(a) : null);
const round8 = (n: number) => Math.round(n * 1e8) / 1e8;

/** The summary of an ended run, from its rows (`artifacts`: bytes of each step's output artifact by step index). */
export function buildSummary(
  run: Run,
  status: LaneSummary['status'],
  reason: string,
  finishedAt: string,
  artifacts: Map<number, number>,
  checks: Map<number, (typeof LANE_CHECKS)[number]> = new Map(),
): LaneSummary {
  const steps = run.steps.map((s) => ({
    index: s.index,
    name: s.name,
    status: s.status,
    reason: s.reason,
    taskId: s.taskId,
    requiresApproval: s.requiresApproval,
    approvedBy: s.requiresApproval && s.decidedBy && s.status !== 'failed' ? s.decidedBy : null,
    startedAt: s.startedAt,
    finishedAt: s.finishedAt,
    durationMs: ms(s.startedAt, s.finishedAt),
    inputTokens: s.inputTokens,
    outputTokens: s.outputTokens,
    costUsd: s.costUsd,
    modelCalls: s.modelCalls,
    artifactBytes: artifacts.get(s.index) ?? 0,
    check: checks.get(s.index) ?? null,
    findings: s.findings,
  }));
  const all = steps.flatMap((s) => s.findings ?? []);
  const severity = (v: (typeof FINDING_SEVERITIES)[number]) => all.filter((f) => f.severity === v).length;
  const input = steps.reduce((n, s) => n + s.inputTokens, 0);
  const output = steps.reduce((n, s) => n + s.outputTokens, 0);
  return {
    schemaVersion: SUMMARY_SCHEMA_VERSION,
    tenantId: run.tenantId,
    lane: { id: run.laneId, name: run.lane },
    run: { id: run.id, trigger: run.trigger, slotAt: run.slotAt, createdBy: run.createdBy },
    status,
    reason,
    startedAt: run.startedAt,
    finishedAt,
    durationMs: ms(run.startedAt, finishedAt),
    jobCount: steps.filter((s) => s.taskId !== null).length,
    steps,
    tokens: { input, output, total: input + output },
    costUsd: round8(steps.reduce((n, s) => n + s.costUsd, 0)),
    modelCalls: steps.reduce((n, s) => n + s.modelCalls, 0),
    artifactBytes: steps.reduce((n, s) => n + s.artifactBytes, 0),
    findings: { ok: severity('ok'), warn: severity('warn'), fail: severity('fail') },
  };
}

/** The run's folder in the object store: `artifacts/<tenant id>/lanes/<lane>/<UTC stamp of its creation>`. */
export function runPrefix(tenantId: string, lane: string, createdAt: string): string {
  const stamp = createdAt.replace(/[-:]/g, '').replace('T', '-').replace('.', '-').replace('Z', 'z').toLowerCase();
  return `artifacts/${tenantId}/lanes/${lane}/${stamp}`;
}
