/**
 * Warm resume on the local driver (ADR 0006): a sandbox started suspendable is dumped by CRIU into a
 * root-only snapshot directory on this host and restored from it once. The SnapshotRef's native part
 * is that directory; nothing outside this file knows it.
 */
import { randomUUID } from 'node:crypto';
import { copyFile, lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import { ClawplaneError, ConflictError } from '../../../errors.ts';
import { SupervisorControl } from '../../host/control.ts';
import { mkdirMode, tenantUidOf } from '../../host/dirs.ts';
import { packState } from '../../host/state-archive.ts';
import { SandboxResumeError, type SandboxRef, type SandboxSnapshots, type SandboxSpec, type SnapshotRef, type SuspendSupport } from '../../types.ts';
import type { CgroupLimits } from './cgroups.ts';
import { prepareCgroup } from './cgroups.ts';
import type { LocalSandboxDriver } from './driver.ts';
import { listenHostSocket } from './host-socket.ts';
import { nativeOf, pidAlive } from './process.ts';
import { Criu, CriuError } from './snapshot/criu.ts';
import { prepareRestoreRoot } from './snapshot/restore-root.ts';

/** What start() records for a suspendable sandbox (host/suspendable.json): what suspend and resume need. */
export interface SuspendableRecord {
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

/** The local driver's part of a SnapshotRef. */
interface LocalSnapshotNative {
  dir: string;
}

function snapshotDirOf(s: SnapshotRef): string {
  const dir = (s.native as Partial<LocalSnapshotNative> | null)?.dir;
  if (s.driver !== 'local' || typeof dir !== 'string')
    throw new SandboxResumeError(`Snapshot of instance ${s.instanceId} is not a local one (driver ${s.driver}).`, ['snapshot of another driver']);
  return dir;
}

export class LocalSnapshots implements SandboxSnapshots {
  readonly #o: { driver: LocalSandboxDriver; log: Logger; criuBin: string; warmResume: boolean | 'auto'; dir: string; cgroup: CgroupLimits };
  #auto: Promise<SuspendSupport> | undefined;

  constructor(o: { driver: LocalSandboxDriver; log: Logger; criuBin: string; warmResume: boolean | 'auto'; dir: string; cgroup: CgroupLimits }) {
    this.#o = o;
  }

  #criu(): Criu {
    return new Criu(this.#o.criuBin);
  }

  /**
   * Supported when the driver starts suspendable sandboxes (`warmResume`, or 'auto' where the CRIU
   * checks below pass), CRIU works here (Criu.support: `criu check` and a probe dump), and the binary is
   * scripts/build-criu.sh's with patch p4 (host-made unix sockets as --external; Debian's own CRIU cannot
   * dump these sandboxes: docs/adr/0006-warm-resume-criu.md).
   */
  async support(): Promise<SuspendSupport> {
    if (this.#o.warmResume === false) {
      return {
        supported: false,
        reason: 'warm resume is off (CLAWPLANE_WARM_RESUME=false): sandboxes are not started suspendable; idle instances are stopped instead',
      };
    }
    if (this.#o.warmResume === 'auto') return this.#autoSupport();
    return this.#criuSupport();
  }

  /** Whether a new sandbox starts suspendable: on, off, or (auto) where CRIU works here. */
  async startsSuspendable(): Promise<boolean> {
    if (typeof this.#o.warmResume === 'boolean') return this.#o.warmResume;
    return (await this.#autoSupport()).supported;
  }

  /** 'auto' decides once per process and says so once in the log. */
  #autoSupport(): Promise<SuspendSupport> {
    this.#auto ??= this.#criuSupport().then((s) => {
      if (s.supported) {
        this.#o.log.info('warm resume on (CLAWPLANE_WARM_RESUME=auto): idle instances are suspended to CRIU snapshots');
        return s;
      }
      const reason = `warm resume is unavailable on this host (CLAWPLANE_WARM_RESUME=auto): ${s.reason}`;
      this.#o.log.info({ reason }, 'warm resume off: idle instances are stopped instead of suspended');
      return { supported: false, reason };
    });
    return this.#auto;
  }

  async #criuSupport(): Promise<SuspendSupport> {
    const criu = this.#criu();
    const s = await criu.support();
    if (!s.supported) return s;
    const stamp = await readFile(path.join(path.dirname(criu.bin), 'criu.version'), 'utf8').catch(() => '');
    if (Number(/\+p(\d+)\s*$/.exec(stamp)?.[1] ?? 0) < 4) {
      return {
        supported: false,
        reason: `CRIU at ${criu.bin} (${stamp.trim() || 'no criu.version stamp'}) lacks patch p4 (host-made ingress/control sockets as --external unix[INO]): run scripts/build-criu.sh`,
      };
    }
    return { supported: true };
  }

  /** A new, empty, root-only snapshot directory for the instance. */
  async #newDir(instanceId: string): Promise<string> {
    await mkdir(this.#o.dir, { recursive: true, mode: 0o700 });
    return path.join(this.#o.dir, `${instanceId}-${randomUUID()}`);
  }

  async suspend(ref: SandboxRef): Promise<SnapshotRef> {
    const dir = await this.#newDir(ref.instanceId);
    try {
      const r = await this.suspendInto(ref, dir);
      return {
        driver: 'local',
        instanceId: ref.instanceId,
        runtimeVersion: ref.runtimeVersion,
        suspendedAt: new Date().toISOString(),
        ...r,
        native: { dir } satisfies LocalSnapshotNative,
      };
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async resume(spec: SandboxSpec, snapshot: SnapshotRef): Promise<SandboxRef> {
    return this.resumeFrom(spec, snapshotDirOf(snapshot));
  }

  async discard(snapshot: SnapshotRef): Promise<void> {
    await rm(snapshotDirOf(snapshot), { recursive: true, force: true });
  }

  /**
   * Suspend: the supervisor closes its idle ingress/control connections (an open connection to a host
   * socket fails the dump), we wait until no connection to the ingress, control or broker socket is
   * left, CRIU dumps the tree (which ends it; a failed dump leaves it running, and is retried once when
   * a connection raced in), then the tenant's work, shared-rw and log directories are archived as they
   * were at that instant (nothing writes them any more). The broker registration is closed (its token
   * revoked); the cgroup goes and is made again on resume. `snapshotDir` is created and must be empty.
   */
  async suspendInto(ref: SandboxRef, snapshotDir: string): Promise<{ dumpMs: number; imageBytes: number; stateBytes: number }> {
    const driver = this.#o.driver;
    const p = driver.dirs(ref.instanceId);
    const n = nativeOf(ref);
    if (!(await pidAlive(n))) throw new ConflictError(`The sandbox of instance ${ref.instanceId} is not running; nothing to suspend.`, 'sandbox_not_running');
    const rec = await readFile(p.suspendable, 'utf8')
      .then((t) => JSON.parse(t) as SuspendableRecord)
      .catch(() => undefined);
    if (!rec)
      throw new ConflictError(
        `The sandbox of instance ${ref.instanceId} was not started suspendable (warm resume was off); stop it instead.`,
        'sandbox_not_suspendable',
      );
    const support = await this.support();
    if (!support.supported) throw new ConflictError(`Cannot suspend here: ${support.reason}`, 'suspend_unsupported');
    const uid = await tenantUidOf(p);
    await mkdirMode(snapshotDir, 0o700, 0, 0);
    if ((await readdir(snapshotDir)).length > 0) throw new ConflictError(`Snapshot directory ${snapshotDir} is not empty.`, 'snapshot_exists');
    const img = path.join(snapshotDir, 'img');
    const criu = this.#criu();
    const control = new SupervisorControl(p.control);
    const hostSockets = [p.ingress, p.control, path.join(p.out, 'broker.sock')];
    let dumpMs = 0;
    for (let attempt = 1; ; attempt++) {
      await control.quiesce();
      await waitNoConnections(hostSockets, 2000);
      await rm(img, { recursive: true, force: true });
      await mkdirMode(img, 0o700, 0, 0);
      try {
        dumpMs = (await criu.dump(n.pid, img, { externalUnix: rec.sockets.map((s) => s.ino) })).ms;
        break;
      } catch (err) {
        const racy = err instanceof CriuError && err.errors.some((l) => /Unix socket \d+ not found|half of stream/.test(l));
        if (attempt >= 2 || !racy || !(await pidAlive(n))) {
          await rm(img, { recursive: true, force: true });
          throw err;
        }
        this.#o.log.info({ instance_id: ref.instanceId, errors: (err as CriuError).errors }, 'dump met an open host connection; retrying once');
        await sleep(300);
      }
    }
    // The tree is gone from here on: whatever fails below, the sandbox is stopped (state untouched).
    const state: SnapshotMeta['state'] = [];
    try {
      while (await pidAlive(n)) await sleep(20);
      for (const [dir, file] of [
        ['work', 'work.tar.gz'],
        ['sharedRw', 'shared-rw.tar.gz'],
        ['log', 'log.tar.gz'],
      ] as const) {
        await packState(p[dir], uid, path.join(snapshotDir, file), { exact: true });
        state.push({ file, dir });
      }
      const fingerprint = await stateFingerprint([p.work, p.sharedRw, p.log]);
      const meta: SnapshotMeta = {
        version: 1,
        instanceId: ref.instanceId,
        tenantId: ref.tenantId,
        hostUid: uid,
        runtimeVersion: ref.runtimeVersion,
        suspendedAt: new Date().toISOString(),
        sockets: rec.sockets,
        bwrapArgs: rec.bwrapArgs,
        state,
        fingerprint,
      };
      await writeFile(path.join(snapshotDir, 'snapshot.json'), JSON.stringify(meta, null, 2), { mode: 0o600 });
    } catch (err) {
      await rm(img, { recursive: true, force: true });
      throw new ClawplaneError(
        'suspend_failed',
        500,
        `Instance ${ref.instanceId} was dumped but its snapshot could not be completed (${(err as Error).message}); it is stopped, its state untouched: start it cold.`,
        { cause: err },
      );
    } finally {
      await driver.forget(ref.instanceId);
    }
    const imageBytes = await dirBytes(img);
    let stateBytes = 0;
    for (const s of state) stateBytes += (await stat(path.join(snapshotDir, s.file))).size;
    this.#o.log.info({ instance_id: ref.instanceId, dump_ms: Math.round(dumpMs), image_bytes: imageBytes, state_bytes: stateBytes }, 'sandbox suspended');
    return { dumpMs, imageBytes, stateBytes };
  }

  /**
   * Resume from a snapshot suspendInto() wrote, once: the snapshot is marked used first and its images
   * deleted afterwards, whatever happens. The tenant directories must be exactly as the suspend left
   * them (same files, same inodes: checked against the snapshot's fingerprint; the archive in the
   * snapshot is that state, for a cold start elsewhere), the instance's conf is rewritten from `spec`
   * (its gatewayToken must be the one the gateway had), the sandbox re-registered with the broker (a new
   * broker token), fresh host sockets made at the same paths and given to CRIU in place of the dumped
   * ones; the restored tree runs under the same cgroup, rlimits, namespaces and uid. On any failure
   * everything started is undone and a SandboxResumeError carries CRIU's error lines; the tenant
   * directories are untouched, so a cold start() works.
   */
  async resumeFrom(spec: SandboxSpec, snapshotDir: string): Promise<SandboxRef> {
    const driver = this.#o.driver;
    const p = driver.dirs(spec.instanceId);
    const support = await this.support();
    if (!support.supported) throw new SandboxResumeError(`Cannot resume here: ${support.reason}`, [support.reason]);
    const meta = await readFile(path.join(snapshotDir, 'snapshot.json'), 'utf8')
      .then((t) => JSON.parse(t) as SnapshotMeta)
      .catch((err: unknown) => {
        throw new SandboxResumeError(`No usable snapshot in ${snapshotDir} (${(err as Error).message}).`, ['no snapshot.json'], err);
      });
    if (meta.instanceId !== spec.instanceId || meta.hostUid !== spec.tenantUid)
      throw new SandboxResumeError(`Snapshot ${snapshotDir} is of another instance or uid.`, ['snapshot of another instance']);
    const usedMark = path.join(snapshotDir, 'used');
    if (await stat(usedMark).catch(() => undefined))
      throw new SandboxResumeError(`Snapshot ${snapshotDir} was already used (an image restores once).`, ['snapshot already used']);
    await driver.assertNotRunning(spec.instanceId);
    // One restore per image: a second one would run the same process state (and tokens) twice.
    try {
      await writeFile(usedMark, new Date().toISOString(), { flag: 'wx', mode: 0o600 });
    } catch {
      throw new SandboxResumeError(`Snapshot ${snapshotDir} was already used (an image restores once).`, ['snapshot already used']);
    }
    const img = path.join(snapshotDir, 'img');
    const uid = spec.tenantUid;
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
      await driver.prepare(spec);
      await driver.openRelay({ ...spec, sandboxId }, uid);
      await prepareCgroup(spec.instanceId, { ...this.#o.cgroup, ...spec.limits });
      await prepareRestoreRoot(p.rootfs, meta.bwrapArgs);
      const fresh: { fd: number; ino: number }[] = [];
      for (const s of meta.sockets) {
        const sock = await listenHostSocket(s.fd === 4 ? p.ingress : p.control);
        sockets.push(sock);
        fresh.push({ fd: s.fd, ino: sock.ino });
      }
      // The images: root's, readable by the sandbox's group only (Criu.restore); snapshotDir itself stays
      // root-only 0700 (measured: the restored tasks open images through CRIU's directory fd, not by path).
      const restored = await this.#criu().restore(img, {
        root: p.rootfs,
        uid,
        inherit: meta.sockets.map((s, i) => ({ fd: sockets[i]?.fd ?? -1, key: `socket:[${s.ino}]` })),
      });
      restoredPid = restored.pid;
      for (const sock of sockets) await sock.release();
      sockets.length = 0;
      await writeFile(p.suspendable, JSON.stringify({ sockets: fresh, bwrapArgs: meta.bwrapArgs } satisfies SuspendableRecord), { mode: 0o600 });
      const ref = await driver.newRef(spec, sandboxId, restored.pid);
      // The restored supervisor answers on the fresh control socket: the sockets were given back.
      const status = await new SupervisorControl(p.control).healthFresh();
      if (status !== 200) throw new Error(`the restored supervisor answered ${status} on its control socket`);
      await driver.writeRecord(ref);
      this.#o.log.info({ instance_id: spec.instanceId, sandbox: sandboxId, pid: restored.pid, restore_ms: Math.round(restored.ms) }, 'sandbox resumed');
      return ref;
    } catch (err) {
      for (const sock of sockets) sock.close();
      if (restoredPid !== undefined) {
        try {
          process.kill(restoredPid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await driver.forget(spec.instanceId);
      const errors = err instanceof CriuError ? err.errors : [(err as Error).message];
      this.#o.log.warn({ instance_id: spec.instanceId, errors }, 'resume failed');
      throw new SandboxResumeError(
        `Resuming instance ${spec.instanceId} from its snapshot failed: ${errors.join(' | ') || (err as Error).message}. Start it cold; its state is as at the suspend.`,
        errors,
        err,
      );
    } finally {
      // Keep CRIU's logs for the record; the images (GBs, the token in clear) go.
      for (const log of ['dump.log', 'restore.log']) await copyFile(path.join(img, log), path.join(snapshotDir, log)).catch(() => undefined);
      await rm(img, { recursive: true, force: true });
      for (const s of meta.state) await rm(path.join(snapshotDir, s.file), { force: true });
    }
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
