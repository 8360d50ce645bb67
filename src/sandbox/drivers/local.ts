import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { chmod, chown, copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { LIVE_STAGE, packState } from '../../backup/archive.ts';
import type { SandboxBroker } from '../../broker/types.ts';
import { ClawplaneError, ConflictError } from '../../errors.ts';
import { BrokerRelay } from '../broker-relay.ts';
import { prepareCgroup, removeCgroup, type CgroupLimits } from '../cgroups.ts';
import { Criu, CriuError } from '../snapshot/criu.ts';
import { prepareRestoreRoot, suspendableDirArgs } from '../snapshot/restore-root.ts';
import { suspendableSeccompFilter } from '../snapshot/seccomp.ts';
import { gatewayRpc } from '../gateway-rpc.ts';
import { socketRequest } from '../socket-http.ts';
import type { ExecResult, LogLine, SandboxDriver, SandboxEndpoint, SandboxHandle, SandboxHealth, SandboxSpec, SandboxState, SuspendSupport } from '../types.ts';

/** The supervisor program; its JavaScript is written to each sandbox's read-only /conf. */
export const SUPERVISOR_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'supervisor');

/** Fixed ports inside the sandbox's own network namespace: no other tenant shares it. */
const GATEWAY_BASE_PORT = 18789;
const EGRESS_PORT = 18080;
const INNER_UID = 1000;
/**
 * V8 flags for every gateway (NODE_OPTIONS, so its worker processes too; the gateway command stays [node, entry, …]).
 * A young generation capped at 8 MB semi-spaces (Node's default here is larger): measured on warm starts of OpenClaw
 * 2026.9.6 under Clawplane's config, gateway RSS 10 s after ready 826 MB instead of 922 (medians of 3), CPU to ready
 * 10.8 s vs 11.0; 1, 2 and 4 MB saved no more and cost up to 1 s of CPU. The old generation is not capped: a gateway
 * holds ~1 GB at peak under real chats. (--optimize-for-size and --lite-mode: 700 / 660 MB but 2-3x the CPU to ready.)
 */
export const GATEWAY_NODE_OPTIONS = '--max-semi-space-size=8';

export class SandboxUnavailableError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('sandbox_unavailable', 503, message, { cause });
  }
}

export interface LocalDriverOptions {
  /** CLAWPLANE_SANDBOX_ROOT: one directory per instance below it. */
  root: string;
  broker: SandboxBroker | undefined;
  log: Logger;
  /** Per process, as prlimit --data (RLIMIT_AS breaks V8's reservations). */
  dataBytes: number;
  /** Per host uid (RLIMIT_NPROC), i.e. per tenant. */
  nproc: number;
  nofile: number;
  tmpBytes: number;
  cgroup: CgroupLimits;
  /** Gateway processes per sandbox, unless the instance says otherwise. */
  supervisorDir?: string;
  bwrap?: string;
  /** How long a start waits for the sandbox's init pid from bubblewrap. */
  startTimeoutMs?: number;
  /** The CRIU binary for warm resume (issue 10), as scripts/build-criu.sh installs it. */
  criuBin?: string;
  /**
   * Warm resume (issue 10, CLAWPLANE_WARM_RESUME): start every sandbox suspendable (the bubblewrap
   * flags CRIU needs, docs/adr/0006-warm-resume-criu.md), so suspend() and resume() work. Default off:
   * sandboxes are started exactly as ADR 0005 describes and suspendSupport() says why not.
   */
  warmResume?: boolean;
}

/** What start() records for a suspendable sandbox (host/suspendable.json): what suspend and resume need. */
interface SuspendableRecord {
  /** Inodes of the host-made ingress (fd 4) and control (fd 5) sockets as the sandbox holds them. */
  sockets: { fd: number; ino: number }[];
  /** The bubblewrap arguments it was started with: the restore root is made from them. */
  bwrapArgs: string[];
}

/** snapshot.json in a snapshot directory (suspend writes it, resume reads it). */
interface SnapshotMeta {
  version: 1;
  instanceId: string;
  tenantId: string;
  hostUid: number;
  runtimeVersion: string;
  suspendedAt: string;
  sockets: { fd: number; ino: number }[];
  bwrapArgs: string[];
  /** Archives of the tenant directories, as they were when the tree was dumped (file name → dir). */
  state: { file: string; dir: 'work' | 'sharedRw' | 'log' }[];
  /** stateFingerprint() of those directories right after the dump: resume needs them unchanged. */
  fingerprint: string;
}

/**
 * The first process of a suspendable sandbox (pid 1, `--as-pid-1`; bwrap's own init cannot be dumped):
 * stdio opened in here (a host fd fails the dump), fds 3 and 6 (info, seccomp) closed, the supervisor
 * started in the background with fds 4/5, which this shell then closes. As pid 1 it reaps every
 * orphan (dash's `wait` reaps any child) and forwards SIGTERM/SIGINT (pid 1 ignores signals it has no
 * handler for); it exits with the supervisor.
 */
const WARM_INIT = [
  'exec 3>&- 6>&- </dev/null >>/tenant/log/stdio.log 2>&1',
  '"$@" & p=$!',
  'exec 4>&- 5>&-',
  "trap 'kill -TERM $p 2>/dev/null' TERM INT",
  'while :; do wait $p; s=$?; kill -0 $p 2>/dev/null || exit $s; done',
].join('\n');

/** Resume failed; `errors` are CRIU's own error lines when CRIU failed (the reason to record), else the message. */
export class SandboxResumeError extends ClawplaneError {
  readonly errors: string[];
  constructor(message: string, errors: string[], cause?: unknown) {
    super('sandbox_resume_failed', 503, message, { cause, details: { errors } });
    this.errors = errors;
  }
}

interface Paths {
  dir: string;
  host: string;
  conf: string;
  out: string;
  work: string;
  sharedRo: string;
  sharedRw: string;
  log: string;
  ingress: string;
  control: string;
  record: string;
  suspendable: string;
  /** criu restore --root (restore-root.ts); root-owned 0755, in the 0711 instance dir. */
  rootfs: string;
}

/**
 * The local driver (issue 6): each instance in a bubblewrap sandbox, as its tenant's own unprivileged
 * host uid, in new user/pid/ipc/uts/net/mount/cgroup namespaces with no network at all, read-only
 * system mounts, only the instance's work, shared-rw and log directories writable, an empty
 * environment and rlimits. The flags and the reasons for each are in
 * ../shared/notes/openclaw-in-bubblewrap.md and docs/adr/0005-local-sandbox-bubblewrap.md.
 * `--die-with-parent` is off so sandboxes outlive a control-plane restart; we track the sandbox's
 * init pid (from `--info-fd`) and its start time instead.
 */
export class LocalSandboxDriver implements SandboxDriver {
  readonly name = 'local';
  readonly root: string;
  readonly #o: LocalDriverOptions;
  readonly #relays = new Map<string, BrokerRelay>();
  #preflight: Promise<void> | undefined;
  /** What the last start could enforce with cgroups (reported by health and the bench). */
  lastCgroup: { enforced: string[]; notEnforced: string[] } | undefined;

  constructor(opts: LocalDriverOptions) {
    this.root = path.resolve(opts.root);
    this.#o = opts;
  }

  #paths(instanceId: string): Paths {
    if (!/^[0-9a-f-]{36}$/.test(instanceId)) throw new Error(`bad instance id ${instanceId}`);
    const dir = path.join(this.root, instanceId);
    const host = path.join(dir, 'host');
    return {
      dir,
      host,
      conf: path.join(dir, 'conf'),
      out: path.join(dir, 'out'),
      work: path.join(dir, 'work'),
      sharedRo: path.join(dir, 'shared-ro'),
      sharedRw: path.join(dir, 'shared-rw'),
      log: path.join(dir, 'log'),
      ingress: path.join(host, 'ingress.sock'),
      control: path.join(host, 'control.sock'),
      record: path.join(host, 'sandbox.json'),
      suspendable: path.join(host, 'suspendable.json'),
      rootfs: path.join(dir, 'rootfs'),
    };
  }

  endpoint(instanceId: string): SandboxEndpoint {
    return { socketPath: this.#paths(instanceId).ingress };
  }

  preflight(): Promise<void> {
    this.#preflight ??= this.#checkHost().catch((err: unknown) => {
      this.#preflight = undefined;
      throw err;
    });
    return this.#preflight;
  }

  async #checkHost(): Promise<void> {
    const bwrap = this.#o.bwrap ?? 'bwrap';
    const v = spawnSync(bwrap, ['--version'], { encoding: 'utf8' });
    if (v.error || v.status !== 0) {
      throw new SandboxUnavailableError(`bubblewrap is not installed (${v.error?.message ?? v.stderr.trim()}): install the Debian/Ubuntu package "bubblewrap" (apt-get install bubblewrap). Clawplane never runs a gateway unsandboxed.`);
    }
    for (const tool of ['setpriv', 'prlimit']) {
      const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
      if (r.error || r.status !== 0) throw new SandboxUnavailableError(`${tool} is missing: install the package "util-linux".`);
    }
    if (process.getuid?.() !== 0) {
      throw new SandboxUnavailableError('The local sandbox runs each tenant as its own unprivileged host uid, which needs the control plane to run as root (it drops to that uid before bubblewrap starts).');
    }
    // A real namespace probe as an unprivileged uid: user namespaces can be disabled by sysctl or AppArmor.
    const probe = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', bwrap, '--unshare-all', '--unshare-user', '--disable-userns', '--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64', '--symlink', 'usr/bin', '/bin', '--proc', '/proc', '--dev', '/dev', '/usr/bin/true'], { encoding: 'utf8', timeout: 10_000 });
    if (probe.status !== 0) {
      throw new SandboxUnavailableError(`bubblewrap is installed but cannot create namespaces as an unprivileged user (${probe.stderr.trim() || probe.error?.message}): allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap).`);
    }
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    await chmod(this.root, 0o711);
    await assertTraversable(this.root, 'CLAWPLANE_SANDBOX_ROOT');
  }

  async create(spec: SandboxSpec): Promise<void> {
    await this.preflight();
    await assertTraversable(spec.runtime.dir, 'CLAWPLANE_RUNTIME_CACHE');
    const p = this.#paths(spec.instanceId);
    const uid = spec.hostUid;
    // Host-only, root-owned: the sandbox's uid can pass through but not list or write.
    await mkdirMode(p.dir, 0o711, 0, 0);
    await mkdirMode(p.host, 0o700, 0, 0);
    // Readable by the sandbox's group, written only by us; bound read-only.
    await mkdirMode(p.conf, 0o750, 0, uid);
    await mkdirMode(p.out, 0o750, 0, uid);
    await mkdirMode(p.sharedRo, 0o750, 0, uid);
    // The tenant's own: bound read-write; 0700 so no other uid on the host reads them.
    for (const d of [p.work, p.sharedRw, p.log]) await mkdirMode(d, 0o700, uid, uid);
    for (const id of Object.keys(spec.configs)) await mkdirMode(path.join(p.work, id), 0o700, uid, uid);

    await writePrivate(path.join(p.conf, 'gateway-token'), spec.gatewayToken + '\n', uid);
    await writeOwned(path.join(p.conf, 'hooks-token'), spec.hooksToken + '\n', uid);
    const executors = Object.entries(spec.configs).map(([id, json], i) => ({ id, json, port: GATEWAY_BASE_PORT + i * 10 }));
    for (const e of executors) {
      await mkdirMode(path.join(p.conf, e.id), 0o750, 0, uid);
      await writeOwned(path.join(p.conf, e.id, 'openclaw.json'), e.json, uid);
    }
    const nodeBin = `/opt/runtime/${spec.runtime.nodeRel}`;
    const supervisorConf = {
      executors: executors.map((e) => ({ id: e.id, port: e.port, stateDir: `/tenant/work/${e.id}`, configPath: `/conf/${e.id}/openclaw.json`, logFile: `/tenant/log/${e.id}.log` })),
      command: [nodeBin, `/opt/runtime/${spec.runtime.entryRel}`, 'gateway', 'run', '--bind', 'loopback'],
      env: {
        PATH: `${path.posix.dirname(nodeBin)}:/usr/bin:/bin`,
        TMPDIR: '/tmp',
        // Headless, offline, quiet: openclaw-runtime.md §1.
        OPENCLAW_DISABLE_BONJOUR: '1',
        OPENCLAW_SKIP_CHANNELS: '1',
        OPENCLAW_NO_RESPAWN: '1',
        OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
        OPENCLAW_NO_AUTO_UPDATE: '1',
        OPENCLAW_OFFLINE: '1',
        NODE_OPTIONS: GATEWAY_NODE_OPTIONS,
      },
      gatewayTokenFile: '/conf/gateway-token',
      hooksTokenFile: '/conf/hooks-token',
      egressPort: EGRESS_PORT,
      brokerSocket: '/run/clawplane/out/broker.sock',
      brokerTokenFile: '/run/clawplane/out/broker.token',
      ingressFd: 4,
      controlFd: 5,
      logFile: '/tenant/log/supervisor.log',
      backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    };
    await writeOwned(path.join(p.conf, 'sandbox.json'), JSON.stringify(supervisorConf, null, 2), uid);
    // Plain JavaScript inside: type stripping would load its WASM compiler and cost ~40 MB of RSS per
    // sandbox (measured: 91 MB vs ~50 MB), against the bench target of supervisor ≤ 3% of a gateway.
    const ts = await readFile(path.join(this.#o.supervisorDir ?? SUPERVISOR_DIR, 'supervisor.ts'), 'utf8');
    await writeOwned(path.join(p.conf, 'supervisor.mjs'), stripTypeScriptTypes(ts, { mode: 'strip' }), uid);
  }

  /** The executor ports as the configs must name them (create() assigns them in this order). */
  static executorPort(index: number): number {
    return GATEWAY_BASE_PORT + index * 10;
  }

  static readonly egressPort = EGRESS_PORT;

  async start(spec: SandboxSpec, clusterId: string): Promise<SandboxHandle> {
    await this.create(spec);
    const p = this.#paths(spec.instanceId);
    const existing = await this.#readRecord(spec.instanceId);
    if (existing && (await pidAlive(existing))) {
      throw new ConflictError(`A sandbox for instance ${spec.instanceId} is already running (pid ${existing.pid}); stop it first.`, 'sandbox_running');
    }
    const sandboxId = randomUUID();
    const uid = spec.hostUid;
    await this.#closeRelay(spec.instanceId);
    const relay = await BrokerRelay.open({ broker: this.#o.broker, outDir: p.out, gid: uid, tenantId: spec.tenantId, instanceId: spec.instanceId, sandboxId, log: this.#o.log });
    this.#relays.set(spec.instanceId, relay);

    const cg = await prepareCgroup(spec.instanceId, this.#o.cgroup);
    this.lastCgroup = { enforced: cg.enforced, notEnforced: cg.notEnforced };
    if (cg.notEnforced.length) this.#o.log.warn({ instance_id: spec.instanceId, notEnforced: cg.notEnforced }, 'sandbox cgroup limits not fully enforced on this host');

    const ingress = await listenHostSocket(p.ingress);
    const control = await listenHostSocket(p.control);
    const logFd = openSync(path.join(p.host, 'bwrap.log'), 'a', 0o600);
    const warm = this.#o.warmResume === true;
    // --jitless: no JIT code or executable memory for a proxy that is mostly idle (measured while proxying 200
    // streamed requests: 62 MB RSS / 28 MB PSS vs 73 / 34 without; no slower; --lite-mode the same, --single-threaded
    // and --v8-pool-size=1 ~1 MB). It also turns off WebAssembly, which the supervisor (node: http/net only) never uses.
    const nodeArgv = [`/opt/runtime/${spec.runtime.nodeRel}`, '--max-semi-space-size=1', '--max-old-space-size=64', '--jitless', '/conf/supervisor.mjs', '/conf/sandbox.json'];
    const binds: [string, string, string][] = [
      ['--ro-bind', spec.runtime.dir, '/opt/runtime'],
      ['--ro-bind', p.conf, '/conf'],
      ['--ro-bind', p.out, '/run/clawplane/out'],
      ['--bind', p.work, '/tenant/work'],
      ['--bind', p.sharedRw, '/tenant/shared-rw'],
      ['--ro-bind', p.sharedRo, '/tenant/shared-ro'],
      ['--bind', p.log, '/tenant/log'],
    ];
    // A suspendable sandbox (warm resume, ADR 0006) differs where CRIU needs it: no cgroup namespace;
    // uid 0 inside (still the tenant's unprivileged host uid, no capabilities); a seccomp filter (fd 6:
    // io_uring and new user namespaces refused) instead of --disable-userns; our own pid 1 (WARM_INIT);
    // the parents of the binds 0755 so the restore root can match them.
    const isolation = warm
      ? ['--unshare-user', '--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--new-session', '--as-pid-1', '--seccomp', '6']
      : ['--unshare-all', '--unshare-user', '--disable-userns', '--new-session'];
    const innerUid = String(warm ? 0 : INNER_UID);
    const bwrapArgs = [
      // No --die-with-parent: gateways must survive a control-plane restart (adopted by pid instead).
      ...isolation,
      '--cap-drop', 'ALL', '--uid', innerUid, '--gid', innerUid, '--hostname', 'sandbox',
      '--info-fd', '3',
      ...(warm ? suspendableDirArgs(binds.map((b) => b[2])) : []),
      '--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
      '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/sbin', '/sbin',
      ...binds.flat(),
      '--proc', '/proc', '--dev', '/dev',
      '--size', String(this.#o.tmpBytes), '--tmpfs', '/tmp',
      '--clearenv', '--setenv', 'PATH', '/usr/bin:/bin', '--chdir', '/tenant',
      '--remount-ro', '/',
      ...(warm ? ['/bin/sh', '-c', WARM_INIT, 'init', ...nodeArgv] : nodeArgv),
    ];
    let seccompFd: number | undefined;
    if (warm) {
      const bpf = path.join(p.host, 'seccomp.bpf');
      await writeFile(bpf, suspendableSeccompFilter(), { mode: 0o600 });
      seccompFd = openSync(bpf, 'r');
      await writeFile(p.suspendable, JSON.stringify({ sockets: [{ fd: 4, ino: ingress.ino }, { fd: 5, ino: control.ino }], bwrapArgs } satisfies SuspendableRecord), { mode: 0o600 });
    } else {
      await rm(p.suspendable, { force: true });
    }
    const prlimit = [`--data=${this.#o.dataBytes}`, `--nproc=${this.#o.nproc}`, `--nofile=${this.#o.nofile}`, '--'];
    const setpriv = [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--'];
    // The first process joins the cgroups, then becomes prlimit → setpriv → bwrap (one pid throughout).
    const script = 'for f in $CLAWPLANE_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done; exec "$0" "$@"';
    const child = spawn('/bin/sh', ['-c', script, 'prlimit', ...prlimit, 'setpriv', ...setpriv, this.#o.bwrap ?? 'bwrap', ...bwrapArgs], {
      detached: true,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CLAWPLANE_CGROUP_PROCS: cg.procsFiles.join(' ') },
      stdio: ['ignore', logFd, logFd, 'pipe', ingress.fd, control.fd, ...(seccompFd === undefined ? [] : [seccompFd])],
    });
    closeSync(logFd);
    if (seccompFd !== undefined) closeSync(seccompFd);
    await ingress.release();
    await control.release();
    child.unref();
    const info = child.stdio[3] as net.Socket | null;
    if (!info) throw new Error('no info pipe');
    const childPid = await new Promise<number>((resolve, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new SandboxUnavailableError(`bubblewrap did not start within ${this.#o.startTimeoutMs ?? 10_000} ms; see ${path.join(p.host, 'bwrap.log')}.`)), this.#o.startTimeoutMs ?? 10_000);
      info.on('data', (d: Buffer) => {
        text += d.toString();
        const m = /"child-pid":\s*(\d+)/.exec(text);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new SandboxUnavailableError(`bubblewrap exited with ${signal ? `signal ${signal}` : `code ${code}`} before the sandbox started: ${tailSync(path.join(p.host, 'bwrap.log'))}`));
      });
    });
    // Keep the pipe open: the outer bwrap is still setting the sandbox up (uid map) and would die of
    // SIGPIPE on a closed pipe, leaving the inner one blocked. Drain it and let it not hold us alive.
    info.resume();
    info.unref();
    const handle = await this.#newHandle(spec, sandboxId, childPid, clusterId);
    await writeFile(p.record, JSON.stringify(handle), { mode: 0o600 });
    this.#o.log.info({ instance_id: spec.instanceId, sandbox: sandboxId, pid: childPid, cgroup: cg.enforced }, 'sandbox started');
    return handle;
  }

  async adopt(handle: SandboxHandle): Promise<boolean> {
    if (!(await pidAlive(handle))) return false;
    if (!this.#relays.has(handle.instanceId)) {
      const p = this.#paths(handle.instanceId);
      const s = await stat(p.out);
      const relay = await BrokerRelay.open({ broker: this.#o.broker, outDir: p.out, gid: s.gid, tenantId: handle.tenantId, instanceId: handle.instanceId, sandboxId: handle.sandboxId, log: this.#o.log });
      this.#relays.set(handle.instanceId, relay);
    }
    return true;
  }

  async stop(handle: SandboxHandle, opts: { timeoutMs?: number } = {}): Promise<void> {
    const p = this.#paths(handle.instanceId);
    if (await pidAlive(handle)) {
      // Ask the supervisor (it drains gateways), then make sure: SIGKILL of the pid namespace's init
      // kills everything in it.
      await socketRequest(p.control, { method: 'POST', path: '/stop', timeoutMs: 3000 }).catch(() => undefined);
      const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
      while ((await pidAlive(handle)) && Date.now() < deadline) await sleep(200);
      if (await pidAlive(handle)) {
        this.#o.log.warn({ instance_id: handle.instanceId, pid: handle.pid }, 'sandbox did not stop in time; killing it');
        process.kill(handle.pid, 'SIGKILL');
        while (await pidAlive(handle)) await sleep(50);
      }
    }
    await this.#closeRelay(handle.instanceId);
    await rm(p.record, { force: true });
    await removeCgroup(handle.instanceId);
  }

  async destroy(instanceId: string, opts: { deleteState: boolean; handle?: SandboxHandle | undefined }): Promise<void> {
    const handle = opts.handle ?? (await this.#readRecord(instanceId));
    if (handle) await this.stop(handle);
    await this.#closeRelay(instanceId);
    const p = this.#paths(instanceId);
    if (opts.deleteState) {
      await rm(p.dir, { recursive: true, force: true });
    } else {
      // Keep work/, shared-* and log/; drop what only a running sandbox needs (the token, sockets).
      for (const d of [p.host, p.conf, p.out, p.rootfs]) await rm(d, { recursive: true, force: true });
    }
  }

  async status(handle: SandboxHandle): Promise<SandboxState> {
    if (!(await pidAlive(handle))) return { running: false, reason: 'the sandbox process is gone' };
    return { running: true, health: await this.#health(handle.instanceId) };
  }

  /** The handle of a sandbox whose init now runs as `pid` (a fresh start or a restore). */
  async #newHandle(spec: SandboxSpec, sandboxId: string, pid: number, clusterId: string): Promise<SandboxHandle> {
    return {
      driver: this.name,
      sandboxId,
      instanceId: spec.instanceId,
      tenantId: spec.tenantId,
      runtimeVersion: spec.runtime.version,
      pid,
      pidStartTime: await pidStartTime(pid),
      startedAt: new Date().toISOString(),
      clusterId,
    };
  }

  /** The supervisor's /health; one retry, so a single failed read on a busy host is not reported as "no health". */
  async #health(instanceId: string): Promise<SandboxHealth | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await socketRequest(this.#paths(instanceId).control, { path: '/health', timeoutMs: 5000 });
        if (r.status !== 200) throw new Error(`status ${r.status}`);
        const h = JSON.parse(r.body) as SandboxHealth & { rssBytes?: number };
        return { ready: h.ready, executors: h.executors, ...(h.rssBytes === undefined ? {} : { supervisorRssBytes: h.rssBytes }) };
      } catch (err) {
        if (attempt >= 2) {
          this.#o.log.warn({ instance_id: instanceId, err: (err as Error).message }, 'the sandbox supervisor did not answer /health');
          return undefined;
        }
        await sleep(200);
      }
    }
  }

  async exec(handle: SandboxHandle, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const r = await socketRequest(this.#paths(handle.instanceId).control, { method: 'POST', path: '/exec', body: JSON.stringify({ argv, timeoutMs }), headers: { 'content-type': 'application/json' }, timeoutMs: timeoutMs + 5000 });
    if (r.status !== 200) throw new ClawplaneError('sandbox_exec_failed', 502, `exec in the sandbox failed: ${r.body}`);
    return JSON.parse(r.body) as ExecResult;
  }

  /**
   * Runs `openclaw backup create --verify` for each executor inside the sandbox (same uid, namespaces
   * and limits as the gateway; the CLI reads the databases through SQLite's online backup), extracts each
   * archive's state payload there into `/tenant/work/.clawplane-backup/stage/<executor>`, then packs the
   * stage from the host as the tenant's uid (archive.ts). The stage lives in the tenant's own directory
   * and is removed from inside the sandbox, so the host never deletes in a tree the tenant is writing.
   */
  async archiveLiveState(handle: SandboxHandle, hostUid: number, destFile: string, opts: { timeoutMs?: number } = {}): Promise<{ executors: string[] }> {
    const p = this.#paths(handle.instanceId);
    // Written by us at create() into the root-owned conf dir: trusted.
    const conf = JSON.parse(await readFile(path.join(p.conf, 'sandbox.json'), 'utf8')) as { command: string[]; env: Record<string, string>; executors: { id: string; stateDir: string; configPath: string }[] };
    const [node, entry] = conf.command;
    if (!node || !entry) throw new Error(`sandbox.json of ${handle.instanceId} names no gateway command`);
    const q = (v: string) => `'${v.replaceAll("'", `'\\''`)}'`;
    const stage = `/tenant/work/${LIVE_STAGE}`;
    const script = ['set -eu', `rm -rf ${stage}`, `mkdir -p ${stage}/raw ${stage}/stage ${stage}/tmp`];
    for (const e of conf.executors) {
      // TMPDIR on the tenant's disk: verification extracts the SQLite snapshots and wants 256 MiB spare,
      // more than the sandbox's private /tmp has (measured: "only 54 MiB is available near /tmp").
      const env = { ...conf.env, TMPDIR: `${stage}/tmp`, HOME: `${e.stateDir}/home`, OPENCLAW_HOME: `${e.stateDir}/home`, OPENCLAW_STATE_DIR: e.stateDir, OPENCLAW_CONFIG_PATH: e.configPath };
      // The archive holds <root>/payload/posix<absolute source path>/…: keep what lies below the state dir.
      const strip = 3 + e.stateDir.split('/').filter(Boolean).length;
      script.push(
        `mkdir ${stage}/raw/${e.id} ${stage}/stage/${e.id}`,
        `env -i ${Object.entries(env).map(([k, v]) => q(`${k}=${v}`)).join(' ')} ${q(node)} ${q(entry)} backup create --output ${stage}/raw/${e.id} --verify --json >${stage}/raw/${e.id}.json`,
        `tar -xzf ${stage}/raw/${e.id}/*.tar.gz -C ${stage}/stage/${e.id} --no-same-owner --wildcards --strip-components=${strip} ${q(`*/payload/posix${e.stateDir}/*`)}`,
      );
    }
    const cleanup = () => this.exec(handle, ['/bin/sh', '-c', `rm -rf ${stage}`], { timeoutMs: 60_000 }).catch((err: unknown) => this.#o.log.warn({ instance_id: handle.instanceId, err: (err as Error).message }, 'could not remove the live-backup stage'));
    try {
      const r = await this.exec(handle, ['/bin/sh', '-c', script.join('\n')], { timeoutMs: opts.timeoutMs ?? 300_000 });
      if (r.code !== 0) {
        throw new ClawplaneError('live_backup_failed', 502, `OpenClaw's backup inside the sandbox failed (${r.code === null ? `signal ${r.signal ?? 'unknown'}` : `exit ${r.code}`}): ${r.stderr.trim().slice(-600) || 'no error output'}. The previous backup is still the latest.`);
      }
      await packState(path.join(p.work, LIVE_STAGE, 'stage'), hostUid, destFile);
    } finally {
      await cleanup();
    }
    return { executors: conf.executors.map((e) => e.id) };
  }

  async rotateCredentials(handle: SandboxHandle, tokens: { current: string; next: string }): Promise<void> {
    const p = this.#paths(handle.instanceId);
    const uid = (await stat(p.conf)).gid;
    const conf = JSON.parse(await readFile(path.join(p.conf, 'sandbox.json'), 'utf8')) as { executors: { id: string }[] };
    const tokenFile = path.join(p.conf, 'gateway-token');
    const answers = async (executor: string, token: string) =>
      (await socketRequest(p.ingress, { path: '/v1/models', headers: { authorization: `Bearer ${token}`, 'x-clawplane-executor': executor }, timeoutMs: 10_000 })).status;
    await writePrivate(tokenFile, tokens.next + '\n', uid);
    try {
      for (const e of conf.executors) {
        await gatewayRpc(p.ingress, tokens.current, 'secrets.reload', {}, { executor: e.id });
        const [now, before] = [await answers(e.id, tokens.next), await answers(e.id, tokens.current)];
        if (now !== 200 || before !== 401) throw new Error(`after secrets.reload, executor ${e.id} answered ${now} to the new token and ${before} to the old one (expected 200 and 401)`);
      }
    } catch (err) {
      // Back to the current token everywhere, so the host's copy stays the one that works.
      await writePrivate(tokenFile, tokens.current + '\n', uid);
      for (const e of conf.executors) await gatewayRpc(p.ingress, tokens.next, 'secrets.reload', {}, { executor: e.id }).catch(() => undefined);
      throw new ClawplaneError('credential_rotation_failed', 502, `The gateway did not take its new token: ${(err as Error).message}. It still uses the current one; retry, or restart the instance.`, { cause: err });
    }
    // The broker token: a fresh registration (and token file); closing the old relay revokes the old token.
    // Closed first: a Unix socket server unlinks its path on close, which is the new relay's path too.
    await this.#closeRelay(handle.instanceId);
    const relay = await BrokerRelay.open({ broker: this.#o.broker, outDir: p.out, gid: uid, tenantId: handle.tenantId, instanceId: handle.instanceId, sandboxId: handle.sandboxId, log: this.#o.log });
    this.#relays.set(handle.instanceId, relay);
  }

  async logs(instanceId: string, opts: { tail: number }): Promise<LogLine[]> {
    const out: LogLine[] = [];
    for (const f of await this.#logFiles(instanceId)) {
      const text = await readTenantFile(f.file, 512 * 1024);
      const lines = text.split('\n').filter((l) => l !== '');
      if (text.length === 512 * 1024) lines.shift(); // a partial first line
      for (const line of lines.slice(-opts.tail)) out.push({ source: f.source, line });
    }
    return out.slice(-opts.tail * 4);
  }

  async followLogs(instanceId: string, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void> {
    const offsets = new Map<string, number>();
    for (const f of await this.#logFiles(instanceId)) offsets.set(f.file, await sizeNoFollow(f.file));
    const partial = new Map<string, string>();
    while (!signal.aborted) {
      await sleep(500);
      for (const f of await this.#logFiles(instanceId)) {
        const size = await sizeNoFollow(f.file);
        const from = offsets.get(f.file) ?? 0;
        if (size < from) offsets.set(f.file, 0); // truncated or replaced
        if (size <= from) continue;
        const chunk = await readTenantRange(f.file, from, Math.min(size - from, 1 << 20));
        offsets.set(f.file, from + Buffer.byteLength(chunk));
        const lines = ((partial.get(f.file) ?? '') + chunk).split('\n');
        partial.set(f.file, lines.pop() ?? '');
        for (const line of lines) if (line !== '') onLine({ source: f.source, line });
      }
    }
  }

  async #logFiles(instanceId: string): Promise<{ source: string; file: string }[]> {
    const p = this.#paths(instanceId);
    const names = await readdir(p.log).catch(() => [] as string[]);
    // Only names we write; a tenant may create others in its log dir, which we do not read.
    return names
      .filter((n) => n === 'supervisor.log' || /^[a-z0-9-]{1,32}\.log$/.test(n))
      .sort((a, b) => (a === 'supervisor.log' ? -1 : b === 'supervisor.log' ? 1 : a.localeCompare(b)))
      .map((n) => ({ source: n.replace(/\.log$/, ''), file: path.join(p.log, n) }));
  }

  async list(): Promise<SandboxHandle[]> {
    const names = await readdir(this.root).catch(() => [] as string[]);
    const out: SandboxHandle[] = [];
    for (const n of names) {
      if (!/^[0-9a-f-]{36}$/.test(n)) continue;
      const h = await this.#readRecord(n);
      if (h && (await pidAlive(h))) out.push(h);
    }
    return out;
  }

  async #readRecord(instanceId: string): Promise<SandboxHandle | undefined> {
    try {
      return JSON.parse(await readFile(this.#paths(instanceId).record, 'utf8')) as SandboxHandle;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async #closeRelay(instanceId: string): Promise<void> {
    const r = this.#relays.get(instanceId);
    this.#relays.delete(instanceId);
    await r?.close();
  }

  #criu(): Criu {
    return new Criu(this.#o.criuBin ?? '/var/tmp/clawplane-criu/bin/criu');
  }

  /**
   * Supported when the driver starts suspendable sandboxes (`warmResume`), `criu check` passes, and the
   * binary is scripts/build-criu.sh's with patch p4 (host-made unix sockets as --external; Debian's own
   * CRIU cannot dump these sandboxes: docs/adr/0006-warm-resume-criu.md).
   */
  async suspendSupport(): Promise<SuspendSupport> {
    if (this.#o.warmResume !== true) {
      return { supported: false, reason: 'warm resume is off (CLAWPLANE_WARM_RESUME=false): sandboxes are not started suspendable; idle instances are stopped instead' };
    }
    const criu = this.#criu();
    const s = criu.support();
    if (!s.supported) return s;
    const stamp = await readFile(path.join(path.dirname(criu.bin), 'criu.version'), 'utf8').catch(() => '');
    if (Number(/\+p(\d+)\s*$/.exec(stamp)?.[1] ?? 0) < 4) {
      return { supported: false, reason: `CRIU at ${criu.bin} (${stamp.trim() || 'no criu.version stamp'}) lacks patch p4 (host-made ingress/control sockets as --external unix[INO]): run scripts/build-criu.sh` };
    }
    return { supported: true };
  }

  /**
   * Suspend (issue 10): the supervisor closes its idle ingress/control connections (an open connection
   * to a host socket fails the dump), we wait until no connection to the ingress, control or broker
   * socket is left, CRIU dumps the tree (which ends it; a failed dump leaves it running, and is retried
   * once when a connection raced in), then the tenant's work, shared-rw and log directories are archived
   * as they were at that instant (nothing writes them any more). The broker registration is closed
   * (its token revoked); the cgroup goes and is made again on resume.
   */
  async suspend(handle: SandboxHandle, snapshotDir: string): Promise<{ dumpMs: number; imageBytes: number; stateBytes: number }> {
    const p = this.#paths(handle.instanceId);
    if (!(await pidAlive(handle))) throw new ConflictError(`The sandbox of instance ${handle.instanceId} is not running; nothing to suspend.`, 'sandbox_not_running');
    const rec = await readFile(p.suspendable, 'utf8').then((t) => JSON.parse(t) as SuspendableRecord).catch(() => undefined);
    if (!rec) throw new ConflictError(`The sandbox of instance ${handle.instanceId} was not started suspendable (warm resume was off); stop it instead.`, 'sandbox_not_suspendable');
    const support = await this.suspendSupport();
    if (!support.supported) throw new ConflictError(`Cannot suspend here: ${support.reason}`, 'suspend_unsupported');
    const uid = (await stat(p.conf)).gid;
    await mkdirMode(snapshotDir, 0o700, 0, 0);
    if ((await readdir(snapshotDir)).length > 0) throw new ConflictError(`Snapshot directory ${snapshotDir} is not empty.`, 'snapshot_exists');
    const img = path.join(snapshotDir, 'img');
    const criu = this.#criu();
    const hostSockets = [p.ingress, p.control, path.join(p.out, 'broker.sock')];
    let dumpMs = 0;
    for (let attempt = 1; ; attempt++) {
      await socketRequest(p.control, { method: 'POST', path: '/quiesce', headers: { connection: 'close' }, timeoutMs: 5000 }).catch(() => undefined);
      await waitNoConnections(hostSockets, 2000);
      await rm(img, { recursive: true, force: true });
      await mkdirMode(img, 0o700, 0, 0);
      try {
        dumpMs = (await criu.dump(handle.pid, img, { externalUnix: rec.sockets.map((s) => s.ino) })).ms;
        break;
      } catch (err) {
        const racy = err instanceof CriuError && err.errors.some((l) => /Unix socket \d+ not found|half of stream/.test(l));
        if (attempt >= 2 || !racy || !(await pidAlive(handle))) {
          await rm(img, { recursive: true, force: true });
          throw err;
        }
        this.#o.log.info({ instance_id: handle.instanceId, errors: (err as CriuError).errors }, 'dump met an open host connection; retrying once');
        await sleep(300);
      }
    }
    // The tree is gone from here on: whatever fails below, the sandbox is stopped (state untouched).
    const state: SnapshotMeta['state'] = [];
    try {
      while (await pidAlive(handle)) await sleep(20);
      for (const [dir, file] of [['work', 'work.tar.gz'], ['sharedRw', 'shared-rw.tar.gz'], ['log', 'log.tar.gz']] as const) {
        await packState(p[dir], uid, path.join(snapshotDir, file), { exact: true });
        state.push({ file, dir });
      }
      const fingerprint = await stateFingerprint([p.work, p.sharedRw, p.log]);
      const meta: SnapshotMeta = { version: 1, instanceId: handle.instanceId, tenantId: handle.tenantId, hostUid: uid, runtimeVersion: handle.runtimeVersion, suspendedAt: new Date().toISOString(), sockets: rec.sockets, bwrapArgs: rec.bwrapArgs, state, fingerprint };
      await writeFile(path.join(snapshotDir, 'snapshot.json'), JSON.stringify(meta, null, 2), { mode: 0o600 });
    } catch (err) {
      await rm(img, { recursive: true, force: true });
      throw new ClawplaneError('suspend_failed', 500, `Instance ${handle.instanceId} was dumped but its snapshot could not be completed (${(err as Error).message}); it is stopped, its state untouched: start it cold.`, { cause: err });
    } finally {
      await this.#closeRelay(handle.instanceId);
      await rm(p.record, { force: true });
      await removeCgroup(handle.instanceId);
    }
    const imageBytes = await dirBytes(img);
    let stateBytes = 0;
    for (const s of state) stateBytes += (await stat(path.join(snapshotDir, s.file))).size;
    this.#o.log.info({ instance_id: handle.instanceId, dump_ms: Math.round(dumpMs), image_bytes: imageBytes, state_bytes: stateBytes }, 'sandbox suspended');
    return { dumpMs, imageBytes, stateBytes };
  }

  /**
   * Resume (issue 10) from a snapshot suspend() wrote, once: the snapshot is marked used first and its
   * images deleted afterwards, whatever happens. The tenant directories must be exactly as the suspend
   * left them (same files, same inodes: checked against the snapshot's fingerprint; the archive in the
   * snapshot is that state, for a cold start elsewhere), the instance's conf is rewritten from `spec` (its gatewayToken must be the one the gateway had),
   * the sandbox re-registered with the broker (a new broker token), fresh host sockets made at the same
   * paths and given to CRIU in place of the dumped ones; the restored tree runs under the same cgroup,
   * rlimits, namespaces and uid. The caller then rotates the gateway token (rotateCredentials). On any
   * failure everything started is undone and a SandboxResumeError carries CRIU's error lines; the tenant
   * directories are untouched, so a cold start() works.
   */
  async resume(spec: SandboxSpec, snapshotDir: string, clusterId: string): Promise<SandboxHandle> {
    const p = this.#paths(spec.instanceId);
    const support = await this.suspendSupport();
    if (!support.supported) throw new SandboxResumeError(`Cannot resume here: ${support.reason}`, [support.reason]);
    const meta = await readFile(path.join(snapshotDir, 'snapshot.json'), 'utf8')
      .then((t) => JSON.parse(t) as SnapshotMeta)
      .catch((err: unknown) => {
        throw new SandboxResumeError(`No usable snapshot in ${snapshotDir} (${(err as Error).message}).`, ['no snapshot.json'], err);
      });
    if (meta.instanceId !== spec.instanceId || meta.hostUid !== spec.hostUid) throw new SandboxResumeError(`Snapshot ${snapshotDir} is of another instance or uid.`, ['snapshot of another instance']);
    const usedMark = path.join(snapshotDir, 'used');
    if (await stat(usedMark).catch(() => undefined)) throw new SandboxResumeError(`Snapshot ${snapshotDir} was already used (an image restores once).`, ['snapshot already used']);
    const existing = await this.#readRecord(spec.instanceId);
    if (existing && (await pidAlive(existing))) {
      throw new ConflictError(`A sandbox for instance ${spec.instanceId} is already running (pid ${existing.pid}); stop it first.`, 'sandbox_running');
    }
    // One restore per image: a second one would run the same process state (and tokens) twice.
    try {
      await writeFile(usedMark, new Date().toISOString(), { flag: 'wx', mode: 0o600 });
    } catch {
      throw new SandboxResumeError(`Snapshot ${snapshotDir} was already used (an image restores once).`, ['snapshot already used']);
    }
    const img = path.join(snapshotDir, 'img');
    const uid = spec.hostUid;
    const sandboxId = randomUUID();
    const sockets: Awaited<ReturnType<typeof listenHostSocket>>[] = [];
    let restoredPid: number | undefined;
    try {
      // The very same files, not a copy: OpenClaw remembers the identity (inode) of its SQLite databases
      // and refuses them once it changed (measured: unpacking the archive here made every chat after the
      // resume fail with "SQLite database file identity changed"). Changed since the suspend (a cold start
      // or a backup restore in between): the snapshot is stale, and that state is the newer one.
      if ((await stateFingerprint([p.work, p.sharedRw, p.log])) !== meta.fingerprint) {
        throw new Error('the tenant state changed since the suspend (a start or a restore in between): the snapshot is stale');
      }
      await this.create(spec);
      await this.#closeRelay(spec.instanceId);
      const relay = await BrokerRelay.open({ broker: this.#o.broker, outDir: p.out, gid: uid, tenantId: spec.tenantId, instanceId: spec.instanceId, sandboxId, log: this.#o.log });
      this.#relays.set(spec.instanceId, relay);
      const cg = await prepareCgroup(spec.instanceId, this.#o.cgroup);
      this.lastCgroup = { enforced: cg.enforced, notEnforced: cg.notEnforced };
      await prepareRestoreRoot(p.rootfs, meta.bwrapArgs);
      const fresh: { fd: number; ino: number }[] = [];
      for (const s of meta.sockets) {
        const sock = await listenHostSocket(s.fd === 4 ? p.ingress : p.control);
        sockets.push(sock);
        fresh.push({ fd: s.fd, ino: sock.ino });
      }
      // The images: root's, readable by the sandbox's group only (Criu.restore); snapshotDir itself stays
      // root-only 0700 (measured: the restored tasks open images through CRIU's directory fd, not by path).
      const restored = await this.#criu().restore(img, { root: p.rootfs, uid, inherit: meta.sockets.map((s, i) => ({ fd: sockets[i]?.fd ?? -1, key: `socket:[${s.ino}]` })) });
      restoredPid = restored.pid;
      for (const sock of sockets) await sock.release();
      sockets.length = 0;
      await writeFile(p.suspendable, JSON.stringify({ sockets: fresh, bwrapArgs: meta.bwrapArgs } satisfies SuspendableRecord), { mode: 0o600 });
      const handle = await this.#newHandle(spec, sandboxId, restored.pid, clusterId);
      // The restored supervisor answers on the fresh control socket: the sockets were given back.
      const h = await socketRequest(p.control, { path: '/health', headers: { connection: 'close' }, timeoutMs: 10_000 });
      if (h.status !== 200) throw new Error(`the restored supervisor answered ${h.status} on its control socket`);
      await writeFile(p.record, JSON.stringify(handle), { mode: 0o600 });
      this.#o.log.info({ instance_id: spec.instanceId, sandbox: sandboxId, pid: restored.pid, restore_ms: Math.round(restored.ms) }, 'sandbox resumed');
      return handle;
    } catch (err) {
      for (const sock of sockets) sock.close();
      if (restoredPid !== undefined) {
        try {
          process.kill(restoredPid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await this.#closeRelay(spec.instanceId);
      await rm(p.record, { force: true });
      await removeCgroup(spec.instanceId).catch(() => undefined);
      const errors = err instanceof CriuError ? err.errors : [(err as Error).message];
      this.#o.log.warn({ instance_id: spec.instanceId, errors }, 'resume failed');
      throw new SandboxResumeError(`Resuming instance ${spec.instanceId} from its snapshot failed: ${errors.join(' | ') || (err as Error).message}. Start it cold; its state is as at the suspend.`, errors, err);
    } finally {
      // Keep CRIU's logs for the record; the images (GBs, the token in clear) go.
      for (const log of ['dump.log', 'restore.log']) await copyFile(path.join(img, log), path.join(snapshotDir, log)).catch(() => undefined);
      await rm(img, { recursive: true, force: true });
      for (const s of meta.state) await rm(path.join(snapshotDir, s.file), { force: true });
    }
  }

  async close(): Promise<void> {
    for (const id of [...this.#relays.keys()]) await this.#closeRelay(id);
  }
}

async function mkdirMode(dir: string, mode: number, uid: number, gid: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  await chown(dir, uid, gid);
  await chmod(dir, mode);
}

/**
 * A file only the sandbox's uid reads (0600, its owner), in a root-owned directory it cannot write: what
 * OpenClaw's file SecretRef provider requires (private, regular, one link) for the gateway token.
 */
async function writePrivate(file: string, text: string, uid: number): Promise<void> {
  const tmp = `${file}.tmp`;
  await rm(tmp, { force: true });
  await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
  await chown(tmp, uid, uid);
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

async function writeOwned(file: string, text: string, gid: number): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, text, { mode: 0o640 });
  await chown(tmp, 0, gid);
  await chmod(tmp, 0o640);
  await rename(tmp, file);
}

/**
 * bubblewrap resolves bind sources as the sandbox's uid (bwrap 0.8 resolves even `--bind-fd` by
 * path), so every parent directory must let "others" pass (x bit). Say which one does not.
 */
async function assertTraversable(dir: string, setting: string): Promise<void> {
  let cur = path.resolve(dir);
  for (;;) {
    const parent = path.dirname(cur);
    if (parent === cur) return;
    cur = parent;
    const s = await stat(cur);
    if ((s.mode & 0o001) === 0) {
      throw new SandboxUnavailableError(`${dir} (${setting}) is not reachable by sandbox users: ${cur} has mode ${(s.mode & 0o777).toString(8)}. Run "chmod o+x ${cur}" or move ${setting} below a directory others may traverse (e.g. /var/lib/clawplane).`);
    }
  }
}

/**
 * A listening socket the host creates (root-owned, in a root-only directory) and passes into the
 * sandbox as a file descriptor, so no path to it exists inside and the host never follows a path the
 * tenant could plant (openclaw-in-bubblewrap.md, "Risks found").
 */
export async function listenHostSocket(file: string): Promise<{ fd: number; ino: number; release(): Promise<void>; close(): void }> {
  const tmp = `${file}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(tmp, () => resolve());
  });
  await chmod(tmp, 0o600);
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return {
    fd,
    ino: fstatSync(fd).ino,
    async release() {
      // libuv unlinks a Unix socket's path on close: move the path away first so it stays for the sandbox.
      await rename(tmp, file);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    /** On failure: closed, and its path gone. */
    close() {
      server.close();
    },
  };
}

async function pidStartTime(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Field 22 (starttime), counted after the parenthesised command name, which may contain spaces.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(rest[19]);
}

async function pidAlive(h: Pick<SandboxHandle, 'pid' | 'pidStartTime'>): Promise<boolean> {
  try {
    const st = await pidStartTime(h.pid);
    if (st !== h.pidStartTime) return false;
    const status = await readFile(`/proc/${h.pid}/status`, 'utf8');
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

/** Reads a file in a tenant-writable directory without following a symlink the tenant planted. */
async function readTenantFile(file: string, maxBytes: number): Promise<string> {
  let fh;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return '';
  }
  try {
    const s = await fh.stat();
    if (!s.isFile()) return '';
    const len = Math.min(s.size, maxBytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, s.size - len);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}

async function readTenantRange(file: string, from: number, len: number): Promise<string> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await fh.stat()).isFile()) return '';
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, from);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

async function sizeNoFollow(file: string): Promise<number> {
  try {
    const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const s = await fh.stat();
      return s.isFile() ? s.size : 0;
    } finally {
      await fh.close();
    }
  } catch {
    return 0;
  }
}

function tailSync(file: string): string {
  try {
    const r = spawnSync('tail', ['-c', '600', file], { encoding: 'utf8' });
    return r.stdout.trim();
  } catch {
    return '';
  }
}

/**
 * A digest of every entry below these directories (lstat, never following a link): path, type, inode,
 * size, mode, mtime and ctime. Any write, rename, replacement or new file changes it.
 */
async function stateFingerprint(dirs: string[]): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = (await readdir(dir).catch(() => [] as string[])).sort();
    for (const n of names) {
      const full = path.join(dir, n);
      const st = await lstat(full, { bigint: true }).catch(() => undefined);
      if (!st) continue;
      h.update(`${rel}/${n}\0${st.mode}\0${st.ino}\0${st.size}\0${st.mtimeNs}\0${st.ctimeNs}\n`);
      if (st.isDirectory()) await walk(full, `${rel}/${n}`);
    }
  };
  for (const d of dirs) {
    const st = await lstat(d, { bigint: true });
    h.update(`${d}\0${st.mode}\0${st.ino}\n`);
    await walk(d, '');
  }
  return h.digest('hex');
}

/** Total size of the files directly in `dir`. */
async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir, { withFileTypes: true })) if (f.isFile()) n += (await stat(path.join(dir, f.name))).size;
  return n;
}

/**
 * Waits until no connection to these listening Unix sockets is open (host network namespace: accepted
 * sockets carry the listener's path in /proc/net/unix, state 03 = connected). CRIU cannot dump an open
 * connection to a host socket (ADR 0006, dump 9/10). Gives up after `timeoutMs` (the dump then says why).
 */
async function waitNoConnections(paths: string[], timeoutMs: number): Promise<void> {
  const want = new Set(paths);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const table = await readFile('/proc/net/unix', 'utf8').catch(() => '');
    const open = table.split('\n').some((l) => {
      const f = l.trim().split(/\s+/);
      return f.length >= 8 && f[5] === '03' && want.has(f.slice(7).join(' '));
    });
    if (!open || Date.now() > deadline) return;
    await sleep(25);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
