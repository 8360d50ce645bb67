/**
 * `npm run bench -- recall [memories] [queries]` (docs/adr/0007-knowledge-search.md): memory recall at
 * 100,000 memories of one tenant with 1,536-dimension vectors. Vectors are clustered like real
 * embeddings (1,000 topics, each memory its topic's direction plus noise); a query is a topic plus
 * fresh noise. A local stand-in provider answers each query with its vector, so the figures cover the
 * whole path (broker budgets and metering, sketch scan, candidate read-back, exact ranking) except the
 * provider's own latency. Prints p50/p95 of recall, recall@10 against exact search over every vector,
 * the memory the in-process sketches cost, and the embedding calls a task makes.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer } from '../src/server/serve.ts';
import type { TaskExecutor } from '../src/tasks/types.ts';
import { SketchIndex } from '../src/knowledge/sketch-index.ts';
import { cosine, decodeVector, hamming, quantize, signSketch } from '../src/knowledge/vectors.ts';

const DIM = 1536;
const TOPICS = 1000;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}
function unit(v: Float32Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) / n;
  return v;
}

const topicRng = rng(7);
const topics: Float32Array[] = Array.from({ length: TOPICS }, () => unit(Float32Array.from({ length: DIM }, () => gauss(topicRng))));
/** Memory i: its topic's direction plus noise of about the same length (cosine to its topic ≈ 0.7). */
function memoryVector(i: number): Float32Array {
  const r = rng(1000 + i);
  const t = topics[i % TOPICS] as Float32Array;
  return unit(Float32Array.from({ length: DIM }, (_, d) => (t[d] as number) + gauss(r) / Math.sqrt(DIM)));
}
function queryVector(j: number): Float32Array {
  const r = rng(9_000_000 + j);
  const t = topics[Math.floor(r() * TOPICS)] as Float32Array;
  return unit(Float32Array.from({ length: DIM }, (_, d) => (t[d] as number) + (1.2 * gauss(r)) / Math.sqrt(DIM)));
}
const WORDS =
  'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu'.split(
    ' ',
  );

/** The previous design's scan: table-driven popcount in JavaScript, the k best kept in a sorted array. */
function jsNearest(sketches: Uint32Array, n: number, words: number, query: Uint32Array, k: number): number[] {
  const bestD: number[] = [];
  const bestI: number[] = [];
  let worst = Infinity;
  for (let i = 0; i < n; i++) {
    const d = hamming(query, sketches, i * words, words);
    if (bestD.length >= k && d >= worst) continue;
    let at = bestD.length;
    while (at > 0 && (bestD[at - 1] as number) > d) at--;
    bestD.splice(at, 0, d);
    bestI.splice(at, 0, i);
    if (bestD.length > k) {
      bestD.pop();
      bestI.pop();
    }
    worst = bestD.length >= k ? (bestD[bestD.length - 1] as number) : Infinity;
  }
  return bestI;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

export async function main(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 100_000);
  const nq = Number(args[1] ?? 50);
  const queries = Array.from({ length: nq }, (_, j) => queryVector(j));
  // The stand-in embeddings provider: "q<j>" → query j's vector; anything else → a fixed topic.
  const seen: string[] = [];
  const provider = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as { input?: string | string[] };
      const inputs = Array.isArray(body.input) ? body.input : [body.input ?? ''];
      seen.push(...inputs);
      const data = inputs.map((t, index) => {
        const m = /^q(\d+)$/.exec(t);
        return { object: 'embedding', index, embedding: Array.from(m ? (queries[Number(m[1])] as Float32Array) : (topics[0] as Float32Array)) };
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data, model: 'bench-embed', usage: { prompt_tokens: 8 * inputs.length, total_tokens: 8 * inputs.length } }));
    });
  });
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  const baseUrl = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1`;

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-recall-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_TASK_QUEUE_POLL_MS: '50',
    ...(process.env['DATABASE_URL'] ? { DATABASE_URL: process.env['DATABASE_URL'] } : {}),
  });
  const server = await startServer(config, createLogger('warn'));
  try {
    const s = server.services;
    const by = { actor: 'bench' };
    const t = await s.tenants.create({ slug: 'recall', name: 'Recall' }, by);
    const agent = await s.agents.create(t.id, { name: 'bench-agent', capabilities: ['bench'] }, by);
    const p = await s.providers.create(t.id, { kind: 'openai_compatible', name: 'bench', baseUrl }, by);
    await s.providers.setRoute(t.id, { scope: 'skill', scopeName: 'embeddings', targets: [{ providerId: p.id, model: 'bench-embed' }] }, by);
    const model = `${p.id}/bench-embed`;

    // Load: 500 rows a statement, vectors and sketches computed here as the indexer would store them.
    const t0 = performance.now();
    for (let start = 0; start < n; start += 500) {
      const ids = Array.from({ length: Math.min(500, n - start) }, (_, k) => start + k);
      const vecs = ids.map(memoryVector);
      await server.db.query(
        `INSERT INTO agent_memories (tenant_id, agent_id, content, importance, embedding, sketch, qvec, embedding_model, embed_seq, created_by)
         SELECT $1, $2, c, 0.5, e, k, qv, $6, nextval('knowledge_embed_seq'), 'bench' FROM unnest($3::text[], $4::bytea[], $5::bytea[], $7::bytea[]) AS x(c, e, k, qv)`,
        [
          t.id,
          agent.id,
          ids.map((i) => `memory ${i} about ${WORDS[i % WORDS.length]} ${WORDS[(i * 7) % WORDS.length]}`),
          vecs.map((v) => Buffer.from(v.buffer)),
          vecs.map((v) => Buffer.from(signSketch(v).buffer)),
          model,
          vecs.map((v) => quantize(v)),
        ],
      );
    }
    const loadS = (performance.now() - t0) / 1000;
    const size = await server.db.query<{ b: string }>("SELECT pg_total_relation_size('agent_memories')::text AS b");

    // Exact top 10 per query over every vector (streamed, nothing kept).
    const exact: { i: number; s: number }[][] = queries.map(() => []);
    for (let i = 0; i < n; i++) {
      const v = memoryVector(i);
      for (const [j, q] of queries.entries()) {
        let d = 0;
        for (let k = 0; k < DIM; k++) d += (v[k] as number) * (q[k] as number);
        const top = exact[j] as { i: number; s: number }[];
        if (top.length < 10 || d > (top[9] as { s: number }).s) {
          top.push({ i, s: d });
          top.sort((a, b) => b.s - a.s);
          top.length = Math.min(top.length, 10);
        }
      }
    }
    const contentOf = (i: number) => `memory ${i} about `;

    const ctx = { actor: 'bench', agent: 'bench-agent', taskId: null };
    const c0 = performance.now();
    await s.memories.recall(t.id, agent.id, 'q0', ctx);
    const coldMs = performance.now() - c0;
    const times: number[] = [];
    let hits = 0;
    for (let round = 0; round < 2; round++) {
      for (let j = 0; j < nq; j++) {
        const a = performance.now();
        const r = await s.memories.search(t.id, { q: `q${j}`, mode: 'meaning', limit: 10, agentId: agent.id, includeShared: true }, ctx);
        times.push(performance.now() - a);
        if (round === 0) {
          const want = new Set((exact[j] ?? []).map((x) => contentOf(x.i)));
          hits += r.items.filter((m) => [...want].some((w) => m.content.startsWith(w))).length;
        }
      }
    }
    const recallAt10 = hits / (nq * 10);

    // Baseline, in the same run and so under the same machine load: the previous design (read back the
    // 200 nearest sketches' rows with their float vectors and rank them exactly; the scan in JavaScript),
    // timed by phase.
    const base = new SketchIndex(server.db);
    await base.scope('agent_memories', t.id, model);
    const phases = { catchUp: [] as number[], scan: [] as number[], readBack: [] as number[], rank: [] as number[], words: [] as number[] };
    const baseline: number[] = [];
    let baseHits = 0;
    for (let j = 0; j < nq; j++) {
      const q = queries[j] as Float32Array;
      const a = performance.now();
      const scope = await base.scope('agent_memories', t.id, model);
      const b = performance.now();
      const ids = jsNearest(scope.sketches, scope.ids.length, scope.words, signSketch(q), 200).map((i) => scope.ids[i] as string);
      const c = performance.now();
      const rows = await server.db.query<{ id: string; content: string; embedding: Buffer; text_rank: number }>(
        `SELECT t.*, CASE WHEN t.search @@ query.q THEN ts_rank(t.search, query.q) ELSE 0 END AS text_rank
           FROM agent_memories t, (SELECT plainto_tsquery('english', $2) AS q) query WHERE t.tenant_id = $1 AND t.id = ANY($3::bigint[])`,
        [t.id, `q${j}`, ids],
      );
      const d = performance.now();
      const top = rows.rows
        .map((r) => ({ r, s: cosine(q, decodeVector(r.embedding)) }))
        .sort((x, y) => y.s - x.s)
        .slice(0, 10);
      const e = performance.now();
      baseline.push(e - a);
      phases.catchUp.push(b - a);
      phases.scan.push(c - b);
      phases.readBack.push(d - c);
      phases.rank.push(e - d);
      const want = new Set((exact[j] ?? []).map((x) => contentOf(x.i)));
      baseHits += top.filter((x) => [...want].some((w) => x.r.content.startsWith(w))).length;
      const f = performance.now();
      await server.db.query(
        `SELECT t.id, ts_rank(t.search, query.q) AS text_rank FROM agent_memories t, (SELECT replace(plainto_tsquery('english', $2)::text, ' & ', ' | ')::tsquery AS q) query
          WHERE t.tenant_id = $1 AND t.search @@ query.q ORDER BY text_rank DESC, t.id DESC LIMIT 100`,
        [t.id, `memory about ${WORDS[j % WORDS.length]}`],
      );
      phases.words.push(performance.now() - f);
    }
    const hybrid: number[] = [];
    for (let j = 0; j < nq; j++) {
      const a = performance.now();
      await s.memories.recall(t.id, agent.id, `q${j}`, ctx);
      hybrid.push(performance.now() - a);
    }

    // Embedding calls of one task: its recall, then its new memory (embedded by the sweep, batched).
    const before = seen.length;
    const instant: TaskExecutor = { name: 'stand-in-instant', run: (x) => Promise.resolve({ output: `ok ${x.taskId}` }) };
    s.taskRuntime.useExecutor(instant);
    const task = await s.tasks.create(t.id, { agent: 'bench-agent', input: 'bench task input' }, by);
    for (let k = 0; k < 600; k++) {
      const cur = await s.tasks.get(t.id, task.task.id);
      if (['completed', 'failed'].includes(cur.status)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const recallCalls = seen.length - before;
    await s.knowledgeIndexer.sweepOnce();
    const perTask = seen.length - before;

    console.log(`recall bench: ${n} memories of one tenant, ${DIM} dimensions, ${nq} queries`);
    console.log(`| figure | value |\n|---|---|`);
    console.log(`| load (INSERT, 500 a statement) | ${loadS.toFixed(1)} s |`);
    console.log(`| agent_memories on disk | ${(Number(size.rows[0]?.b ?? 0) / 1e6).toFixed(0)} MB |`);
    console.log(`| first search (loads the sketches) | ${coldMs.toFixed(0)} ms |`);
    console.log(`| search by meaning p50 / p95 (limit 10) | ${pct(times, 50).toFixed(1)} / ${pct(times, 95).toFixed(1)} ms |`);
    console.log(
      `| baseline, same run (200 rows read back with float vectors) p50 / p95 | ${pct(baseline, 50).toFixed(1)} / ${pct(baseline, 95).toFixed(1)} ms (recall@10 ${(baseHits / (nq * 10)).toFixed(3)}) |`,
    );
    console.log(`| p95 ratio baseline / now | ${(pct(baseline, 95) / pct(times, 95)).toFixed(1)} × |`);
    const ph = (xs: number[]) => `${pct(xs, 50).toFixed(1)} / ${pct(xs, 95).toFixed(1)}`;
    console.log(
      `| baseline by phase p50 / p95 (ms): catch-up query, sketch scan, read-back of 200 rows, decode and rank | ${ph(phases.catchUp)}, ${ph(phases.scan)}, ${ph(phases.readBack)}, ${ph(phases.rank)} |`,
    );
    console.log(`| full-text candidates alone (GIN, 100 best) p50 / p95 | ${ph(phases.words)} ms |`);
    console.log(`| machine load (1-minute average) at the end | ${(await readFile('/proc/loadavg', 'utf8').catch(() => '?')).split(' ')[0]} |`);
    console.log(`| recall (hybrid, limit 5) p50 / p95 | ${pct(hybrid, 50).toFixed(1)} / ${pct(hybrid, 95).toFixed(1)} ms |`);
    console.log(`| recall@10 vs exact search | ${recallAt10.toFixed(3)} |`);
    console.log(
      `| index memory per tenant (${n} × (${DIM / 8} B sketch + ${DIM + 4} B int8 code) + ids) | ${(s.knowledgeSearch.indexSize().bytes / 1e6).toFixed(1)} MB |`,
    );
    console.log(
      `| embedding calls per task | ${recallCalls} for recall + ${perTask - recallCalls} for its new memory (the sweep batches up to 32 rows a call) |`,
    );
  } finally {
    await server.stop();
    provider.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
