/**
 * `npm run bench -- broker [seconds-per-level]` (issue 5): streaming chat completions straight to a
 * provider vs through the broker, at 1, 50 and 200 concurrent clients, measured in the same run.
 * Prints p50/p99 latency to the last byte, the added latency and requests per second, as ratios.
 *
 * The provider is a local fake (the only allowed stand-in), in its own process, answering a short SSE
 * stream with usage. The broker runs in this process on its internal TCP port with everything a real
 * call does: token check, route resolution, budget admission, key from the vault (cached), price
 * lookup, usage rows written to a real PostgreSQL (embedded, in a temporary directory).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Registry } from 'prom-client';
import { EmbeddedDatabase } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createDb } from '../src/db/pool.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createServices } from '../src/server/services.ts';
import { EventChannel } from '../src/events/channel.ts';

const PROVIDER = `
const http = require('node:http');
const chunks = ['Hello', ' from', ' the', ' fake', ' provider'];
const srv = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const c of chunks) res.write('data: ' + JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: c } }] }) + '\\n\\n');
    res.write('data: ' + JSON.stringify({ object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 12, completion_tokens: 5 } }) + '\\n\\n');
    res.end('data: [DONE]\\n\\n');
  });
});
srv.keepAliveTimeout = 60000;
srv.listen(0, '127.0.0.1', () => process.send(srv.address().port));
`;

interface Result {
  rps: number;
  p50: number;
  p99: number;
}

/** SQL statements sent by this process (every pooled client, BEGIN/COMMIT included): the coordination cost. */
let statements = 0;
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  statements++;
  return (clientQuery as (...a: unknown[]) => unknown).apply(this, args);
} as typeof pg.Client.prototype.query;

async function load(url: string, headers: Record<string, string>, concurrency: number, seconds: number): Promise<Result & { calls: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const body = JSON.stringify({ model: 'auto', stream: true, messages: [{ role: 'user', content: 'hi' }] });
  const u = new URL(url);
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const one = () =>
    new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      const req = http.request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          agent,
          headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
        },
        (res) => {
          if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
          res.resume();
          res.on('end', () => resolve(performance.now() - t0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) latencies.push(await one());
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { rps: latencies.length / elapsed, p50: q(0.5), p99: q(0.99), calls: latencies.length };
}

export async function main(args: string[]): Promise<void> {
  const seconds = Number(args[0] ?? 5);
  const log = createLogger('silent');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-'));
  const pg = new EmbeddedDatabase({ dataDir: dir, port: 0, log });
  const provider = spawn(process.execPath, ['-e', PROVIDER], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  try {
    const providerPort = await new Promise<number>((resolve) => provider.once('message', (m) => resolve(Number(m))));
    const db = createDb(await pg.start(), log, { max: 20 });
    await migrate(db, log);
    const s = createServices({
      db,
      events: EventChannel.local(log),
      secretKey: randomBytes(32),
      dataDir: dir,
      publicOrigin: 'http://127.0.0.1',
      egressAllowHosts: ['127.0.0.1'],
      log,
      registry: new Registry(),
    });
    const by = { actor: 'bench' };
    const t = await s.tenants.create({ slug: 'bench', name: 'Bench' }, by);
    const cred = await s.credentials.create(t.id, { name: 'key', type: 'api_key', value: `sk-bench-${randomBytes(8).toString('hex')}` }, by);
    const p = await s.providers.create(
      t.id,
      { kind: 'openai_compatible', name: 'fake', baseUrl: `http://127.0.0.1:${providerPort}/v1`, credentialId: cred.id },
      by,
    );
    await s.providers.setRoute(t.id, { scope: 'tenant', targets: [{ providerId: p.id, model: 'fake-model' }] }, by);
    await s.broker.prices.set({ model: 'fake-model', inputUsdPerMtok: 1, outputUsdPerMtok: 2 });
    const reg = await s.broker.registerSandbox({ tenantId: t.id, instanceId: 'bench', sandboxId: 'bench' });
    const brokerUrl = await s.broker.listenTcp(0);
    const direct = `http://127.0.0.1:${providerPort}/v1/chat/completions`;
    const via = `${brokerUrl}/v1/chat/completions`;
    // Warm both paths (connections, key cache, price cache).
    await load(direct, {}, 4, 1);
    await load(via, { authorization: `Bearer ${reg.token}` }, 4, 1);

    console.log(`broker bench: ${seconds} s per level, streaming chat completions, 2 vCPU shared by client, broker and provider`);
    console.log('concurrency | direct req/s | broker req/s | rps ratio | direct p50/p99 ms | broker p50/p99 ms | added p50 ms | added p99 ms');
    for (const c of [1, 50, 200]) {
      const d = await load(direct, {}, c, seconds);
      const b = await load(via, { authorization: `Bearer ${reg.token}` }, c, seconds);
      console.log(
        [
          String(c).padStart(11),
          d.rps.toFixed(0).padStart(12),
          b.rps.toFixed(0).padStart(12),
          (b.rps / d.rps).toFixed(2).padStart(9),
          `${d.p50.toFixed(2)}/${d.p99.toFixed(2)}`.padStart(17),
          `${b.p50.toFixed(2)}/${b.p99.toFixed(2)}`.padStart(17),
          (b.p50 - d.p50).toFixed(2).padStart(12),
          (b.p99 - d.p99).toFixed(2).padStart(12),
        ].join(' | '),
      );
    }
    // Statements per model call, with the usage rows flushed: a tenant without caps, and one with a daily token
    // budget and a requests-per-minute cap (reserved and settled in PostgreSQL, docs/adr/0009).
    const capped = await s.tenants.create({ slug: 'capped', name: 'Capped', quotas: { dailyTokenBudget: 1_000_000_000 } }, by);
    const cred2 = await s.credentials.create(capped.id, { name: 'key', type: 'api_key', value: `sk-bench-${randomBytes(8).toString('hex')}` }, by);
    const p2 = await s.providers.create(
      capped.id,
      { kind: 'openai_compatible', name: 'fake', baseUrl: `http://127.0.0.1:${providerPort}/v1`, credentialId: cred2.id },
      by,
    );
    await s.providers.setRoute(capped.id, { scope: 'tenant', targets: [{ providerId: p2.id, model: 'fake-model' }] }, by);
    await db.query(`INSERT INTO broker_limits (tenant_id, agent, requests_per_minute) VALUES ($1, '', 1000000)`, [capped.id]);
    const reg2 = await s.broker.registerSandbox({ tenantId: capped.id, instanceId: 'bench', sandboxId: 'bench2' });
    console.log('tenant | concurrency | calls | SQL statements per call');
    for (const [name, token] of [
      ['no caps', reg.token],
      ['daily budget + rpm', reg2.token],
    ] as const) {
      await load(via, { authorization: `Bearer ${token}` }, 4, 1);
      for (const c of [1, 50]) {
        await s.broker.usage.flush();
        const before = statements;
        const r = await load(via, { authorization: `Bearer ${token}` }, c, seconds);
        await s.broker.usage.flush();
        console.log(`${name} | ${c} | ${r.calls} | ${((statements - before) / r.calls).toFixed(3)}`);
      }
    }
    await s.broker.close();
    const rows = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM llm_usage');
    console.log(`usage rows written: ${rows.rows[0]?.n ?? 0}`);
    await db.close();
  } finally {
    provider.kill();
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
