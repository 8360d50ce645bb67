/**
 * The Docker driver (ADR 0010): one container per sandbox (the supervisor and its gateway executors)
 * through the Docker Engine API, with Docker or `podman system service`. Isolation: no network, a
 * read-only root filesystem, a capped /tmp, no capabilities, no-new-privileges, the tenant's own
 * non-root uid, memory/PID/CPU limits, the engine's default seccomp profile, an init as pid 1, no
 * Docker socket inside. The tenant's state, logs and conf are per-instance host directories bound in,
 * laid out as on the local driver (src/sandbox/host/), so backups, logs and rotation are shared code.
 * Warm resume is not offered: `snapshots` is undefined.
 */
import { randomUUID } from 'node:crypto';
import { chmod, chown, lstat, mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import Docker from 'dockerode';
import type { Logger } from 'pino';
import type { SandboxBroker } from '../../../broker/types.ts';
import { ConflictError } from '../../../errors.ts';
import { BrokerRelay } from '../../host/broker-relay.ts';
import { SupervisorControl } from '../../host/control.ts';
import {
  assertTraversable,
  instanceDirs,
  MOUNTS,
  mkdirMode,
  prepareInstanceDirs,
  readSupervisorConfig,
  HOST_SANDBOX_LAYOUT,
  tenantUidOf,
  type InstanceDirs,
} from '../../host/dirs.ts';
import { exportLive } from '../../host/live-backup.ts';
import { followLogDir, tailLogs } from '../../host/logs.ts';
import { rotateGatewayToken } from '../../host/rotate.ts';
import { packStream, unpackState } from '../../host/state-archive.ts';
import { unixTransport } from '../../host/unix-transport.ts';
import {
  SandboxUnavailableError,
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
import { buildCommand, IMAGE_NODE, IMAGE_SUPERVISOR, supervisorProgram } from './image.ts';
import { containerName, IMAGE_SUPERVISOR_LABEL, LABEL } from './labels.ts';

export interface DockerDriverOptions {
  /** CLAWPLANE_SANDBOX_ROOT: one directory per instance, bound into its container (same path for the engine). */
  root: string;
  /** CLAWPLANE_DOCKER_SOCKET. */
  socketPath: string;
  /** CLAWPLANE_SANDBOX_IMAGE. */
  image: string;
  broker: SandboxBroker | undefined;
  log: Logger;
  memoryBytes: number;
  pids: number;
  /** CPU cores as a quota; 0 = none. */
  cpus: number;
  tmpBytes: number;
  nofile: number;
  /** RLIMIT_NPROC of the tenant's uid (as on the local driver); also keeps the engine's own default out. */
  nproc: number;
  /** How long a start waits for the supervisor's sockets. */
  startTimeoutMs?: number;
  supervisorDir?: string;
}

/** The docker driver's part of a SandboxRef. */
interface DockerNative {
  containerId: string;
}

function nativeOf(ref: SandboxRef): DockerNative {
  const id = (ref.native as Partial<DockerNative> | null)?.containerId;
  if (ref.driver !== 'docker' || typeof id !== 'string') throw new Error(`sandbox ${ref.sandboxId} is not a docker sandbox (driver ${ref.driver})`);
  return { containerId: id };
}

const statusOf = (err: unknown): number | undefined => (err as { statusCode?: number }).statusCode;

export class DockerSandboxDriver implements SandboxDriver {
  readonly name = 'docker' as const;
  readonly layout = HOST_SANDBOX_LAYOUT;
  readonly root: string;
  readonly #o: DockerDriverOptions;
  readonly #docker: Docker;
  readonly #relays = new Map<string, BrokerRelay>();
  #preflight: Promise<void> | undefined;
  #nodeId: string | undefined;

  constructor(opts: DockerDriverOptions) {
    this.root = path.resolve(opts.root);
    this.#o = opts;
    this.#docker = new Docker({ socketPath: opts.socketPath });
  }

  dirs(instanceId: string): InstanceDirs {
    return instanceDirs(this.root, instanceId);
  }

  /** A Docker API call; an unreachable engine becomes SandboxUnavailableError with the fix. */
  async #api<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'EACCES' || code === 'ECONNRESET' || code === 'EPIPE') {
        this.#preflight = undefined;
        throw new SandboxUnavailableError(
          `The Docker Engine API at ${this.#o.socketPath} is not reachable (${code} during ${what}): start Docker (or \`podman system service --time=0 unix://${this.#o.socketPath}\`), or point CLAWPLANE_DOCKER_SOCKET at its socket.`,
          err,
        );
      }
      throw err;
    }
  }

  preflight(): Promise<void> {
    this.#preflight ??= this.#check().catch((err: unknown) => {
      this.#preflight = undefined;
      throw err;
    });
    return this.#preflight;
  }

  async #check(): Promise<void> {
    await this.#api('ping', () => this.#docker.ping());
    const info = await this.#api('info', () => this.#docker.info() as Promise<{ ID?: string; Name?: string }>);
    this.#nodeId = info.ID || info.Name || os.hostname();
    if (process.getuid?.() !== 0) {
      throw new SandboxUnavailableError(
        "The docker driver writes each tenant's files as its own uid, which needs the control plane to run as root (in its container, too).",
      );
    }
    let labels: Record<string, string> | undefined;
    try {
      labels = (await this.#api('image inspect', () => this.#docker.getImage(this.#o.image).inspect())).Config.Labels ?? {};
    } catch (err) {
      if (statusOf(err) === 404)
        throw new SandboxUnavailableError(
          `The sandbox image ${this.#o.image} is not in the Docker engine (it is built locally, never pulled): run \`${buildCommand(this.#o.image)}\`.`,
          err,
        );
      throw err;
    }
    const want = (await supervisorProgram(this.#o.supervisorDir)).sha256;
    if (labels[IMAGE_SUPERVISOR_LABEL] !== want) {
      throw new SandboxUnavailableError(
        `The sandbox image ${this.#o.image} carries another version of the supervisor than this control plane: rebuild it with \`${buildCommand(this.#o.image)}\`.`,
      );
    }
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    await chmod(this.root, 0o711);
    await assertTraversable(this.root, 'CLAWPLANE_SANDBOX_ROOT');
  }

  async prepare(spec: SandboxSpec): Promise<void> {
    await this.preflight();
    await assertTraversable(spec.runtime.dir, 'CLAWPLANE_RUNTIME_CACHE');
    await prepareInstanceDirs(this.dirs(spec.instanceId), spec, {
      ingress: { path: `${MOUNTS.in}/ingress.sock` },
      control: { path: `${MOUNTS.in}/control.sock` },
      supervisorDir: this.#o.supervisorDir,
    });
  }

  async start(spec: SandboxSpec): Promise<SandboxRef> {
    await this.prepare(spec);
    const p = this.dirs(spec.instanceId);
    const uid = spec.tenantUid;
    const name = containerName(spec.instanceId);
    // One container per instance: a running one is a conflict; an exited one is removed (a duplicate
    // name is a 409 on Docker and a 500 on Podman, so it is never attempted).
    const old = await this.#inspect(name);
    if (old?.State.Running)
      throw new ConflictError(
        `A sandbox for instance ${spec.instanceId} is already running (container ${old.Id.slice(0, 12)}); stop it first.`,
        'sandbox_running',
      );
    if (old) await this.#remove(old.Id);
    // The supervisor's socket directory, fresh and the tenant's until it has listened (then sealed).
    await rm(p.in, { recursive: true, force: true });
    await mkdirMode(p.in, 0o700, uid, uid);
    const sandboxId = randomUUID();
    await this.#openRelay({ ...spec, sandboxId }, uid);
    const startedAt = new Date().toISOString();
    let containerId: string | undefined;
    try {
      const c = await this.#api('create', () =>
        this.#docker.createContainer({
          name,
          Image: this.#o.image,
          // The same V8 flags as the local driver's supervisor (docs: --jitless, small heaps).
          Cmd: [IMAGE_NODE, '--max-semi-space-size=1', '--max-old-space-size=64', '--jitless', IMAGE_SUPERVISOR, `${MOUNTS.conf}/sandbox.json`],
          User: `${uid}:${uid}`,
          Env: ['PATH=/usr/bin:/bin'],
          WorkingDir: '/tenant',
          Hostname: 'sandbox',
          Labels: {
            [LABEL.cluster]: spec.clusterId,
            [LABEL.instance]: spec.instanceId,
            [LABEL.tenant]: spec.tenantId,
            [LABEL.sandbox]: sandboxId,
            [LABEL.runtime]: spec.runtime.version,
            [LABEL.started]: startedAt,
          },
          NetworkDisabled: true,
          HostConfig: {
            NetworkMode: 'none',
            ReadonlyRootfs: true,
            // The tenant's gateway (never root) keeps its state locks here. Podman copies the image's /tmp
            // mode over this one (tmpcopyup), so the image's /tmp is 1777 too (build.ts).
            Tmpfs: { '/tmp': `rw,nosuid,nodev,mode=1777,size=${this.#o.tmpBytes}` },
            CapDrop: ['ALL'],
            SecurityOpt: ['no-new-privileges'],
            Init: true,
            IpcMode: 'private',
            Memory: spec.limits?.memoryBytes ?? this.#o.memoryBytes,
            MemorySwap: spec.limits?.memoryBytes ?? this.#o.memoryBytes,
            PidsLimit: this.#o.pids,
            ...((spec.limits?.cpus ?? this.#o.cpus) > 0 ? { NanoCpus: Math.round((spec.limits?.cpus ?? this.#o.cpus) * 1e9) } : {}),
            // Both limits are set: an unset one gets the engine's default, which Podman makes 1048576 for
            // rootful containers whatever containers.conf says, and which a root without
            // CAP_SYS_RESOURCE cannot grant (runc: "error setting rlimit type 6: operation not permitted").
            Ulimits: [
              { Name: 'nofile', Soft: this.#o.nofile, Hard: this.#o.nofile },
              { Name: 'nproc', Soft: this.#o.nproc, Hard: this.#o.nproc },
            ],
            Binds: [
              `${spec.runtime.dir}:${MOUNTS.runtime}:ro`,
              `${p.conf}:${MOUNTS.conf}:ro`,
              `${p.out}:${MOUNTS.out}:ro`,
              `${p.in}:${MOUNTS.in}:rw`,
              `${p.work}:${MOUNTS.work}:rw`,
              `${p.sharedRw}:${MOUNTS.sharedRw}:rw`,
              `${p.sharedRo}:${MOUNTS.sharedRo}:ro`,
              `${p.log}:${MOUNTS.log}:rw`,
            ],
          },
        }),
      );
      containerId = c.id;
      await this.#api('start', () => c.start());
      await this.#sealSockets(spec, p, c.id);
    } catch (err) {
      if (containerId) await this.#remove(containerId).catch(() => undefined);
      await this.#closeRelay(spec.instanceId);
      throw err;
    }
    const ref: SandboxRef = {
      driver: this.name,
      sandboxId,
      instanceId: spec.instanceId,
      tenantId: spec.tenantId,
      runtimeVersion: spec.runtime.version,
      startedAt,
      owner: { clusterId: spec.clusterId, nodeId: this.#nodeId ?? '' },
      native: { containerId } satisfies DockerNative,
    };
    this.#o.log.info({ instance_id: spec.instanceId, sandbox: sandboxId, container: containerId.slice(0, 12) }, 'sandbox container started');
    return ref;
  }

  /**
   * Waits for the supervisor's two sockets in `in/`, then makes `in/` root's (0700) and checks both are
   * sockets of the tenant's uid: from then on the tenant cannot swap them for a link, and the host has
   * followed no path the tenant could change. No tenant code runs before this (gateways serve only
   * through these sockets).
   */
  async #sealSockets(spec: SandboxSpec, p: InstanceDirs, containerId: string): Promise<void> {
    const want = [path.join(p.in, 'ingress.sock'), path.join(p.in, 'control.sock')];
    const deadline = Date.now() + (this.#o.startTimeoutMs ?? 30_000);
    for (;;) {
      const present = await Promise.all(
        want.map((f) =>
          lstat(f).then(
            (s) => s.isSocket(),
            () => false,
          ),
        ),
      );
      if (present.every(Boolean)) break;
      const st = await this.#inspect(containerId);
      if (!st?.State.Running) {
        const logs = await this.#containerLogs(containerId);
        throw new SandboxUnavailableError(
          `The sandbox container exited before its supervisor listened (${st ? `exit code ${st.State.ExitCode}${st.State.Error ? `: ${st.State.Error}` : ''}` : 'the container is gone'})${logs ? `: ${logs}` : ''}`,
        );
      }
      if (Date.now() > deadline)
        throw new SandboxUnavailableError(`The sandbox supervisor did not listen within ${this.#o.startTimeoutMs ?? 30_000} ms; see the instance logs.`);
      await sleep(50);
    }
    await chown(p.in, 0, 0);
    await chmod(p.in, 0o700);
    for (const f of want) {
      const s = await lstat(f);
      if (!s.isSocket() || s.uid !== spec.tenantUid)
        throw new SandboxUnavailableError(
          `${path.basename(f)} of instance ${spec.instanceId} is not the supervisor's socket (a ${s.isSymbolicLink() ? 'link' : 'replaced file'}); the sandbox is not used.`,
        );
    }
  }

  async #containerLogs(id: string): Promise<string> {
    try {
      const buf = (await this.#docker.getContainer(id).logs({ stdout: true, stderr: true, tail: 20, follow: false })) as unknown as Buffer;
      // Multiplexed frames: an 8-byte header per frame; keep the printable text.
      return buf
        .toString('utf8')
        .replace(/[\x00-\x08\x0e-\x1f]/g, '')
        .trim()
        .slice(-600);
    } catch {
      return '';
    }
  }

  async #inspect(idOrName: string): Promise<Docker.ContainerInspectInfo | undefined> {
    try {
      return await this.#api('inspect', () => this.#docker.getContainer(idOrName).inspect());
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async #remove(id: string): Promise<void> {
    try {
      await this.#api('remove', () => this.#docker.getContainer(id).remove({ force: true }));
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  async #openRelay(r: { tenantId: string; instanceId: string; sandboxId: string }, gid: number): Promise<void> {
    await this.#closeRelay(r.instanceId);
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

  async #closeRelay(instanceId: string): Promise<void> {
    const r = this.#relays.get(instanceId);
    this.#relays.delete(instanceId);
    await r?.close();
  }

  async adopt(ref: SandboxRef): Promise<boolean> {
    const st = await this.#inspect(nativeOf(ref).containerId);
    if (!st?.State.Running) return false;
    if (!this.#relays.has(ref.instanceId)) await this.#openRelay(ref, await tenantUidOf(this.dirs(ref.instanceId)));
    return true;
  }

  async stop(ref: SandboxRef, opts: { timeoutMs?: number } = {}): Promise<void> {
    const { containerId } = nativeOf(ref);
    const st = await this.#inspect(containerId);
    if (st?.State.Running) {
      // The supervisor drains its gateways; then the engine makes sure (SIGTERM to the init, then SIGKILL).
      await new SupervisorControl(path.join(this.dirs(ref.instanceId).in, 'control.sock')).stop();
      const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
      while ((await this.#inspect(containerId))?.State.Running && Date.now() < deadline) await sleep(200);
      if ((await this.#inspect(containerId))?.State.Running) {
        this.#o.log.warn({ instance_id: ref.instanceId, container: containerId.slice(0, 12) }, 'sandbox container did not stop in time; killing it');
        await this.#api('stop', () => this.#docker.getContainer(containerId).stop({ t: 2 })).catch((err: unknown) => {
          if (statusOf(err) !== 304 && statusOf(err) !== 404) throw err;
        });
      }
    }
    if (st) await this.#remove(containerId);
    await this.#closeRelay(ref.instanceId);
  }

  async destroy(key: InstanceKey, opts: { deleteState: boolean }): Promise<void> {
    const mine = await this.#api('list', () => this.#docker.listContainers({ all: true, filters: { label: [`${LABEL.instance}=${key.instanceId}`] } }));
    for (const c of mine) {
      const ref = this.#refOf(c.Id, c.Labels);
      if (ref) await this.stop(ref);
      else await this.#remove(c.Id);
    }
    await this.#closeRelay(key.instanceId);
    const p = this.dirs(key.instanceId);
    if (opts.deleteState) await rm(p.dir, { recursive: true, force: true });
    else for (const d of [p.host, p.conf, p.out, p.in]) await rm(d, { recursive: true, force: true });
  }

  async status(ref: SandboxRef): Promise<SandboxState> {
    const st = await this.#inspect(nativeOf(ref).containerId);
    if (!st) return { running: false, reason: 'the sandbox container is gone (removed outside Clawplane)' };
    if (!st.State.Running) {
      const code = st.State.ExitCode;
      // Podman leaves OOMKilled false after a memory-cgroup kill (docker-api-via-podman.md): 137 is SIGKILL.
      const why = st.State.OOMKilled
        ? 'killed by its memory limit'
        : code === 137
          ? 'killed (SIGKILL: its memory limit or a kill)'
          : `exited with code ${code}`;
      return { running: false, reason: `the sandbox container ${why}${st.State.Error ? `: ${st.State.Error}` : ''}` };
    }
    return { running: true, health: await new SupervisorControl(path.join(this.dirs(ref.instanceId).in, 'control.sock')).health(this.#o.log, ref.instanceId) };
  }

  connect(ref: SandboxRef): Promise<GatewayTransport> {
    return Promise.resolve(unixTransport(path.join(this.dirs(ref.instanceId).in, 'ingress.sock')));
  }

  setExecutors(ref: SandboxRef, run: string[]): Promise<SandboxHealth> {
    return new SupervisorControl(path.join(this.dirs(ref.instanceId).in, 'control.sock')).setExecutors(run);
  }

  exec(ref: SandboxRef, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return new SupervisorControl(path.join(this.dirs(ref.instanceId).in, 'control.sock')).exec(argv, opts.timeoutMs);
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
    await this.#openRelay(ref, uid);
  }

  logs(key: InstanceKey, opts: { tail: number }): Promise<LogLine[]> {
    return tailLogs(this.dirs(key.instanceId).log, opts.tail);
  }

  followLogs(key: InstanceKey, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void> {
    return followLogDir(this.dirs(key.instanceId).log, signal, onLine);
  }

  /** The running sandbox containers on this engine (any control plane's: the caller matches the cluster). */
  async list(): Promise<SandboxRef[]> {
    // Only the engine is needed here (not the image): adoption must work while the image is being rebuilt.
    if (this.#nodeId === undefined) {
      const info = await this.#api('info', () => this.#docker.info() as Promise<{ ID?: string; Name?: string }>);
      this.#nodeId = info.ID || info.Name || os.hostname();
    }
    const running = await this.#api('list', () => this.#docker.listContainers({ filters: { label: [LABEL.cluster], status: ['running'] } }));
    return running.map((c) => this.#refOf(c.Id, c.Labels)).filter((r): r is SandboxRef => r !== undefined);
  }

  #refOf(containerId: string, labels: Record<string, string>): SandboxRef | undefined {
    const instanceId = labels[LABEL.instance];
    const sandboxId = labels[LABEL.sandbox];
    const clusterId = labels[LABEL.cluster];
    if (!instanceId || !sandboxId || !clusterId) return undefined;
    return {
      driver: this.name,
      sandboxId,
      instanceId,
      tenantId: labels[LABEL.tenant] ?? '',
      runtimeVersion: labels[LABEL.runtime] ?? '',
      startedAt: labels[LABEL.started] ?? '',
      owner: { clusterId, nodeId: this.#nodeId ?? '' },
      native: { containerId } satisfies DockerNative,
    };
  }

  async close(): Promise<void> {
    for (const id of [...this.#relays.keys()]) await this.#closeRelay(id);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
