/**
 * The in-process index behind search by meaning (docs/adr/0007-knowledge-search.md) on real PostgreSQL:
 * the WebAssembly sketch scan gives the same distances as the JavaScript popcount, the k nearest are the
 * k smallest distances (owners filtered, forgotten rows gone), a row written after the index loaded is
 * found by the next search, rows without an int8 code are coded on load, and the int8 estimate of cosine
 * is close to the exact one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hammingScan } from '../src/knowledge/hamming-wasm.ts';
import { SketchIndex } from '../src/knowledge/sketch-index.ts';
import { cosine, hamming, quantize, signSketch } from '../src/knowledge/vectors.ts';
import { testDatabase } from './helpers/db.ts';

const DIM = 256;
const WORDS = DIM / 32;
let seed = 42;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
function unitVector(): Float32Array {
  const v = Float32Array.from({ length: DIM }, rand);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

describe('knowledge index', async () => {
  test('the WebAssembly scan computes the same Hamming distances as the JavaScript popcount', () => {
    const n = 500;
    const mem = new WebAssembly.Memory({ initial: 4 });
    const scan = hammingScan(mem);
    const words = 48;
    const q = new Uint32Array(mem.buffer, 0, words);
    const sk = new Uint32Array(mem.buffer, 1024, n * words);
    q.set(Uint32Array.from({ length: words }, () => (rand() * 2 ** 31) >>> 0));
    for (let i = 0; i < sk.length; i++) sk[i] = (rand() * 2 ** 32) >>> 0;
    sk.fill(0xffffffff, 0, words);
    sk.set(q, words);
    const out = 1024 + n * words * 4;
    scan(0, 1024, n, words / 2, out);
    const d = new Uint16Array(mem.buffer, out, n);
    for (let i = 0; i < n; i++) assert.equal(d[i], hamming(q, sk, i * words, words), `row ${i}`);
    assert.equal(d[1], 0, 'identical sketch');
  });

  const database = await testDatabase();
  const db = database.db;
  const tenant = (await db.query<{ id: string }>("INSERT INTO tenants (slug, name) VALUES ('idx', 'Index') RETURNING id")).rows[0]?.id as string;
  const agent = (await db.query<{ id: string }>("INSERT INTO agents (tenant_id, name, agent_type) VALUES ($1, 'idx-agent', 'chat') RETURNING id", [tenant]))
    .rows[0]?.id as string;
  const vectors = new Map<string, Float32Array>();
  const insert = async (count: number, opts: { agent?: string | null; code?: boolean } = {}) => {
    const vs = Array.from({ length: count }, unitVector);
    const r = await db.query<{ id: string }>(
      `INSERT INTO agent_memories (tenant_id, agent_id, content, importance, embedding, sketch, qvec, embedding_model, embed_seq)
       SELECT $1, $2, 'm', 0.5, e, k, q, 'p/m', nextval('knowledge_embed_seq') FROM unnest($3::bytea[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS x(e, k, q, o) ORDER BY o RETURNING id::text`,
      [
        tenant,
        opts.agent ?? null,
        vs.map((v) => Buffer.from(v.buffer)),
        vs.map((v) => Buffer.from(signSketch(v).buffer)),
        vs.map((v) => (opts.code === false ? null : quantize(v))),
      ],
    );
    r.rows.forEach((row, i) => vectors.set(row.id, vs[i] as Float32Array));
    return r.rows.map((row) => row.id);
  };
  const distance = (q: Uint32Array, id: string) => hamming(q, signSketch(vectors.get(id) as Float32Array), 0, WORDS);

  test('the k nearest are the k smallest distances; owners filter; forgotten rows are gone; later rows are found at once', async () => {
    const shared = await insert(1500);
    const own = await insert(500, { agent });
    const index = new SketchIndex(db);
    let s = await index.scope('agent_memories', tenant, 'p/m');
    assert.equal(s.ids.length, 2000);
    const query = unitVector();
    const q = signSketch(query);
    const all = [...shared, ...own].map((id) => distance(q, id)).sort((a, b) => a - b);
    const near = index.nearest(s, q, 50).map((i) => s.ids[i] as string);
    assert.equal(near.length, 50);
    assert.deepEqual(
      near.map((id) => distance(q, id)),
      all.slice(0, 50),
      'the 50 smallest distances, nearest first',
    );
    const mine = index.nearest(s, q, 20, (o) => o === agent).map((i) => s.ids[i] as string);
    assert.ok(
      mine.every((id) => own.includes(id)),
      "only the agent's own rows",
    );
    assert.deepEqual(
      mine.map((id) => distance(q, id)),
      own
        .map((id) => distance(q, id))
        .sort((a, b) => a - b)
        .slice(0, 20),
    );
    // Forget the nearest (deleted elsewhere): it is never a candidate again.
    index.forget('agent_memories', tenant, [near[0] as string]);
    assert.ok(
      !index
        .nearest(s, q, 50)
        .map((i) => s.ids[i])
        .includes(near[0]),
    );
    // A row written after the load (e.g. through another replica), identical to the query: found first.
    const later = await db.query<{ id: string }>(
      `INSERT INTO agent_memories (tenant_id, content, importance, embedding, sketch, qvec, embedding_model, embed_seq) VALUES ($1, 'later', 0.5, $2, $3, NULL, 'p/m', nextval('knowledge_embed_seq')) RETURNING id::text`,
      [tenant, Buffer.from(query.buffer), Buffer.from(q.buffer)],
    );
    s = await index.scope('agent_memories', tenant, 'p/m');
    const first = index.nearest(s, q, 1)[0] as number;
    assert.equal(s.ids[first], later.rows[0]?.id, 'found by the next search, coded from its float vector (no qvec)');
    assert.ok(Math.abs(index.approx(s, first, query) - 1) < 2e-3);
    // The int8 estimate is close to the exact cosine.
    for (const id of near.slice(1, 20)) {
      const i = s.pos.get(id) as number;
      assert.ok(Math.abs(index.approx(s, i, query) - cosine(query, vectors.get(id) as Float32Array)) < 2e-3);
    }
    assert.equal(index.size().entries, 2001);
  });
});
