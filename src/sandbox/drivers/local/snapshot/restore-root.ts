import { chmod, lstat, mkdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * The directory CRIU binds as a restored sandbox's root (`criu restore --root`, issue 10).
 *
 * A bubblewrap sandbox's / is a tmpfs holding only mount points and symlinks; CRIU never puts the
 * root mount in its image (it expects the container's rootfs to be given back), so on restore it binds
 * this directory there and mounts everything else on top, as dumped. It must therefore hold the same
 * mount points and symlinks as bubblewrap made, with the same modes for any directory a process holds
 * open (its cwd: CRIU compares modes, "File tenant has bad mode 040755 (expect 040700)"). bubblewrap
 * creates the parents of a bind destination 0700, so a suspendable sandbox creates them first with
 * `--perms 0755 --dir` (suspendableDirArgs) and everything here is root-owned 0755: nothing in it is the
 * tenant's, and Criu.restore binds it read-only, nosuid and nodev.
 */

/** Destinations and symlinks that bubblewrap arguments create in the sandbox's /. */
export function rootLayout(bwrapArgs: string[]): { dirs: string[]; symlinks: { target: string; link: string }[] } {
  const dirs = new Set<string>();
  const symlinks: { target: string; link: string }[] = [];
  // Options and how many arguments each takes; the ones that name a destination in the new root are handled below.
  const skip: Record<string, number> = {
    '--uid': 1,
    '--gid': 1,
    '--hostname': 1,
    '--info-fd': 1,
    '--json-status-fd': 1,
    '--seccomp': 1,
    '--add-seccomp-fd': 1,
    '--userns-block-fd': 1,
    '--block-fd': 1,
    '--sync-fd': 1,
    '--lock-file': 1,
    '--exec-label': 1,
    '--file-label': 1,
    '--setenv': 2,
    '--unsetenv': 1,
    '--chdir': 1,
    '--argv0': 1,
    '--cap-add': 1,
    '--cap-drop': 1,
    '--perms': 1,
    '--size': 1,
    '--remount-ro': 1,
    '--userns': 1,
    '--userns2': 1,
    '--pidns': 1,
    '--args': 1,
  };
  const one = new Set(['--proc', '--dev', '--tmpfs', '--mqueue', '--dir']);
  const two = new Set([
    '--bind',
    '--ro-bind',
    '--dev-bind',
    '--bind-try',
    '--ro-bind-try',
    '--dev-bind-try',
    '--file',
    '--bind-data',
    '--ro-bind-data',
    '--chmod',
  ]);
  for (let i = 0; i < bwrapArgs.length; i++) {
    const a = bwrapArgs[i] ?? '';
    if (!a.startsWith('--')) break; // the command
    if (a === '--symlink') {
      symlinks.push({ target: bwrapArgs[i + 1] ?? '', link: bwrapArgs[i + 2] ?? '' });
      i += 2;
    } else if (one.has(a)) {
      dirs.add(bwrapArgs[++i] ?? '');
    } else if (two.has(a)) {
      if (a !== '--chmod' && a !== '--file' && a !== '--bind-data' && a !== '--ro-bind-data') dirs.add(bwrapArgs[i + 2] ?? '');
      i += 2;
    } else {
      i += skip[a] ?? 0;
    }
  }
  return { dirs: [...dirs].filter((d) => d !== '' && d !== '/'), symlinks };
}

/** Creates (or re-creates) the restore root for a sandbox built with these bubblewrap arguments. */
export async function prepareRestoreRoot(dir: string, bwrapArgs: string[]): Promise<void> {
  const { dirs, symlinks } = rootLayout(bwrapArgs);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o755 });
  for (const d of dirs) {
    const rel = path.posix.normalize(d).replace(/^\/+/, '');
    if (rel.startsWith('..')) throw new Error(`bad sandbox path ${d}`);
    // Every level 0755, whatever the umask (mkdir's mode is masked).
    let cur = dir;
    for (const part of rel.split('/')) {
      cur = path.join(cur, part);
      await mkdir(cur, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      await chmod(cur, 0o755);
    }
  }
  for (const s of symlinks) {
    const at = path.join(dir, path.posix.normalize(s.link).replace(/^\/+/, ''));
    if (!(await lstat(at).catch(() => undefined))) await symlink(s.target, at);
  }
  await chmod(dir, 0o755);
}

/**
 * bubblewrap arguments that create the parent directories of these destinations 0755 (bubblewrap's
 * default is 0700), so that prepareRestoreRoot's root-owned 0755 tree matches the dumped modes.
 * Put them before the binds.
 */
export function suspendableDirArgs(destinations: string[]): string[] {
  const parents = new Set<string>();
  for (const d of destinations) {
    let p = path.posix.dirname(path.posix.normalize(d));
    while (p !== '/' && p !== '.') {
      parents.add(p);
      p = path.posix.dirname(p);
    }
  }
  return [...parents].sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b)).flatMap((p) => ['--perms', '0755', '--dir', p]);
}
