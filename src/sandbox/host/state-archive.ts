/**
 * An instance's state as a tar.gz stream, for drivers that keep it in a host directory (local, docker):
 * one state dir per executor (openclaw.json, SQLite databases, workspace). A STOPPED gateway's archive is
 * consistent by construction (no gateway is writing: never live SQLite files, openclaw-runtime.md §3); a
 * RUNNING one's has the same layout, packed from what OpenClaw's own `backup create` wrote
 * (live-backup.ts). Both directions run tar as the tenant's own unprivileged uid, so a symlink or special
 * file the tenant planted can reach nothing the tenant could not reach anyway.
 */
import { spawn } from 'node:child_process';
import { open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** Where a live backup stages OpenClaw's archives in the tenant's work dir; never archived itself. */
export const LIVE_STAGE = '.clawplane-backup';

/** Regenerable per OpenClaw (locks, compile cache): `openclaw backup create` skips them too. Relative to the work dir. */
export const EXCLUDES = ['./*/tmp', './*/home/.cache', './*/home/.npm', `./${LIVE_STAGE}`];

function asUid(uid: number, argv: string[]): string[] {
  return [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--', ...argv];
}

/**
 * A tar.gz of `dir` as a stream, read as `uid`. `exact`: everything, nothing excluded (a warm-resume
 * snapshot: the restored processes hold files open, CRIU checks them). The stream errors when tar fails;
 * `onEnd` runs once tar is done either way (clean-up of a stage).
 */
export function packStream(dir: string, uid: number, opts: { exact?: boolean; onEnd?: () => Promise<void> } = {}): Readable {
  const out = new PassThrough();
  const c = spawn('setpriv', asUid(uid, ['tar', '-C', dir, ...(opts.exact ? [] : EXCLUDES.map((e) => `--exclude=${e}`)), '-czf', '-', '.']), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' },
  });
  let err = '';
  c.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
  c.stdout.pipe(out, { end: false });
  const finish = (e: Error | undefined) => {
    void (opts.onEnd?.() ?? Promise.resolve()).finally(() => (e ? out.destroy(e) : out.end()));
  };
  c.on('error', (e) => finish(e));
  c.on('close', (code) => finish(code === 0 ? undefined : new Error(`tar exited with ${code}: ${err.trim()}`)));
  return out;
}

/** Writes a tar.gz of `dir` to `destFile` (created by us, 0600). */
export async function packState(dir: string, uid: number, destFile: string, opts: { exact?: boolean } = {}): Promise<void> {
  const fh = await open(destFile, 'w', 0o600);
  try {
    await pipeline(packStream(dir, uid, opts), fh.createWriteStream({ autoClose: false }));
  } finally {
    await fh.close();
  }
}

/** Replaces the contents of `dir` (owned by `uid`) with the archive's. */
export async function unpackState(archive: Readable, dir: string, uid: number): Promise<void> {
  // rm does not follow symlinks: only entries inside dir go.
  for (const n of await readdir(dir)) await rm(path.join(dir, n), { recursive: true, force: true });
  const c = spawn('setpriv', asUid(uid, ['tar', '-C', dir, '--no-same-owner', '-xzf', '-']), {
    stdio: ['pipe', 'ignore', 'pipe'],
    env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' },
  });
  let err = '';
  c.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
  const exited = new Promise<void>((resolve, reject) => {
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar exited with ${code}: ${err.trim()}`))));
  });
  // tar may exit early (a corrupt archive) and close its stdin: its exit status is the error to report.
  await Promise.all([pipeline(archive, c.stdin).catch(() => undefined), exited]);
}
