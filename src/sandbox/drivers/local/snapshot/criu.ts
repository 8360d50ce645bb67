import { spawn, spawnSync } from 'node:child_process';
import { chmod, chown, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * CRIU as warm resume uses it (issue 10). The binary is the one scripts/build-criu.sh builds from
 * Debian's source package (Debian 12's 3.17 fails on this kernel), with its patches (p4: host-made unix
 * sockets as inherit-only externals). Flags, and why each is needed, were measured on these machines
 * (../shared/notes/warm-resume-criu.md, docs/adr/0006-warm-resume-criu.md, scripts/criu-lab.sh):
 * - `--tcp-close`: the gateway's upstream keep-alive connection is dropped; it reconnects.
 * - `--ext-unix-sk`, `--file-locks`: the gateway holds both.
 * - `--network-lock skip`: the sandbox has its own network namespace with only `lo`, and no iptables here.
 * - `--ext-mount-map auto --enable-external-sharing --enable-external-masters`: bubblewrap's bind
 *   mounts (/dev nodes, /usr, the runtime) come from the host's mount namespace.
 * - dump `--external unix[INO]` for each socket the host made and passed in (ingress, control): they
 *   live in the host's network namespace, so CRIU's scan of the sandbox's does not see them; restore
 *   gives fresh host sockets back with `--inherit-fd fd[N]:socket:[INO]`.
 * - restore `--root DIR`: the sandbox's root mount (bubblewrap's tmpfs) is not in the image; CRIU
 *   binds DIR in its place (without it, compat mode fails at "Can't umount at ./proc: Invalid
 *   argument" and the default engine at "BUG at criu/mount.c:48"). DIR comes from restore-root.ts and
 *   is bound read-only in a private mount namespace of the restore only.
 * - restore `--weak-sysctls` (patch 3). No cgroup namespace in a suspendable sandbox: with one, restore
 *   fails at "couldn't set cgns prefix … Invalid argument"; without one, CRIU's default cgroup mode puts
 *   the restored tree back into the cgroups it was dumped from.
 */
export const DUMP_FLAGS = [
  '--file-locks',
  '--tcp-close',
  '--ext-unix-sk',
  '--network-lock',
  'skip',
  '--ext-mount-map',
  'auto',
  '--enable-external-sharing',
  '--enable-external-masters',
];
export const RESTORE_FLAGS = [
  '--file-locks',
  '--tcp-close',
  '--ext-unix-sk',
  '--ext-mount-map',
  'auto',
  '--enable-external-sharing',
  '--enable-external-masters',
  '--weak-sysctls',
];

/** CRIU failed; `errors` are its "Error (file:line): …" lines, the exact reason to record. */
export class CriuError extends Error {
  readonly errors: string[];
  constructor(op: string, errors: string[], cause?: unknown) {
    super(`criu ${op} failed: ${errors.length ? errors.join(' | ') : 'no error line in its log'}`, { cause });
    this.errors = errors;
  }
}

export type CriuSupport = { supported: true; version: string } | { supported: false; reason: string };

/**
 * How long a dump or restore may take before CRIU is killed. A sandbox dumps in about a second
 * (bench resume); on some kernels CRIU never returns: on 6.18.44 (these machines since December 2026)
 * `criu dump` of any tree, even `sh` with one child, waits forever for the task to trap after the
 * parasite's sigreturn ("Waiting for PID to trap", measured with -v4). Killing CRIU there kills the tree
 * (it is running parasite code), so callers treat a timed-out dump as a stopped sandbox.
 */
export const CRIU_TIMEOUT_MS = 120_000;
const PROBE_TIMEOUT_MS = 30_000;

/** One answer per CRIU binary per process: `criu check` and a probe dump cost seconds. */
const supportByBin = new Map<string, Promise<CriuSupport>>();

export class Criu {
  readonly bin: string;

  constructor(bin: string) {
    this.bin = bin;
  }

  /**
   * Whether CRIU works on this host, once per process: installed, root, `criu check`, and a probe dump
   * of a throwaway two-process tree (`criu check` passes on kernels where every dump hangs, see
   * CRIU_TIMEOUT_MS). The reason says what failed and what to do.
   */
  support(): Promise<CriuSupport> {
    let s = supportByBin.get(this.bin);
    if (!s) supportByBin.set(this.bin, (s = this.#probeSupport()));
    return s;
  }

  async #probeSupport(): Promise<CriuSupport> {
    const v = spawnSync(this.bin, ['--version'], { encoding: 'utf8' });
    if (v.error || v.status !== 0) {
      return {
        supported: false,
        reason: `CRIU is not installed at ${this.bin} (${v.error?.message ?? v.stderr.trim()}); run scripts/build-criu.sh (builds CRIU 4.1.1 from Debian's source package) or set CLAWPLANE_CRIU_BIN`,
      };
    }
    if (process.getuid?.() !== 0) return { supported: false, reason: 'CRIU needs the control plane to run as root' };
    const c = spawnSync(this.bin, ['check'], { encoding: 'utf8', timeout: 30_000 });
    const out = `${c.stdout}${c.stderr}`;
    if (c.status !== 0 || !/Looks good/.test(out)) {
      return { supported: false, reason: `"criu check" failed on this host: ${errorLines(out).join(' | ') || out.trim().slice(-300)}` };
    }
    const probe = await this.#cachedProbe(v.stdout);
    if (probe)
      return {
        supported: false,
        reason: `CRIU cannot dump a process tree on this kernel (${os.release()}): ${probe}; idle instances are stopped instead of suspended`,
      };
    return { supported: true, version: /Version:\s*(\S+)/.exec(v.stdout)?.[1] ?? 'unknown' };
  }

  /**
   * The probe's answer, kept beside the binary per kernel release and binary (a hanging probe costs its
   * whole timeout, so each server start must not pay it again).
   */
  async #cachedProbe(version: string): Promise<string | undefined> {
    const file = path.join(path.dirname(this.bin), 'probe.json');
    const st = await stat(this.bin).catch(() => undefined);
    const key = `${os.release()} ${version.trim()} ${st?.size ?? 0} ${st?.mtimeMs ?? 0}`;
    const cached = await readFile(file, 'utf8').then(
      (t) => JSON.parse(t) as { key?: string; failure?: string | null },
      () => undefined,
    );
    if (cached?.key === key) return cached.failure ?? undefined;
    const failure = await this.#probeDump();
    await writeFile(file, JSON.stringify({ key, failure: failure ?? null }), { mode: 0o644 }).catch(() => undefined);
    return failure;
  }

  /** Dumps a detached `sh` with a `sleep` child; undefined when that works, else why not. */
  async #probeDump(): Promise<string | undefined> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-criu-probe-'));
    const tree = spawn('/bin/sh', ['-c', 'sleep 600 & wait'], { detached: true, stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (tree.pid === undefined || tree.exitCode !== null) return 'the probe process did not start';
      await this.#run('dump', ['dump', '-t', String(tree.pid), '-D', dir, '-v2', '-o', 'dump.log'], path.join(dir, 'dump.log'), [], this.bin, PROBE_TIMEOUT_MS);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    } finally {
      if (tree.pid !== undefined) {
        try {
          process.kill(-tree.pid, 'SIGKILL');
        } catch {
          /* the dump ended it */
        }
      }
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Dumps the process tree rooted at `pid` into `dir` (the tree is killed afterwards). `externalUnix`:
   * inode numbers of unix sockets the host made and passed in (they must be given back on restore).
   */
  async dump(pid: number, dir: string, opts: { externalUnix?: number[] } = {}): Promise<{ ms: number }> {
    const t0 = performance.now();
    const ext = (opts.externalUnix ?? []).flatMap((ino) => ['--external', `unix[${ino}]`]);
    await this.#run('dump', ['dump', '-t', String(pid), '-D', dir, ...DUMP_FLAGS, ...ext, '-v2', '-o', 'dump.log'], path.join(dir, 'dump.log'));
    return { ms: performance.now() - t0 };
  }

  /**
   * Restores the tree in `dir`, detached. `inherit` maps a resource recorded in the image (e.g.
   * "socket:[1234]", an `externalUnix` of the dump) to a file descriptor of ours that replaces it
   * (CRIU's --inherit-fd). `root`: the directory that stands in for the sandbox's root mount
   * (prepareRestoreRoot); CRIU runs in a private mount namespace where it is bound read-only, nosuid and
   * nodev, so the restored tree's / is read-only as bubblewrap's was and nothing stays mounted on the host.
   * `uid`: the sandbox's host uid. The restored root task reads some images itself, some before its
   * user namespace's uid map exists (timens-0.img: host uid 0, no capability over unmapped files) and
   * some after it switched to the sandbox's uid (tty-info.img, pages). Root's 0600 images fail the second
   * ("Unable to open tty-info.img: Permission denied"), the sandbox uid's 0600 the first, depending on
   * the race with the map ("Unable to open timens-0.img: Permission denied", 1 run in 3). So: owner root,
   * group the sandbox's gid (= its uid), 0750/0640; no other uid can read the images.
   */
  async restore(dir: string, opts: { inherit?: { fd: number; key: string }[]; root?: string; uid?: number } = {}): Promise<{ pid: number; ms: number }> {
    const t0 = performance.now();
    if (opts.uid !== undefined) await ownImages(dir, opts.uid);
    const pidfile = path.join(dir, 'restored.pid');
    const inherit = (opts.inherit ?? []).flatMap((i) => ['--inherit-fd', `fd[${i.fd}]:${i.key}`]);
    const fds = (opts.inherit ?? []).map((i) => i.fd);
    const args = [
      'restore',
      '-D',
      dir,
      '-d',
      ...RESTORE_FLAGS,
      ...(opts.root ? ['--root', opts.root] : []),
      ...inherit,
      '--pidfile',
      pidfile,
      '-v2',
      '-o',
      'restore.log',
    ];
    if (opts.root) {
      const script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro,nosuid,nodev "$0" && exec "$@"';
      await this.#run(
        'restore',
        ['--mount', '--propagation', 'private', '/bin/sh', '-c', script, opts.root, this.bin, ...args],
        path.join(dir, 'restore.log'),
        fds,
        'unshare',
      );
    } else {
      await this.#run('restore', args, path.join(dir, 'restore.log'), fds);
    }
    const pid = Number((await readFile(pidfile, 'utf8')).trim());
    return { pid, ms: performance.now() - t0 };
  }

  async #run(op: string, args: string[], logFile: string, passFds: number[] = [], cmd = this.bin, timeoutMs = CRIU_TIMEOUT_MS): Promise<void> {
    const maxFd = Math.max(2, ...passFds);
    const stdio: (number | 'ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    for (let fd = 3; fd <= maxFd; fd++) stdio.push(passFds.includes(fd) ? fd : 'ignore');
    const child = spawn(cmd, args, { stdio });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c));
    }).finally(() => clearTimeout(timer));
    if (code === 0) return;
    const log = await readFile(logFile, 'utf8').catch(() => '');
    const lines = errorLines(log + '\n' + out);
    if (timedOut) lines.unshift(`CRIU did not finish within ${Math.round(timeoutMs / 1000)} s and was killed (last log line: ${lastLine(log) || 'none'})`);
    throw new CriuError(op, lines);
  }
}

/**
 * CRIU's error lines without the ones it logs on every run here: RLIMIT_NOFILE (no CAP_SYS_RESOURCE)
 * and the iptables probes (no iptables on these hosts; the sandbox's netns is not locked, see DUMP_FLAGS).
 */
export function errorLines(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => /Error \(/.test(l) && !/RLIMIT_NOFILE for self|ip6?tables(-legacy)?-(save|restore)/.test(l))
    .map((l) => l.replace(/^\s*(\(\d+\.\d+\)\s*)?(\d+:\s*)?/, '').trim())
    .slice(0, 8);
}

function lastLine(log: string): string {
  const noise = /RLIMIT_NOFILE for self|ip6?tables(-legacy)?-(save|restore)/;
  return (
    log
      .trim()
      .split('\n')
      .filter((l) => !noise.test(l))
      .at(-1)
      ?.replace(/^\s*(\(\d+\.\d+\)\s*)?/, '')
      .trim()
      .slice(0, 200) ?? ''
  );
}

/** The image directory and its files: root's, readable by the sandbox's group only (see Criu.restore). */
async function ownImages(dir: string, gid: number): Promise<void> {
  await chown(dir, 0, gid);
  await chmod(dir, 0o750);
  for (const f of await readdir(dir, { withFileTypes: true })) {
    if (!f.isFile()) continue;
    await chown(path.join(dir, f.name), 0, gid);
    await chmod(path.join(dir, f.name), 0o640);
  }
}
