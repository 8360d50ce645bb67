/**
 * The local driver (ADR 0005): each instance in a bubblewrap sandbox, as its tenant's own unprivileged
 * host uid, in new user/pid/ipc/uts/net/mount/cgroup namespaces with no network at all, read-only
 * system mounts, only the instance's work, shared-rw and log directories writable, an empty environment,
 * rlimits and a cgroup. `--die-with-parent` is off so sandboxes outlive a control-plane restart; the
 * sandbox's init pid (from `--info-fd`) and its start time are its identity instead (process.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { SandboxBroker } from '../../../broker/types.ts';
import { ConflictError } from '../../../errors.ts';
import { BrokerRelay } from '../../host/broker-relay.ts';
import { SupervisorControl } from '../../host/control.ts';
import {
  assertTraversable,
  instanceDirs,
  prepareInstanceDirs,
  readSupervisorConfig,
  HOST_SANDBOX_LAYOUT,
  tenantUidOf,
  type InstanceDirs,
} from '../../host/dirs.ts';
import { exportLive } from '../../host/live-backup.ts';
import { followLogDir, tailLogs } from '../../host/logs.ts';
import { applyGatewayConfigs } from '../../host/reload.ts';
import { rotateGatewayToken } from '../../host/rotate.ts';
import { packStream, unpackState } from '../../host/state-archive.ts';
import { unixTransport } from '../../host/unix-transport.ts';
import {
  SandboxUnavailableError,
  storedSandboxRef,
  type ExecResult,
  type GatewayTransport,
  type InstanceKey,
  type LogLine,
  type SandboxDriver,
  type SandboxHealth,
  type SandboxRef,
  type SandboxSpec,
  type SandboxState,
} from '../../types.ts';
import { prepareCgroup, removeCgroup, type CgroupLimits } from './cgroups.ts';
import { bwrapArgs, launchArgv } from './command.ts';
import { listenHostSocket } from './host-socket.ts';
import { nodeIdOfThisHost } from './node-id.ts';
import { nativeOf, pidAlive, pidStartTime, tailSync, type LocalNative } from './process.ts';
import { LocalSnapshots, type SuspendableRecord } from './snapshots.ts';
import { suspendableSeccompFilter } from './snapshot/seccomp.ts';

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
  supervisorDir?: string;
  bwrap?: string;
  /** How long a start waits for the sandbox's init pid from bubblewrap. */
  startTimeoutMs?: number;
  /** The CRIU binary for warm resume, as scripts/build-criu.sh installs it. */
  criuBin?: string;
  /**
   * Warm resume (CLAWPLANE_WARM_RESUME): start every sandbox suspendable (the bubblewrap flags CRIU
   * needs, docs/adr/0006-warm-resume-criu.md), so the snapshots capability works. 'auto': only where
   * CRIU works on this host (snapshots.support()). Off (the default here): sandboxes are started exactly
   * as ADR 0005 describes and snapshots.support() says why not.
   */
  warmResume?: boolean | 'auto';
  /** Root-only directory for snapshots (default: <root>/.snapshots). */
  snapshotDir?: string;
}

export class LocalSandboxDriver implements SandboxDriver {
  readonly name = 'local' as const;
  readonly layout = HOST_SANDBOX_LAYOUT;
  readonly root: string;
  readonly snapshots: LocalSnapshots;
  readonly #o: LocalDriverOptions;
  readonly #relays = new Map<string, BrokerRelay>();
  readonly #nodeId = nodeIdOfThisHost();
  #preflight: Promise<void> | undefined;
  /** What the last start could enforce with cgroups (reported by health and the bench). */
  lastCgroup: { enforced: string[]; notEnforced: string[] } | undefined;

  constructor(opts: LocalDriverOptions) {
    this.root = path.resolve(opts.root);
    this.#o = opts;
    this.snapshots = new LocalSnapshots({
      driver: this,
      log: opts.log,
      criuBin: opts.criuBin ?? '/var/tmp/clawplane-criu/bin/criu',
      warmResume: opts.warmResume ?? false,
      dir: path.resolve(opts.snapshotDir ?? path.join(this.root, '.snapshots')),
      cgroup: opts.cgroup,
    });
  }

  /** The instance's directories on this host. */
  dirs(instanceId: string): InstanceDirs {
    return instanceDirs(this.root, instanceId);
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
      throw new SandboxUnavailableError(
        `bubblewrap is not installed (${v.error?.message ?? v.stderr.trim()}): install the Debian/Ubuntu package "bubblewrap" (apt-get install bubblewrap). Clawplane never runs a gateway unsandboxed.`,
      );
    }
    for (const tool of ['setpriv', 'prlimit']) {
      const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
      if (r.error || r.status !== 0) throw new SandboxUnavailableError(`${tool} is missing: install the package "util-linux".`);
    }
    if (process.getuid?.() !== 0) {
      throw new SandboxUnavailableError(
        'The local sandbox runs each tenant as its own unprivileged host uid, which needs the control plane to run as root (it drops to that uid before bubblewrap starts).',
      );
    }
    // A real namespace probe as an unprivileged uid: user namespaces can be disabled by sysctl or AppArmor.
    const probe = spawnSync(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        '--',
        bwrap,
        '--unshare-all',
        '--unshare-user',
        '--disable-userns',
        '--ro-bind',
        '/usr',
        '/usr',
        '--symlink',
        'usr/lib',
        '/lib',
        '--symlink',
        'usr/lib64',
        '/lib64',
        '--symlink',
        'usr/bin',
        '/bin',
        '--proc',
        '/proc',
        '--dev',
        '/dev',
        '/usr/bin/true',
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    if (probe.status !== 0) {
      throw new SandboxUnavailableError(
        `bubblewrap is installed but cannot create namespaces as an unprivileged user (${probe.stderr.trim() || probe.error?.message}): allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap).`,
      );
    }
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    await chmod(this.root, 0o711);
    await assertTraversable(this.root, 'CLAWPLANE_SANDBOX_ROOT');
  }

  async prepare(spec: SandboxSpec): Promise<void> {
    await this.preflight();
    await assertTraversable(spec.runtime.dir, 'CLAWPLANE_RUNTIME_CACHE');
    await prepareInstanceDirs(this.dirs(spec.instanceId), spec, { ingress: { fd: 4 }, control: { fd: 5 }, supervisorDir: this.#o.supervisorDir });
  }

  async start(spec: SandboxSpec): Promise<SandboxRef> {
    await this.prepare(spec);
    const p = this.dirs(spec.instanceId);
    await this.assertNotRunning(spec.instanceId);
    const sandboxId = randomUUID();
    const uid = spec.tenantUid;
    await this.openRelay({ ...spec, sandboxId }, uid);

    const cg = await prepareCgroup(spec.instanceId, { ...this.#o.cgroup, ...spec.limits });
    this.lastCgroup = { enforced: cg.enforced, notEnforced: cg.notEnforced };
    if (cg.notEnforced.length)
      this.#o.log.warn({ instance_id: spec.instanceId, notEnforced: cg.notEnforced }, 'sandbox cgroup limits not fully enforced on this host');

    const ingress = await listenHostSocket(p.ingress);
    const control = await listenHostSocket(p.control);
    const logFd = openSync(path.join(p.host, 'bwrap.log'), 'a', 0o600);
    const warm = await this.snapshots.startsSuspendable();
    const args = bwrapArgs(spec, p, { warm, tmpBytes: this.#o.tmpBytes });
    let seccompFd: number | undefined;
    if (warm) {
      const bpf = path.join(p.host, 'seccomp.bpf');
      await writeFile(bpf, suspendableSeccompFilter(), { mode: 0o600 });
      seccompFd = openSync(bpf, 'r');
      await writeFile(
        p.suspendable,
        JSON.stringify({
          sockets: [
            { fd: 4, ino: ingress.ino },
            { fd: 5, ino: control.ino },
          ],
          bwrapArgs: args,
        } satisfies SuspendableRecord),
        { mode: 0o600 },
      );
    } else {
      await rm(p.suspendable, { force: true });
    }
    const child = spawn(
      '/bin/sh',
      launchArgv({ uid, dataBytes: this.#o.dataBytes, nproc: this.#o.nproc, nofile: this.#o.nofile, bwrap: this.#o.bwrap ?? 'bwrap', bwrapArgs: args }),
      {
        detached: true,
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CLAWPLANE_CGROUP_PROCS: cg.procsFiles.join(' ') },
        stdio: ['ignore', logFd, logFd, 'pipe', ingress.fd, control.fd, ...(seccompFd === undefined ? [] : [seccompFd])],
      },
    );
    closeSync(logFd);
    if (seccompFd !== undefined) closeSync(seccompFd);
    await ingress.release();
    await control.release();
    child.unref();
    const info = child.stdio[3] as net.Socket | null;
    if (!info) throw new Error('no info pipe');
    const childPid = await new Promise<number>((resolve, reject) => {
      let text = '';
      const timer = setTimeout(
        () =>
          reject(new SandboxUnavailableError(`bubblewrap did not start within ${this.#o.startTimeoutMs ?? 10_000} ms; see ${path.join(p.host, 'bwrap.log')}.`)),
        this.#o.startTimeoutMs ?? 10_000,
      );
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
        reject(
          new SandboxUnavailableError(
            `bubblewrap exited with ${signal ? `signal ${signal}` : `code ${code}`} before the sandbox started: ${tailSync(path.join(p.host, 'bwrap.log'))}`,
          ),
        );
      });
    });
    // Keep the pipe open: the outer bwrap is still setting the sandbox up (uid map) and would die of
    // SIGPIPE on a closed pipe, leaving the inner one blocked. Drain it and let it not hold us alive.
    info.resume();
    info.unref();
    const ref = await this.newRef(spec, sandboxId, childPid);
    await writeFile(p.record, JSON.stringify(ref), { mode: 0o600 });
    this.#o.log.info({ instance_id: spec.instanceId, sandbox: sandboxId, pid: childPid, cgroup: cg.enforced }, 'sandbox started');
    return ref;
  }

  /** Refuses when a sandbox of the instance is running here (start and resume). */
  async assertNotRunning(instanceId: string): Promise<void> {
    const existing = await this.#readRecord(instanceId);
    if (existing && (await pidAlive(nativeOf(existing)))) {
      throw new ConflictError(`A sandbox for instance ${instanceId} is already running (pid ${nativeOf(existing).pid}); stop it first.`, 'sandbox_running');
    }
  }

  /** Registers the sandbox with the broker and relays its out/broker.sock (replacing an earlier relay). */
  async openRelay(r: { tenantId: string; instanceId: string; sandboxId: string }, gid: number): Promise<void> {
    await this.closeRelay(r.instanceId);
    const relay = await BrokerRelay.open({
      broker: this.#o.broker,
      outDir: this.dirs(r.instanceId).out,
      gid,
      tenantId: r.tenantId,
      instanceId: r.instanceId,
      sandboxId: r.sandboxId,
      log: this.#o.log,
    });
    this.#relays.set(r.instanceId, relay);
  }

  async closeRelay(instanceId: string): Promise<void> {
    const r = this.#relays.get(instanceId);
    this.#relays.delete(instanceId);
    await r?.close();
  }

  /** The ref of a sandbox whose init now runs as `pid` (a fresh start or a restore). */
  async newRef(spec: SandboxSpec, sandboxId: string, pid: number): Promise<SandboxRef> {
    const native: LocalNative = { pid, pidStartTime: await pidStartTime(pid) };
    return {
      driver: this.name,
      sandboxId,
      instanceId: spec.instanceId,
      tenantId: spec.tenantId,
      runtimeVersion: spec.runtime.version,
      startedAt: new Date().toISOString(),
      owner: { clusterId: spec.clusterId, nodeId: this.#nodeId },
      native,
    };
  }

  async adopt(ref: SandboxRef): Promise<boolean> {
    if (!(await pidAlive(nativeOf(ref)))) return false;
    if (!this.#relays.has(ref.instanceId)) await this.openRelay(ref, await tenantUidOf(this.dirs(ref.instanceId)));
    return true;
  }

  async stop(ref: SandboxRef, opts: { timeoutMs?: number } = {}): Promise<void> {
    const p = this.dirs(ref.instanceId);
    const n = nativeOf(ref);
    if (await pidAlive(n)) {
      // Ask the supervisor (it drains gateways), then make sure: SIGKILL of the pid namespace's init
      // kills everything in it.
      await new SupervisorControl(p.control).stop();
      const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
      while ((await pidAlive(n)) && Date.now() < deadline) await sleep(200);
      if (await pidAlive(n)) {
        this.#o.log.warn({ instance_id: ref.instanceId, pid: n.pid }, 'sandbox did not stop in time; killing it');
        process.kill(n.pid, 'SIGKILL');
        while (await pidAlive(n)) await sleep(50);
      }
    }
    await this.closeRelay(ref.instanceId);
    await rm(p.record, { force: true });
    await removeCgroup(ref.instanceId);
  }

  async destroy(key: InstanceKey, opts: { deleteState: boolean }): Promise<void> {
    const ref = await this.#readRecord(key.instanceId);
    if (ref) await this.stop(ref);
    await this.closeRelay(key.instanceId);
    const p = this.dirs(key.instanceId);
    if (opts.deleteState) {
      await rm(p.dir, { recursive: true, force: true });
    } else {
      // Keep work/, shared-* and log/; drop what only a running sandbox needs (the token, sockets).
      for (const d of [p.host, p.conf, p.out, p.rootfs]) await rm(d, { recursive: true, force: true });
    }
  }

  async status(ref: SandboxRef): Promise<SandboxState> {
    if (!(await pidAlive(nativeOf(ref)))) return { running: false, reason: 'the sandbox process is gone' };
    return { running: true, health: await new SupervisorControl(this.dirs(ref.instanceId).control).health(this.#o.log, ref.instanceId) };
  }

  connect(ref: SandboxRef): Promise<GatewayTransport> {
    return Promise.resolve(unixTransport(this.dirs(ref.instanceId).ingress));
  }

  setExecutors(ref: SandboxRef, run: string[]): Promise<SandboxHealth> {
    return new SupervisorControl(this.dirs(ref.instanceId).control).setExecutors(run);
  }

  exec(ref: SandboxRef, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return new SupervisorControl(this.dirs(ref.instanceId).control).exec(argv, opts.timeoutMs);
  }

  async exportState(key: InstanceKey): Promise<Readable> {
    const p = this.dirs(key.instanceId);
    return packStream(p.work, await tenantUidOf(p));
  }

  async exportLiveState(ref: SandboxRef, opts: { timeoutMs?: number } = {}): Promise<Readable> {
    const p = this.dirs(ref.instanceId);
    return exportLive({
      instanceId: ref.instanceId,
      conf: await readSupervisorConfig(p),
      workDir: p.work,
      uid: await tenantUidOf(p),
      exec: (argv, timeoutMs) => this.exec(ref, argv, { timeoutMs }),
      timeoutMs: opts.timeoutMs,
      log: this.#o.log,
    });
  }

  async importState(key: InstanceKey, archive: Readable): Promise<void> {
    const p = this.dirs(key.instanceId);
    await unpackState(archive, p.work, await tenantUidOf(p));
  }

  async rotateCredentials(ref: SandboxRef, tokens: { current: string; next: string }): Promise<void> {
    const p = this.dirs(ref.instanceId);
    const uid = await tenantUidOf(p);
    await rotateGatewayToken({ dirs: p, conf: await readSupervisorConfig(p), uid, transport: await this.connect(ref), tokens });
    // The broker token: a fresh registration (and token file); closing the old relay revokes the old token.
    await this.openRelay(ref, uid);
  }

  async applyConfigs(ref: SandboxRef, configs: Record<string, string>, o: { gatewayToken: string; timeoutMs: number }): Promise<void> {
    const p = this.dirs(ref.instanceId);
    await applyGatewayConfigs({
      dirs: p,
      conf: await readSupervisorConfig(p),
      uid: await tenantUidOf(p),
      transport: await this.connect(ref),
      token: o.gatewayToken,
      configs,
      timeoutMs: o.timeoutMs,
    });
  }

  logs(key: InstanceKey, opts: { tail: number }): Promise<LogLine[]> {
    return tailLogs(this.dirs(key.instanceId).log, opts.tail);
  }

  followLogs(key: InstanceKey, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void> {
    return followLogDir(this.dirs(key.instanceId).log, signal, onLine);
  }

  async list(): Promise<SandboxRef[]> {
    const names = await readdir(this.root).catch(() => [] as string[]);
    const out: SandboxRef[] = [];
    for (const n of names) {
      if (!/^[0-9a-f-]{36}$/.test(n)) continue;
      const h = await this.#readRecord(n);
      if (h && (await pidAlive(nativeOf(h)))) out.push(h);
    }
    return out;
  }

  async #readRecord(instanceId: string): Promise<SandboxRef | undefined> {
    try {
      return storedSandboxRef(JSON.parse(await readFile(this.dirs(instanceId).record, 'utf8'))) ?? undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Forgets the record and cgroup of a sandbox that is gone (a failed resume, a suspend). */
  async forget(instanceId: string): Promise<void> {
    await this.closeRelay(instanceId);
    await rm(this.dirs(instanceId).record, { force: true });
    await removeCgroup(instanceId).catch(() => undefined);
  }

  async writeRecord(ref: SandboxRef): Promise<void> {
    await writeFile(this.dirs(ref.instanceId).record, JSON.stringify(ref), { mode: 0o600 });
  }

  async close(): Promise<void> {
    for (const id of [...this.#relays.keys()]) await this.closeRelay(id);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
