/**
 * `npm run bench -- replicas [instances]` (default 1000): the coordination cost of one owner at a time
 * (docs/adr/0009-replica-coordination.md), with one replica, on one database, in one run:
 * - SQL statements and median wall time of the reconciler's and the idle reaper's candidate reads, before
 *   (the plain SELECT) and after (the same read upserting the leases in one statement), as a ratio;
 * - lease throughput: claim + release of a gateway turn lease by one owner, and by three owners contending for
 *   one gateway (only one holds it at a time);
 * - activity writes: statements written for a stream of chats (two touches each) over several instances.
 * No sandbox is started: instances are rows that want to run but back off (a pass reads and claims them and
 * takes no step), which isolates what claiming adds. Loops do not run on their own (intervals of an hour).
 * Then task throughput through 1, 2 and 3 replicas (separate processes on one PostgreSQL, each with every
 * role and a STAND-IN executor answering in BENCH_TURN_MS, default 50 ms: the workflows' cost, not a model's;
 * the queues polled every BENCH_QUEUE_POLL_MS, default 1000 ms as in production),
 * the tasks submitted through the replicas' APIs by 16 concurrent clients, round-robin. On two cores the
 * ceiling is the CPU: read the ratios.
 * Then chat latency through 1, 2 and 3 replicas: one real OpenClaw gateway under bubblewrap (the local driver,
 * one host), the fake model provider the tests use (answers at once: the figure is Clawplane's path and the
 * gateway's, not a model's); BENCH_CHATS sequential chats (default 40, after 5 to warm up) spread round-robin
 * over the replicas started so far; p50 and p95, and the ratio of each p50 to one replica's. Skipped with
 * BENCH_CHAT=0 or where the host cannot run sandboxes.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import type { Db } from '../src/db/pool.ts';
import { Activity } from '../src/ingress/activity.ts';
import { createLogger } from '../src/observability/logger.ts';
import { WorkClaims } from '../src/replicas/claims.ts';
import { startServer } from '../src/server/serve.ts';
import pg from 'pg';
import { startReplicaChild, type ReplicaChild } from '../test/helpers/replica-child.ts';
import { startFakeLlm } from '../test/helpers/fake-llm.ts';
import { UID_BASES } from '../test/helpers/gateway.ts';
import { onboardVia, sharedSecretKey, startReplica, via, waitUntil, type Replica } from '../test/helpers/replicas.ts';
import { killSandboxesUnder, RUNTIME_CACHE, requireSandboxHost } from '../test/helpers/sandbox.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 21);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** Counts the statements sent through `db.query` while `fn` runs (transactions' own statements are not part of these paths). */
async function counted<T>(db: Db, fn: () => Promise<T>): Promise<{ value: T; statements: number; ms: number }> {
  const orig = db.query.bind(db);
  let n = 0;
  (db as { query: Db['query'] }).query = ((...a: Parameters<Db['query']>) => {
    n++;
    return orig(...a);
  }) as Db['query'];
  const t = performance.now();
  try {
    const value = await fn();
    return { value, statements: n, ms: performance.now() - t };
  } finally {
    (db as { query: Db['query'] }).query = orig;
  }
}

async function timed(db: Db, fn: () => Promise<unknown>): Promise<{ statements: number; ms: number }> {
  const runs: { statements: number; ms: number }[] = [];
  for (let i = 0; i < ROUNDS; i++) runs.push(await counted(db, fn));
  return { statements: median(runs.map((r) => r.statements)), ms: median(runs.map((r) => r.ms)) };
}

export async function main(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 1000);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-replicas-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '600000',
    CLAWPLANE_REPLICA_EXPIRE_MS: '3600000',
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    CLAWPLANE_BACKUP_INTERVAL_MS: '0',
    ...(process.env['DATABASE_URL'] ? { DATABASE_URL: process.env['DATABASE_URL'] } : {}),
  });
  const server = await startServer(config, createLogger('warn'));
  try {
    const { db, services: s } = server;
    await db.query(`INSERT INTO tenants (slug, name) SELECT 'bench-' || g, 'Bench ' || g FROM generate_series(1, $1::int) g`, [n]);
    // Half want to run but back off (reconcile candidates), half "running" rows (idle-reaper candidates).
    await db.query(
      `INSERT INTO instances (id, tenant_id, name, runtime_version, desired_state, status, next_attempt_at)
       SELECT gen_random_uuid(), id, 'main', '2026.9.6', 'running', CASE WHEN substr(slug, 7)::int % 2 = 0 THEN 'running' ELSE 'error' END, now() + interval '1 day'
         FROM tenants WHERE slug LIKE 'bench-%'`,
    );
    const rec = s.reconciler;
    const rows: [string, { statements: number; ms: number }, { statements: number; ms: number }][] = [];
    rows.push(['reconcile pass: candidate read', await timed(db, () => s.instances.allForReconcile()), await timed(db, () => rec.claimed('reconcile'))]);
    rows.push(['idle reaper: candidate read', await timed(db, () => s.instances.running()), await timed(db, () => rec.claimed('running'))]);
    console.log(`\nCoordination cost with one replica, ${n} instances (${n / 2} reconcile-only, ${n / 2} running), median of ${ROUNDS}:`);
    console.log('| path | statements before | statements after | ratio | ms before | ms after | ratio |');
    console.log('|---|---|---|---|---|---|---|');
    for (const [name, b, a] of rows)
      console.log(
        `| ${name} | ${b.statements} | ${a.statements} | ${(a.statements / b.statements).toFixed(2)} | ${b.ms.toFixed(2)} | ${a.ms.toFixed(2)} | ${(a.ms / b.ms).toFixed(2)} |`,
      );

    // Lease throughput: one owner, then three contending for one gateway.
    const id = rec.claimIdentity;
    const solo = new WorkClaims(db, { ...id, owner: 'bench-solo' });
    const cycles = 500;
    let t = performance.now();
    for (let i = 0; i < cycles; i++) {
      if (!(await solo.claim('gateway.turn', 'bench-gw'))) throw new Error('uncontended claim refused');
      await solo.release('gateway.turn', 'bench-gw');
    }
    const soloRate = cycles / ((performance.now() - t) / 1000);
    const owners = ['a', 'b', 'c'].map((o) => new WorkClaims(db, { ...id, owner: `bench-${o}` }));
    let held = 0;
    let overlap = 0;
    let done = 0;
    let attempts = 0;
    t = performance.now();
    await Promise.all(
      owners.map(async (w) => {
        while (done < cycles) {
          attempts++;
          if (!(await w.claim('gateway.turn', 'bench-contended'))) continue;
          if (++held > 1) overlap++;
          done++;
          held--;
          await w.release('gateway.turn', 'bench-contended');
        }
      }),
    );
    const contendedRate = done / ((performance.now() - t) / 1000);
    console.log(
      `\nLeases: claim+release by one owner ${soloRate.toFixed(0)}/s; three owners contending for one gateway ${contendedRate.toFixed(0)} turns/s (${attempts} attempts, ${overlap} overlapping holders; ratio ${(contendedRate / soloRate).toFixed(2)})`,
    );

    // Activity: 2,000 chats (begin + end = two touches each) over 20 instances within about 4 s.
    const ids = (await db.query<{ id: string }>(`SELECT id FROM instances WHERE status = 'running' LIMIT 20`)).rows.map((r) => r.id);
    const activity = new Activity({ db });
    const writes = await counted(db, async () => {
      const t0 = performance.now();
      for (let i = 0; i < 2000; i++) {
        const idx = ids[i % ids.length] as string;
        const end = activity.begin(idx);
        end();
        if (i % 100 === 99) await new Promise((r) => setTimeout(r, 200));
      }
      await activity.stop();
      return performance.now() - t0;
    });
    console.log(
      `Activity: 2000 chats over ${ids.length} instances in ${(writes.value / 1000).toFixed(1)} s wrote ${writes.statements} statements (${(writes.statements / 2000).toFixed(4)} per chat; at most one batched UPDATE per 2 s per replica, whatever the number of instances)`,
    );

    // Task throughput through 1, 2 and 3 replicas, each count on a database of its own.
    const tasks = Number(process.env['BENCH_TASKS'] ?? 400);
    const rates: number[] = [];
    console.log(`\nTask throughput: ${tasks} tasks submitted through the API by 16 clients, stand-in turns of ${process.env['BENCH_TURN_MS'] ?? 50} ms:`);
    console.log('| replicas | seconds | tasks/s | ratio to 1 |');
    console.log('|---|---|---|---|');
    for (const k of [1, 2, 3]) {
      const r = await throughput(db.url, k, tasks);
      rates.push(r);
      console.log(`| ${k} | ${(tasks / r).toFixed(1)} | ${r.toFixed(1)} | ${(r / (rates[0] ?? r)).toFixed(2)} |`);
    }
    if (process.env['BENCH_CHAT'] !== '0') await chatLatency(db.url);
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Tasks per second through `k` replica processes on a fresh database of the bench's PostgreSQL. */
async function throughput(adminUrl: string, k: number, tasks: number): Promise<number> {
  const name = `bench_tasks_${k}_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const side = new pg.Client({ connectionString: url });
  await side.connect();
  await side.query('CREATE TABLE task_side_effects (id bigserial PRIMARY KEY, task_id uuid NOT NULL, kind text NOT NULL, replica text NOT NULL)');
  const secretKey = randomBytes(32).toString('base64');
  const env = {
    CLAWPLANE_STANDIN_TURN_MS: process.env['BENCH_TURN_MS'] ?? '50',
    CLAWPLANE_LOG_LEVEL: 'warn',
    CLAWPLANE_TASK_QUEUE_POLL_MS: process.env['BENCH_QUEUE_POLL_MS'] ?? '1000',
  };
  const children: ReplicaChild[] = [];
  try {
    // The first one migrates the database and seeds the tenant; the others join it.
    const first = await startReplicaChild({ name: `bench-r1`, databaseUrl: url, secretKey, seed: 0, env });
    children.push(first);
    const seed = await first.seeded;
    for (let i = 2; i <= k; i++) children.push(await startReplicaChild({ name: `bench-r${i}`, databaseUrl: url, secretKey, env }));
    const done = async () => (await side.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE status = 'completed'`)).rows[0]?.n ?? 0;
    const before = await done();
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < tasks) {
          const i = next++;
          const c = children[i % children.length] as ReplicaChild;
          const res = await fetch(`${c.url}/api/v1/tenants/${seed.slug}/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${seed.token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ capability: 'work', input: `job ${i}` }),
          });
          if (res.status !== 201) throw new Error(`task ${i} through ${c.name}: ${res.status} ${await res.text()}`);
        }
      }),
    );
    while ((await done()) - before < tasks) await new Promise((r) => setTimeout(r, 50));
    return tasks / ((performance.now() - t0) / 1000);
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await side.end();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

/** Chat p50/p95 through 1, 2 and 3 replica processes driving one real gateway, on a fresh database. */
async function chatLatency(adminUrl: string): Promise<void> {
  try {
    requireSandboxHost();
  } catch (err) {
    console.log(`\nChat latency: skipped (${(err as Error).message.split('\n')[0]})`);
    return;
  }
  const chats = Number(process.env['BENCH_CHATS'] ?? 40);
  const name = `bench_chat_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const fake = await startFakeLlm();
  const root = await mkdtemp('/var/tmp/clawplane-bench-replicas-');
  await chmod(root, 0o711);
  const secretKey = sharedSecretKey();
  const env = {
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_SANDBOX_UID_BASE: String(UID_BASES['bench-replicas']),
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_WARM_RESUME: 'false',
  };
  const replicas: Replica[] = [];
  try {
    replicas.push(await startReplica({ name: 'chat-r1', databaseUrl: u.toString(), secretKey, env }));
    const r1 = replicas[0] as Replica;
    const slug = 'bench-chat';
    const { admin: person } = await onboardVia(r1, slug);
    const key = await person.json<{ id: string }>(
      'POST',
      `/api/v1/tenants/${slug}/credentials`,
      { name: 'fake', type: 'api_key', value: 'sk-bench-0123456789' },
      201,
    );
    const provider = await person.json<{ id: string }>(
      'POST',
      `/api/v1/tenants/${slug}/providers`,
      { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id },
      201,
    );
    await person.json('PUT', `/api/v1/tenants/${slug}/model-routes`, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] });
    const inst = await person.json<{ id: string }>('POST', `/api/v1/tenants/${slug}/instances`, { name: 'main' }, 202);
    await waitUntil('running', async () => (await person.json<{ status: string }>('GET', `/api/v1/tenants/${slug}/instances/${inst.id}`)).status === 'running');
    let n = 0;
    const chat = async (r: Replica): Promise<number> => {
      const t = performance.now();
      const res = await via(person, r).call('POST', `/api/v1/tenants/${slug}/chat/completions`, {
        model: 'agent/main',
        messages: [{ role: 'user', content: `ping ${n++}` }],
        session: `bench-${n % 4}`,
      });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`chat through ${r.name}: ${res.status} ${body}`);
      return performance.now() - t;
    };
    for (let i = 0; i < 5; i++) await chat(r1);
    console.log(`\nChat latency: ${chats} sequential chats through one real gateway, spread over the replicas (fake provider):`);
    console.log('| replicas | p50 ms | p95 ms | p50 ratio to 1 |');
    console.log('|---|---|---|---|');
    let base = 0;
    for (const k of [1, 2, 3]) {
      while (replicas.length < k) replicas.push(await startReplica({ name: `chat-r${replicas.length + 1}`, databaseUrl: u.toString(), secretKey, env }));
      for (const r of replicas) await chat(r); // each new replica's first request warms its caches
      const times: number[] = [];
      for (let i = 0; i < chats; i++) times.push(await chat(replicas[i % k] as Replica));
      times.sort((a, b) => a - b);
      const p50 = times[Math.floor(times.length / 2)] ?? 0;
      const p95 = times[Math.min(times.length - 1, Math.floor(times.length * 0.95))] ?? 0;
      if (k === 1) base = p50;
      console.log(`| ${k} | ${p50.toFixed(0)} | ${p95.toFixed(0)} | ${(p50 / base).toFixed(2)} |`);
    }
  } finally {
    await Promise.all(replicas.map((r) => r.stop()));
    await killSandboxesUnder(root);
    await rm(root, { recursive: true, force: true });
    await fake.close();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}
