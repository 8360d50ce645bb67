import { spawnSync } from 'node:child_process';
import { access, readFile, statfs } from 'node:fs/promises';
import path from 'node:path';
import { fail, ok, warn, type Finding } from './types.ts';

const APT = (pkg: string) => `apt-get install -y --no-install-recommends ${pkg} (as root: bash scripts/setup-system.sh does it)`;

/** bubblewrap on PATH, as the local driver runs it. */
export function checkBubblewrap(): Finding {
  const v = spawnSync('bwrap', ['--version'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return fail(`bwrap is not on PATH (${v.error?.message ?? v.stderr.trim()})`, APT('bubblewrap'));
  return ok(v.stdout.trim());
}

/** Unprivileged user namespaces, probed as the driver uses them (an unprivileged uid creating one). */
export function checkUserNamespaces(): Finding {
  if (process.getuid?.() !== 0)
    return fail('not root: the local driver drops each tenant to its own uid, which needs root', 'run clawplane serve (and doctor) as root');
  const max = spawnSync('cat', ['/proc/sys/user/max_user_namespaces'], { encoding: 'utf8' }).stdout.trim();
  const probe = spawnSync(
    'setpriv',
    [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      '--',
      'bwrap',
      '--unshare-all',
      '--unshare-user',
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
  if (probe.error || probe.status !== 0) {
    return fail(
      `an unprivileged uid cannot create a user namespace (${(probe.stderr || probe.error?.message || '').trim()}; user.max_user_namespaces=${max || '?'})`,
      'sysctl -w user.max_user_namespaces=15000; on Ubuntu also sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for bwrap)',
    );
  }
  return ok(`an unprivileged uid creates user namespaces (user.max_user_namespaces=${max})`);
}

/** cgroup v2 with memory and pids delegable to Clawplane's group (limits per sandbox). */
export async function checkCgroups(): Promise<Finding> {
  const controllers = await readFile('/sys/fs/cgroup/cgroup.controllers', 'utf8').catch(() => undefined);
  if (controllers === undefined)
    return warn(
      'cgroup v2 is not mounted at /sys/fs/cgroup (v1 hierarchies are used where root has them)',
      'boot with systemd.unified_cgroup_hierarchy=1 for per-sandbox memory and pids limits on cgroup v2',
    );
  const have = new Set(controllers.trim().split(/\s+/));
  const missing = ['memory', 'pids'].filter((c) => !have.has(c));
  if (missing.length > 0)
    return fail(
      `cgroup v2 lacks the ${missing.join(' and ')} controller(s): sandboxes would run without those limits`,
      'enable them in the parent cgroup (echo "+memory +pids" > <parent>/cgroup.subtree_control) or delegate them to the service (systemd: Delegate=yes)',
    );
  try {
    await access('/sys/fs/cgroup', 2);
  } catch {
    return fail(
      '/sys/fs/cgroup is not writable: sandboxes cannot get their own cgroup',
      'run as root with a writable cgroup2 mount, or delegate a subtree (systemd: Delegate=yes)',
    );
  }
  return ok(`cgroup v2 with ${[...have].filter((c) => ['memory', 'pids', 'cpu'].includes(c)).join(', ')}`);
}

/** Free space where the data, sandboxes and runtimes live. */
export async function checkDisk(dirs: { label: string; dir: string }[]): Promise<Finding> {
  const parts: string[] = [];
  let worst: Finding | undefined;
  for (const { label, dir } of dirs) {
    let probe = path.resolve(dir);
    let s: Awaited<ReturnType<typeof statfs>> | undefined;
    for (;;) {
      s = await statfs(probe).catch(() => undefined);
      if (s || path.dirname(probe) === probe) break;
      probe = path.dirname(probe); // not created yet: its parent's file system
    }
    if (!s) continue;
    const free = s.bavail * s.bsize;
    const pct = (100 * s.bavail) / s.blocks;
    parts.push(`${label} ${(free / 2 ** 30).toFixed(1)} GiB free (${pct.toFixed(0)}%)`);
    if (free < 2 ** 30 || pct < 5)
      worst = fail(
        `${label} (${dir}) has ${(free / 2 ** 20).toFixed(0)} MiB free (${pct.toFixed(1)}%)`,
        `free space on that file system, or move ${label} elsewhere; a gateway pull alone needs ~400 MB`,
      );
    else if (!worst && pct < 10) worst = warn(`${label} (${dir}) is ${(100 - pct).toFixed(0)}% full`, 'free space before it fills up');
  }
  return worst ?? ok(parts.join('; '));
}
