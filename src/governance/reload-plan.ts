import { isDeepStrictEqual } from 'node:util';
import type { Json } from '../runtime/config.ts';

/**
 * Which way a configuration change reaches a running gateway (docs/adr/0013-gateway-config-versions.md,
 * "Apply"): in place, when OpenClaw reloads every changed path without restarting, else by a restart.
 *
 * The rules are OpenClaw 2026.9.6's own reload table (src/gateway/config-reload-plan.ts: CORE_RELOAD_POLICIES
 * and DEFAULT_RELOAD_POLICIES; the longest matching prefix wins, `*` matches one segment, a path no rule
 * matches needs a restart). Channel and service plugins add rules of their own; none of the plugins Clawplane
 * loads (memory-core, the knowledge plugin) does, and a path this table does not know counts as a restart.
 * `none` (OpenClaw only updates its config snapshot) needs no restart either.
 */
type ReloadKind = 'hot' | 'none' | 'restart';

const POLICIES: [ReloadKind, string[]][] = [
  // Clawplane's own, before OpenClaw's: a plugin's settings are checked only when the plugin loads, not when the
  // file is validated, and a reload the plugin refuses never applies (measured on 2026.9.6 with an unknown
  // memory-core setting): a restart gives them the start's check and its rollback.
  ['restart', ['plugins.entries.*.config']],
  // Measured on 2026.9.6: after a reload of a new `tools.deny`, the gateway (the same process) still offered a
  // denied plugin tool (memory_store) to the model, also in a new session; a start applies it. So tool changes
  // restart (an admin's change) or wait for the next start (a policy change; the broker enforces it meanwhile).
  ['restart', ['tools']],
  // CORE_RELOAD_POLICIES
  ['none', ['gateway.remote', 'gateway.reload']],
  ['restart', ['gateway.auth.token', 'gateway.auth.password', 'mcp.apps', 'secrets.egressProxy', 'gateway.portals']],
  [
    'hot',
    [
      'gateway.http.endpoints',
      'gateway.http.securityHeaders.strictTransportSecurity',
      'gateway.tools',
      'gateway.cliAgents',
      'gateway.controlUi.enabled',
      'gateway.controlUi.environment',
      'gateway.controlUi.communityInvite',
      'gateway.controlUi.github',
      'gateway.controlUi.sessionObserver',
      'gateway.controlUi.embedSandbox',
      'gateway.controlUi.allowExternalEmbedUrls',
      'gateway.controlUi.automaticallyFetchFavicons',
      'gateway.controlUi.experimental.customPlugins',
      'gateway.controlUi.allowedOrigins',
      'gateway.controlUi.dangerouslyAllowHostHeaderOriginFallback',
      'gateway.nodes.browser',
      'gateway.nodes.pairing',
      'gateway.nodes.commands',
      'gateway.nodes.pluginTools.enabled',
      'gateway.nodes.allowSkills',
      'gateway.push.apns.relay',
      'gateway.terminal',
      'gateway.auth.rateLimit',
      'gateway.roles',
      'gateway.trustedProxies',
      'gateway.allowRealIpFallback',
      'gateway.auth.allowTailscale',
      'gateway.auth.identityScopes',
      'gateway.auth.trustedProxy',
      'diagnostics.enabled',
      'discovery.mdns.mode',
      'mcp.apps.sandboxOrigin',
      'agents.defaults',
      'desktop.host',
      'cloudWorkers',
      'hooks.gmail',
      'hooks.internal',
      'agents.defaults.workspace',
      'hooks',
      'agents.defaults.heartbeat',
      'agents.defaults.models',
      'agents.defaults.modelPolicy',
      'agents.defaults.model',
      'models',
      'agent.heartbeat',
      'agents.entries',
      'agents.entries.*.decisionModel',
      'agents.defaults.sessionStore',
      'agents.ownership',
      'skills.workshop.autonomous.mode',
      'agents.defaults.decisionModel',
      'plugins.load',
      'plugins.installs',
      'cron',
      'transcripts',
      'cloudWorkers.profiles',
      'mcp',
      'gateway.publicOrigin',
      'talk.provider',
      'talk.realtime.provider',
      'session.scope',
      'session.store',
    ],
  ],
  // DEFAULT_RELOAD_POLICIES
  [
    'none',
    [
      'meta',
      'identity',
      'wizard',
      'logging',
      'agents',
      'bindings',
      'audio',
      'agent',
      'routing',
      'messages',
      'session',
      'talk',
      'skills',
      'secrets',
      'tui',
      'ui',
    ],
  ],
  [
    'hot',
    [
      'tools',
      'approvals.exec',
      'approvals.plugin',
      'auth.order',
      'auth.profiles',
      'broadcast',
      'memory.citations',
      'worktreeRoot',
      'worktreeAcceleration',
      'security.audit.suppressions',
      'security.installPolicy',
      'diagnostics.cacheTrace.enabled',
      'acp',
      'attachments.ttlHours',
      'update.checkOnStart',
      'update.channel',
      'update.auto.enabled',
      'telemetry.enabled',
      'telemetry.consentedAt',
      'plugins',
      'channels',
    ],
  ],
  ['restart', ['gateway', 'discovery']],
];

interface Rule {
  prefix: string;
  kind: ReloadKind;
}

/** OpenClaw's order (compareReloadRules): more segments first, then fewer wildcards; the first match wins. */
const RULES: Rule[] = POLICIES.flatMap(([kind, prefixes]) => prefixes.map((prefix) => ({ prefix, kind })))
  // Within one prefix the earlier policy wins (a stable sort keeps it first), as in OpenClaw's catalogue.
  .toSorted((a, b) => {
    const [x, y] = [a.prefix.split('.'), b.prefix.split('.')];
    return y.length - x.length || x.filter((s) => s === '*').length - y.filter((s) => s === '*').length;
  });

function matches(path: string, prefix: string): boolean {
  if (prefix.includes('*')) {
    const segments = path.split('.');
    return prefix.split('.').every((s, i) => (s === '*' ? Boolean(segments[i]) : s === segments[i]));
  }
  return path === prefix || path.startsWith(`${prefix}.`);
}

/** How OpenClaw treats a change at `path` (a dotted config path). */
export function reloadKind(path: string): ReloadKind {
  return RULES.find((r) => matches(path, r.prefix))?.kind ?? 'restart';
}

const isObject = (v: unknown): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The dotted paths whose values differ, as OpenClaw's watcher computes them (arrays compare whole). */
export function changedPaths(from: Json | undefined, to: Json | undefined, prefix = ''): string[] {
  if (isDeepStrictEqual(from, to)) return [];
  if (isObject(from) && isObject(to)) {
    const out: string[] = [];
    for (const k of new Set([...Object.keys(from), ...Object.keys(to)])) out.push(...changedPaths(from[k], to[k], prefix ? `${prefix}.${k}` : k));
    return out;
  }
  return [prefix || '<root>'];
}

/** How a running gateway on `from` gets `to`: in place, or by a restart (with the paths that need it). */
export function applyWay(from: Json, to: Json): { way: 'hot'; paths: string[] } | { way: 'restart'; paths: string[] } {
  const paths = changedPaths(from, to);
  const restart = paths.filter((p) => reloadKind(p) === 'restart');
  return restart.length > 0 ? { way: 'restart', paths: restart } : { way: 'hot', paths };
}
