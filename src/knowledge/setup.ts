import type { Logger } from 'pino';
import type { BrokerProxy } from '../broker/proxy.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import type { AgentService } from '../tasks/agents.ts';
import type { EmbedContext } from './embeddings.ts';
import { Embeddings } from './embeddings.ts';
import { FindingService } from './findings.ts';
import { KnowledgeIndexer } from './indexer.ts';
import { MemoryService } from './memories.ts';
import { HybridSearch, type SearchMode } from './search.ts';
import { SketchIndex } from './sketch-index.ts';

/** A message of the conversation archive found by a search. */
export interface ArchiveHit {
  id: number;
  sessionId: string;
  agent: string;
  role: string;
  content: string;
  createdAt: string;
  score: number;
  similarity: number | null;
}

interface ChatRow {
  id: number;
  session_id: string;
  agent: string;
  role: string;
  content: string;
  created_at: Date;
  embedding: Buffer | null;
  embedding_model: string | null;
  text_rank: number;
}

/** Agent memory, findings, and search by meaning over them and the conversation archive. */
export interface KnowledgeServices {
  memories: MemoryService;
  findings: FindingService;
  embeddings: Embeddings;
  knowledgeIndexer: KnowledgeIndexer;
  knowledgeSearch: HybridSearch;
  /** Hybrid search over the tenant's archived chat messages. */
  searchArchive(
    tenantId: string,
    o: { q: string; mode: SearchMode; limit: number },
    ctx: EmbedContext,
  ): Promise<{ items: ArchiveHit[]; mode: SearchMode; note: string | null }>;
}

export function createKnowledgeServices(o: {
  db: Db;
  proxy: Pick<BrokerProxy, 'embed'>;
  agents: AgentService;
  log: Logger;
  events?: EventChannel;
  maxIndexEntries?: number;
}): KnowledgeServices {
  const log = o.log.child({ component: 'knowledge' });
  const embeddings = new Embeddings(o.db, o.proxy);
  const index = new SketchIndex(o.db, o.maxIndexEntries === undefined ? {} : { maxEntries: o.maxIndexEntries });
  // Deletions and re-written rows, from any replica (a missed one only costs a candidate slot: search.ts
  // reads every candidate back).
  o.events?.on('knowledge.removed', ({ tenantId, table, ids }) => index.forget(table, tenantId, ids));
  const search = new HybridSearch({ db: o.db, embeddings, index, log });
  const indexer = new KnowledgeIndexer({ db: o.db, embeddings, log });
  return {
    memories: new MemoryService({ db: o.db, agents: o.agents, search, indexer, ...(o.events ? { events: o.events } : {}) }),
    findings: new FindingService({ db: o.db, search, indexer, ...(o.events ? { events: o.events } : {}) }),
    embeddings,
    knowledgeIndexer: indexer,
    knowledgeSearch: search,
    async searchArchive(tenantId, q, ctx) {
      const r = await search.search<ChatRow>({ table: 'chat_messages', tenantId, q: q.q, mode: q.mode, limit: q.limit, where: '', params: [], ctx });
      return {
        items: r.items.map((h) => ({
          id: Number(h.row.id),
          sessionId: h.row.session_id,
          agent: h.row.agent,
          role: h.row.role,
          content: h.row.content,
          createdAt: h.row.created_at.toISOString(),
          score: h.score,
          similarity: h.similarity,
        })),
        mode: r.mode,
        note: r.note,
      };
    },
  };
}
