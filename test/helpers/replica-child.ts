/**
 * Starts test/fixtures/replica-tasks-child.ts (a replica with a STAND-IN task executor) as its own OS process,
 * for test/replicas-tasks.test.ts and `npm run bench -- replicas`. No node:test hooks here: the caller stops it
 * with `stop()` (the test from an `after` hook, the bench when a round ends).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const fixture = path.resolve(import.meta.dirname, '../fixtures/replica-tasks-child.ts');

export interface ReplicaChild {
  name: string;
  url: string;
  replica: string;
  kill(signal: NodeJS.Signals): Promise<void>;
  /** SIGTERM, then its data directory removed. */
  stop(): Promise<void>;
  /** With `seed`: the tenant, its admin token and the task that needs approval. */
  seeded: Promise<{ tenantId: string; slug: string; approvalId: string; token: string }>;
  /** With `seed`: the ids of the tasks it created. */
  created: Promise<string[]>;
}

export async function startReplicaChild(o: {
  name: string;
  databaseUrl: string;
  secretKey: string;
  seed?: number;
  env?: Record<string, string>;
}): Promise<ReplicaChild> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `clawplane-${o.name}-`));
  const args = [fixture, o.databaseUrl, dataDir, o.secretKey, ...(o.seed !== undefined ? ['seed', String(o.seed)] : [])];
  const p = spawn(process.execPath, args, { env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stderr.on('data', (c: Buffer) => (err += c.toString()));
  p.stdout.on('data', (c: Buffer) => (out += c.toString()));
  let gone = false;
  const closed = new Promise<void>((r) => p.once('close', () => ((gone = true), r())));
  const lines = (): Record<string, unknown>[] =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  // What the child printed, once it has; an error if it exits first.
  const wait = async <T>(pick: (l: Record<string, unknown>[]) => T | undefined): Promise<T> => {
    for (;;) {
      const v = pick(lines());
      if (v !== undefined) return v;
      if (gone) throw new Error(`${o.name} exited before it printed what was awaited:\n${err.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async (signal: NodeJS.Signals) => {
    if (p.exitCode === null && p.signalCode === null) p.kill(signal);
    await closed;
  };
  const stop = async () => {
    await kill('SIGTERM');
    await rm(dataDir, { recursive: true, force: true });
  };
  const listening = await wait((l) => l.find((x) => typeof x['url'] === 'string') as { url: string; replica: string } | undefined).catch(async (e: unknown) => {
    await stop();
    throw e;
  });
  const seeded = wait((l) => l.find((x) => typeof x['approvalId'] === 'string') as Awaited<ReplicaChild['seeded']> | undefined);
  const created = wait((l) => l.find((x) => Array.isArray(x['ids']))?.['ids'] as string[] | undefined);
  seeded.catch(() => undefined);
  created.catch(() => undefined);
  return { name: o.name, url: listening.url, replica: listening.replica, kill, stop, seeded, created };
}
