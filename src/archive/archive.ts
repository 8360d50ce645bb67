/**
 * The conversation archive (issue 7): every message that passes through the chat API, per tenant and
 * session, searchable with PostgreSQL full-text search (the `search` tsvector column, GIN-indexed).
 * For the console's history and search, and for task memory recall. Every query filters by tenant.
 */
import type { Db } from '../db/pool.ts';

export interface ArchivedMessage {
  id: number;
  sessionId: string;
  instanceId: string;
  agent: string;
  role: 'user' | 'assistant' | 'system';
  content: string;
  actor: string;
  createdAt: string;
}

export interface SessionSummary {
  sessionId: string;
  agent: string;
  instanceId: string;
  messages: number;
  firstAt: string;
  lastAt: string;
  /** The first user message, cut to 200 characters. */
  title: string;
}

export interface SearchHit extends ArchivedMessage {
  /** The matching words in context, marked with « ». */
  snippet: string;
  rank: number;
}

interface MsgRow {
  id: string;
  session_id: string;
  instance_id: string;
  agent: string;
  role: ArchivedMessage['role'];
  content: string;
  actor: string;
  created_at: Date;
}

const toMsg = (r: MsgRow): ArchivedMessage => ({
  id: Number(r.id),
  sessionId: r.session_id,
  instanceId: r.instance_id,
  agent: r.agent,
  role: r.role,
  content: r.content,
  actor: r.actor,
  createdAt: r.created_at.toISOString(),
});

export class ConversationArchive {
  readonly #db: Db;
  /** Writes in flight per tenant: the ingress ends a chat stream before its turn is stored (issue 7). */
  readonly #pending = new Map<string, Set<Promise<void>>>();

  constructor(db: Db) {
    this.#db = db;
  }

  /**
   * Stores messages. The write runs on its own: callers need not wait for it (the chat relay does not,
   * so a client's stream ends without a database round trip), and every read of the tenant's archive
   * through this object waits for the writes started before it, so a client that reads its history
   * right after a turn finds the turn.
   */
  append(
    tenantId: string,
    m: {
      instanceId: string;
      sessionId: string;
      agent: string;
      actor: string;
      requestId?: string | undefined;
      messages: { role: ArchivedMessage['role']; content: string }[];
    },
  ): Promise<void> {
    const write = this.#write(tenantId, m);
    let set = this.#pending.get(tenantId);
    if (!set) this.#pending.set(tenantId, (set = new Set()));
    const tracked = write.catch(() => undefined);
    set.add(tracked);
    void tracked.then(() => {
      set.delete(tracked);
      if (set.size === 0 && this.#pending.get(tenantId) === set) this.#pending.delete(tenantId);
    });
    return write;
  }

  /** Resolves when the tenant's writes started so far are done (stored or failed). */
  async settled(tenantId: string): Promise<void> {
    const set = this.#pending.get(tenantId);
    if (set) await Promise.all([...set]);
  }

  async #write(tenantId: string, m: Parameters<ConversationArchive['append']>[1]): Promise<void> {
    const rows = m.messages.filter((x) => x.content !== '');
    if (rows.length === 0) return;
    const vals: unknown[] = [];
    const tuples = rows.map((x) => {
      vals.push(tenantId, m.instanceId, m.sessionId, m.agent, x.role, x.content, m.actor, m.requestId ?? null);
      const b = vals.length - 8;
      return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8})`;
    });
    await this.#db.query(
      `INSERT INTO chat_messages (tenant_id, instance_id, session_id, agent, role, content, actor, request_id) VALUES ${tuples.join(', ')}`,
      vals,
    );
  }

  async sessions(tenantId: string, limit = 100): Promise<SessionSummary[]> {
    await this.settled(tenantId);
    const r = await this.#db.query<{ session_id: string; agent: string; instance_id: string; n: number; first_at: Date; last_at: Date; title: string | null }>(
      `SELECT session_id, (array_agg(agent ORDER BY id DESC))[1] AS agent, (array_agg(instance_id::text ORDER BY id DESC))[1] AS instance_id,
              count(*)::int AS n, min(created_at) AS first_at, max(created_at) AS last_at,
              left((array_agg(content ORDER BY id) FILTER (WHERE role = 'user'))[1], 200) AS title
         FROM chat_messages WHERE tenant_id = $1 GROUP BY session_id ORDER BY max(created_at) DESC LIMIT $2`,
      [tenantId, limit],
    );
    return r.rows.map((x) => ({
      sessionId: x.session_id,
      agent: x.agent,
      instanceId: x.instance_id,
      messages: x.n,
      firstAt: x.first_at.toISOString(),
      lastAt: x.last_at.toISOString(),
      title: x.title ?? '',
    }));
  }

  /** A session's messages, oldest first; empty for an unknown (or another tenant's) session. */
  async history(tenantId: string, sessionId: string, limit = 500): Promise<ArchivedMessage[]> {
    await this.settled(tenantId);
    const r = await this.#db.query<MsgRow>(
      'SELECT * FROM (SELECT * FROM chat_messages WHERE tenant_id = $1 AND session_id = $2 ORDER BY id DESC LIMIT $3) m ORDER BY id',
      [tenantId, sessionId, limit],
    );
    return r.rows.map(toMsg);
  }

  async hasSession(tenantId: string, sessionId: string): Promise<boolean> {
    await this.settled(tenantId);
    const r = await this.#db.query('SELECT 1 FROM chat_messages WHERE tenant_id = $1 AND session_id = $2 LIMIT 1', [tenantId, sessionId]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Full-text search (web-search syntax: words, "phrases", -exclusions, OR), best first. */
  async search(tenantId: string, q: string, limit = 50): Promise<SearchHit[]> {
    await this.settled(tenantId);
    const r = await this.#db.query<MsgRow & { snippet: string; rank: number }>(
      `SELECT m.*, ts_headline('simple', m.content, query, 'StartSel=«, StopSel=», MaxWords=30, MinWords=10') AS snippet, ts_rank(m.search, query) AS rank
         FROM chat_messages m, websearch_to_tsquery('simple', $2) query
        WHERE m.tenant_id = $1 AND m.search @@ query
        ORDER BY rank DESC, m.id DESC LIMIT $3`,
      [tenantId, q, limit],
    );
    return r.rows.map((x) => ({ ...toMsg(x), snippet: x.snippet, rank: Number(x.rank) }));
  }
}
