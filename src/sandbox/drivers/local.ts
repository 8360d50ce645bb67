import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { constants, openSync } from 'node:fs';
import { chmod, chown, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
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
import { Criu } from '../snapshot/criu.ts';
import { gatewayRpc } from '../gateway-rpc.ts';
import { socketRequest } from '../socket-http.ts';
import type { ExecResult, LogLine, SandboxDriver, SandboxEndpoint, SandboxHandle, SandboxHealth, SandboxSpec, SandboxState, SuspendSupport } from '../types.ts';

/** The supervisor program; its JavaScript is written to each sandbox's read-only /conf. */
export const SUPERVISOR_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'supervisor');

/** Fixed ports inside the sandbox's own network namespace: no other tenant shares it. */
const GATEWAY_BASE_PORT = 18789;
const EGRESS_PORT = 18080;
const INNER_UID = 1000;

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
    const bwrapArgs = [
      // No --die-with-parent: gateways must survive a control-plane restart (adopted by pid instead).
      '--unshare-all', '--unshare-user', '--disable-userns', '--new-session',
      '--cap-drop', 'ALL', '--uid', String(INNER_UID), '--gid', String(INNER_UID), '--hostname', 'sandbox',
      '--info-fd', '3',
      '--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
      '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/sbin', '/sbin',
      '--ro-bind', spec.runtime.dir, '/opt/runtime',
      '--ro-bind', p.conf, '/conf',
      '--ro-bind', p.out, '/run/clawplane/out',
      '--bind', p.work, '/tenant/work',
      '--bind', p.sharedRw, '/tenant/shared-rw',
      '--ro-bind', p.sharedRo, '/tenant/shared-ro',
      '--bind', p.log, '/tenant/log',
      '--proc', '/proc', '--dev', '/dev',
      '--size', String(this.#o.tmpBytes), '--tmpfs', '/tmp',
      '--clearenv', '--setenv', 'PATH', '/usr/bin:/bin', '--chdir', '/tenant',
      '--remount-ro', '/',
      `/opt/runtime/${spec.runtime.nodeRel}`, '--max-semi-space-size=1', '--max-old-space-size=64',
      '/conf/supervisor.mjs', '/conf/sandbox.json',
    ];
    const prlimit = [`--data=${this.#o.dataBytes}`, `--nproc=${this.#o.nproc}`, `--nofile=${this.#o.nofile}`, '--'];
    const setpriv = [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--'];
    // The first process joins the cgroups, then becomes prlimit → setpriv → bwrap (one pid throughout).
    const script = 'for f in $CLAWPLANE_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done; exec "$0" "$@"';
    const child = spawn('/bin/sh', ['-c', script, 'prlimit', ...prlimit, 'setpriv', ...setpriv, this.#o.bwrap ?? 'bwrap', ...bwrapArgs], {
      detached: true,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CLAWPLANE_CGROUP_PROCS: cg.procsFiles.join(' ') },
      stdio: ['ignore', logFd, logFd, 'pipe', ingress.fd, control.fd],
    });
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
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new SandboxUnavailableError(`bubblewrap exited with code ${code} before the sandbox started: ${tailSync(path.join(p.host, 'bwrap.log'))}`));
      });
    });
    // Keep the pipe open: the outer bwrap is still setting the sandbox up (uid map) and would die of
    // SIGPIPE on a closed pipe, leaving the inner one blocked. Drain it and let it not hold us alive.
    info.resume();
    info.unref();
    const handle: SandboxHandle = {
      driver: this.name,
      sandboxId,
      instanceId: spec.instanceId,
      tenantId: spec.tenantId,
      runtimeVersion: spec.runtime.version,
      pid: childPid,
      pidStartTime: await pidStartTime(childPid),
      startedAt: new Date().toISOString(),
      clusterId,
    };
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
      for (const d of [p.host, p.conf, p.out]) await rm(d, { recursive: true, force: true });
    }
  }

  async status(handle: SandboxHandle): Promise<SandboxState> {
    if (!(await pidAlive(handle))) return { running: false, reason: 'the sandbox process is gone' };
    return { running: true, health: await this.#health(handle.instanceId) };
  }

  async #health(instanceId: string): Promise<SandboxHealth | undefined> {
    try {
      const r = await socketRequest(this.#paths(instanceId).control, { path: '/health', timeoutMs: 5000 });
      if (r.status !== 200) return undefined;
      const h = JSON.parse(r.body) as SandboxHealth & { rssBytes?: number };
      return { ready: h.ready, executors: h.executors, ...(h.rssBytes === undefined ? {} : { supervisorRssBytes: h.rssBytes }) };
    } catch {
      return undefined;
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

  /**
   * Not yet, even where `criu check` passes: CRIU cannot dump this driver's sandboxes as they are
   * started today. The first blocker is the host-made ingress and control sockets passed in as fds 4
   * and 5 ("unix: Unix socket <ino> not found": they belong to the host's network namespace, which
   * CRIU's sock_diag scan of the sandbox's namespace does not see). The others, and the changes that
   * got a bubblewrap sandbox through dump, are in docs/adr/0006-warm-resume-criu.md.
   */
  async suspendSupport(): Promise<SuspendSupport> {
    const criu = new Criu(this.#o.criuBin ?? '/var/tmp/clawplane-criu/bin/criu').support();
    if (!criu.supported) return criu;
    return {
      supported: false,
      reason: 'CRIU cannot dump a bubblewrap sandbox with host-made ingress/control sockets (unix: Unix socket not found; docs/adr/0006-warm-resume-criu.md); idle instances are stopped instead',
    };
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
async function listenHostSocket(file: string): Promise<{ fd: number; release(): Promise<void> }> {
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
    async release() {
      // libuv unlinks a Unix socket's path on close: move the path away first so it stays for the sandbox.
      await rename(tmp, file);
      await new Promise<void>((resolve) => server.close(() => resolve()));
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
