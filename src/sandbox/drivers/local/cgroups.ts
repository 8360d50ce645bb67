import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Memory, PID and CPU limits for one sandbox (issue 6). bubblewrap sets none, and rlimits are per
 * process (RLIMIT_DATA) or per uid (RLIMIT_NPROC), so the sandbox as a whole needs a cgroup. We use
 * what the host offers: cgroup v2 with the controllers delegated to us, or the v1 hierarchies
 * (memory, pids, cpu) when we are root. Whatever cannot be enforced is reported, never assumed.
 */
export interface CgroupLimits {
  memoryBytes: number;
  pids: number;
  /** CPU cores as a quota, e.g. 1.5; 0 = no CPU limit. */
  cpus: number;
}

export interface CgroupPlan {
  /** cgroup.procs files the sandbox's first process writes its pid into before exec. */
  procsFiles: string[];
  enforced: string[];
  notEnforced: string[];
  dirs: string[];
}

const ROOT = '/sys/fs/cgroup';
const GROUP = 'clawplane';

async function writable(p: string): Promise<boolean> {
  try {
    await access(p, 2);
    return true;
  } catch {
    return false;
  }
}

/** Creates the sandbox's cgroup(s) and writes the limits; never throws for an unsupported host. */
export async function prepareCgroup(sandboxId: string, limits: CgroupLimits): Promise<CgroupPlan> {
  const plan: CgroupPlan = { procsFiles: [], enforced: [], notEnforced: [], dirs: [] };
  const v2Controllers = await readFile(path.join(ROOT, 'cgroup.controllers'), 'utf8').catch(() => undefined);
  if (v2Controllers !== undefined) {
    const have = new Set(v2Controllers.trim().split(/\s+/));
    const parent = path.join(ROOT, GROUP);
    try {
      await mkdir(parent, { recursive: true });
      const want = ['memory', 'pids', 'cpu'].filter((c) => have.has(c));
      if (want.length > 0) await writeFile(path.join(parent, 'cgroup.subtree_control'), want.map((c) => `+${c}`).join(' '));
      const dir = path.join(parent, sandboxId);
      await mkdir(dir, { recursive: true });
      plan.dirs.push(dir);
      await setOr(plan, 'memory', have.has('memory'), () => writeFile(path.join(dir, 'memory.max'), String(limits.memoryBytes)));
      await setOr(plan, 'pids', have.has('pids'), () => writeFile(path.join(dir, 'pids.max'), String(limits.pids)));
      if (limits.cpus > 0) await setOr(plan, 'cpu', have.has('cpu'), () => writeFile(path.join(dir, 'cpu.max'), `${Math.round(limits.cpus * 100_000)} 100000`));
      plan.procsFiles.push(path.join(dir, 'cgroup.procs'));
    } catch (err) {
      plan.notEnforced.push(`cgroup v2: ${(err as Error).message}`);
    }
    return plan;
  }
  // cgroup v1: one hierarchy per controller.
  const v1: [string, string, () => string][] = [
    ['memory', 'memory.limit_in_bytes', () => String(limits.memoryBytes)],
    ['pids', 'pids.max', () => String(limits.pids)],
  ];
  if (limits.cpus > 0) v1.push(['cpu', 'cpu.cfs_quota_us', () => String(Math.round(limits.cpus * 100_000))]);
  for (const [ctrl, file, value] of v1) {
    const base = path.join(ROOT, ctrl);
    if (!(await writable(base))) {
      plan.notEnforced.push(`${ctrl}: ${base} is missing or not writable (run as root with the ${ctrl} cgroup mounted)`);
      continue;
    }
    try {
      const dir = path.join(base, GROUP, sandboxId);
      await mkdir(dir, { recursive: true });
      plan.dirs.push(dir);
      if (ctrl === 'cpu') await writeFile(path.join(dir, 'cpu.cfs_period_us'), '100000');
      await writeFile(path.join(dir, file), value());
      plan.procsFiles.push(path.join(dir, 'cgroup.procs'));
      plan.enforced.push(ctrl);
    } catch (err) {
      plan.notEnforced.push(`${ctrl}: ${(err as Error).message}`);
    }
  }
  return plan;
}

async function setOr(plan: CgroupPlan, name: string, available: boolean, set: () => Promise<void>): Promise<void> {
  if (!available) {
    plan.notEnforced.push(`${name}: controller not delegated to ${ROOT}/${GROUP}`);
    return;
  }
  await set();
  plan.enforced.push(name);
}

/** The groups of a sandbox that may exist, for removal after it stopped. */
export function cgroupDirs(sandboxId: string): string[] {
  return [path.join(ROOT, GROUP, sandboxId), ...['memory', 'pids', 'cpu'].map((c) => path.join(ROOT, c, GROUP, sandboxId))];
}

/** Removes empty cgroups of a stopped sandbox; a group still holding processes stays (EBUSY). */
export async function removeCgroup(sandboxId: string): Promise<void> {
  for (const d of cgroupDirs(sandboxId)) await rmdir(d).catch(() => undefined);
}

/** Current memory use of the sandbox's cgroup, when there is one (bench, health). */
export async function cgroupMemoryBytes(sandboxId: string): Promise<number | undefined> {
  for (const f of [path.join(ROOT, GROUP, sandboxId, 'memory.current'), path.join(ROOT, 'memory', GROUP, sandboxId, 'memory.usage_in_bytes')]) {
    const t = await readFile(f, 'utf8').catch(() => undefined);
    if (t !== undefined) return Number(t.trim());
  }
  return undefined;
}
