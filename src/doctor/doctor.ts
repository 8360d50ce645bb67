import type { Config } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import type { InstanceRow } from '../instances/instances.ts';
import type { RuntimeStore } from '../runtime/store.ts';
import type { SandboxDriver } from '../sandbox/types.ts';
import { checkClock, checkDatabase, checkLatency, checkMigrations } from './database.ts';
import { checkBubblewrap, checkCgroups, checkDisk, checkUserNamespaces } from './host.ts';
import { checkLaneRuns, checkLaneSchedules } from './lanes.ts';
import { checkListeners, clawplanePids } from './listeners.ts';
import { checkBroker, checkCriu, checkRuntimes, checkSandboxes, checkSecretKey } from './state.ts';
import { fail, skip, type DoctorCheck, type DoctorReport, type Finding } from './types.ts';

/** What the checks look at; anything absent is reported as not checked, with the reason. */
export interface DoctorDeps {
  config: Config;
  /** The database, or why it could not be opened. */
  db: Db | { error: string };
  runtimes: RuntimeStore;
  sandboxes: SandboxDriver;
  instances: { allForReconcile(): Promise<InstanceRow[]> } | undefined;
  /** Where the broker's per-sandbox sockets are. */
  brokerRunDir: string;
  /** Paths whose free space matters. */
  dirs: { label: string; dir: string }[];
  /** What the configuration asked to listen on (the server's bound address). */
  listen: { host: string; port: number }[];
  /** Processes of this control plane (default: this one and any `clawplane serve` on the host). */
  ownPids?: Set<number>;
  /** Re-hash every runtime file against its manifest (slow: hundreds of MB). */
  full?: boolean;
}

/**
 * `clawplane doctor`: every prerequisite of the local driver, the database, the secret key, runtimes,
 * sandboxes, the broker, public listeners, disk space and the clock, each ok or failed with its fix.
 * A check that throws is a failed check, never a crashed doctor.
 */
export async function runDoctor(d: DoctorDeps): Promise<DoctorReport> {
  const db = 'error' in d.db ? undefined : d.db;
  const noDb = skip('the database is unreachable');
  const checks: [string, string, () => Promise<Finding> | Finding][] = [
    ['sandbox.bubblewrap', 'bubblewrap', () => checkBubblewrap()],
    ['sandbox.userns', 'user namespaces', () => checkUserNamespaces()],
    ['sandbox.cgroups', 'cgroup v2 delegation', () => checkCgroups()],
    ['sandbox.criu', 'CRIU (warm resume)', () => checkCriu(d.sandboxes, d.config.instances.warmResume)],
    [
      'database.reachable',
      'database reachable',
      () =>
        db
          ? checkDatabase(db)
          : fail(
              `cannot connect: ${'error' in d.db ? d.db.error : ''}`,
              d.config.databaseUrl
                ? 'start PostgreSQL or correct DATABASE_URL'
                : 'start the embedded PostgreSQL with clawplane serve; its log is <data dir>/pg/server.log',
            ),
    ],
    ['database.migrations', 'migrations', () => (db ? checkMigrations(db) : noDb)],
    ['database.latency', 'database latency', () => (db ? checkLatency(db) : noDb)],
    ['clock.skew', 'clock against the database', () => (db ? checkClock(db) : noDb)],
    ['secret.key', 'secret key', () => checkSecretKey(d.config)],
    ['runtimes', 'runtimes', () => checkRuntimes(d.runtimes, d.config.instances.runtimeDefaultVersion, d.full === true)],
    ['sandboxes', 'sandboxes', async () => (db && d.instances ? checkSandboxes(d.sandboxes, await d.instances.allForReconcile()) : noDb)],
    ['broker', 'broker', () => checkBroker(d.brokerRunDir)],
    ['lanes.schedules', 'lane schedules', () => (db ? checkLaneSchedules(db, d.config.lanes.tickMs) : noDb)],
    ['lanes.runs', 'lane runs', () => (db ? checkLaneRuns(db) : noDb)],
    ['network.listeners', 'public listeners', async () => checkListeners({ asked: d.listen, ownPids: d.ownPids ?? (await clawplanePids()) })],
    ['disk', 'disk space', () => checkDisk(d.dirs)],
  ];
  const out: DoctorCheck[] = [];
  for (const [id, title, run] of checks) {
    let f: Finding;
    try {
      f = await run();
    } catch (err) {
      f = fail(`the check failed: ${(err as Error).message}`, 'see the message; run clawplane doctor again once it is fixed');
    }
    out.push({ id, title, ...f });
  }
  return { ok: out.every((c) => c.status !== 'fail'), at: new Date().toISOString(), checks: out };
}

/** The report for people: ✓ ok, ! warn, ✗ fail, - skipped; each problem with its fix. */
export function formatReport(r: DoctorReport): string {
  const mark = { ok: '✓', warn: '!', fail: '✗', skip: '-' } as const;
  const lines = r.checks.map((c) => `${mark[c.status]} ${c.title}: ${c.detail}${c.fix && c.status !== 'ok' ? `\n    fix: ${c.fix}` : ''}`);
  const failed = r.checks.filter((c) => c.status === 'fail').length;
  lines.push(failed ? `${failed} check(s) failed` : 'all checks passed');
  return lines.join('\n') + '\n';
}
