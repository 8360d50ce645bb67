/**
 * The archive of a STOPPED gateway's state (issue 7): a tar.gz of the instance's work directory, one
 * state dir per executor (openclaw.json, SQLite databases, workspace). Consistent by construction: no
 * gateway is writing (never live SQLite files, openclaw-runtime.md §3). A RUNNING gateway's archive has
 * the same layout, packed from what OpenClaw's own `backup create` wrote (the driver's archiveLiveState). Both directions run tar as the
 * tenant's own unprivileged uid, so a symlink or special file the tenant planted can reach nothing the
 * tenant could not reach anyway.
 */
import { spawn } from 'node:child_process';
import { open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';

/** Where a live backup stages OpenClaw's archives in the tenant's work dir (driver); never archived itself. */
export const LIVE_STAGE = '.clawplane-backup';

// Regenerable per OpenClaw (locks, compile cache): `openclaw backup create` skips them too.
const EXCLUDES = ['./*/tmp', './*/home/.cache', './*/home/.npm', `./${LIVE_STAGE}`];

function asUid(uid: number, argv: string[]): string[] {
  return [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--', ...argv];
}

function run(argv: string[], stdin: number | 'ignore', stdout: number | 'ignore'): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn('setpriv', argv, { stdio: [stdin, stdout, 'pipe'], env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
    let err = '';
    c.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar exited with ${code}: ${err.trim()}`))));
  });
}

/**
 * Writes a tar.gz of `workDir` to `destFile` (created by us, 0600). `exact`: everything, nothing
 * excluded (a warm-resume snapshot, issue 10: the restored processes hold files open, CRIU checks them).
 */
export async function packState(workDir: string, uid: number, destFile: string, opts: { exact?: boolean } = {}): Promise<void> {
  const out = await open(destFile, 'w', 0o600);
  try {
    await run(asUid(uid, ['tar', '-C', workDir, ...(opts.exact ? [] : EXCLUDES.map((e) => `--exclude=${e}`)), '-czf', '-', '.']), 'ignore', out.fd);
  } finally {
    await out.close();
  }
}

/** Replaces the contents of `workDir` (owned by `uid`) with the archive's. */
export async function unpackState(archiveFile: string, workDir: string, uid: number): Promise<void> {
  // rm does not follow symlinks: only entries inside workDir go.
  for (const n of await readdir(workDir)) await rm(path.join(workDir, n), { recursive: true, force: true });
  const input = await open(archiveFile, 'r');
  try {
    await run(asUid(uid, ['tar', '-C', workDir, '--no-same-owner', '-xzf', '-']), input.fd, 'ignore');
  } finally {
    await input.close();
  }
}
