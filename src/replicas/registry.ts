import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Role } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import { ClawplaneError } from '../errors.ts';

/** A replica as platform admins see it (GET /api/v1/platform/replicas). */
export interface ReplicaInfo {
  id: string;
  roles: string[];
  node: string;
  hostname: string;
  pid: number;
  version: string;
  startedAt: string;
  heartbeatAt: string;
  stoppedAt: string | null;
  /** live: heartbeat within the expiry; stopped: shut down cleanly; expired: silent (crashed or cut off). */
  state: 'live' | 'stopped' | 'expired';
  /** The replica that recovered this one's workflows after it died, and how many. */
  recoveredBy: string | null;
  recoveredAt: string | null;
  recoveredWorkflows: number | null;
  /** This is the replica that answered. */
  self: boolean;
}

interface Row {
  id: string;
  roles: string[];
  node: string;
  hostname: string;
  pid: number;
  version: string;
  started_at: Date;
  heartbeat_at: Date;
  stopped_at: Date | null;
  recovered_by: string | null;
  recovered_at: Date | null;
  recovered_workflows: number | null;
  expired: boolean;
}

export class ReplicaConflictError extends ClawplaneError {
  constructor(message: string) {
    super('replica_id_in_use', 409, message);
  }
}

const REPLICA_ID_FILE = 'replica-id';

/**
 * This process's replica id: the configured one, else one generated once and kept in the data directory, so a
 * restart (even after kill -9) is the same replica and recovers its own workflows at once (DBOS recovers the
 * pending workflows of its own executor id at launch).
 */
export async function resolveReplicaId(configured: string | undefined, dataDir: string): Promise<string> {
  if (configured) return configured;
  const file = path.join(dataDir, REPLICA_ID_FILE);
  try {
    const id = (await readFile(file, 'utf8')).trim();
    if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(id)) return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const host =
    os
      .hostname()
      .toLowerCase()
      .replace(/[^a-z0-9_.-]/g, '-')
      .replace(/^[^a-z0-9]+/, '')
      .slice(0, 40) || 'replica';
  const id = `${host}-${randomBytes(4).toString('hex')}`;
  await mkdir(dataDir, { recursive: true, mode: 0o711 });
  await writeFile(file, id + '\n', { mode: 0o644 });
  return id;
}

export interface ReplicaRegistryOptions {
  db: Db;
  log: Logger;
  id: string;
  roles: readonly Role[];
  node: string;
  version: string;
  heartbeatMs: number;
  expireMs: number;
  /** Recovers the pending durable workflows of a dead replica's executor; resolves with how many. */
  recoverWorkflows?: (replicaId: string) => Promise<number>;
}

/**
 * The replica registry (table `replicas`): each process registers itself, renews a heartbeat, and takes over
 * dead peers: the first live replica to claim a dead one (an UPDATE only one can win) recovers its workflows,
 * so they run again exactly once (docs/adr/0009-replica-coordination.md).
 */
export class ReplicaRegistry {
  readonly id: string;
  readonly #o: ReplicaRegistryOptions;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;
  #takingOver: Promise<void> | undefined;

  constructor(o: ReplicaRegistryOptions) {
    this.#o = o;
    this.id = o.id;
  }

  /**
   * Registers this process. Refuses when another live process holds the same id (two processes sharing one
   * data directory or one CLAWPLANE_REPLICA_ID would recover each other's running workflows).
   */
  async register(): Promise<void> {
    const { db, id, roles, node, version, expireMs } = this.#o;
    await db.tx(async (tx) => {
      const cur = await tx.query<Row>(`SELECT *, heartbeat_at < now() - make_interval(secs => $2) AS expired FROM replicas WHERE id = $1 FOR UPDATE`, [
        id,
        expireMs / 1000,
      ]);
      const prev = cur.rows[0];
      if (prev && prev.stopped_at === null && !prev.expired && !(prev.hostname === os.hostname() && !pidAlive(prev.pid))) {
        throw new ReplicaConflictError(
          `Replica id "${id}" is in use by a live process (pid ${prev.pid} on ${prev.hostname}, last heartbeat at ${prev.heartbeat_at.toISOString()}). Give each replica its own data directory or CLAWPLANE_REPLICA_ID.`,
        );
      }
      await tx.query(
        `INSERT INTO replicas (id, roles, node, hostname, pid, version) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET roles = EXCLUDED.roles, node = EXCLUDED.node, hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
           version = EXCLUDED.version, started_at = now(), heartbeat_at = now(), stopped_at = NULL,
           recovered_by = NULL, recovered_at = NULL, recovered_workflows = NULL`,
        [id, [...roles], node, os.hostname(), process.pid, version],
      );
    });
  }

  /**
   * Starts the heartbeat (and the takeover of dead peers, when this replica runs workflows). The two run
   * apart: recovering a dead peer's many workflows can take longer than the expiry, and a heartbeat waiting
   * behind it would make this replica look dead in turn, so that a third one took over its workflows too.
   */
  start(): void {
    const tick = () => {
      this.#beating ??= this.heartbeat()
        .catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'replica heartbeat failed; will retry'))
        .finally(() => (this.#beating = undefined));
      if (!this.#o.recoverWorkflows) return;
      this.#takingOver ??= this.takeOverAll()
        .catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'taking over a dead replica failed; will retry'))
        .finally(() => (this.#takingOver = undefined));
    };
    this.#timer = setInterval(tick, this.#o.heartbeatMs);
    this.#timer.unref();
    tick();
  }

  /** One heartbeat, then one look for dead peers to take over. */
  async beat(): Promise<void> {
    await this.heartbeat();
    await this.takeOverAll();
  }

  /**
   * Renews this replica's heartbeat. If peers found it silent past the expiry and took over its workflows
   * while it lived (a stall longer than CLAWPLANE_REPLICA_EXPIRE_MS), its executions of those workflows have
   * lost them to the new owner (DBOS refuses their next checkpoint and they stop; see `ownershipLost`): it
   * says so, and clears the mark so that it can be taken over again should it die for real.
   */
  async heartbeat(): Promise<void> {
    const r = await this.#o.db.query<{ recovered_by: string | null }>(
      `WITH before AS (SELECT recovered_by FROM replicas WHERE id = $1 FOR UPDATE)
       UPDATE replicas SET heartbeat_at = now(), stopped_at = NULL, recovered_by = NULL, recovered_at = NULL, recovered_workflows = NULL
        WHERE id = $1 RETURNING (SELECT recovered_by FROM before) AS recovered_by`,
      [this.id],
    );
    const by = r.rows[0]?.recovered_by;
    if (by) {
      this.#o.log.error(
        { replica: this.id, recoveredBy: by, expireMs: this.#o.expireMs },
        'this replica was silent longer than the expiry and another replica took over its workflows while it was alive: its own executions of them stop at their next step. Raise CLAWPLANE_REPLICA_EXPIRE_MS if this machine stalls that long.',
      );
    }
  }

  async takeOverAll(): Promise<void> {
    while ((await this.takeOverOne()) !== undefined) continue;
  }

  /**
   * Claims one dead replica (stopped, or silent longer than the expiry) not yet taken over, and recovers its
   * workflows. The claim is one UPDATE with SKIP LOCKED: of several live replicas looking at once, one wins.
   */
  async takeOverOne(): Promise<string | undefined> {
    const { db, log, expireMs } = this.#o;
    const r = await db.query<{ id: string }>(
      `UPDATE replicas SET recovered_by = $1, recovered_at = now()
        WHERE id = (SELECT id FROM replicas
                     WHERE id <> $1 AND recovered_by IS NULL AND (stopped_at IS NOT NULL OR heartbeat_at < now() - make_interval(secs => $2))
                     ORDER BY heartbeat_at LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id`,
      [this.id, expireMs / 1000],
    );
    const dead = r.rows[0]?.id;
    if (!dead || !this.#o.recoverWorkflows) return dead;
    try {
      const n = await this.#o.recoverWorkflows(dead);
      await db.query('UPDATE replicas SET recovered_workflows = $2 WHERE id = $1 AND recovered_by = $3', [dead, n, this.id]);
      log.info({ replica: dead, workflows: n }, 'took over a dead replica: its pending workflows are queued to run again');
    } catch (err) {
      // Give the claim back: another replica (or the next beat) tries again.
      await db
        .query('UPDATE replicas SET recovered_by = NULL, recovered_at = NULL WHERE id = $1 AND recovered_by = $2', [dead, this.id])
        .catch(() => undefined);
      throw err;
    }
    return dead;
  }

  async list(): Promise<ReplicaInfo[]> {
    const r = await this.#o.db.query<Row>(
      `SELECT *, heartbeat_at < now() - make_interval(secs => $1) AS expired FROM replicas
        ORDER BY (stopped_at IS NULL) DESC, started_at DESC LIMIT 500`,
      [this.#o.expireMs / 1000],
    );
    return r.rows.map((x) => ({
      id: x.id,
      roles: x.roles,
      node: x.node,
      hostname: x.hostname,
      pid: x.pid,
      version: x.version,
      startedAt: x.started_at.toISOString(),
      heartbeatAt: x.heartbeat_at.toISOString(),
      stoppedAt: x.stopped_at?.toISOString() ?? null,
      state: x.stopped_at ? 'stopped' : x.expired ? 'expired' : 'live',
      recoveredBy: x.recovered_by,
      recoveredAt: x.recovered_at?.toISOString() ?? null,
      recoveredWorkflows: x.recovered_workflows,
      self: x.id === this.id,
    }));
  }

  /** Stops the heartbeat and records a clean stop (its leftover workflows are taken over at once). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await Promise.all([this.#beating, this.#takingOver]);
    await this.#o.db
      .query('UPDATE replicas SET stopped_at = now() WHERE id = $1', [this.id])
      .catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'could not record the replica stop'));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
