/**
 * `npm run bench -- ingress` (issue 7), in one run on this machine:
 * 1. chat through Clawplane (API → auth → ingress → sandbox socket → supervisor → gateway) vs straight
 *    to the same gateway's ingress socket with its token: p50 added latency of a whole SSE turn
 *    (target +≤ 2 ms) and the time-to-first-byte ratio (target ≤ 1.05);
 * 2. cold wake (a request for a stopped instance until the instance is ready: reconciler, bubblewrap,
 *    supervisor, gateway) vs a raw `openclaw gateway run` boot to /readyz with the same config and an
 *    existing state dir (target ≤ 1.10).
 * The model provider is a tiny local OpenAI-compatible SSE server (what the tests' fake provider is),
 * answering at once, so the figures are the platform's own cost.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import { gatewayRequest } from '../src/ingress/gateway.ts';
import { createLogger } from '../src/observability/logger.ts';
import { DEFAULT_TOOL_POLICY, renderOpenclawConfig } from '../src/runtime/config.ts';
import { startServer } from '../src/server/serve.ts';
import { UID_BASES } from '../test/helpers/gateway.ts';

const VERSION = process.env['CLAWPLANE_RUNTIME_DEFAULT_VERSION'] ?? '2026.9.6';
const CACHE = process.env['CLAWPLANE_RUNTIME_CACHE'] ?? '/var/tmp/clawplane-runtime-cache';
const TURNS = Number(process.env['BENCH_TURNS'] ?? 40);
const WAKES = Number(process.env['BENCH_WAKES'] ?? 3);
const SETTLE_MS = Number(process.env['BENCH_SETTLE_MS'] ?? 100);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fakeProvider(): Promise<{ url: string; close(): void }> {
  const srv = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url?.endsWith('/models'))
        return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[{"id":"fake-model"}]}');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const w of ['Hello', ' from', ' bench'])
        res.write(
          `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })}\n\n`,
        );
      res.write(
        `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: { prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 } })}\n\ndata: [DONE]\n\n`,
      );
      res.end();
    });
  });
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/v1`, close: () => srv.close() })),
  );
}

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** Reads an SSE body to the end: ms to the first body byte and to the end. */
async function timeStream(body: AsyncIterable<Uint8Array>, t0: number): Promise<{ ttfb: number; total: number }> {
  let ttfb = NaN;
  for await (const _c of body) if (Number.isNaN(ttfb)) ttfb = performance.now() - t0;
  return { ttfb, total: performance.now() - t0 };
}

async function readyz(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const r = http.get({ host: '127.0.0.1', port, path: '/readyz', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    r.on('error', () => resolve(false));
    r.on('timeout', () => r.destroy());
  });
}

/** Raw `openclaw gateway run` on the host with Clawplane's rendered config: `boot()` is ms to /readyz. */
async function rawGateway(rtDir: string, nodeRel: string, entryRel: string, dir: string, providerUrl: string): Promise<{ boot(): Promise<number> }> {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const state = path.join(dir, 'state');
  await mkdir(path.join(state, 'home'), { recursive: true });
  const cfg = renderOpenclawConfig({
    gatewayPort: port,
    egressPort: Number(new URL(providerUrl).port),
    stateDir: state,
    logFile: path.join(dir, 'openclaw.log'),
    agents: [{ id: 'main', name: 'main' }],
    models: ['default'],
    tools: DEFAULT_TOOL_POLICY,
  });
  await writeFile(path.join(state, 'openclaw.json'), JSON.stringify(cfg));
  return {
    // The first boot has a fresh state dir, later ones the same state again (what a woken instance has).
    async boot() {
      const t0 = performance.now();
      const child = spawn(path.join(rtDir, nodeRel), [path.join(rtDir, entryRel), 'gateway', 'run', '--port', String(port), '--bind', 'loopback'], {
        env: {
          PATH: `${path.dirname(path.join(rtDir, nodeRel))}:/usr/bin:/bin`,
          HOME: path.join(state, 'home'),
          OPENCLAW_HOME: path.join(state, 'home'),
          OPENCLAW_STATE_DIR: state,
          OPENCLAW_CONFIG_PATH: path.join(state, 'openclaw.json'),
          OPENCLAW_GATEWAY_TOKEN: 'bench-token-0123456789abcdef',
          OPENCLAW_DISABLE_BONJOUR: '1',
          OPENCLAW_SKIP_CHANNELS: '1',
          OPENCLAW_NO_RESPAWN: '1',
          OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
          OPENCLAW_NO_AUTO_UPDATE: '1',
          OPENCLAW_OFFLINE: '1',
        },
        stdio: 'ignore',
      });
      try {
        for (;;) {
          if (child.exitCode !== null) throw new Error(`raw gateway exited with ${child.exitCode}`);
          if (await readyz(port)) break;
          await sleep(100);
        }
        return performance.now() - t0;
      } finally {
        child.kill('SIGTERM');
        if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
      }
    },
  };
}

export async function main(): Promise<void> {
  const provider = await fakeProvider();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-ingress-'));
  const sbRoot = await mkdtemp('/var/tmp/clawplane-bench-ingress-sb-');
  await chmod(sbRoot, 0o711);
  const config = parseConfig({
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_PORT: '0',
    CLAWPLANE_RUNTIME_CACHE: CACHE,
    CLAWPLANE_SANDBOX_ROOT: sbRoot,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '500',
    CLAWPLANE_SANDBOX_UID_BASE: String(UID_BASES['bench-ingress']),
    CLAWPLANE_LOG_LEVEL: 'warn',
  });
  const server = await startServer(config, createLogger('warn'));
  const s = server.services;
  try {
    const rt = await s.runtimes.pull(VERSION).then(() => s.runtimes.resolve(VERSION));
    // Onboarding as the console does it, then one tenant with a token, a provider and a route.
    let cookie = '';
    let csrf = '';
    const api = async (method: string, p: string, body?: unknown) => {
      const r = await fetch(server.url + p, {
        method,
        headers: { 'content-type': 'application/json', cookie, 'x-csrf-token': csrf },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const sc = r.headers.getSetCookie()[0];
      if (sc) cookie = sc.split(';')[0] ?? '';
      if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
      return (await r.json()) as Record<string, unknown>;
    };
    const setupCode = (await readFile(path.join(dataDir, 'setup-code'), 'utf8')).trim();
    csrf = String(
      (await api('POST', '/api/v1/onboarding/admin', { email: 'admin@bench.test', password: 'correct horse battery staple', setupCode }))['csrfToken'],
    );
    await api('POST', '/api/v1/onboarding/oidc', { skip: true });
    await api('POST', '/api/v1/onboarding/provider', { skip: true });
    await api('POST', '/api/v1/onboarding/defaults', {});
    const tenant = await api('POST', '/api/v1/tenants', { slug: 'bench', name: 'Bench' });
    const tenantId = String(tenant['id']);
    const { token } = await s.tokens.create(tenantId, { name: 'bench', role: 'member', createdBy: null }, { actor: 'bench' });
    const by = { actor: 'bench' };
    const cred = await s.credentials.create(tenantId, { name: 'k', type: 'api_key', value: 'sk-bench-0123456789abcdef' }, by);
    const prov = await s.providers.create(tenantId, { kind: 'openai_compatible', name: 'fake', baseUrl: provider.url, credentialId: cred.id }, by);
    await s.providers.setRoute(tenantId, { scope: 'tenant', targets: [{ providerId: prov.id, model: 'fake-model' }] }, by);
    const inst = await s.instances.deploy(tenantId, { name: 'main', start: false }, by);

    const chatCp = async (content: string, session: string) => {
      const t0 = performance.now();
      const r = await fetch(`${server.url}/api/v1/tenants/bench/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'agent/main', messages: [{ role: 'user', content }], stream: true, session }),
      });
      if (r.status !== 200 || !r.body) throw new Error(`chat through Clawplane: ${r.status} ${await r.text()}`);
      return timeStream(r.body, t0);
    };
    const wakeSeconds = async () =>
      Number(/clawplane_instance_wake_seconds_sum\{[^}]*\} ([\d.e+-]+)/.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1] ?? NaN);

    // The raw gateway's first boot (fresh state) before anything else runs, like the first wake.
    const raw = await rawGateway(rt.dir, rt.nodeRel, rt.entryRel, path.join(dataDir, 'raw'), provider.url);
    process.stderr.write('raw OpenClaw boot (fresh state)…\n');
    const rawFresh = await raw.boot();
    process.stderr.write('cold wake (fresh state)…\n');
    await chatCp('hello', 'warmup');
    let wakeTotal = await wakeSeconds();
    const wakeFresh = wakeTotal * 1000;
    // Boot times swing by seconds on a shared machine: wakes and raw boots alternate, medians compared.
    const wakes: number[] = [];
    const rawWarm: number[] = [];
    const firstTurns: number[] = [];
    for (let i = 0; i < WAKES; i++) {
      process.stderr.write(`stop, cold wake ${i + 1}/${WAKES} (existing state), raw boot…\n`);
      await s.instances.stop(tenantId, inst.id, by);
      for (;;) {
        if ((await s.instances.byId(inst.id))?.status === 'stopped') break;
        await sleep(200);
      }
      await s.backups.settled(inst.id);
      const tWake = performance.now();
      await chatCp('hello again', 'warmup');
      firstTurns.push(performance.now() - tWake);
      const total = await wakeSeconds();
      wakes.push((total - wakeTotal) * 1000);
      wakeTotal = total;
      rawWarm.push(await raw.boot());
    }
    const wakeWarm = p50(wakes);
    const wakeWarmFirstTurn = p50(firstTurns);

    process.stderr.write(`${TURNS} warm turns each way…\n`);
    const gwToken = await s.instances.gatewayToken(inst.id);
    const ref = (await s.instances.byId(inst.id))?.sandbox;
    if (!ref) throw new Error('the instance has no running sandbox');
    const transport = await s.sandboxes.connect(ref);
    const chatDirect = async (content: string, session: string) => {
      const t0 = performance.now();
      const call = gatewayRequest({
        transport,
        token: gwToken,
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { 'content-type': 'application/json', 'x-openclaw-session-key': `agent:main:${session}` },
        body: JSON.stringify({ model: 'openclaw/main', messages: [{ role: 'user', content }], stream: true }),
      });
      const res = await call.response;
      if (res.statusCode !== 200) throw new Error(`direct: ${res.statusCode}`);
      return timeStream(res, t0);
    };
    const cp: { ttfb: number; total: number }[] = [];
    const direct: { ttfb: number; total: number }[] = [];
    for (let i = 0; i < 3; i++) {
      await chatCp('warm', `cp-${i}`);
      await chatDirect('warm', `direct-${i}`);
    }
    // Alternating, each on its own new session, so neither side has a longer history.
    // Each timed turn starts after the same pause, so neither side runs while the gateway (or Clawplane)
    // still finishes the other's turn: back to back, whichever side came second paid for the first.
    for (let i = 0; i < TURNS; i++) {
      await sleep(SETTLE_MS);
      cp.push(await chatCp(`turn ${i}`, `cp-t${i}`));
      await sleep(SETTLE_MS);
      direct.push(await chatDirect(`turn ${i}`, `direct-t${i}`));
    }
    const f = (n: number) => n.toFixed(1);
    const rows: [string, string, string, string][] = [
      [
        'chat SSE turn, p50 total (ms)',
        f(p50(cp.map((x) => x.total))),
        f(p50(direct.map((x) => x.total))),
        `+${f(p50(cp.map((x) => x.total)) - p50(direct.map((x) => x.total)))} ms (target +<= 2)`,
      ],
      [
        'chat SSE, p50 time to first byte (ms)',
        f(p50(cp.map((x) => x.ttfb))),
        f(p50(direct.map((x) => x.ttfb))),
        `${(p50(cp.map((x) => x.ttfb)) / p50(direct.map((x) => x.ttfb))).toFixed(3)}x (target <= 1.05)`,
      ],
      [`wake to ready, existing state, p50 of ${WAKES} (ms)`, f(wakeWarm), f(p50(rawWarm)), `${(wakeWarm / p50(rawWarm)).toFixed(3)}x (target <= 1.10)`],
      ['wake to ready, fresh state (ms)', f(wakeFresh), f(rawFresh), `${(wakeFresh / rawFresh).toFixed(3)}x`],
      ['request to end of first answer after a wake (ms)', f(wakeWarmFirstTurn), '-', 'includes the first model turn'],
    ];
    const w = [Math.max(...rows.map((r) => r[0].length)), 12, 12];
    console.log(`\ningress bench (${TURNS} turns each way, ${WAKES} wakes and raw boots alternating, OpenClaw ${VERSION}, ${os.cpus().length} CPUs)`);
    console.log(`wakes ${wakes.map(f).join(' ')} | raw boots ${rawWarm.map(f).join(' ')} ms`);
    console.log(`${'measure'.padEnd(w[0] ?? 0)}  ${'Clawplane'.padStart(12)}  ${'direct/raw'.padStart(12)}  ratio`);
    for (const r of rows) console.log(`${r[0].padEnd(w[0] ?? 0)}  ${r[1].padStart(12)}  ${r[2].padStart(12)}  ${r[3]}`);
  } finally {
    for (const h of await s.sandboxes.list()) await s.sandboxes.stop(h);
    await server.stop();
    provider.close();
    await rm(sbRoot, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  }
}
