import { createHash } from 'node:crypto';
import type { Db } from '../db/pool.ts';
import { BudgetExceededError } from '../broker/budgets.ts';
import { HEARTBEAT_MARKER } from '../runtime/config.ts';
import { effectiveCaps, readRules } from './versions.ts';

/**
 * The broker's side of the heartbeat and cron caps (docs/adr/0013-gateway-config-versions.md, "Caps").
 *
 * OpenClaw's scheduler has no interval floor (a job may run every few seconds) and the heartbeat interval is
 * only what the rendered config says, so the broker refuses scheduled model calls that come sooner than the
 * tenant's cap allows. It recognises them by what OpenClaw puts in the turn's prompt (measured on 2026.9.6,
 * see `classifyScheduled`), and keeps the last admitted run of each job in PostgreSQL, so every replica
 * judges the same way.
 */

export interface ScheduledCall {
  kind: 'heartbeat' | 'cron';
  /** The cron job id; `heartbeat` for the agent's heartbeat. */
  job: string;
  /** Names the run: every model call of one run (its tool loop) carries the same prompt. */
  run: string;
}

interface Message {
  role?: unknown;
  content?: unknown;
}

/** The prompt OpenClaw puts before an isolated cron run's message (`[cron:<jobId> <name>] <message>`). */
const CRON_PREFIX = /^\[cron:([A-Za-z0-9][A-Za-z0-9._:-]{0,127}) /;

/**
 * The other prompts OpenClaw's heartbeat runner wakes the main session with instead of the heartbeat prompt
 * (2026.9.6, src/infra/heartbeat-runner: due HEARTBEAT.md tasks, and main-session cron reminders): wakes by
 * the scheduler too, so the heartbeat cap spaces them. Exec completions are not scheduled and pass.
 */
const WAKE_PROMPTS = [
  'Run the following periodic tasks (only those due based on their intervals):',
  'A scheduled reminder has been triggered.',
  'A scheduled cron event was triggered,',
];

const INTERNAL_CONTEXT = '<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>';

function text(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content))
    return content
      .map((p: unknown) => (typeof p === 'object' && p !== null && typeof (p as { text?: unknown }).text === 'string' ? (p as { text: string }).text : ''))
      .join('');
  return '';
}

/**
 * Whether a model call is a scheduled turn, from the turn's own prompt: the last user message of an OpenAI
 * `messages` request that is not OpenClaw's internal context block (a tool loop adds assistant and tool
 * messages after it, never a user one).
 * - cron (isolated agent turn): OpenClaw writes `[cron:<jobId> <name>] ` before the job's message.
 * - heartbeat: OpenClaw's heartbeat prompt, which Clawplane renders with a marker (HEARTBEAT_MARKER) so it
 *   does not depend on OpenClaw's default wording.
 * A chat user can type either at the start of a message; that only subjects their own turn to the cap.
 */
export function classifyScheduled(body: Record<string, unknown>): ScheduledCall | null {
  const messages = Array.isArray(body['messages']) ? (body['messages'] as Message[]) : [];
  let last: string | undefined;
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.role !== 'user') continue;
    const t = text(messages[i]?.content);
    // Measured on 2026.9.6: OpenClaw sends its internal context as a user message after the turn's prompt.
    if (t.trimStart().startsWith(INTERNAL_CONTEXT)) continue;
    last = t;
    break;
  }
  if (last === undefined) return null;
  const prompt = last.trimStart();
  // Only a scheduled turn's prompt is hashed: the check costs an ordinary chat call a prefix test.
  const run = () => createHash('sha256').update(prompt).digest('base64url').slice(0, 22);
  const cron = CRON_PREFIX.exec(prompt);
  if (cron?.[1]) return { kind: 'cron', job: cron[1], run: run() };
  if (prompt.startsWith(HEARTBEAT_MARKER) || WAKE_PROMPTS.some((p) => prompt.startsWith(p))) return { kind: 'heartbeat', job: 'heartbeat', run: run() };
  return null;
}

/** Refuses scheduled model calls that come sooner than the tenant's (or the agent's) cap. */
export class ScheduledCaps {
  readonly #db: Db;

  constructor(db: Db) {
    this.#db = db;
  }

  /**
   * Admits or refuses one model call (BudgetExceededError with the cap's name, HTTP 429). A call that is not
   * scheduled, or whose cap is unset, passes without a write; a scheduled run under a cap records its start in
   * one statement, so two replicas admitting runs of one job at once admit one.
   */
  async admit(tenantId: string, agent: string, body: Record<string, unknown>): Promise<ScheduledCall | null> {
    const call = classifyScheduled(body);
    if (!call) return null;
    const who = agent || 'main';
    const caps = effectiveCaps(await readRules(this.#db, tenantId), who);
    const cap = call.kind === 'cron' ? caps.cronMinMinutes : caps.heartbeatMinMinutes;
    if (cap === null) return call;
    const r = await this.#db.query<{ started_at: Date }>(
      `INSERT INTO scheduled_runs AS s (tenant_id, agent, kind, job, run) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, agent, kind, job) DO UPDATE
         SET run = EXCLUDED.run, started_at = CASE WHEN s.run = EXCLUDED.run THEN s.started_at ELSE now() END
         WHERE s.run = EXCLUDED.run OR s.started_at <= now() - make_interval(mins => $6)
       RETURNING started_at`,
      [tenantId, who, call.kind, call.job, call.run, cap],
    );
    if (r.rowCount === 1) return call;
    const last = await this.#db.query<{ wait: number }>(
      `SELECT ceil(extract(epoch FROM started_at + make_interval(mins => $5) - now()))::int AS wait FROM scheduled_runs WHERE tenant_id = $1 AND agent = $2 AND kind = $3 AND job = $4`,
      [tenantId, who, call.kind, call.job, cap],
    );
    const wait = Math.max(1, last.rows[0]?.wait ?? 60);
    const name = call.kind === 'cron' ? 'cron_min_minutes' : 'heartbeat_min_minutes';
    const what = call.kind === 'cron' ? `cron job ${call.job}` : 'heartbeat';
    throw new BudgetExceededError(
      name,
      `Refused by the cap ${name}: this ${what} ran less than ${cap} minutes ago; its next run may start in ${wait} seconds. A tenant admin sets the cap under gateway-config rules.`,
      wait,
    );
  }
}
