import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { afterCommit, type Queryable } from '../db/pool.ts';
import type { ClawplaneEvents, EventName } from './types.ts';

/** The PostgreSQL channel every replica listens on (one for all events: one LISTEN connection per process). */
export const PG_CHANNEL = 'clawplane_events';

/** How often the listening connection is probed: a dead TCP peer is otherwise noticed only by keepalive. */
const PROBE_MS = 2_000;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5_000;

interface Envelope {
  /** The process that published (its own notifications come back over LISTEN and are skipped). */
  o: string;
  n: EventName;
  p: unknown;
}

type Handler<K extends EventName> = (payload: ClawplaneEvents[K], origin: 'local' | 'remote') => void | Promise<void>;

/**
 * The typed event channel (docs/adr/0009-replica-coordination.md): what one process changes, every process
 * learns. `publish` sends a PostgreSQL NOTIFY in the writer's transaction (so it is delivered exactly when the
 * change commits, and never for a rollback) and delivers to this process's handlers after the commit. Other
 * processes receive it on their LISTEN connection.
 *
 * Caches that guard security read `live`: while this process is not listening (not started, or its connection
 * was lost) notifications may be missed, so they bypass themselves and read the database. Every loss and every
 * recovery fires `reset` (drop everything), and bumps `epoch` so a load that straddled it is not cached.
 */
export class EventChannel {
  readonly origin: string;
  readonly #url: string | undefined;
  readonly #log: Logger;
  readonly #handlers = new Map<EventName, Set<Handler<EventName>>>();
  readonly #resets = new Set<(reason: string) => void>();
  #client: pg.Client | undefined;
  #live: boolean;
  #epoch = 0;
  #stopped = false;
  #retryMs = RETRY_MIN_MS;
  #timer: NodeJS.Timeout | undefined;
  #probe: NodeJS.Timeout | undefined;
  #connecting: Promise<void> | undefined;

  /**
   * `url` is the database whose notifications are shared; without one the channel is in-process only and always
   * live (a single process with no peers, as in unit tests).
   */
  constructor(opts: { url?: string; log: Logger; origin?: string }) {
    this.#url = opts.url;
    this.#log = opts.log.child({ component: 'events' });
    this.origin = opts.origin ?? randomUUID();
    this.#live = opts.url === undefined;
  }

  /** An in-process channel: for one process that shares nothing (unit tests, a CLI that caches nothing). */
  static local(log: Logger): EventChannel {
    return new EventChannel({ log });
  }

  /** True while every change made anywhere reaches this process: caches may serve. */
  get live(): boolean {
    return this.#live;
  }

  /** Bumped on every reset and every delivered event: a cache fill that began in an older epoch must not be stored. */
  get epoch(): number {
    return this.#epoch;
  }

  on<K extends EventName>(name: K, handler: Handler<K>): () => void {
    let set = this.#handlers.get(name);
    if (!set) this.#handlers.set(name, (set = new Set()));
    set.add(handler as Handler<EventName>);
    return () => set.delete(handler as Handler<EventName>);
  }

  /** Called when notifications may have been missed (connection lost or regained): drop every cached entry. */
  onReset(fn: (reason: string) => void): () => void {
    this.#resets.add(fn);
    return () => this.#resets.delete(fn);
  }

  /**
   * Publishes an event with what `q` writes: in a transaction the NOTIFY commits (or rolls back) with it and
   * local handlers run after COMMIT; on the pool both happen now.
   */
  async publish<K extends EventName>(q: Queryable, name: K, payload: ClawplaneEvents[K]): Promise<void> {
    if (this.#url !== undefined) {
      const env: Envelope = { o: this.origin, n: name, p: payload };
      await q.query('SELECT pg_notify($1, $2)', [PG_CHANNEL, JSON.stringify(env)]);
    }
    afterCommit(q, () => this.#deliver(name, payload, 'local'));
  }

  /** Connects the LISTEN connection; resolves once listening (or throws when the database cannot be reached). */
  async start(): Promise<void> {
    if (this.#url === undefined) return;
    this.#stopped = false;
    await this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearInterval(this.#probe);
    const c = this.#client;
    this.#client = undefined;
    if (this.#url !== undefined) this.#live = false;
    await c?.end().catch(() => undefined);
  }

  #connect(): Promise<void> {
    this.#connecting ??= (async () => {
      const client = new pg.Client({
        connectionString: this.#url,
        application_name: `clawplane-events:${this.origin}`.slice(0, 63),
        connectionTimeoutMillis: 5_000,
        keepAlive: true,
      });
      client.on('error', (err) => this.#lost(client, err.message));
      client.on('end', () => this.#lost(client, 'connection closed'));
      client.on('notification', (m) => {
        if (m.channel === PG_CHANNEL && m.payload !== undefined) this.#receive(m.payload);
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${PG_CHANNEL}`);
      } catch (err) {
        await client.end().catch(() => undefined);
        throw err;
      }
      if (this.#stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      this.#client = client;
      this.#retryMs = RETRY_MIN_MS;
      // Whatever was cached before (or loaded while down) may have missed notifications.
      this.#reset('listening again');
      this.#live = true;
      clearInterval(this.#probe);
      this.#probe = setInterval(() => {
        client.query('SELECT 1').catch((err: unknown) => this.#lost(client, (err as Error).message));
      }, PROBE_MS);
      this.#probe.unref();
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  #lost(client: pg.Client, why: string): void {
    if (client !== this.#client) return;
    this.#client = undefined;
    this.#live = false;
    clearInterval(this.#probe);
    client.end().catch(() => undefined);
    if (this.#stopped) return;
    this.#log.warn({ reason: why }, 'event channel lost its database connection: shared caches are bypassed (reads go to the database) until it is back');
    this.#reset('notification connection lost');
    this.#schedule();
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#connect().then(
        () => this.#log.info('event channel listening again: shared caches are back in use'),
        (err: unknown) => {
          this.#log.debug({ err: (err as Error).message }, 'event channel: reconnect failed; will retry');
          this.#retryMs = Math.min(this.#retryMs * 2, RETRY_MAX_MS);
          if (!this.#stopped) this.#schedule();
        },
      );
    }, this.#retryMs);
    this.#timer.unref();
  }

  #reset(reason: string): void {
    this.#epoch++;
    for (const fn of this.#resets) {
      try {
        fn(reason);
      } catch (err) {
        this.#log.error({ err: (err as Error).message }, 'event channel: a reset handler failed');
      }
    }
  }

  #receive(raw: string): void {
    let env: Envelope;
    try {
      env = JSON.parse(raw) as Envelope;
    } catch {
      this.#log.warn('event channel: ignored a notification that is not JSON');
      return;
    }
    if (env.o === this.origin) return;
    this.#deliver(env.n, env.p as ClawplaneEvents[EventName], 'remote');
  }

  #deliver<K extends EventName>(name: K, payload: ClawplaneEvents[K], origin: 'local' | 'remote'): void {
    // A cache fill that read before this change must not store what it read (events are rare: config changes).
    this.#epoch++;
    for (const h of this.#handlers.get(name) ?? []) {
      try {
        const r = (h as Handler<K>)(payload, origin);
        if (r instanceof Promise) r.catch((err: unknown) => this.#log.error({ err: (err as Error).message, event: name }, 'event handler failed'));
      } catch (err) {
        this.#log.error({ err: (err as Error).message, event: name }, 'event handler failed');
      }
    }
  }
}
