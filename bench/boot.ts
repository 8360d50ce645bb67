/**
 * `npm run bench -- boot` (issue 6): in one run, on this machine,
 * 1. raw `openclaw gateway run` start-to-ready (OpenClaw's defaults, no sandbox) vs Clawplane's
 *    deploy-to-ready (the local driver: cgroup + prlimit + setpriv + bubblewrap + supervisor + gateway
 *    under Clawplane's rendered config, ready through the ingress socket) — target ratio <= 1.10;
 * 2. resident memory of supervisor + bubblewrap vs the gateway's — target <= 3%;
 * 3. the gateway's resident memory under Clawplane's config vs OpenClaw's defaults — target <= 0.6x.
 * RSS counts shared pages (the Node binary) in every process; PSS splits them, so both are printed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../src/observability/logger.ts';
import { DEFAULT_TOOL_POLICY, renderOpenclawConfig } from '../src/runtime/config.ts';
import { RuntimeStore, type ResolvedRuntime } from '../src/runtime/store.ts';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local.ts';
import { socketRequest } from '../src/sandbox/socket-http.ts';

const VERSION = process.env['CLAWPLANE_RUNTIME_DEFAULT_VERSION'] ?? '2026.9.6';
const CACHE = process.env['CLAWPLANE_RUNTIME_CACHE'] ?? '/var/tmp/clawplane-runtime-cache';
const SETTLE_MS = Number(process.env['BENCH_SETTLE_MS'] ?? 15_000);

interface Mem {
  rss: number;
  pss: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function children(): Promise<Map<number, number[]>> {
  const m = new Map<number, number[]>();
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
    if (!ppid) continue;
    m.set(ppid, [...(m.get(ppid) ?? []), Number(d)]);
  }
  return m;
}

async function tree(pid: number): Promise<number[]> {
  const m = await children();
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of m.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

async function mem(pids: number[]): Promise<Mem> {
  let rss = 0;
  let pss = 0;
  for (const p of pids) {
    const t = await readFile(`/proc/${p}/smaps_rollup`, 'utf8').catch(() => '');
    rss += Number(/^Rss:\s+(\d+)/m.exec(t)?.[1] ?? 0) * 1024;
    pss += Number(/^Pss:\s+(\d+)/m.exec(t)?.[1] ?? 0) * 1024;
  }
  return { rss, pss };
}

async function comm(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
}

function readyz(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/readyz', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (n: number) => `${(n / 2 ** 20).toFixed(0)} MB`;

/** A gateway straight on the host, as `openclaw gateway run` (openclaw-runtime.md §1). */
async function rawGateway(rt: ResolvedRuntime, dir: string, config: Record<string, unknown>): Promise<{ readyMs: number; mem: Mem; stop(): Promise<void> }> {
  const port = await freePort();
  const state = path.join(dir, 'state');
  await mkdir(path.join(dir, 'home'), { recursive: true });
  await mkdir(state, { recursive: true });
  await writeFile(path.join(state, 'openclaw.json'), JSON.stringify(config, null, 2));
  const t0 = performance.now();
  const child: ChildProcess = spawn(path.join(rt.dir, rt.nodeRel), [path.join(rt.dir, rt.entryRel), 'gateway', 'run', '--port', String(port), '--bind', 'loopback'], {
    env: {
      PATH: `${path.dirname(path.join(rt.dir, rt.nodeRel))}:/usr/bin:/bin`,
      HOME: path.join(dir, 'home'),
      OPENCLAW_HOME: path.join(dir, 'home'),
      OPENCLAW_STATE_DIR: state,
      OPENCLAW_CONFIG_PATH: path.join(state, 'openclaw.json'),
      OPENCLAW_GATEWAY_TOKEN: 'bench-token-0123456789abcdef',
      OPENCLAW_DISABLE_BONJOUR: '1',
      OPENCLAW_SKIP_CHANNELS: '1',
      OPENCLAW_NO_RESPAWN: '1',
      OPENCLAW_NO_AUTO_UPDATE: '1',
      OPENCLAW_OFFLINE: '1',
    },
    stdio: 'ignore',
  });
  for (;;) {
    if (child.exitCode !== null) throw new Error(`raw gateway exited with ${child.exitCode}`);
    if (await readyz(port)) break;
    await sleep(100);
  }
  const readyMs = performance.now() - t0;
  await sleep(SETTLE_MS);
  const m = await mem(await tree(child.pid ?? 0));
  return {
    readyMs,
    mem: m,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

export async function main(): Promise<void> {
  const log = createLogger('warn');
  const store = new RuntimeStore({ dir: CACHE, nodePackageVersion: '24.21.0' });
  await store.pull(VERSION, (e) => process.stderr.write(`\r${e.message}   `));
  process.stderr.write('\n');
  const rt = await store.resolve(VERSION);
  const work = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-'));
  const sbRoot = await mkdtemp('/var/tmp/clawplane-bench-sb-');
  await chmod(sbRoot, 0o711);
  try {
    // OpenClaw's defaults: the minimal config it needs to start headless (openclaw-runtime.md §1).
    process.stderr.write('raw gateway, OpenClaw defaults…\n');
    const defaults = await rawGateway(rt, path.join(work, 'default'), { gateway: { mode: 'local', auth: { mode: 'token', token: '${OPENCLAW_GATEWAY_TOKEN}' } } });
    await defaults.stop();

    const ours = (stateDir: string, port: number) =>
      renderOpenclawConfig({ gatewayPort: port, egressPort: 18080, stateDir, logFile: path.join(stateDir, '..', 'openclaw.log'), agents: [{ id: 'main', name: 'main' }], models: ['default'], tools: DEFAULT_TOOL_POLICY });
    process.stderr.write("raw gateway, Clawplane's config…\n");
    const rawOurs = await rawGateway(rt, path.join(work, 'ours'), ours(path.join(work, 'ours', 'state'), 18789));
    await rawOurs.stop();

    process.stderr.write('Clawplane sandbox (bubblewrap + supervisor)…\n');
    const driver = new LocalSandboxDriver({
      root: sbRoot,
      broker: undefined,
      log,
      dataBytes: 16 * 2 ** 30,
      nproc: 2048,
      nofile: 8192,
      tmpBytes: 64 * 2 ** 20,
      cgroup: { memoryBytes: 3 * 2 ** 30, pids: 512, cpus: 0 },
    });
    const instanceId = '00000000-0000-4000-8000-00000000be01';
    const spec = {
      tenantId: '00000000-0000-4000-8000-00000000be00',
      instanceId,
      runtime: rt,
      configs: { e0: JSON.stringify(ours('/tenant/work/e0', LocalSandboxDriver.executorPort(0))) },
      gatewayToken: 'bench-token-0123456789abcdef',
      hooksToken: 'bench-hooks-token-0123456789abcdef',
      hostUid: 299_999,
    };
    await driver.preflight();
    const t0 = performance.now();
    const handle = await driver.start(spec, 'bench');
    for (;;) {
      const r = await socketRequest(driver.endpoint(instanceId).socketPath, { path: '/readyz', timeoutMs: 3000 }).catch(() => undefined);
      if (r?.status === 200) break;
      const st = await driver.status(handle);
      if (!st.running) throw new Error('sandbox exited');
      await sleep(100);
    }
    const deployMs = performance.now() - t0;
    await sleep(SETTLE_MS);
    // bwrap's outer process is our child's child; the sandbox's init is handle.pid.
    const all = await tree(handle.pid);
    const outer = (await children()).get(process.pid) ?? [];
    const outerBwrap: number[] = [];
    for (const p of outer) if ((await comm(p)) === 'bwrap') outerBwrap.push(p);
    const gatewayPids: number[] = [];
    const overheadPids: number[] = [...outerBwrap];
    const health = await driver.status(handle);
    const supPid = (await children()).get(handle.pid)?.[0];
    for (const p of all) {
      const c = await comm(p);
      if (p === handle.pid || p === supPid || c === 'bwrap') overheadPids.push(p);
      else gatewayPids.push(p);
    }
    const gw = await mem(gatewayPids);
    const over = await mem([...new Set(overheadPids)]);
    const cg = driver.lastCgroup;
    await driver.stop(handle);
    await driver.close();

    const rows = [
      ['start-to-ready, raw openclaw gateway run (defaults)', `${(defaults.readyMs / 1000).toFixed(1)} s`],
      ['start-to-ready, raw with Clawplane config', `${(rawOurs.readyMs / 1000).toFixed(1)} s`],
      ['deploy-to-ready, Clawplane sandbox (through ingress)', `${(deployMs / 1000).toFixed(1)} s`],
      ['  ratio deploy / raw defaults (target <= 1.10)', (deployMs / defaults.readyMs).toFixed(2)],
      ['  ratio deploy / raw same config', (deployMs / rawOurs.readyMs).toFixed(2)],
      ['gateway RSS / PSS in sandbox', `${mb(gw.rss)} / ${mb(gw.pss)}`],
      ['supervisor + bwrap RSS / PSS', `${mb(over.rss)} / ${mb(over.pss)}`],
      ['  ratio overhead / gateway, RSS (target <= 3%)', `${((100 * over.rss) / gw.rss).toFixed(1)}%`],
      ['  ratio overhead / gateway, PSS', `${((100 * over.pss) / gw.pss).toFixed(1)}%`],
      ['gateway RSS, OpenClaw defaults (raw)', mb(defaults.mem.rss)],
      ['gateway RSS, Clawplane config (raw)', mb(rawOurs.mem.rss)],
      ['  ratio ours / defaults, RSS (target <= 0.6)', (rawOurs.mem.rss / defaults.mem.rss).toFixed(2)],
      ['  ratio ours / defaults, PSS', (rawOurs.mem.pss / defaults.mem.pss).toFixed(2)],
      ['cgroup limits enforced', cg?.enforced.join(', ') || 'none'],
      ['cgroup limits not enforced', cg?.notEnforced.join('; ') || 'none'],
      ['executor restarts during the run', String(health.running ? (health.health?.executors[0]?.restarts ?? '?') : '?')],
    ];
    const w = Math.max(...rows.map((r) => (r[0] ?? '').length));
    console.log(`\nboot bench: OpenClaw ${VERSION}, ${os.cpus().length} CPUs, memory sampled ${SETTLE_MS / 1000} s after ready\n`);
    for (const [k, v] of rows) console.log(`${(k ?? '').padEnd(w)}  ${v ?? ''}`);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(sbRoot, { recursive: true, force: true });
  }
}
