/** Process identity on this host: a sandbox is its init pid plus that pid's start time (a reused pid is not it). */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { SandboxRef } from '../../types.ts';

/** The local driver's part of a SandboxRef. */
export interface LocalNative {
  pid: number;
  /** Clock ticks since boot (/proc/<pid>/stat field 22). */
  pidStartTime: number;
}

export function nativeOf(ref: SandboxRef): LocalNative {
  const n = ref.native as Partial<LocalNative> | null;
  if (!n || typeof n.pid !== 'number' || typeof n.pidStartTime !== 'number')
    throw new Error(`sandbox ${ref.sandboxId} is not a local sandbox (driver ${ref.driver})`);
  return { pid: n.pid, pidStartTime: n.pidStartTime };
}

export async function pidStartTime(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Field 22 (starttime), counted after the parenthesised command name, which may contain spaces.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(rest[19]);
}

export async function pidAlive(n: LocalNative): Promise<boolean> {
  try {
    const st = await pidStartTime(n.pid);
    if (st !== n.pidStartTime) return false;
    const status = await readFile(`/proc/${n.pid}/status`, 'utf8');
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

export function tailSync(file: string): string {
  try {
    const r = spawnSync('tail', ['-c', '600', file], { encoding: 'utf8' });
    return r.stdout.trim();
  } catch {
    return '';
  }
}
