import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Http2Server, Http2SecureServer } from 'node:http2';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { createApp, type App } from '../api/app.ts';
import type { Config } from '../config/schema.ts';
import { resolveSecretKey } from '../config/secret-key.ts';
import { EmbeddedDatabase } from '../db/embedded.ts';
import { loadMigrations, migrate } from '../db/migrate.ts';
import { createDb, redactUrl, type Db } from '../db/pool.ts';
import { launchEngine, recoverExecutor, shutdownEngine } from '../durable/engine.ts';
import { bindSelfCheck } from '../durable/self-check.ts';
import { createMetrics } from '../observability/metrics.ts';
import { flushTracing, startTracing } from '../observability/tracing.ts';
import { EventChannel } from '../events/channel.ts';
import os from 'node:os';
import { ReplicaRegistry, resolveReplicaId } from '../replicas/registry.ts';
import { API_VERSION } from '../api/routes/docs.ts';
import { fileClock } from '../lanes/clock.ts';
import { createServices, type Services } from './services.ts';
import { roleParts, startParts } from './roles.ts';
import type { TaskExecutor } from '../tasks/types.ts';
import { runDoctor } from '../doctor/doctor.ts';
import { doctorDeps } from '../doctor/setup.ts';
import { WebSocketServer } from 'ws';
import { ingressSettings } from '../ingress/setup.ts';
import { instanceSettings } from '../instances/setup.ts';

export interface RunningServer {
  url: string;
  app: App;
  db: Db;
  services: Services;
  /** This process in the replica registry (its id is also its DBOS executor id). */
  replicas: ReplicaRegistry;
  embedded: EmbeddedDatabase | undefined;
  /** Stops accepting, drains in-flight requests (up to the shutdown timeout), stops the engine and database. */
  stop(): Promise<void>;
}

/** Opens the database: the configured PostgreSQL, or the embedded one in the data directory. */
export async function openDatabase(config: Config, log: Logger): Promise<{ db: Db; embedded: EmbeddedDatabase | undefined }> {
  let embedded: EmbeddedDatabase | undefined;
  let url = config.databaseUrl;
  if (url === undefined) {
    embedded = new EmbeddedDatabase({ dataDir: config.dataDir, port: config.embeddedPgPort, sharedDir: config.sharedDir, log });
    url = await embedded.start();
  }
  const db = createDb(url, log);
  try {
    await db.query('SELECT 1');
  } catch (err) {
    await db.close();
    await embedded?.stop();
    throw new Error(`Cannot connect to PostgreSQL at ${redactUrl(url)}: ${(err as Error).message}. Check DATABASE_URL.`, { cause: err });
  }
  return { db, embedded };
}

/** Paths every replica answers, whatever its roles (probes and metrics). */
const SYSTEM_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * `clawplane serve`: the roles of config.replica.roles in one process (default all of them), registered as one
 * replica of the control plane on its database (docs/adr/0009-replica-coordination.md).
 */
/** What an embedding process (a test's server in its own process) may put in place before any workflow runs. */
export interface StartHooks {
  /** Where task turns run instead of the tenant's gateway, in place before a recovered workflow could start one. */
  taskExecutor?: (s: { db: Db; services: Services; replicaId: string }) => TaskExecutor;
}

export async function startServer(config: Config, log: Logger, hooks: StartHooks = {}): Promise<RunningServer> {
  await resolveSecretKey(config, log);
  const { db, embedded } = await openDatabase(config, log);
  let server: ServerType | undefined;
  let stopParts: (() => Promise<void>) | undefined;
  const roles = new Set(config.replica.roles);
  const replicaId = await resolveReplicaId(config.replica.id, config.dataDir);
  log = log.child({ replica: replicaId });
  const events = new EventChannel({ url: db.url, log, origin: replicaId });
  const replicas = new ReplicaRegistry({
    db,
    log,
    id: replicaId,
    roles: config.replica.roles,
    node: config.replica.node ?? os.hostname(),
    version: API_VERSION,
    heartbeatMs: config.replica.heartbeatMs,
    expireMs: config.replica.expireMs,
    // Workers take over the workflows of dead replicas.
    ...(roles.has('worker') ? { recoverWorkflows: recoverExecutor } : {}),
  });
  let registered = false;
  try {
    await migrate(db, log);
    // Before DBOS launches: a second live process with this id is refused before it could recover anything.
    await replicas.register();
    registered = true;
    // Listening before any cache fills: nothing is cached until every change made elsewhere reaches us.
    await events.start();
    bindSelfCheck(db);
    // Before the engine: DBOS opens its workflow and step spans with the tracer provider registered here.
    const tracing = await startTracing({ endpoint: config.otelEndpoint, instanceId: replicaId, log });
    await launchEngine({ databaseUrl: db.url, log, executorId: replicaId, dequeue: roles.has('worker'), tracing: tracing !== undefined });
    const expectedMigration = (await loadMigrations()).length;
    // The app needs the public origin (OIDC redirect URI), which needs the bound port: bind first.
    let fetchImpl: ((req: Request, env?: unknown) => Response | Promise<Response>) | undefined;
    const s = await new Promise<ServerType>((resolve, reject) => {
      const srv = serve(
        {
          fetch: (req: Request, env?: unknown) => (fetchImpl ? fetchImpl(req, env) : new Response('starting', { status: 503 })),
          hostname: config.host,
          port: config.port,
          // WebSocket upgrades go through the app's routes (auth, tenant scope) like any request (issue 7).
          websocket: { server: new WebSocketServer({ noServer: true, maxPayload: 16 << 20 }) },
        },
        () => resolve(srv),
      );
      srv.once('error', reject);
    });
    server = s;
    const addr = s.address() as AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `http://${host}:${addr.port}`;
    const publicOrigin = config.publicUrl ? new URL(config.publicUrl).origin : url;
    const secretKey = config.secretKey;
    if (!secretKey) throw new Error('secret key not resolved');
    const metrics = createMetrics();
    const services = createServices({
      db,
      events,
      secretKey,
      dataDir: config.dataDir,
      publicOrigin,
      egressAllowHosts: config.egressAllowHosts,
      log,
      registry: metrics.registry,
      instances: instanceSettings(config),
      ingress: ingressSettings(config),
      tasks: config.tasks,
      ingest: config.ingest,
      broker: config.broker,
      chatApis: config.chatApis,
      claims: { owner: replicaId, node: config.replica.node ?? os.hostname(), ttlMs: config.replica.expireMs },
      laneClock: config.lanes.clockFile ? fileClock(config.lanes.clockFile) : undefined,
    });
    if (hooks.taskExecutor) services.taskRuntime.useExecutor(hooks.taskExecutor({ db, services, replicaId }));
    let brokerUrl: string | undefined;
    stopParts = await startParts(roleParts(roles, { config, db, log, services, replicaId, onBrokerUrl: (u) => (brokerUrl = u) }), log);
    await services.onboarding.prepareSetupCode(log);
    replicas.start();
    const app = createApp({
      config,
      db,
      log,
      metrics,
      expectedMigration,
      services,
      replicas,
      secureCookies: publicOrigin.startsWith('https:'),
      publicOrigin,
    });
    fetchImpl = roles.has('api')
      ? app.fetch
      : (req, env) =>
          SYSTEM_PATHS.has(new URL(req.url).pathname)
            ? app.fetch(req, env)
            : Response.json(
                {
                  code: 'not_served_here',
                  message: `This replica runs the roles ${[...roles].join(', ')}, not the API: send requests to a replica with the api role.`,
                },
                { status: 404 },
              );
    log.info(
      { url, replica: replicaId, roles: [...roles], database: embedded ? 'embedded' : redactUrl(db.url), ...(brokerUrl ? { broker: brokerUrl } : {}) },
      'clawplane listening',
    );
    // What is wrong with this installation, said once at start with the fix (clawplane doctor has the whole report).
    const doctor = runDoctor(doctorDeps(config, db, services, { host: config.host, port: addr.port })).then(
      (r) => {
        for (const c of r.checks) if (c.status === 'fail') log.warn({ check: c.id, detail: c.detail, fix: c.fix }, `doctor: ${c.title} failed`);
      },
      (err: unknown) => log.warn({ err }, 'doctor could not run'),
    );

    let stopping: Promise<void> | undefined;
    const stop = () =>
      (stopping ??= (async () => {
        log.info('shutting down: no new connections, draining in-flight requests');
        await closeServer(s, config.shutdownTimeoutMs);
        await doctor;
        // Sandboxes keep running (no --die-with-parent); the next start adopts them.
        await stopParts?.();
        await events.stop();
        await shutdownEngine();
        // After the engine stopped: peers take over what it left pending only once nothing here runs it.
        await replicas.stop();
        await db.close();
        await embedded?.stop();
        await flushTracing().catch((err: unknown) => log.warn({ err }, 'could not export the last spans'));
        log.info('shut down');
      })());
    return { url, app, db, services, replicas, embedded, stop };
  } catch (err) {
    if (server) await closeServer(server, 0);
    await stopParts?.();
    await events.stop();
    await shutdownEngine().catch(() => undefined);
    if (registered) await replicas.stop();
    await db.close().catch(() => undefined);
    await embedded?.stop();
    throw err;
  }
}

async function closeServer(s: ServerType, timeoutMs: number): Promise<void> {
  const srv = s as Server | Http2Server | Http2SecureServer;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      if ('closeAllConnections' in srv) srv.closeAllConnections();
      resolve();
    }, timeoutMs);
    srv.close(() => {
      clearTimeout(timer);
      resolve();
    });
    if ('closeIdleConnections' in srv) srv.closeIdleConnections();
  });
}
