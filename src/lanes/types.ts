import { z } from 'zod';

/**
 * Lanes (docs/lanes.md): named pipelines of agent steps a tenant runs on a schedule or on demand, inside
 * projects that say what its agents may work on. Shapes shared by the services, the workflow and the API.
 */
export const LANE_KINDS = ['health', 'analysis', 'content', 'browser', 'custom'] as const;
export type LaneKind = (typeof LANE_KINDS)[number];
export const CATCH_UP = ['run-once', 'skip'] as const;
export type CatchUp = (typeof CATCH_UP)[number];
export const RUN_STATUSES = ['queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export const RUN_ENDED: readonly RunStatus[] = ['succeeded', 'failed', 'cancelled'];
export const STEP_STATUSES = ['pending', 'waiting_approval', 'running', 'succeeded', 'failed', 'skipped'] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];
export const RUN_TRIGGERS = ['schedule', 'catch-up', 'manual'] as const;
export type RunTrigger = (typeof RUN_TRIGGERS)[number];

const Name = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'lowercase letters, digits and inner hyphens, at most 40, e.g. "nightly-health"');
/** An allow-list entry: an exact value, a prefix ending in `*`, or a suffix after a leading `*` (`*` alone: anything). */
const Pattern = z
  .string()
  .min(1)
  .max(300)
  .regex(/^(\*?[^\s*]*|[^\s*]*\*)$/, 'an exact value, a prefix ending in * ("github.com/acme/*") or a suffix after a leading * ("*.acme.com")');
const Patterns = z.array(Pattern).max(200);

/** The platform's lane settings (platform_settings 'lanes'): tenant projects and lanes may only narrow them. */
export const platformLaneSettings = z.strictObject({
  allowedRepositories: Patterns.default(['*']).describe('Repositories projects may name'),
  allowedHosts: Patterns.default(['*']).describe('Hosts projects may name'),
  allowedDataSources: Patterns.default(['*']).describe('Data sources projects may name'),
  allowedLaneKinds: z
    .array(z.enum(LANE_KINDS))
    .max(LANE_KINDS.length)
    .default(['health', 'analysis', 'content', 'custom'])
    .describe('Lane kinds tenants may enable (browser only when listed)'),
  maxRunsPerDay: z.number().int().min(0).max(10_000).default(96).describe('Highest runsPerDay a project may set'),
  minScheduleMinutes: z.number().int().min(1).max(10_080).default(15).describe('Shortest interval between two scheduled runs of a lane'),
  readOnlyOnly: z.boolean().default(false).describe('Hard rule: every lane must be read-only'),
});
export type PlatformLaneSettings = z.output<typeof platformLaneSettings>;

export const projectInput = z.strictObject({
  name: Name,
  description: z.string().max(500).default(''),
  repositories: Patterns.default([]),
  hosts: Patterns.default([]),
  dataSources: Patterns.default([]),
  laneKinds: z.array(z.enum(LANE_KINDS)).max(LANE_KINDS.length).default([]).describe('Lane kinds this project enables'),
  runsPerDay: z.number().int().min(0).max(10_000).default(24).describe('Lane runs per UTC day across the project (scheduled and manual)'),
});
export type ProjectInput = z.input<typeof projectInput>;
export const projectPatch = projectInput.omit({ name: true }).partial().strict();

export interface Project {
  id: string;
  tenantId: string;
  name: string;
  description: string;
  repositories: string[];
  hosts: string[];
  dataSources: string[];
  laneKinds: LaneKind[];
  runsPerDay: number;
  createdAt: string;
  updatedAt: string;
}

/** Checks Clawplane computes itself as lane steps (the doctor lane, src/lanes/checks.ts): no agent, no task, no model call. */
export const LANE_CHECKS = ['instance-health', 'budgets', 'credentials'] as const;
export type LaneCheck = (typeof LANE_CHECKS)[number];

export const laneStep = z
  .strictObject({
    name: Name,
    agent: z.string().min(1).max(64).optional().describe('Agent name or id; otherwise dispatch picks by capability'),
    capability: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/)
      .optional(),
    input: z.string().min(1).max(20_000).optional().describe("The task's input (agent steps)"),
    check: z.enum(LANE_CHECKS).optional().describe('A check Clawplane computes itself instead of a task: the step records findings'),
    requiresApproval: z.boolean().default(false).describe('The run parks before this step until a person approves it'),
  })
  .superRefine((s, ctx) => {
    if (s.check !== undefined) {
      for (const k of ['agent', 'capability', 'input'] as const)
        if (s[k] !== undefined) ctx.addIssue({ code: 'custom', message: 'a check step names no agent, capability or input', path: [k] });
      return;
    }
    if (s.agent === undefined && s.capability === undefined)
      ctx.addIssue({ code: 'custom', message: 'name an agent or a capability (or a check)', path: ['capability'] });
    if (s.input === undefined) ctx.addIssue({ code: 'custom', message: "an agent step needs the task's input", path: ['input'] });
  });
export type LaneStep = z.output<typeof laneStep>;

export const FINDING_SEVERITIES = ['ok', 'warn', 'fail'] as const;
export type FindingSeverity = (typeof FINDING_SEVERITIES)[number];
/** One thing a check step found: `subject` names what it is about (an instance, a budget, a credential). */
export interface Finding {
  check: LaneCheck;
  severity: FindingSeverity;
  subject: string;
  message: string;
}

/** Five-field cron (minute hour day month weekday), read in the tenant's time zone. */
const Cron = z
  .string()
  .min(9)
  .max(100)
  .regex(/^\S+( \S+){4}$/, 'five cron fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *"');

const laneFields = {
  project: Name.describe("The project's name"),
  kind: z.enum(LANE_KINDS),
  description: z.string().max(500).default(''),
  steps: z.array(laneStep).min(1).max(20),
  readOnly: z.boolean().default(true).describe('Steps run with write tools forbidden'),
  harmless: z.boolean().default(false).describe('A harmless lane is enabled when created; others start disabled'),
  enabled: z.boolean().optional().describe('Default: the value of harmless'),
  schedule: Cron.nullable().default(null).describe('Cron in the tenant time zone; null: on demand only'),
  catchUp: z.enum(CATCH_UP).default('skip').describe('After downtime: run the latest missed slot once, or skip missed slots'),
};
export const laneInput = z.strictObject({ name: Name, ...laneFields });
export type LaneInput = z.input<typeof laneInput>;
export const lanePatch = z.strictObject(laneFields).partial();
export type LanePatch = z.input<typeof lanePatch>;

export interface Lane {
  id: string;
  tenantId: string;
  projectId: string;
  project: string;
  name: string;
  kind: LaneKind;
  description: string;
  steps: LaneStep[];
  readOnly: boolean;
  harmless: boolean;
  enabled: boolean;
  schedule: string | null;
  catchUp: CatchUp;
  nextSlotAt: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface RunStep {
  index: number;
  name: string;
  requiresApproval: boolean;
  status: StepStatus;
  reason: string;
  taskId: string | null;
  decidedBy: string | null;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  modelCalls: number;
  startedAt: string | null;
  finishedAt: string | null;
  /** A check step's findings; null for agent steps and checks that have not run. */
  findings: Finding[] | null;
}

export interface Run {
  id: string;
  tenantId: string;
  laneId: string;
  lane: string;
  trigger: RunTrigger;
  slotAt: string | null;
  status: RunStatus;
  reason: string;
  createdBy: string;
  summaryKey: string | null;
  artifactBytes: number;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  modelCalls: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  steps: RunStep[];
}
