/**
 * Renders one gateway executor's `openclaw.json` from what the database says about the tenant (issue 6).
 * Everything a tenant's governance does not ask for is off: OpenClaw's defaults run shell commands on
 * the host without asking, check for updates, advertise over mDNS, serve a control UI and spend model
 * tokens in the background (heartbeat, memory "dreaming") — see ../shared/notes/openclaw-runtime.md §1.
 * The file holds no secret: the gateway token comes from a file the host writes (a SecretRef, so it can be
 * rotated on a running gateway) or the environment (`${OPENCLAW_GATEWAY_TOKEN}`), the hooks token from the
 * environment, and the broker token is attached by the in-sandbox supervisor, so the provider key below is a label.
 */

import { KNOWLEDGE_PLUGIN_ID, KNOWLEDGE_TOOLS } from '../sandbox/gateway-plugin/knowledge.ts';

/** The model provider id the gateway sees; every model call goes to the broker through it. */
export const BROKER_PROVIDER = 'clawplane';

/** What a tenant's policy allows its agents to use. The policy module (issue 7) supplies the tenant's effective values. */
export interface ToolPolicy {
  /** OpenClaw tool profile: minimal | coding | messaging | full. */
  profile: 'minimal' | 'coding' | 'messaging' | 'full';
  allow: string[];
  deny: string[];
  /** Shell commands: denied, or each one parked for a person's approval. Never `full`. */
  exec: 'deny' | 'ask';
}

/** Opt-ins a tenant's governance may grant; all default to off. */
export interface GatewayFeatures {
  heartbeat: boolean;
  dreaming: boolean;
  browser: boolean;
  controlUi: boolean;
}

/**
 * The environment variable the supervisor passes the gateway's inbound-webhook token in (`hooks.token`
 * takes no SecretRef, so it cannot be re-read like the gateway token; it is never written into openclaw.json).
 */
export const HOOKS_TOKEN_ENV = 'CLAWPLANE_HOOKS_TOKEN';

/**
 * The heartbeat prompt Clawplane renders: OpenClaw's own default (2026.9.6, src/auto-reply/heartbeat.ts) after a
 * marker line, so the broker can tell a heartbeat turn's model calls from a chat's and hold them to the tenant's
 * heartbeat cap (src/governance/scheduled.ts), whatever OpenClaw's default wording becomes.
 */
export const HEARTBEAT_MARKER = '[clawplane-heartbeat]';
export const HEARTBEAT_PROMPT = `${HEARTBEAT_MARKER} Follow the heartbeat monitor scratch context when provided. Recurring tasks are automations; create or change their schedules with the automations tool, not heartbeat scratch. Do not infer or repeat old tasks from prior chats. If nothing needs attention, reply NO_REPLY.`;

/** The secrets provider the gateway reads its auth token through (a file the host can rewrite). */
export const GATEWAY_TOKEN_PROVIDER = 'clawplane-gateway-token';

export interface RenderInput {
  /** Loopback port of this executor inside the sandbox. */
  gatewayPort: number;
  /** Loopback port of the supervisor's bridge to the broker. */
  egressPort: number;
  /** Absolute paths as the gateway sees them inside the sandbox. */
  stateDir: string;
  logFile: string;
  /** The tenant's agents; the first one is the default. */
  agents: { id: string; name: string }[];
  /** Model ids the broker routes for this tenant; the first is the agents' primary model. */
  models: string[];
  tools: ToolPolicy;
  features?: Partial<GatewayFeatures>;
  /**
   * Inbound webhooks for the default agent, authenticated with `${CLAWPLANE_HOOKS_TOKEN}`. Only where that
   * variable is always set (the local driver): OpenClaw leaves an unset variable's text in place.
   */
  hooks?: boolean;
  /**
   * The gateway token as a file SecretRef (a private file of the gateway's uid) instead of
   * `${OPENCLAW_GATEWAY_TOKEN}`: the host can then rotate it on a running gateway (rewrite the file, then
   * `secrets.reload`), which a process environment does not allow.
   */
  gatewayTokenFile?: string;
  /**
   * The knowledge tool plugin's folder inside the sandbox (docs/adr/0007): loaded from this path and
   * its tools (memory_store, memory_recall, finding_record, finding_search) offered unless the tenant's
   * policy denies them. Absent: no plugin and no knowledge tools.
   */
  knowledgePluginDir?: string;
  /**
   * The tenant's heartbeat interval as OpenClaw reads it (`30m`, `0m` = off); overrides `features.heartbeat`.
   * Versioned and capped by src/governance (docs/adr/0013-gateway-config-versions.md).
   */
  heartbeatEvery?: string;
  /**
   * The tenant's settings of the memory-core plugin, passed through as-is: OpenClaw checks them against the
   * plugin's own schema (which moves between runtime versions), so a wrong one fails the gateway's start and the
   * apply check rolls it back. Clawplane's governance keys (dreaming) are laid over them.
   */
  memoryConfig?: Record<string, Json>;
  /**
   * The tenant caps how often a cron job may run (docs/adr/0013-gateway-config-versions.md, "Caps"). OpenClaw
   * has no interval floor for jobs, so the broker refuses runs that come too soon; here the scheduler is told
   * not to catch up missed runs after a stop (`cron.skipMissedJobs`), which would fire them all at once.
   */
  cronCapped?: boolean;
}

/** The hardened default policy: a chat agent that cannot touch the host, the filesystem or the web. */
export const DEFAULT_TOOL_POLICY: ToolPolicy = {
  profile: 'messaging',
  allow: [],
  deny: ['group:runtime', 'group:fs', 'group:ui', 'group:nodes', 'group:automation', 'group:web'],
  exec: 'deny',
};

/** What the tenant's Cedar policy (src/policy) removes from its gateways' tools: names, and exec. */
export interface ToolRestrictions {
  deny: string[];
  execDenied: boolean;
}

/**
 * The tools a tenant's gateway is configured with: the hardened default narrowed by the tenant's policy.
 * Both layers must allow a tool (defence in depth); the policy can only take tools away here, and the
 * broker still decides every tool use that leaves the sandbox.
 */
export function toolPolicyFor(execDefault: 'deny' | 'ask', r: ToolRestrictions): ToolPolicy {
  return {
    ...DEFAULT_TOOL_POLICY,
    deny: [...new Set([...DEFAULT_TOOL_POLICY.deny, ...r.deny])].sort(),
    exec: r.execDenied ? 'deny' : execDefault,
  };
}

export type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

function heartbeatConfig(every: string): Record<string, Json> {
  return /^0+[mh]?$/.test(every) ? { every } : { every, prompt: HEARTBEAT_PROMPT };
}

/**
 * The gateway's openclaw.json as a plain object (serialise with JSON.stringify).
 * Boot cost (measured, bench/boot.ts): on an empty state dir OpenClaw skips its legacy-state migrations only
 * for a "pristine" config, and `tools`, `secrets`, `hooks` and a plugin entry with `config` each make it
 * non-pristine, so a tenant's first start pays ~3-6 s of migration checks that OpenClaw's defaults do not;
 * every later start on that state dir does not. Each of those keys is needed (policy, rotatable token,
 * webhooks, dreaming off), so that first-start cost stays.
 */
export function renderOpenclawConfig(input: RenderInput): Record<string, Json> {
  const f: GatewayFeatures = { heartbeat: false, dreaming: false, browser: false, controlUi: false, ...input.features };
  const models = input.models.length > 0 ? input.models : ['default'];
  const primary = `${BROKER_PROVIDER}/${models[0] ?? 'default'}`;
  // Exec `ask` needs the exec tool itself: the messaging profile lacks it and the hardened default denies
  // group:runtime (exec, process, code_execution), so keep the rest of that group denied and add exec.
  const askExec = input.tools.exec === 'ask';
  const deny = askExec
    ? [...new Set(input.tools.deny.flatMap((t) => (t === 'group:runtime' ? ['process', 'code_execution'] : t === 'exec' ? [] : [t])))].sort()
    : [...input.tools.deny];
  const tools: Record<string, Json> = {
    profile: input.tools.profile,
    deny,
    // "deny" removes the tool from the model's list (openclaw.md §5); "ask" parks each command for approval,
    // and an unanswered ask falls back to deny (the approvals default, docs/tools/exec-approvals.md).
    exec: { mode: input.tools.exec },
    // OpenClaw 2026.9 defers tool schemas behind tool_search/tool_call when unset (docs/tools/tool-search.md);
    // this catalogue is a handful of tools, so direct schemas cost little and each tool is one call away.
    toolSearch: false,
  };
  // The messaging profile offers no plugin tools: name the knowledge tools (`deny` above still wins, so a
  // tool the tenant's policy denies stays off). OpenClaw rejects `allow` and `alsoAllow` in one scope.
  const extra = [...(askExec ? ['exec'] : []), ...(input.knowledgePluginDir ? KNOWLEDGE_TOOLS : [])];
  if (input.tools.allow.length > 0) tools['allow'] = [...new Set([...input.tools.allow, ...extra])];
  else if (extra.length > 0) tools['alsoAllow'] = extra;
  const entries: Record<string, Json> = {};
  for (const a of input.agents) entries[a.id] = { name: a.name };
  return {
    gateway: {
      mode: 'local',
      port: input.gatewayPort,
      bind: 'loopback',
      auth: { mode: 'token', token: input.gatewayTokenFile ? { source: 'file', provider: GATEWAY_TOKEN_PROVIDER, id: 'value' } : '${OPENCLAW_GATEWAY_TOKEN}' },
      // Chat completions (with /v1/models) is what the ingress, the task executor and the driver's token
      // rotation check call; /v1/responses serves the tenant's …/responses route. URL-sourced files and
      // images would be fetched by the gateway itself: off, so an input names its bytes (inline base64).
      http: { endpoints: { chatCompletions: { enabled: true }, responses: { enabled: true, files: { allowUrl: false }, images: { allowUrl: false } } } },
      controlUi: { enabled: f.controlUi },
      terminal: { enabled: false },
    },
    models: {
      mode: 'replace',
      catalogRefresh: { enabled: false },
      providers: {
        [BROKER_PROVIDER]: {
          // 127.0.0.1, not localhost: there is no DNS in the sandbox (openclaw-in-bubblewrap.md).
          baseUrl: `http://127.0.0.1:${input.egressPort}/v1`,
          // Not a secret: the supervisor replaces the Authorization header with the sandbox's broker token.
          apiKey: 'clawplane-sandbox',
          api: 'openai-completions',
          models: models.map((id) => ({
            id,
            name: id,
            input: ['text'],
            contextWindow: 128000,
            maxTokens: 4096,
            // Metering and prices live in the broker; the gateway's own cost view is not used.
            cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
          })),
        },
      },
    },
    agents: {
      defaults: {
        model: { primary },
        utilityModel: '',
        workspace: `${input.stateDir}/workspace`,
        sandbox: { mode: 'off' },
        heartbeat: heartbeatConfig(input.heartbeatEvery ?? (f.heartbeat ? '30m' : '0m')),
      },
      entries,
    },
    tools,
    ...(input.gatewayTokenFile
      ? { secrets: { providers: { [GATEWAY_TOKEN_PROVIDER]: { source: 'file', path: input.gatewayTokenFile, mode: 'singleValue' } } } }
      : {}),
    ...(input.hooks
      ? {
          hooks: {
            enabled: true,
            token: `\${${HOOKS_TOKEN_ENV}}`,
            path: '/hooks',
            allowedAgentIds: input.agents.slice(0, 1).map((a) => a.id),
            allowRequestSessionKey: false,
          },
        }
      : {}),
    ...(input.cronCapped ? { cron: { skipMissedJobs: true } } : {}),
    browser: { enabled: f.browser },
    plugins: input.knowledgePluginDir
      ? {
          allow: ['memory-core', KNOWLEDGE_PLUGIN_ID],
          load: { paths: [input.knowledgePluginDir] },
          entries: {
            'memory-core': { config: { ...input.memoryConfig, dreaming: { enabled: f.dreaming } } },
            // The supervisor's egress port: the plugin's only way to the broker (the token is added there).
            [KNOWLEDGE_PLUGIN_ID]: { config: { brokerUrl: `http://127.0.0.1:${input.egressPort}` } },
          },
        }
      : {
          allow: ['memory-core'],
          entries: { 'memory-core': { config: { ...input.memoryConfig, dreaming: { enabled: f.dreaming } } } },
        },
    skills: { allowBundled: [] },
    update: { checkOnStart: false },
    discovery: { mdns: { mode: 'off' } },
    logging: { file: input.logFile },
  };
}
