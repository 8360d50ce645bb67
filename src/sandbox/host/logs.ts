/**
 * The logs the supervisor and gateways write into the instance's log directory (a tenant-writable
 * directory on this host): read without ever following a link the tenant planted, and only under the
 * names we write.
 */
import { constants } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { LogLine } from '../types.ts';

export async function tailLogs(logDir: string, tail: number): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for (const f of await logFiles(logDir)) {
    const text = await readTenantFile(f.file, 512 * 1024);
    const lines = text.split('\n').filter((l) => l !== '');
    if (text.length === 512 * 1024) lines.shift(); // a partial first line
    for (const line of lines.slice(-tail)) out.push({ source: f.source, line });
  }
  return out.slice(-tail * 4);
}

export async function followLogDir(logDir: string, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void> {
  const offsets = new Map<string, number>();
  for (const f of await logFiles(logDir)) offsets.set(f.file, await sizeNoFollow(f.file));
  const partial = new Map<string, string>();
  while (!signal.aborted) {
    await new Promise((r) => setTimeout(r, 500));
    for (const f of await logFiles(logDir)) {
      const size = await sizeNoFollow(f.file);
      const from = offsets.get(f.file) ?? 0;
      if (size < from) offsets.set(f.file, 0); // truncated or replaced
      if (size <= from) continue;
      const chunk = await readTenantRange(f.file, from, Math.min(size - from, 1 << 20));
      offsets.set(f.file, from + Buffer.byteLength(chunk));
      const lines = ((partial.get(f.file) ?? '') + chunk).split('\n');
      partial.set(f.file, lines.pop() ?? '');
      for (const line of lines) if (line !== '') onLine({ source: f.source, line });
    }
  }
}

async function logFiles(logDir: string): Promise<{ source: string; file: string }[]> {
  const names = await readdir(logDir).catch(() => [] as string[]);
  // Only names we write; a tenant may create others in its log dir, which we do not read.
  return names
    .filter((n) => n === 'supervisor.log' || /^[a-z0-9-]{1,32}\.log$/.test(n))
    .sort((a, b) => (a === 'supervisor.log' ? -1 : b === 'supervisor.log' ? 1 : a.localeCompare(b)))
    .map((n) => ({ source: n.replace(/\.log$/, ''), file: path.join(logDir, n) }));
}

/** Reads a file in a tenant-writable directory without following a symlink the tenant planted. */
export async function readTenantFile(file: string, maxBytes: number): Promise<string> {
  let fh;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return '';
  }
  try {
    const s = await fh.stat();
    if (!s.isFile()) return '';
    const len = Math.min(s.size, maxBytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, s.size - len);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}

async function readTenantRange(file: string, from: number, len: number): Promise<string> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await fh.stat()).isFile()) return '';
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, from);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

async function sizeNoFollow(file: string): Promise<number> {
  try {
    const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const s = await fh.stat();
      return s.isFile() ? s.size : 0;
    } finally {
      await fh.close();
    }
  } catch {
    return 0;
  }
}
