import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';

/**
 * The first existing directory on the way to `target` that other users may not pass (no o+x bit), if
 * any. As root, the embedded PostgreSQL runs as the `postgres` user and sandboxes as tenant uids: the
 * kernel checks the search bit of every parent for them, so a checkout in /root (0700) or in a
 * `mktemp -d` folder (0700) is out of their reach however open the files below it are.
 * `includeSelf` also checks `target` itself (a directory Clawplane does not create or chmod).
 */
export function blockedAncestor(target: string, opts: { includeSelf?: boolean } = {}): string | undefined {
  let cur = path.resolve(target);
  const dirs: string[] = opts.includeSelf ? [cur] : [];
  for (let parent = path.dirname(cur); parent !== cur; cur = parent, parent = path.dirname(cur)) dirs.push(parent);
  for (const dir of dirs.reverse()) {
    let mode: number;
    try {
      mode = statSync(dir).mode;
    } catch {
      continue; // Not there yet: Clawplane creates it 0711.
    }
    if ((mode & 0o001) === 0) return dir;
  }
  return undefined;
}

/**
 * Where a directory below the data directory that other users must reach goes: `<dataDir>/<name>`
 * when they can reach the data directory (or when not root, so every process is the caller's own), else
 * `<sharedDir>/<id>/<name>` with `id` derived from the data directory's absolute path, so two checkouts
 * never share a cluster or a sandbox tree.
 */
export function reachableDir(dataDir: string, name: string, sharedDir: string): { dir: string; blockedBy: string | undefined } {
  const local = path.resolve(dataDir, name);
  if (process.getuid?.() !== 0) return { dir: local, blockedBy: undefined };
  const blockedBy = blockedAncestor(dataDir);
  if (blockedBy === undefined) return { dir: local, blockedBy };
  return { dir: path.join(path.resolve(sharedDir), dataDirId(dataDir), name), blockedBy };
}

/** A short stable id of a data directory (its absolute path). */
export function dataDirId(dataDir: string): string {
  return createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 16);
}
