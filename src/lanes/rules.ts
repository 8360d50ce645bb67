import { Cron } from 'croner';
import { ClawplaneError } from '../errors.ts';
import type { Queryable } from '../db/pool.ts';
import { getSetting } from '../identity/settings.ts';
import { platformLaneSettings, type LaneKind, type LaneStep, type PlatformLaneSettings, type Project } from './types.ts';

/**
 * Tenant settings may only narrow the platform's (docs/lanes.md, "Rules"): a broader one is refused with a 400
 * naming the rule that refused it and the field that broke it.
 */
export class PlatformRuleError extends ClawplaneError {
  constructor(rule: string, field: string, message: string) {
    super('platform_rule', 400, `Refused by rule "${rule}": ${message}`, {
      details: { rule, issues: [{ path: field, message: `${message} (rule ${rule})` }] },
    });
  }
}

export const PLATFORM_SETTINGS_KEY = 'lanes';

export async function loadPlatformLaneSettings(db: Queryable): Promise<PlatformLaneSettings> {
  const stored = await getSetting<unknown>(db, PLATFORM_SETTINGS_KEY);
  // A stored value this build cannot read falls back to the strictest reading: nothing allowed.
  const r = platformLaneSettings.safeParse(stored ?? {});
  return r.success
    ? r.data
    : {
        allowedRepositories: [],
        allowedHosts: [],
        allowedDataSources: [],
        allowedLaneKinds: [],
        maxRunsPerDay: 0,
        minScheduleMinutes: 10_080,
        readOnlyOnly: true,
      };
}

/**
 * Whether an allow-list pattern (exact, `prefix*` or `*suffix`) admits an entry that may itself be a pattern:
 * a narrower pattern is admitted (`github.com/acme/*` within `github.com/*`), a broader or crossing one is not.
 */
export function covers(pattern: string, entry: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('*')) return !entry.startsWith('*') && entry.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith('*')) return !entry.endsWith('*') && entry.endsWith(pattern.slice(1));
  return pattern === entry;
}

function narrower(rule: string, field: string, allowed: string[], entries: string[]): void {
  entries.forEach((e, i) => {
    if (!allowed.some((p) => covers(p, e)))
      throw new PlatformRuleError(
        rule,
        `body.${field}.${i}`,
        `"${e}" is not within the platform's ${rule.split('.')[1]} (${allowed.length ? allowed.join(', ') : 'none'})`,
      );
  });
}

/** Refuses a project broader than the platform's settings. */
export function checkProject(p: Pick<Project, 'repositories' | 'hosts' | 'dataSources' | 'laneKinds' | 'runsPerDay'>, s: PlatformLaneSettings): void {
  narrower('platform.allowedRepositories', 'repositories', s.allowedRepositories, p.repositories);
  narrower('platform.allowedHosts', 'hosts', s.allowedHosts, p.hosts);
  narrower('platform.allowedDataSources', 'dataSources', s.allowedDataSources, p.dataSources);
  p.laneKinds.forEach((k, i) => {
    if (!s.allowedLaneKinds.includes(k))
      throw new PlatformRuleError(
        'platform.allowedLaneKinds',
        `body.laneKinds.${i}`,
        `lane kind "${k}" is not enabled by the platform (${s.allowedLaneKinds.join(', ') || 'none'})`,
      );
  });
  if (p.runsPerDay > s.maxRunsPerDay) throw new PlatformRuleError('platform.maxRunsPerDay', 'body.runsPerDay', `at most ${s.maxRunsPerDay} runs per day`);
}

/** A valid IANA time zone name (as Intl knows them). */
export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Parses a cron in a time zone; a bad expression is a 400 naming the field. */
export function parseCron(expr: string, timeZone: string, field = 'body.schedule'): Cron {
  try {
    return new Cron(expr, { timezone: timeZone, paused: true, mode: '5-part' });
  } catch (err) {
    throw new PlatformRuleError('cron.syntax', field, `not a valid cron expression (${(err as Error).message})`);
  }
}

/** Refuses a lane its project or the platform does not allow. */
export function checkLane(
  l: { kind: LaneKind; readOnly: boolean; steps: LaneStep[]; schedule: string | null },
  project: Pick<Project, 'name' | 'laneKinds'>,
  s: PlatformLaneSettings,
  timeZone: string,
): void {
  if (!s.allowedLaneKinds.includes(l.kind))
    throw new PlatformRuleError('platform.allowedLaneKinds', 'body.kind', `lane kind "${l.kind}" is not enabled by the platform`);
  if (!project.laneKinds.includes(l.kind))
    throw new PlatformRuleError('project.laneKinds', 'body.kind', `project "${project.name}" does not enable lanes of kind "${l.kind}"`);
  if (s.readOnlyOnly && !l.readOnly) throw new PlatformRuleError('platform.readOnlyOnly', 'body.readOnly', 'every lane must be read-only on this platform');
  if (l.kind === 'browser') {
    const i = l.steps.findIndex((st) => !st.requiresApproval);
    if (i >= 0)
      throw new PlatformRuleError('browser.requiresApproval', `body.steps.${i}.requiresApproval`, 'every step of a browser lane needs a person’s approval');
  }
  if (l.schedule !== null) {
    const cron = parseCron(l.schedule, timeZone);
    // The shortest gap over the next runs (a week of them at most), against the platform's minimum.
    const runs = cron.nextRuns(50, new Date());
    if (runs.length === 0) throw new PlatformRuleError('cron.syntax', 'body.schedule', 'the expression never fires');
    for (let i = 1; i < runs.length; i++) {
      const gap = ((runs[i]?.getTime() ?? 0) - (runs[i - 1]?.getTime() ?? 0)) / 60_000;
      if (gap < s.minScheduleMinutes)
        throw new PlatformRuleError(
          'platform.minScheduleMinutes',
          'body.schedule',
          `runs ${gap} minutes apart; the platform allows one run every ${s.minScheduleMinutes} minutes at most`,
        );
    }
  }
}
