import { spawn, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * CRIU as warm resume uses it (issue 10). The binary is the one scripts/build-criu.sh builds from
 * Debian's source package (Debian 12's 3.17 fails on this kernel). Flags, and why each is needed, were
 * measured on these machines (../shared/notes/warm-resume-criu.md, docs/adr/0006-warm-resume-criu.md):
 * - `--tcp-close`: the gateway's upstream keep-alive connection is dropped; it reconnects.
 * - `--ext-unix-sk`, `--file-locks`: the gateway holds both.
 * - `--network-lock skip`: the sandbox has its own network namespace with only `lo`, and no iptables here.
 * - `--ext-mount-map auto --enable-external-sharing --enable-external-masters`: bubblewrap's bind
 *   mounts (/dev nodes, /usr, the runtime) come from the host's mount namespace.
 * - restore: `--manage-cgroups=ignore` (the cgroup namespace prefix cannot be set on this cgroup v1
 *   host: "couldn't set cgns prefix … Invalid argument") and `--weak-sysctls`.
 */
export const DUMP_FLAGS = ['--file-locks', '--tcp-close', '--ext-unix-sk', '--network-lock', 'skip', '--ext-mount-map', 'auto', '--enable-external-sharing', '--enable-external-masters'];
export const RESTORE_FLAGS = ['--file-locks', '--tcp-close', '--ext-unix-sk', '--ext-mount-map', 'auto', '--enable-external-sharing', '--enable-external-masters', '--manage-cgroups=ignore', '--weak-sysctls'];

/** CRIU failed; `errors` are its "Error (file:line): …" lines, the exact reason to record. */
export class CriuError extends Error {
  readonly errors: string[];
  constructor(op: string, errors: string[], cause?: unknown) {
    super(`criu ${op} failed: ${errors.length ? errors.join(' | ') : 'no error line in its log'}`, { cause });
    this.errors = errors;
  }
}

export type CriuSupport = { supported: true; version: string } | { supported: false; reason: string };

export class Criu {
  readonly bin: string;
  #support: CriuSupport | undefined;

  constructor(bin: string) {
    this.bin = bin;
  }

  /** `criu check` once per process; the reason says what to do when it fails. */
  support(): CriuSupport {
    if (this.#support) return this.#support;
    const v = spawnSync(this.bin, ['--version'], { encoding: 'utf8' });
    if (v.error || v.status !== 0) {
      this.#support = { supported: false, reason: `CRIU is not installed at ${this.bin} (${v.error?.message ?? v.stderr.trim()}); run scripts/build-criu.sh (builds CRIU 4.1.1 from Debian's source package) or set CLAWPLANE_CRIU_BIN` };
      return this.#support;
    }
    if (process.getuid?.() !== 0) {
      this.#support = { supported: false, reason: 'CRIU needs the control plane to run as root' };
      return this.#support;
    }
    const c = spawnSync(this.bin, ['check'], { encoding: 'utf8', timeout: 30_000 });
    const out = `${c.stdout}${c.stderr}`;
    if (c.status !== 0 || !/Looks good/.test(out)) {
      this.#support = { supported: false, reason: `"criu check" failed on this host: ${errorLines(out).join(' | ') || out.trim().slice(-300)}` };
      return this.#support;
    }
    this.#support = { supported: true, version: /Version:\s*(\S+)/.exec(v.stdout)?.[1] ?? 'unknown' };
    return this.#support;
  }

  /** Dumps the process tree rooted at `pid` into `dir` (the tree is killed afterwards). */
  async dump(pid: number, dir: string): Promise<{ ms: number }> {
    const t0 = performance.now();
    await this.#run('dump', ['dump', '-t', String(pid), '-D', dir, ...DUMP_FLAGS, '-v2', '-o', 'dump.log'], path.join(dir, 'dump.log'));
    return { ms: performance.now() - t0 };
  }

  /**
   * Restores the tree in `dir`, detached. `inherit` maps a resource recorded in the image (e.g.
   * "socket:[1234]") to a file descriptor of ours that replaces it (CRIU's --inherit-fd).
   */
  async restore(dir: string, opts: { inherit?: { fd: number; key: string }[] } = {}): Promise<{ pid: number; ms: number }> {
    const t0 = performance.now();
    const pidfile = path.join(dir, 'restored.pid');
    const inherit = (opts.inherit ?? []).flatMap((i) => ['--inherit-fd', `fd[${i.fd}]:${i.key}`]);
    const fds = (opts.inherit ?? []).map((i) => i.fd);
    await this.#run('restore', ['restore', '-D', dir, '-d', ...RESTORE_FLAGS, ...inherit, '--pidfile', pidfile, '-v2', '-o', 'restore.log'], path.join(dir, 'restore.log'), fds);
    const pid = Number((await readFile(pidfile, 'utf8')).trim());
    return { pid, ms: performance.now() - t0 };
  }

  async #run(op: string, args: string[], logFile: string, passFds: number[] = []): Promise<void> {
    const maxFd = Math.max(2, ...passFds);
    const stdio: (number | 'ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    for (let fd = 3; fd <= maxFd; fd++) stdio.push(passFds.includes(fd) ? fd : 'ignore');
    const child = spawn(this.bin, args, { stdio });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c));
    });
    if (code === 0) return;
    const log = await readFile(logFile, 'utf8').catch(() => '');
    throw new CriuError(op, errorLines(log + '\n' + out));
  }
}

/** CRIU's error lines without the one it logs on every run here (no CAP_SYS_RESOURCE: harmless). */
export function errorLines(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => /Error \(/.test(l) && !/RLIMIT_NOFILE for self/.test(l))
    .map((l) => l.replace(/^\s*(\(\d+\.\d+\)\s*)?(\d+:\s*)?/, '').trim())
    .slice(0, 8);
}
