import { createRoute, z } from '@hono/zod-openapi';
import {
  FINDING_SEVERITIES,
  LANE_CHECKS,
  laneInput,
  lanePatch,
  LANE_KINDS,
  platformLaneSettings,
  projectInput,
  projectPatch,
  RUN_STATUSES,
  RUN_TRIGGERS,
  STEP_STATUSES,
  CATCH_UP,
} from '../../lanes/types.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow, allowPlatform } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const Patterns = z.array(z.string());
const PlatformLaneSettingsSchema = z
  .object({
    allowedRepositories: Patterns,
    allowedHosts: Patterns,
    allowedDataSources: Patterns,
    allowedLaneKinds: z.array(z.enum(LANE_KINDS)),
    maxRunsPerDay: z.number(),
    minScheduleMinutes: z.number(),
    readOnlyOnly: z.boolean(),
  })
  .openapi('PlatformLaneSettings');
const ProjectSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    name: z.string(),
    description: z.string(),
    repositories: Patterns,
    hosts: Patterns,
    dataSources: Patterns,
    laneKinds: z.array(z.enum(LANE_KINDS)),
    runsPerDay: z.number(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Project');
const LaneStepSchema = z
  .object({
    name: z.string(),
    agent: z.string().optional(),
    capability: z.string().optional(),
    input: z.string().optional(),
    check: z.enum(LANE_CHECKS).optional(),
    requiresApproval: z.boolean(),
  })
  .openapi('LaneStep');
const FindingSchema = z
  .object({
    check: z.enum(LANE_CHECKS),
    severity: z.enum(FINDING_SEVERITIES),
    subject: z.string().openapi({ description: 'What it is about: an instance, a budget, a credential' }),
    message: z.string(),
  })
  .openapi('LaneFinding');
const LaneSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    projectId: z.uuid(),
    project: z.string(),
    name: z.string(),
    kind: z.enum(LANE_KINDS),
    description: z.string(),
    steps: z.array(LaneStepSchema),
    readOnly: z.boolean(),
    harmless: z.boolean(),
    enabled: z.boolean(),
    schedule: z.string().nullable(),
    catchUp: z.enum(CATCH_UP),
    nextSlotAt: z.string().nullable().openapi({ description: 'The next scheduled slot (UTC); null when on demand only' }),
    createdBy: z.string(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Lane');
const RunStepSchema = z
  .object({
    index: z.number(),
    name: z.string(),
    requiresApproval: z.boolean(),
    status: z.enum(STEP_STATUSES),
    reason: z.string(),
    taskId: z.string().nullable(),
    decidedBy: z.string().nullable(),
    inputTokens: z.number(),
    outputTokens: z.number(),
    costUsd: z.number(),
    modelCalls: z.number(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    findings: z.array(FindingSchema).nullable().openapi({ description: "A check step's findings (the doctor lane); null for agent steps" }),
  })
  .openapi('LaneRunStep');
const RunSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    laneId: z.uuid(),
    lane: z.string(),
    trigger: z.enum(RUN_TRIGGERS),
    slotAt: z.string().nullable(),
    status: z.enum(RUN_STATUSES),
    reason: z.string(),
    createdBy: z.string(),
    summaryKey: z.string().nullable().openapi({ description: 'Object-store key of summary.json (docs/lane-summary.md)' }),
    artifactBytes: z.number(),
    inputTokens: z.number(),
    outputTokens: z.number(),
    costUsd: z.number(),
    modelCalls: z.number(),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    steps: z.array(RunStepSchema),
  })
  .openapi('LaneRun');

const ProjectParams = TenantParam.extend({ projectId: z.uuid().openapi({ param: { name: 'projectId', in: 'path' } }) });
const LaneParams = TenantParam.extend({ laneId: z.uuid().openapi({ param: { name: 'laneId', in: 'path' } }) });
const RunParams = TenantParam.extend({ runId: z.uuid().openapi({ param: { name: 'runId', in: 'path' } }) });
const StepParams = RunParams.extend({
  step: z.coerce
    .number()
    .int()
    .min(0)
    .max(19)
    .openapi({ param: { name: 'step', in: 'path' }, description: 'Step index, from 0' }),
});
const RunsQuery = z.object({
  laneId: z.uuid().optional(),
  status: z.enum(RUN_STATUSES).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
const DecisionBody = z.strictObject({ comment: z.string().max(2000).optional() });
const CancelBody = z.strictObject({ reason: z.string().max(500).optional() });
const TimeZoneBody = z.strictObject({ timeZone: z.string().min(1).max(64).describe('IANA time zone, e.g. "Europe/Berlin"') });
const Removed = z.object({ removed: z.literal(true) });
const DoctorLaneBody = z.strictObject({ enabled: z.boolean() });

/**
 * Projects, lanes and their runs (docs/lanes.md). Reading needs tenant.read; projects, lanes and the time zone
 * are governance (tenant.admin); starting a run and deciding an approval start work (tenant.operate).
 */
export function registerLanes(app: App, deps: RouteDeps<'lanes'>): void {
  const { lanes } = deps;
  const base = '/api/v1/tenants/{tenant}';

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/lane-settings',
      tags: ['lanes'],
      summary: 'What tenant projects and lanes may use at most (platform admin)',
      responses: { 200: json(PlatformLaneSettingsSchema), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      return c.json(await lanes.platformSettings(), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/platform/lane-settings',
      tags: ['lanes'],
      summary: 'Replace the platform lane settings: allow-lists, lane kinds, rate limits, hard rules (existing projects are not re-checked)',
      request: { body: jsonBody(platformLaneSettings) },
      responses: { 200: json(PlatformLaneSettingsSchema), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      return c.json(await lanes.setPlatformSettings(c.req.valid('json'), by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/lane-settings`,
      tags: ['lanes'],
      summary: "The tenant's time zone, in which lane schedules are read",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ timeZone: z.string() })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ timeZone: await lanes.timeZone(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: `${base}/lane-settings`,
      tags: ['lanes'],
      summary: "Set the tenant's time zone (scheduled lanes move to their next slot in it)",
      request: { params: TenantParam, body: jsonBody(TimeZoneBody) },
      responses: { 200: json(z.object({ timeZone: z.string() })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await lanes.setTimeZone(tenant.id, c.req.valid('json').timeZone, by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/projects`,
      tags: ['lanes'],
      summary: "The tenant's projects: what its agents may work on",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(ProjectSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await lanes.listProjects(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/projects`,
      tags: ['lanes'],
      summary: 'Create a project; anything broader than the platform settings is refused with the rule’s name',
      request: { params: TenantParam, body: jsonBody(projectInput) },
      responses: { 201: json(ProjectSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await lanes.createProject(tenant.id, c.req.valid('json'), by), 201);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/projects/{projectId}`,
      tags: ['lanes'],
      summary: 'One project',
      request: { params: ProjectParams },
      responses: { 200: json(ProjectSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await lanes.getProject(tenant.id, c.req.valid('param').projectId), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'patch',
      path: `${base}/projects/{projectId}`,
      tags: ['lanes'],
      summary: 'Change a project (checked against the platform settings again)',
      request: { params: ProjectParams, body: jsonBody(projectPatch) },
      responses: { 200: json(ProjectSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await lanes.updateProject(tenant.id, c.req.valid('param').projectId, c.req.valid('json'), by), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/projects/{projectId}`,
      tags: ['lanes'],
      summary: 'Delete a project and its lanes',
      request: { params: ProjectParams },
      responses: { 200: json(Removed), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await lanes.removeProject(tenant.id, c.req.valid('param').projectId, by);
      return c.json({ removed: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/lanes`,
      tags: ['lanes'],
      summary: "The tenant's lanes",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(LaneSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await lanes.listLanes(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/lanes`,
      tags: ['lanes'],
      summary: 'Create a lane: steps run in order as tasks, on a cron schedule in the tenant time zone or on demand; disabled unless harmless',
      request: { params: TenantParam, body: jsonBody(laneInput) },
      responses: { 201: json(LaneSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await lanes.createLane(tenant.id, c.req.valid('json'), by), 201);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: `${base}/doctor-lane`,
      tags: ['lanes'],
      summary:
        "Enable or disable the tenant's built-in doctor lane: hourly instance health, budgets near their caps, credentials about to expire, computed by Clawplane (created when first enabled)",
      request: { params: TenantParam, body: jsonBody(DoctorLaneBody) },
      responses: { 200: json(LaneSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await lanes.setDoctorLane(tenant.id, c.req.valid('json').enabled, by), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/lanes/{laneId}`,
      tags: ['lanes'],
      summary: 'One lane',
      request: { params: LaneParams },
      responses: { 200: json(LaneSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await lanes.getLane(tenant.id, c.req.valid('param').laneId), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'patch',
      path: `${base}/lanes/{laneId}`,
      tags: ['lanes'],
      summary: 'Change a lane (enable it, its schedule, steps, catch-up rule)',
      request: { params: LaneParams, body: jsonBody(lanePatch) },
      responses: { 200: json(LaneSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await lanes.updateLane(tenant.id, c.req.valid('param').laneId, c.req.valid('json'), by), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/lanes/{laneId}`,
      tags: ['lanes'],
      summary: 'Delete a lane and its run history (409 while a run is in progress)',
      request: { params: LaneParams },
      responses: { 200: json(Removed), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await lanes.removeLane(tenant.id, c.req.valid('param').laneId, by);
      return c.json({ removed: true as const }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/lanes/{laneId}/runs`,
      tags: ['lanes'],
      summary: 'Run the lane now (counts against its project’s runs per day; a disabled lane may be run by hand)',
      request: { params: LaneParams },
      responses: { 201: json(RunSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await lanes.trigger(tenant.id, c.req.valid('param').laneId, by), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/lane-runs`,
      tags: ['lanes'],
      summary: 'Lane runs, newest first, with each step’s live status',
      request: { params: TenantParam, query: RunsQuery },
      responses: { 200: json(z.object({ items: z.array(RunSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await lanes.listRuns(tenant.id, c.req.valid('query')) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/lane-runs/{runId}`,
      tags: ['lanes'],
      summary: 'One run: status, each step’s status, reason, timings, tokens, cost',
      request: { params: RunParams },
      responses: { 200: json(RunSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await lanes.getRun(tenant.id, c.req.valid('param').runId), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/lane-runs/{runId}/cancel`,
      tags: ['lanes'],
      summary: 'Cancel a run that has not ended: its unfinished steps are skipped and the task it waits on is cancelled (409 when it already ended)',
      request: { params: RunParams, body: jsonBody(CancelBody) },
      responses: { 200: json(RunSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await lanes.cancel(tenant.id, c.req.valid('param').runId, { ...by, reason: c.req.valid('json').reason }), 200);
    },
  );
  for (const [op, decision] of [
    ['approve', 'approved'],
    ['reject', 'rejected'],
  ] as const) {
    app.openapi(
      createRoute({
        method: 'post',
        path: `${base}/lane-runs/{runId}/steps/{step}/${op}`,
        tags: ['lanes'],
        summary: `${op === 'approve' ? 'Approve' : 'Reject'} a step parked for approval (${op === 'approve' ? 'it runs next' : 'the run halts; later steps are skipped'})`,
        request: { params: StepParams, body: jsonBody(DecisionBody) },
        responses: { 200: json(RunSchema), ...errorResponses },
      }),
      async (c) => {
        const { tenant, by } = allow(c, 'tenant.operate');
        const p = c.req.valid('param');
        return c.json(await lanes.decide(tenant.id, p.runId, p.step, decision, { ...by, comment: c.req.valid('json').comment }), 200);
      },
    );
  }
}
