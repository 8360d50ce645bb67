import { createHash } from 'node:crypto';
import microdiff from 'microdiff';
import { z } from 'zod';
import { canonicalJson } from '../audit/chain.ts';
import type { AgentDefaults } from '../identity/onboarding.ts';
import { renderOpenclawConfig, toolPolicyFor, type Json, type RenderInput, type ToolRestrictions } from '../runtime/config.ts';
import type { GatewayLayout } from '../sandbox/types.ts';

/**
 * What a tenant chooses about its gateways' configuration (docs/adr/0013-gateway-config-versions.md): the part
 * of a version a rollback restores. Everything else in the rendered openclaw.json comes from the platform
 * (hardening, the broker route) or from the tenant's current tool policy, which a rollback never loosens.
 */

/** Keys that name a credential: a value there would be a secret in openclaw.json, so it is refused (use the vault). */
const SECRET_KEY = /(token|secret|password|passphrase|api[-_]?key|credential|private[-_]?key|auth)$/i;

export const GatewaySettingsSchema = z
  .strictObject({
    models: z
      .array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/, 'a model id the broker routes, e.g. "gpt-4o-mini"'))
      .min(1)
      .max(16)
      .optional()
      .describe("Model ids the gateway offers its agents, the primary first (default: the platform's default model)"),
    heartbeatEvery: z
      .string()
      .regex(/^(0|[1-9][0-9]{0,5})(m|h)$/, 'minutes or hours, e.g. "30m", "2h"; "0m" turns the heartbeat off')
      .optional()
      .describe('How often OpenClaw wakes each agent on its own (a model call each time); "0m" is off (the default)'),
    memory: z
      // Values are whatever JSON the body held (a recursive schema would not fit the OpenAPI document).
      .record(z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, 'a setting name of the memory-core plugin'), z.unknown())
      .refine((m) => JSON.stringify(m).length <= 8000, 'at most 8000 characters of JSON')
      .optional()
      .describe("Settings of OpenClaw's memory-core plugin, passed through; OpenClaw checks them when the gateway starts"),
  })
  .superRefine((s, ctx) => {
    for (const k of Object.keys(s.memory ?? {})) {
      if (k === 'dreaming')
        ctx.addIssue({ code: 'custom', path: ['memory', k], message: 'dreaming is governed by the platform (background model spend) and cannot be set here' });
      else if (SECRET_KEY.test(k))
        ctx.addIssue({
          code: 'custom',
          path: ['memory', k],
          message: 'looks like a credential: secrets never go into a gateway configuration (store it in the vault)',
        });
    }
  });
export type GatewaySettings = z.infer<typeof GatewaySettingsSchema>;

/** The kinds of change review rules can name. */
export const CHANGE_KINDS = ['models', 'heartbeat', 'plugins', 'tools', 'agents', 'platform', 'rollback', 'initial'] as const;
export type ChangeKind = (typeof CHANGE_KINDS)[number];
/** The kinds a tenant may put under review (tools follow the policy API, platform the platform admins). */
export const REVIEWABLE_KINDS = ['models', 'heartbeat', 'plugins', 'rollback'] as const;

/** `30m` / `2h` in minutes; 0 is off. */
export function heartbeatMinutes(every: string): number {
  const m = /^(\d+)(m|h)$/.exec(every);
  if (!m) return 0;
  return Number(m[1]) * (m[2] === 'h' ? 60 : 1);
}

/** What the database says besides the tenant's settings: platform defaults, the tool policy, the heartbeat cap. */
export interface LiveInputs {
  defaults: AgentDefaults;
  restrictions: ToolRestrictions;
  /** The caps that bind the tenant's (default) agent (src/governance/versions.ts effectiveCaps). */
  heartbeatMinMinutes: number | null;
  cronMinMinutes: number | null;
}

/** The tenant's part of a gateway's render input: the same for every executor and every instance of the tenant. */
export type TenantRenderInput = Pick<RenderInput, 'agents' | 'models' | 'tools' | 'heartbeatEvery' | 'memoryConfig' | 'cronCapped'>;

export function tenantRenderInput(settings: GatewaySettings, live: LiveInputs): TenantRenderInput {
  let heartbeatEvery = settings.heartbeatEvery;
  // The cap is enforced in the rendered config too: a cap set after a version was made still binds it.
  if (heartbeatEvery !== undefined && live.heartbeatMinMinutes !== null) {
    const every = heartbeatMinutes(heartbeatEvery);
    if (every > 0 && every < live.heartbeatMinMinutes) heartbeatEvery = `${live.heartbeatMinMinutes}m`;
  }
  return {
    agents: [{ id: live.defaults.agentName, name: live.defaults.agentName }],
    models: settings.models ?? [live.defaults.defaultModel ?? 'default'],
    tools: toolPolicyFor(live.defaults.execPolicy, live.restrictions),
    ...(heartbeatEvery !== undefined ? { heartbeatEvery } : {}),
    ...(settings.memory ? { memoryConfig: settings.memory as Record<string, Json> } : {}),
    ...(live.cronMinMinutes !== null ? { cronCapped: true } : {}),
  };
}

/** openclaw.json of executor e0 as the reconciler renders it (src/instances/reconciler.ts spec()). */
export function renderForLayout(layout: GatewayLayout, input: TenantRenderInput, executor = 0): Record<string, Json> {
  const id = `e${executor}`;
  return renderOpenclawConfig({
    gatewayPort: layout.executorPort(executor),
    egressPort: layout.egressPort,
    stateDir: layout.stateDir(id),
    logFile: layout.logFile(id),
    ...input,
    // The supervisor passes CLAWPLANE_HOOKS_TOKEN to every gateway; the driver writes the token file.
    hooks: true,
    gatewayTokenFile: layout.gatewayTokenFile,
    ...(layout.knowledgePluginDir ? { knowledgePluginDir: layout.knowledgePluginDir } : {}),
  });
}

const ENV_REF = /^\$\{[A-Z][A-Z0-9_]*\}$/;

/**
 * The config with every value under a credential-named key shown as a reference, never a value. What Clawplane
 * renders holds none (the gateway token is a file SecretRef or `${OPENCLAW_GATEWAY_TOKEN}`, the provider key a
 * label the supervisor replaces), so this is the second line: a value that ever slipped in is stored as a reference.
 */
export function redactSecrets(value: Json, path: string[] = []): Json {
  if (Array.isArray(value)) return value.map((v, i) => redactSecrets(v, [...path, String(i)]));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(value)) {
    if (SECRET_KEY.test(k) && typeof v === 'string' && !ENV_REF.test(v)) out[k] = { $secretRef: [...path, k].join('.') };
    else out[k] = redactSecrets(v, [...path, k]);
  }
  return out;
}

export function configHash(config: Json): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

/** One difference between two configurations, at a dotted path. */
export interface DiffEntry {
  path: string;
  op: 'added' | 'removed' | 'changed';
  from?: Json;
  to?: Json;
}

/** The structural diff of two (redacted) configurations, sorted by path. */
export function diffConfigs(from: Json, to: Json): DiffEntry[] {
  if (from === null || typeof from !== 'object' || to === null || typeof to !== 'object') return from === to ? [] : [{ path: '', op: 'changed', from, to }];
  const out: DiffEntry[] = microdiff(from, to).map((d) => {
    const path = d.path.map(String).join('.');
    if (d.type === 'CREATE') return { path, op: 'added', to: d.value as Json };
    if (d.type === 'REMOVE') return { path, op: 'removed', from: d.oldValue as Json };
    return { path, op: 'changed', from: d.oldValue as Json, to: d.value as Json };
  });
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Which kinds of change lead from `from` to `to` (settings and rendered config). */
export function changeKinds(from: { settings: GatewaySettings; config: Json } | null, to: { settings: GatewaySettings; config: Json }): ChangeKind[] {
  if (!from) return ['initial'];
  const kinds = new Set<ChangeKind>();
  const same = (a: unknown, b: unknown) => canonicalJson(a ?? null) === canonicalJson(b ?? null);
  if (!same(from.settings.models, to.settings.models)) kinds.add('models');
  if (!same(from.settings.heartbeatEvery, to.settings.heartbeatEvery)) kinds.add('heartbeat');
  if (!same(from.settings.memory, to.settings.memory)) kinds.add('plugins');
  for (const d of diffConfigs(from.config, to.config)) {
    if (d.path.startsWith('tools')) kinds.add('tools');
    else if (d.path.startsWith('agents.entries') || d.path.startsWith('hooks.allowedAgentIds')) kinds.add('agents');
    else if (
      !d.path.startsWith('models') &&
      !d.path.startsWith('agents.defaults.model') &&
      !d.path.startsWith('agents.defaults.heartbeat') &&
      !d.path.startsWith('plugins')
    )
      kinds.add('platform');
  }
  if (kinds.size === 0 && !same(from.config, to.config)) kinds.add('platform');
  return [...kinds].sort();
}
