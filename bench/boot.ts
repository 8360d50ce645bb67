/**
 * `npm run bench -- boot` (issue 6): in one run, on this machine,
 * 1. raw `openclaw gateway run` start-to-ready (OpenClaw's defaults, no sandbox) vs Clawplane's
 *    deploy-to-ready (the local driver: cgroup + prlimit + setpriv + bubblewrap + supervisor + gateway
 *    under Clawplane's rendered config, ready through the ingress socket) — target ratio <= 1.10;
 * 2. resident memory of supervisor + bubblewrap vs the gateway's — target <= 3%;
 * 3. the gateway's resident memory under Clawplane's config vs OpenClaw's defaults — target <= 0.6x.
 * RSS counts shared pages (the Node binary) in every process; PSS splits them, so both are printed.
 * With `--driver docker` the same deploy-to-ready and overhead figures for the docker driver (one container per
 * sandbox, through Podman's service started here unless CLAWPLANE_DOCKER_SOCKET names an engine), beside the
 * local driver's from the same run; the overhead there is conmon + the container's init + the supervisor.
 * A sandbox gets the configuration the reconciler renders for the driver's layout (the knowledge plugin included),
 * and its start is split where the time went (driver.start, the supervisor spawning the gateway, the gateway's own
 * start as the supervisor measured it, the caller noticing): everything but the gateway's own start is Clawplane's.
 * Each figure is the median of BENCH_RUNS rounds (the order of the three alternates between rounds). "Fresh" is
 * a first start on an empty state dir (a new tenant; OpenClaw creates its databases); "warm" is the next start
 * on the same state dir (a restart or a wake from idle). Memory is sampled on the warm starts only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseConfig } from '../src/config/schema.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer } from '../src/server/serve.ts';
import { UID_BASES } from '../test/helpers/gateway.ts';
import { DEFAULT_TOOL_POLICY, renderOpenclawConfig } from '../src/runtime/config.ts';
import { RuntimeStore, type ResolvedRuntime } from '../src/runtime/store.ts';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local/driver.ts';
import { renderForLayout, type TenantRenderInput } from '../src/governance/settings.ts';
import { GATEWAY_NODE_OPTIONS } from '../src/sandbox/host/dirs.ts';
import type { SandboxRef, SandboxSpec, SandboxState } from '../src/sandbox/types.ts';

/** The local driver's init pid of a sandbox (its part of the ref). */
const pidOf = (r: SandboxRef): number => (r.native as { pid: number }).pid;
import { socketRequest } from '../src/sandbox/host/socket-http.ts';
import Docker from 'dockerode';
import { buildSandboxImage } from '../src/sandbox/drivers/docker/build.ts';
import { DockerSandboxDriver } from '../src/sandbox/drivers/docker/driver.ts';
import { startPodmanService } from '../src/sandbox/drivers/docker/podman-service.ts';
import { transportRequest } from '../src/sandbox/gateway-rpc.ts';

const VERSION = process.env['CLAWPLANE_RUNTIME_DEFAULT_VERSION'] ?? '2026.9.6';
const CACHE = process.env['CLAWPLANE_RUNTIME_CACHE'] ?? '/var/tmp/clawplane-runtime-cache';
const SETTLE_MS = Number(process.env['BENCH_SETTLE_MS'] ?? 15_000);
/** Single starts vary 10-24 s on a shared 2-core machine, so every figure is the median of this many. */
const RUNS = Math.max(1, Number(process.env['BENCH_RUNS'] ?? 3));
const TOKEN = 'bench-token-0123456789abcdef';
const HOOKS_TOKEN = 'bench-hooks-token-0123456789abcdef';

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

/** Start-to-ready of one start, and (if asked) memory SETTLE_MS after ready. */
interface Run {
  readyMs: number;
  gw?: Mem;
  over?: Mem;
  /** Where a sandbox start's time went (sandbox kinds only): see phasesOf. */
  phases?: Phases;
}

/**
 * A sandbox start split at what the supervisor reports, in ms from the call: `start` when driver.start returned
 * (directories, relay, cgroup, bubblewrap or the container), `spawn` when the supervisor spawned the gateway
 * (the two overlap: the docker driver returns once the supervisor listens), `gateway` the gateway's
 * start-to-ready as the supervisor measured it, `notice` how much later the caller saw it ready.
 */
interface Phases {
  start: number;
  spawn: number;
  gateway: number;
  notice: number;
}

async function phasesOf(t0: number, startedMs: number, readyMs: number, health: () => Promise<SandboxState>): Promise<Phases | undefined> {
  const st = await health().catch(() => undefined);
  const e = st?.running ? st.health?.executors[0] : undefined;
  if (!e?.startedAt || e.readyMs === null) return undefined;
  const spawnedAt = Date.parse(e.startedAt) - t0;
  return { start: startedMs, spawn: spawnedAt, gateway: e.readyMs, notice: readyMs - spawnedAt - e.readyMs };
}

/**
 * A gateway straight on the host, as `openclaw gateway run` (openclaw-runtime.md §1), with the env the
 * supervisor gives gateways. `config` gets the state dir; a second call on the same dir is a warm start.
 */
async function rawGateway(
  rt: ResolvedRuntime,
  dir: string,
  config: (stateDir: string, tokenFile: string) => Record<string, unknown>,
  sampleMem: boolean,
  nodeOptions?: string,
): Promise<Run> {
  const port = await freePort();
  const state = path.join(dir, 'state');
  const tokenFile = path.join(dir, 'gateway-token');
  // As a plain install: HOME outside the state dir and the config inside it, so a fresh state dir holds only
  // openclaw.json (OpenClaw skips its legacy-state migrations for such a "pristine" install if the config allows).
  await mkdir(path.join(dir, 'home'), { recursive: true });
  await mkdir(state, { recursive: true });
  await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
  await writeFile(path.join(state, 'openclaw.json'), JSON.stringify(config(state, tokenFile), null, 2));
  const t0 = performance.now();
  const child: ChildProcess = spawn(
    path.join(rt.dir, rt.nodeRel),
    [path.join(rt.dir, rt.entryRel), 'gateway', 'run', '--port', String(port), '--bind', 'loopback'],
    {
      env: {
        PATH: `${path.dirname(path.join(rt.dir, rt.nodeRel))}:/usr/bin:/bin`,
        HOME: path.join(dir, 'home'),
        OPENCLAW_HOME: path.join(dir, 'home'),
        OPENCLAW_STATE_DIR: state,
        OPENCLAW_CONFIG_PATH: path.join(state, 'openclaw.json'),
        OPENCLAW_GATEWAY_TOKEN: TOKEN,
        CLAWPLANE_HOOKS_TOKEN: HOOKS_TOKEN,
        OPENCLAW_DISABLE_BONJOUR: '1',
        OPENCLAW_SKIP_CHANNELS: '1',
        OPENCLAW_NO_RESPAWN: '1',
        OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
        OPENCLAW_NO_AUTO_UPDATE: '1',
        OPENCLAW_OFFLINE: '1',
        ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}),
      },
      stdio: 'ignore',
    },
  );
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`raw gateway exited with ${child.exitCode}`);
      if (await readyz(port)) break;
      await sleep(100);
    }
    const readyMs = performance.now() - t0;
    if (!sampleMem) return { readyMs };
    await sleep(SETTLE_MS);
    return { readyMs, gw: await mem(await tree(child.pid ?? 0)) };
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }
}

/** Deploy (start) of a sandbox until ready through the ingress socket; a second start of the same instance is warm. */
async function sandboxRun(driver: LocalSandboxDriver, spec: SandboxSpec, sampleMem: boolean): Promise<Run & { restarts: string }> {
  const t0 = performance.now();
  const wall0 = Date.now();
  const handle = await driver.start(spec);
  const startedMs = performance.now() - t0;
  try {
    for (;;) {
      const r = await socketRequest(driver.dirs(spec.instanceId).ingress, { path: '/readyz', timeoutMs: 3000 }).catch(() => undefined);
      if (r?.status === 200) break;
      const st = await driver.status(handle);
      if (!st.running) throw new Error('sandbox exited');
      await sleep(100);
    }
    const readyMs = performance.now() - t0;
    const phases = await phasesOf(wall0, startedMs, readyMs, () => driver.status(handle));
    if (!sampleMem) return { readyMs, restarts: '-', ...(phases ? { phases } : {}) };
    await sleep(SETTLE_MS);
    // bwrap's outer process is our child's child; the sandbox's init is pidOf(handle).
    const all = await tree(pidOf(handle));
    const outer = (await children()).get(process.pid) ?? [];
    const overheadPids: number[] = [];
    for (const p of outer) if ((await comm(p)) === 'bwrap') overheadPids.push(p);
    const gatewayPids: number[] = [];
    const supPid = (await children()).get(pidOf(handle))?.[0];
    for (const p of all) {
      const c = await comm(p);
      if (p === pidOf(handle) || p === supPid || c === 'bwrap') overheadPids.push(p);
      else gatewayPids.push(p);
    }
    const health = await driver.status(handle);
    return {
      readyMs,
      ...(phases ? { phases } : {}),
      gw: await mem(gatewayPids),
      over: await mem([...new Set(overheadPids)]),
      restarts: String(health.running ? (health.health?.executors[0]?.restarts ?? '?') : '?'),
    };
  } finally {
    await driver.stop(handle);
  }
}

/** The same for the docker driver: ready through its transport; the container's processes by its init's pid. */
async function dockerRun(driver: DockerSandboxDriver, docker: Docker, spec: SandboxSpec, sampleMem: boolean): Promise<Run> {
  const t0 = performance.now();
  const wall0 = Date.now();
  const ref = await driver.start(spec);
  const startedMs = performance.now() - t0;
  try {
    const transport = await driver.connect(ref);
    for (;;) {
      const r = await transportRequest(transport, { path: '/readyz', headers: { connection: 'close' }, timeoutMs: 3000 }).catch(() => undefined);
      if (r?.status === 200) break;
      const st = await driver.status(ref);
      if (!st.running) throw new Error(`sandbox container exited: ${st.reason}`);
      await sleep(100);
    }
    const readyMs = performance.now() - t0;
    const phases = await phasesOf(wall0, startedMs, readyMs, () => driver.status(ref));
    if (!sampleMem) return { readyMs, ...(phases ? { phases } : {}) };
    await sleep(SETTLE_MS);
    const init = (await docker.getContainer((ref.native as { containerId: string }).containerId).inspect()).State.Pid;
    const st = await readFile(`/proc/${init}/stat`, 'utf8');
    const conmon = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
    const supPid = (await children()).get(init)?.[0];
    const overhead = [init, ...(supPid ? [supPid] : []), ...((await comm(conmon)) === 'conmon' ? [conmon] : [])];
    const gateway = (await tree(init)).filter((p) => !overhead.includes(p));
    return { readyMs, ...(phases ? { phases } : {}), gw: await mem(gateway), over: await mem(overhead) };
  } finally {
    await driver.stop(ref);
  }
}

/**
 * Deploy through the control plane (a server with its reconciler on its own embedded database): the deploy call
 * (InstanceService.deploy, what POST …/instances runs) until the instance reads `running`, then a stop and a start
 * of it (warm). Split like a sandbox start: when the gateway was spawned after the call, its own start, and how
 * much later the row said running (the reconciler's notice and the status write).
 */
async function apiRuns(env: Record<string, string>, sbRoot: string, rounds: number): Promise<{ fresh: Run[]; warm: Run[] }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-boot-api-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_RUNTIME_CACHE: CACHE,
    CLAWPLANE_RUNTIME_DEFAULT_VERSION: VERSION,
    CLAWPLANE_SANDBOX_ROOT: sbRoot,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    // The reconcile tick stays the default: a deploy must not wait for it (the event channel kicks the reconciler).
    CLAWPLANE_SANDBOX_UID_BASE: String(UID_BASES['bench-boot']),
    ...env,
  });
  const server = await startServer(config, createLogger('warn'));
  const s = server.services;
  const out: { fresh: Run[]; warm: Run[] } = { fresh: [], warm: [] };
  try {
    const by = { actor: 'bench' };
    const t = await s.tenants.create({ slug: `bench-boot-${randomBytes(3).toString('hex')}`, name: 'Boot', quotas: { maxInstances: 2 } }, by);
    const untilRunning = async (id: string, wall0: number, t0: number): Promise<Run> => {
      for (;;) {
        const row = await s.instances.byId(id);
        if (row?.status === 'running') {
          const readyMs = performance.now() - t0;
          const st = row.sandbox ? await s.sandboxes.status(row.sandbox) : undefined;
          const e = st?.running ? st.health?.executors[0] : undefined;
          const spawnedAt = e?.startedAt ? Date.parse(e.startedAt) - wall0 : NaN;
          const gateway = e?.readyMs ?? NaN;
          return { readyMs, phases: { start: NaN, spawn: spawnedAt, gateway, notice: readyMs - spawnedAt - gateway } };
        }
        if (row?.status === 'error') throw new Error(`deploy failed: ${row.statusReason}`);
        await sleep(50);
      }
    };
    for (let round = 0; round < rounds; round++) {
      process.stderr.write(`round ${round + 1}/${rounds}: through the control plane (${env['CLAWPLANE_SANDBOX_DRIVER'] ?? 'local'})…\n`);
      let wall0 = Date.now();
      let t0 = performance.now();
      const inst = await s.instances.deploy(t.id, { name: `boot-${round}` }, by);
      out.fresh.push(await untilRunning(inst.id, wall0, t0));
      await s.instances.stop(t.id, inst.id, by);
      while ((await s.instances.byId(inst.id))?.status !== 'stopped') await sleep(100);
      // A start waits for the backup its stop makes (a gateway must not write the state while it is read): not timed.
      while (!(await s.backups.list(t.id, inst.id)).some((b) => b.reason === 'stop')) await sleep(100);
      wall0 = Date.now();
      t0 = performance.now();
      await s.instances.start(t.id, inst.id, by);
      out.warm.push(await untilRunning(inst.id, wall0, t0));
      await s.instances.destroy(t.id, inst.id, { deleteState: true }, by);
      while (await s.instances.byId(inst.id)) await sleep(100);
    }
    return out;
  } finally {
    for (const h of await s.sandboxes.list().catch(() => [])) await s.sandboxes.stop(h).catch(() => undefined);
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
};
const secs = (xs: number[]) => `${(median(xs) / 1000).toFixed(1)} s  (${xs.map((x) => (x / 1000).toFixed(1)).join(', ')})`;

export async function main(args: string[] = []): Promise<void> {
  const log = createLogger('warn');
  const withDocker = args.includes('--driver') && args[args.indexOf('--driver') + 1] === 'docker';
  const store = new RuntimeStore({ dir: CACHE, nodePackageVersion: '24.21.0' });
  await store.pull(VERSION, (e) => process.stderr.write(`\r${e.message}   `));
  process.stderr.write('\n');
  const rt = await store.resolve(VERSION);
  const work = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-'));
  const sbRoot = await mkdtemp('/var/tmp/clawplane-bench-sb-');
  await chmod(sbRoot, 0o711);
  const cleanup: (() => Promise<void>)[] = [];
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
  try {
    // OpenClaw's defaults: the minimal config it needs to start headless (openclaw-runtime.md §1).
    const defaults = () => ({ gateway: { mode: 'local', auth: { mode: 'token', token: '${OPENCLAW_GATEWAY_TOKEN}' } } });
    // Clawplane's config as the reconciler renders it (hooks on, the gateway token as a file SecretRef).
    const ours = (stateDir: string, port: number, tokenFile: string, logFile: string) =>
      renderOpenclawConfig({
        gatewayPort: port,
        egressPort: 18080,
        stateDir,
        logFile,
        agents: [{ id: 'main', name: 'main' }],
        models: ['default'],
        tools: DEFAULT_TOOL_POLICY,
        hooks: true,
        gatewayTokenFile: tokenFile,
      });
    // A sandbox gets what the reconciler renders for the driver's layout (the knowledge plugin included).
    const tenantInput: TenantRenderInput = { agents: [{ id: 'main', name: 'main' }], models: ['default'], tools: DEFAULT_TOOL_POLICY };
    const oursRaw = (stateDir: string, tokenFile: string) => ours(stateDir, 18789, tokenFile, path.join(stateDir, '..', 'openclaw.log'));
    await driver.preflight();
    let docker: { driver: DockerSandboxDriver; api: Docker; socketPath: string; stop(): Promise<void> } | undefined;
    if (withDocker) {
      const given = process.env['CLAWPLANE_DOCKER_SOCKET'];
      const svc = given ? { socketPath: given, docker: new Docker({ socketPath: given }), stop: () => Promise.resolve() } : await startPodmanService();
      process.stderr.write('building the sandbox image…\n');
      await buildSandboxImage(svc.docker, 'clawplane-sandbox:bench');
      const d = new DockerSandboxDriver({
        root: sbRoot,
        socketPath: svc.socketPath,
        image: 'clawplane-sandbox:bench',
        broker: undefined,
        log,
        memoryBytes: 3 * 2 ** 30,
        pids: 512,
        cpus: 0,
        tmpBytes: 64 * 2 ** 20,
        nofile: 8192,
        nproc: 2048,
      });
      await d.preflight();
      docker = { driver: d, api: svc.docker, socketPath: svc.socketPath, stop: svc.stop };
    }
    cleanup.push(async () => {
      await docker?.driver.close();
      await docker?.stop();
    });

    const kinds = withDocker ? (['defaults', 'ours', 'sandbox', 'docker'] as const) : (['defaults', 'ours', 'sandbox'] as const);
    const r: Record<'defaults' | 'ours' | 'sandbox' | 'docker', { fresh: Run[]; warm: Run[] }> = {
      defaults: { fresh: [], warm: [] },
      ours: { fresh: [], warm: [] },
      sandbox: { fresh: [], warm: [] },
      docker: { fresh: [], warm: [] },
    };
    let restarts = '?';
    let lastCgroup = driver.lastCgroup;
    for (let round = 0; round < RUNS; round++) {
      const order = round % 2 ? [...kinds].reverse() : [...kinds];
      for (const warm of [false, true]) {
        for (const k of order) {
          process.stderr.write(`round ${round + 1}/${RUNS}: ${k}, ${warm ? 'warm' : 'fresh'}…\n`);
          if (k === 'docker' && docker) {
            const spec: SandboxSpec = {
              tenantId: '00000000-0000-4000-8000-00000000bd00',
              instanceId: `00000000-0000-4000-8000-0000000bd${String(round).padStart(3, '0')}`,
              runtime: rt,
              configs: { e0: JSON.stringify(renderForLayout(docker.driver.layout, tenantInput, 0), null, 2) },
              gatewayToken: TOKEN,
              hooksToken: HOOKS_TOKEN,
              tenantUid: 299_997,
              clusterId: 'bench',
            };
            r.docker[warm ? 'warm' : 'fresh'].push(await dockerRun(docker.driver, docker.api, spec, warm));
          } else if (k === 'sandbox') {
            const spec: SandboxSpec = {
              tenantId: '00000000-0000-4000-8000-00000000be00',
              instanceId: `00000000-0000-4000-8000-0000000be${String(round).padStart(3, '0')}`,
              runtime: rt,
              configs: { e0: JSON.stringify(renderForLayout(driver.layout, tenantInput, 0), null, 2) },
              gatewayToken: TOKEN,
              hooksToken: HOOKS_TOKEN,
              tenantUid: 299_999,
              clusterId: 'bench',
            };
            const run = await sandboxRun(driver, spec, warm);
            if (warm) restarts = run.restarts;
            lastCgroup = driver.lastCgroup;
            r.sandbox[warm ? 'warm' : 'fresh'].push(run);
          } else {
            // Clawplane's config with the Node options the sandbox gives gateways; the defaults as `openclaw gateway run`.
            const run =
              k === 'defaults'
                ? await rawGateway(rt, path.join(work, `${k}-${round}`), defaults, warm)
                : await rawGateway(rt, path.join(work, `${k}-${round}`), oursRaw, warm, GATEWAY_NODE_OPTIONS);
            r[k][warm ? 'warm' : 'fresh'].push(run);
          }
        }
      }
    }
    await driver.close();
    const api = { local: await apiRuns({}, sbRoot, RUNS), docker: { fresh: [] as Run[], warm: [] as Run[] } };
    if (docker)
      api.docker = await apiRuns(
        { CLAWPLANE_SANDBOX_DRIVER: 'docker', CLAWPLANE_DOCKER_SOCKET: docker.socketPath, CLAWPLANE_SANDBOX_IMAGE: 'clawplane-sandbox:bench' },
        sbRoot,
        RUNS,
      );

    const ready = (k: keyof typeof r, w: 'fresh' | 'warm') => r[k][w].map((x) => x.readyMs);
    const memOf = (k: keyof typeof r, f: (x: Run) => number | undefined) => median(r[k].warm.map(f).filter((x): x is number => x !== undefined));
    const gwRss = memOf('sandbox', (x) => x.gw?.rss);
    const gwPss = memOf('sandbox', (x) => x.gw?.pss);
    const overRss = memOf('sandbox', (x) => x.over?.rss);
    const overPss = memOf('sandbox', (x) => x.over?.pss);
    const defRss = memOf('defaults', (x) => x.gw?.rss);
    const defPss = memOf('defaults', (x) => x.gw?.pss);
    const oursRss = memOf('ours', (x) => x.gw?.rss);
    const oursPss = memOf('ours', (x) => x.gw?.pss);
    const ratio = (a: number[], b: number[]) => (median(a) / median(b)).toFixed(2);
    const phaseRow = (k: keyof typeof r, w: 'fresh' | 'warm'): string => {
      const ps = r[k][w].map((x) => x.phases).filter((x): x is Phases => x !== undefined);
      const ms = (f: (p: Phases) => number) => `${Math.round(median(ps.map(f)))}`;
      return ps.length
        ? `driver.start ${ms((p) => p.start)} ms; gateway spawned at ${ms((p) => p.spawn)}, ready ${ms((p) => p.gateway)} later, noticed ${ms((p) => p.notice)} after that`
        : 'n/a';
    };
    const apiRows = (which: 'local' | 'docker'): string[][] =>
      (['fresh', 'warm'] as const).flatMap((w) => {
        const runs = api[which][w];
        const ps = runs.map((x) => x.phases).filter((x): x is Phases => x !== undefined);
        const ms = (f: (p: Phases) => number) => `${Math.round(median(ps.map(f)))}`;
        return [
          [`deploy-to-running through the control plane (${which}), ${w}`, secs(runs.map((x) => x.readyMs))],
          [
            `  ratio / raw defaults, ${w} (target <= 1.10)`,
            ratio(
              runs.map((x) => x.readyMs),
              ready('defaults', w),
            ),
          ],
          [
            `  where it went (medians), ${w}`,
            `gateway spawned at ${ms((p) => p.spawn)} ms, ready ${ms((p) => p.gateway)} later, running ${ms((p) => p.notice)} after that`,
          ],
        ];
      });
    const rows = [
      ['start-to-ready, raw openclaw gateway run (defaults), fresh', secs(ready('defaults', 'fresh'))],
      ['start-to-ready, raw with Clawplane config + NODE_OPTIONS, fresh', secs(ready('ours', 'fresh'))],
      ['deploy-to-ready, Clawplane sandbox (through ingress), fresh', secs(ready('sandbox', 'fresh'))],
      ['  ratio deploy / raw defaults, fresh (target <= 1.10)', ratio(ready('sandbox', 'fresh'), ready('defaults', 'fresh'))],
      ['  ratio deploy / raw same config, fresh', ratio(ready('sandbox', 'fresh'), ready('ours', 'fresh'))],
      ['  where it went (medians), fresh', phaseRow('sandbox', 'fresh')],
      ['start-to-ready, raw openclaw gateway run (defaults), warm', secs(ready('defaults', 'warm'))],
      ['start-to-ready, raw with Clawplane config + NODE_OPTIONS, warm', secs(ready('ours', 'warm'))],
      ['deploy-to-ready, Clawplane sandbox (through ingress), warm', secs(ready('sandbox', 'warm'))],
      ['  ratio deploy / raw defaults, warm (target <= 1.10)', ratio(ready('sandbox', 'warm'), ready('defaults', 'warm'))],
      ['  ratio deploy / raw same config, warm', ratio(ready('sandbox', 'warm'), ready('ours', 'warm'))],
      ['  where it went (medians), warm', phaseRow('sandbox', 'warm')],
      ['gateway RSS / PSS in sandbox', `${mb(gwRss)} / ${mb(gwPss)}`],
      ['supervisor + bwrap RSS / PSS', `${mb(overRss)} / ${mb(overPss)}`],
      ['  ratio overhead / gateway, RSS (target <= 3%)', `${((100 * overRss) / gwRss).toFixed(1)}%`],
      ['  ratio overhead / gateway, PSS', `${((100 * overPss) / gwPss).toFixed(1)}%`],
      ['gateway RSS / PSS, OpenClaw defaults (raw)', `${mb(defRss)} / ${mb(defPss)}`],
      ['gateway RSS / PSS, Clawplane config + gateway NODE_OPTIONS (raw)', `${mb(oursRss)} / ${mb(oursPss)}`],
      ['  ratio ours / defaults, RSS (target <= 0.6)', (oursRss / defRss).toFixed(2)],
      ['  ratio ours / defaults, PSS', (oursPss / defPss).toFixed(2)],
      ['cgroup limits enforced', lastCgroup?.enforced.join(', ') || 'none'],
      ['cgroup limits not enforced', lastCgroup?.notEnforced.join('; ') || 'none'],
      ['executor restarts during the last warm run', restarts],
      ...apiRows('local'),
    ];
    if (withDocker) {
      const dGw = memOf('docker', (x) => x.gw?.rss);
      const dOver = memOf('docker', (x) => x.over?.rss);
      rows.push(
        ['deploy-to-ready, docker driver (through its transport), fresh', secs(ready('docker', 'fresh'))],
        ['  ratio docker / raw defaults, fresh (target <= 1.10)', ratio(ready('docker', 'fresh'), ready('defaults', 'fresh'))],
        ['  ratio docker / local driver, fresh', ratio(ready('docker', 'fresh'), ready('sandbox', 'fresh'))],
        ['  where it went (medians), fresh, docker', phaseRow('docker', 'fresh')],
        ['deploy-to-ready, docker driver (through its transport), warm', secs(ready('docker', 'warm'))],
        ['  ratio docker / raw defaults, warm (target <= 1.10)', ratio(ready('docker', 'warm'), ready('defaults', 'warm'))],
        ['  ratio docker / local driver, warm', ratio(ready('docker', 'warm'), ready('sandbox', 'warm'))],
        ['  where it went (medians), warm, docker', phaseRow('docker', 'warm')],
        ['gateway RSS / PSS in the docker sandbox', `${mb(dGw)} / ${mb(memOf('docker', (x) => x.gw?.pss))}`],
        ['conmon + init + supervisor RSS / PSS (docker)', `${mb(dOver)} / ${mb(memOf('docker', (x) => x.over?.pss))}`],
        ['  ratio overhead / gateway, RSS, docker (target <= 3%)', `${((100 * dOver) / dGw).toFixed(1)}%`],
        ...apiRows('docker'),
      );
    }
    const w = Math.max(...rows.map((x) => (x[0] ?? '').length));
    console.log(
      `\nboot bench: OpenClaw ${VERSION}, ${os.cpus().length} CPUs, median of ${RUNS} rounds (each run in brackets), memory sampled ${SETTLE_MS / 1000} s after a warm start is ready\n`,
    );
    for (const [k, v] of rows) console.log(`${(k ?? '').padEnd(w)}  ${v ?? ''}`);
  } finally {
    for (const c of cleanup) await c().catch(() => undefined);
    await driver.close().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
    await rm(sbRoot, { recursive: true, force: true });
  }
}
