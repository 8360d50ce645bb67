import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { BrokerProxy } from '../broker/proxy.ts';
import type { Db } from '../db/pool.ts';
import { ClawplaneError } from '../errors.ts';
import type { ResolvedTarget } from '../vault/providers.ts';
import type { KnowledgeIndexer } from './indexer.ts';
import type { MemoryService } from './memories.ts';

/** The archive rows this job writes: their actor, so they are never summarised themselves. */
export const SUMMARY_ACTOR = 'clawplane:summary';
/** The model route a tenant may set for summaries (scope `skill`, name `summaries`); else its default route. */
export const SUMMARIES_ROUTE = 'summaries';
/** A task has no instance of its own in the archive; its summary is filed under the nil id. */
const NO_INSTANCE = '00000000-0000-0000-0000-000000000000';
/** How far back the sweep looks for sessions and tasks (older ones were due long ago, or predate the job). */
const LOOKBACK = '7 days';
/** Items one sweep takes on (the next sweep continues). */
const BATCH = 20;
/** How long a claim holds while the model answers; a replica that died mid-summary frees it after this. */
const CLAIM_MS = 10 * 60_000;
/** The transcript the model reads: the newest part of a long conversation. */
const MAX_TRANSCRIPT_CHARS = 24_000;
const MAX_SUMMARY_TOKENS = 400;

export interface IngestSettings {
  /** A chat session whose last message is this old is summarised; 0: the job is off. */
  idleMinutes: number;
  /** Also keep each summary as a memory (shared by the tenant's agents, or the task's agent's). */
  memories: boolean;
}

type Complete = Pick<BrokerProxy, 'complete'>;
type Routes = { resolveRoute(tenantId: string, who?: { agent?: string; skill?: string }): Promise<ResolvedTarget[]> };

interface Due {
  tenantId: string;
  source: 'chat' | 'task';
  sourceId: string;
  upto: number;
}

const SYSTEM = [
  'You summarise a finished conversation between a user and an AI agent for a searchable archive.',
  'Write at most five plain sentences: who wanted what, what was decided or found, and any preference or fact worth remembering.',
  'Never copy secrets: no API keys, tokens, passwords or credentials, even if the conversation contains them.',
].join(' ');

/**
 * Session ingestion (docs/adr/0007, "Session ingestion"): chat sessions idle for `idleMinutes`, and
 * tasks finished as long ago (a follow-up may still come), are summarised with the tenant's own model through the broker (metered and budgeted
 * like any model call) into the conversation archive, where they are found by words and — once the
 * indexer embeds them — by meaning; optionally also into memories. Idempotent across sweeps and
 * replicas: each item is claimed in `conversation_ingests` with one upsert that only a free, not yet
 * summarised (or since grown) item passes, and a chat session is summarised again only when it has
 * messages past the last summary. With no model route the summary is an excerpt that says so.
 * Logs carry ids and counts, never conversation text.
 */
export class SessionIngest {
  readonly #db: Db;
  readonly #proxy: Complete;
  readonly #routes: Routes;
  readonly #memories: MemoryService;
  readonly #indexer: KnowledgeIndexer;
  readonly #log: Logger;
  readonly #settings: IngestSettings;
  readonly #owner: string;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<number> | undefined;

  constructor(o: {
    db: Db;
    proxy: Complete;
    routes: Routes;
    memories: MemoryService;
    indexer: KnowledgeIndexer;
    log: Logger;
    settings: IngestSettings;
    owner?: string;
  }) {
    this.#db = o.db;
    this.#proxy = o.proxy;
    this.#routes = o.routes;
    this.#memories = o.memories;
    this.#indexer = o.indexer;
    this.#log = o.log;
    this.#settings = o.settings;
    this.#owner = o.owner ?? `ingest-${randomUUID()}`;
  }

  /** Sweeps every `intervalMs` (no-op when the job is off). */
  start(intervalMs: number): void {
    if (this.#settings.idleMinutes <= 0) return;
    this.#timer = setInterval(() => {
      if (this.#running) return;
      this.#running = this.sweepOnce()
        .catch((err: unknown) => {
          this.#log.error({ err: (err as Error).message }, 'session ingestion sweep failed');
          return 0;
        })
        .finally(() => (this.#running = undefined));
    }, intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** One pass: claims what is due and summarises it. Returns how many items were ingested. */
  async sweepOnce(): Promise<number> {
    if (this.#settings.idleMinutes <= 0) return 0;
    let n = 0;
    for (const d of await this.#due()) {
      if (!(await this.#claim(d))) continue;
      try {
        await this.#ingest(d);
        n++;
      } catch (err) {
        // A budget refusal or a provider failure: the item is retried after a back-off (the claim's expiry).
        const code = err instanceof ClawplaneError ? err.code : 'error';
        const message = err instanceof ClawplaneError ? err.message : 'internal error';
        if (!(err instanceof ClawplaneError))
          this.#log.error({ tenant_id: d.tenantId, source: d.source, source_id: d.sourceId, err: (err as Error).message }, 'session ingestion failed');
        else this.#log.warn({ tenant_id: d.tenantId, source: d.source, source_id: d.sourceId, code }, 'session ingestion deferred');
        await this.#db.query(
          `UPDATE conversation_ingests SET attempts = attempts + 1, last_error = $4, claimed_by = NULL,
                  claimed_until = now() + make_interval(secs => least(3600, 60 * power(2, least(attempts, 6))))
            WHERE tenant_id = $1 AND source = $2 AND source_id = $3`,
          [d.tenantId, d.source, d.sourceId, message.slice(0, 500)],
        );
      }
    }
    if (n > 0) this.#log.info({ ingested: n }, 'conversations summarised');
    return n;
  }

  /**
   * What the job has done for one tenant (GET /tenants/{t}/knowledge/ingestion): every chat session and
   * finished task of the look-back window, and every item it has a record of, as ingested (summarised up
   * to the newest message), pending (waiting to be idle, due, or being summarised now) or failed (the
   * last attempt's reason, and when it is retried). `status` filters the items; counts cover them all.
   */
  async state(tenantId: string, o: { status?: IngestStatus | undefined; limit: number }): Promise<IngestState> {
    const r = await this.#db.query<{
      source: 'chat' | 'task';
      source_id: string;
      status: IngestStatus;
      last_at: Date | null;
      upto: string | null;
      summary_id: string | null;
      memory_id: string | null;
      model: string | null;
      attempts: number | null;
      last_error: string | null;
      ingested_at: Date | null;
      attempted_at: Date | null;
      retry_at: Date | null;
      total: number;
    }>(
      `WITH chats AS (
         SELECT session_id AS source_id, max(id) AS newest, max(created_at) AS last_at FROM chat_messages
          WHERE tenant_id = $1 AND created_at > now() - interval '${LOOKBACK}' AND actor <> $2 GROUP BY session_id),
       tasks AS (
         SELECT id::text AS source_id, 1::bigint AS newest, finished_at AS last_at FROM tasks
          WHERE tenant_id = $1 AND finished_at > now() - interval '${LOOKBACK}' AND status IN ('completed', 'failed')),
       seen AS (
         SELECT 'chat' AS source, * FROM chats UNION ALL SELECT 'task', * FROM tasks),
       items AS (
         SELECT coalesce(s.source, i.source) AS source, coalesce(s.source_id, i.source_id) AS source_id, s.last_at, i.upto, i.summary_id, i.memory_id, i.model,
                i.attempts, i.last_error, i.ingested_at, i.attempted_at,
                CASE WHEN i.last_error IS NOT NULL AND i.claimed_by IS NULL THEN i.claimed_until END AS retry_at,
                CASE WHEN i.last_error IS NOT NULL AND i.claimed_by IS NULL THEN 'failed'
                     WHEN i.ingested_at IS NOT NULL AND (s.newest IS NULL OR i.upto >= s.newest) THEN 'ingested'
                     ELSE 'pending' END AS status
           FROM seen s FULL JOIN (SELECT * FROM conversation_ingests WHERE tenant_id = $1) i ON i.source = s.source AND i.source_id = s.source_id)
       SELECT *, count(*) OVER (PARTITION BY status)::int AS total FROM items
        ORDER BY (status = $3) DESC, coalesce(attempted_at, last_at) DESC NULLS LAST, source_id`,
      [tenantId, SUMMARY_ACTOR, o.status ?? ''],
    );
    const counts = { ingested: 0, pending: 0, failed: 0 };
    for (const row of r.rows) counts[row.status] = row.total;
    const last = r.rows.reduce<Date | null>((a, row) => (row.attempted_at && (!a || row.attempted_at > a) ? row.attempted_at : a), null);
    const iso = (d: Date | null) => d?.toISOString() ?? null;
    return {
      enabled: this.#settings.idleMinutes > 0,
      idleMinutes: this.#settings.idleMinutes,
      memories: this.#settings.memories,
      counts,
      lastRunAt: iso(last),
      items: r.rows
        .filter((row) => !o.status || row.status === o.status)
        .slice(0, o.limit)
        .map((row) => ({
          source: row.source,
          sourceId: row.source_id,
          status: row.status,
          lastActivityAt: iso(row.last_at),
          summaryId: row.summary_id === null ? null : Number(row.summary_id),
          memoryId: row.memory_id === null ? null : Number(row.memory_id),
          model: row.model,
          attempts: row.attempts ?? 0,
          error: row.status === 'failed' ? row.last_error : null,
          ingestedAt: iso(row.ingested_at),
          lastAttemptAt: iso(row.attempted_at),
          retryAt: iso(row.retry_at),
        })),
    };
  }

  /** Idle chat sessions with messages past their last summary, and finished tasks not yet summarised. */
  async #due(): Promise<Due[]> {
    const chats = await this.#db.query<{ tenant_id: string; session_id: string; upto: string }>(
      `SELECT s.tenant_id, s.session_id, s.upto FROM (
         SELECT m.tenant_id, m.session_id, max(m.id) AS upto, max(m.created_at) AS last_at
           FROM chat_messages m
          WHERE m.created_at > now() - interval '${LOOKBACK}' AND m.actor <> $1
          GROUP BY m.tenant_id, m.session_id) s
         LEFT JOIN conversation_ingests i ON i.tenant_id = s.tenant_id AND i.source = 'chat' AND i.source_id = s.session_id
        WHERE s.last_at < now() - make_interval(mins => $2) AND s.upto > coalesce(i.upto, 0)
          AND (i.claimed_until IS NULL OR i.claimed_until < now())
        ORDER BY s.last_at LIMIT $3`,
      [SUMMARY_ACTOR, this.#settings.idleMinutes, BATCH],
    );
    const tasks = await this.#db.query<{ tenant_id: string; id: string }>(
      `SELECT t.tenant_id, t.id FROM tasks t
         LEFT JOIN conversation_ingests i ON i.tenant_id = t.tenant_id AND i.source = 'task' AND i.source_id = t.id::text
        WHERE t.finished_at > now() - interval '${LOOKBACK}' AND t.finished_at < now() - make_interval(mins => $2)
          AND t.status IN ('completed', 'failed') AND coalesce(i.upto, 0) = 0
          AND (i.claimed_until IS NULL OR i.claimed_until < now())
        ORDER BY t.finished_at LIMIT $1`,
      [BATCH, this.#settings.idleMinutes],
    );
    return [
      ...chats.rows.map((r): Due => ({ tenantId: r.tenant_id, source: 'chat', sourceId: r.session_id, upto: Number(r.upto) })),
      ...tasks.rows.map((r): Due => ({ tenantId: r.tenant_id, source: 'task', sourceId: r.id, upto: 1 })),
    ];
  }

  /** One upsert: succeeds only for an item nobody holds that is not summarised up to `upto` yet. */
  async #claim(d: Due): Promise<boolean> {
    const r = await this.#db.query(
      `INSERT INTO conversation_ingests AS i (tenant_id, source, source_id, claimed_by, attempted_at, claimed_until)
       VALUES ($1, $2, $3, $4, now(), now() + make_interval(secs => $5::double precision / 1000))
       ON CONFLICT (tenant_id, source, source_id) DO UPDATE SET claimed_by = EXCLUDED.claimed_by, claimed_until = EXCLUDED.claimed_until, attempted_at = now()
        WHERE i.upto < $6 AND (i.claimed_until IS NULL OR i.claimed_until < now())
       RETURNING 1`,
      [d.tenantId, d.source, d.sourceId, this.#owner, CLAIM_MS, d.upto],
    );
    return r.rowCount === 1;
  }

  async #ingest(d: Due): Promise<void> {
    const src = d.source === 'chat' ? await this.#chat(d) : await this.#task(d);
    if (!src) {
      // Gone meanwhile (deleted task, erased session): nothing to summarise, and nothing to retry.
      await this.#db.query(
        `UPDATE conversation_ingests SET upto = $4, claimed_by = NULL, claimed_until = NULL, ingested_at = now() WHERE tenant_id = $1 AND source = $2 AND source_id = $3 AND claimed_by = $5`,
        [d.tenantId, d.source, d.sourceId, d.upto, this.#owner],
      );
      return;
    }
    const ctx = { actor: 'system:ingest', agent: src.agentName, taskId: d.source === 'task' ? d.sourceId : null };
    const targets = await this.#routes.resolveRoute(d.tenantId, { skill: SUMMARIES_ROUTE });
    let summary: string;
    let model: string;
    if (targets.length === 0) {
      summary = `No model route is set for summaries, so this is an excerpt, not a summary. ${excerpt(src.lines)}`;
      model = 'none';
    } else {
      const r = await this.#proxy.complete(d.tenantId, targets, { system: SYSTEM, user: transcript(src.lines), maxTokens: MAX_SUMMARY_TOKENS }, ctx);
      summary = r.text.slice(0, 4000);
      model = r.model;
    }
    const content = `${d.source === 'chat' ? 'Summary of the conversation' : 'Summary of the task'} ${d.sourceId}: ${summary}`;
    let memoryId: number | null = null;
    if (this.#settings.memories) {
      // A key per conversation: a session summarised again replaces its memory instead of adding one.
      const m = await this.#memories.create(
        d.tenantId,
        {
          kind: 'kv',
          key: `${d.source}:${d.sourceId}`.slice(0, 200),
          content: content.slice(0, 4000),
          importance: 0.4,
          ...(src.agentId ? { agent: src.agentId } : {}),
        },
        { actor: 'system:ingest', taskId: ctx.taskId },
      );
      memoryId = m.memory.id;
    }
    const summaryId = await this.#db.tx(async (tx) => {
      const mine = await tx.query<{ summary_id: string | null }>(
        'SELECT summary_id FROM conversation_ingests WHERE tenant_id = $1 AND source = $2 AND source_id = $3 AND claimed_by = $4 FOR UPDATE',
        [d.tenantId, d.source, d.sourceId, this.#owner],
      );
      // The claim lapsed and another replica took over: it writes the summary, not this one.
      if (!mine.rows[0]) return undefined;
      const old = mine.rows[0].summary_id;
      if (old) await tx.query('DELETE FROM chat_messages WHERE tenant_id = $1 AND id = $2 AND actor = $3', [d.tenantId, old, SUMMARY_ACTOR]);
      const ins = await tx.query<{ id: string }>(
        `INSERT INTO chat_messages (tenant_id, instance_id, session_id, agent, role, content, actor) VALUES ($1, $2, $3, $4, 'system', $5, $6) RETURNING id`,
        [d.tenantId, src.instanceId, src.sessionId, src.agentName || 'main', content, SUMMARY_ACTOR],
      );
      const id = Number(ins.rows[0]?.id);
      await tx.query(
        `UPDATE conversation_ingests SET upto = $4, summary_id = $5, memory_id = $6, model = $7, attempts = 0, last_error = NULL,
                claimed_by = NULL, claimed_until = NULL, ingested_at = now()
          WHERE tenant_id = $1 AND source = $2 AND source_id = $3`,
        [d.tenantId, d.source, d.sourceId, d.upto, id, memoryId, model],
      );
      return id;
    });
    if (summaryId !== undefined) await this.#indexer.embedRows('chat_messages', d.tenantId, [summaryId], ctx);
  }

  async #chat(d: Due): Promise<Source | undefined> {
    const r = await this.#db.query<{ role: string; content: string; agent: string; instance_id: string }>(
      'SELECT role, content, agent, instance_id FROM chat_messages WHERE tenant_id = $1 AND session_id = $2 AND id <= $3 AND actor <> $4 ORDER BY id',
      [d.tenantId, d.sourceId, d.upto, SUMMARY_ACTOR],
    );
    const last = r.rows.at(-1);
    if (!last) return undefined;
    return {
      lines: r.rows.filter((m) => m.role !== 'system').map((m) => ({ role: m.role, content: m.content })),
      agentName: last.agent,
      agentId: undefined,
      instanceId: last.instance_id,
      sessionId: d.sourceId,
    };
  }

  async #task(d: Due): Promise<Source | undefined> {
    const r = await this.#db.query<{
      input: string;
      output: string | null;
      status: string;
      status_reason: string;
      agent_id: string | null;
      agent_name: string | null;
    }>(
      'SELECT t.input, t.output, t.status, t.status_reason, t.agent_id, a.name AS agent_name FROM tasks t LEFT JOIN agents a ON a.tenant_id = t.tenant_id AND a.id = t.agent_id WHERE t.tenant_id = $1 AND t.id = $2',
      [d.tenantId, d.sourceId],
    );
    const t = r.rows[0];
    if (!t) return undefined;
    const lines = [
      { role: 'user', content: t.input },
      { role: 'assistant', content: t.output ?? `(no output; the task ${t.status}: ${t.status_reason})` },
    ];
    return { lines, agentName: t.agent_name ?? '', agentId: t.agent_id ?? undefined, instanceId: NO_INSTANCE, sessionId: `task:${d.sourceId}` };
  }
}

export const INGEST_STATUSES = ['ingested', 'pending', 'failed'] as const;
export type IngestStatus = (typeof INGEST_STATUSES)[number];

/** One tenant's view of session ingestion. */
export interface IngestState {
  enabled: boolean;
  idleMinutes: number;
  memories: boolean;
  counts: Record<IngestStatus, number>;
  /** When the job last summarised or tried one of this tenant's items. */
  lastRunAt: string | null;
  items: {
    source: 'chat' | 'task';
    sourceId: string;
    status: IngestStatus;
    /** The session's newest message, or when the task finished (null once outside the look-back window). */
    lastActivityAt: string | null;
    summaryId: number | null;
    memoryId: number | null;
    model: string | null;
    attempts: number;
    error: string | null;
    ingestedAt: string | null;
    lastAttemptAt: string | null;
    retryAt: string | null;
  }[];
}

interface Source {
  lines: { role: string; content: string }[];
  agentName: string;
  agentId: string | undefined;
  instanceId: string;
  /** The archive session the summary is filed under: the chat session, or `task:<id>`. */
  sessionId: string;
}

function transcript(lines: Source['lines']): string {
  const all = lines.map((l) => `${l.role === 'user' ? 'User' : 'Agent'}: ${l.content}`).join('\n\n');
  return all.length > MAX_TRANSCRIPT_CHARS ? `(earlier part left out)\n…${all.slice(-MAX_TRANSCRIPT_CHARS)}` : all;
}

/** The fallback without a model: the first request and the last answer, cut short. */
function excerpt(lines: Source['lines']): string {
  const cut = (s: string) => (s.length > 300 ? `${s.slice(0, 300)}…` : s).replace(/\s+/g, ' ').trim();
  const first = lines.find((l) => l.role === 'user');
  const last = [...lines].reverse().find((l) => l.role === 'assistant');
  return [first ? `Asked: ${cut(first.content)}` : '', last ? `Last answer: ${cut(last.content)}` : ''].filter(Boolean).join(' ') || '(no messages)';
}
