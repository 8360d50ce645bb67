import { chmod, mkdir, rm } from 'node:fs/promises';
import type { TaskTags } from './task-tag.ts';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import type { EgressPolicy } from '../net/ssrf.ts';
import type { CredentialService } from '../vault/credentials.ts';
import type { ProviderService } from '../vault/providers.ts';
import type { Duplex } from 'node:stream';
import { Budgets } from './budgets.ts';
import { EgressProxy } from './egress.ts';
import type { PlatformProvider } from './platform-provider.ts';
import { SandboxTokens } from './identity.ts';
import { createBrokerMetrics } from './metrics.ts';
import { PriceTable } from './prices.ts';
import { BrokerProxy, type ScheduledAdmission } from './proxy.ts';
import type { SandboxBroker, SandboxRegistration } from './types.ts';
import { Upstreams } from './upstream.ts';
import { extractTraceContext, inSpan, SpanKind } from '../observability/tracing.ts';
import { UsageWriter } from './usage.ts';

export interface BrokerOptions {
  db: Db;
  /** Shared invalidations (tokens, keys, routes, caps, egress) across replicas. */
  events: EventChannel;
  log: Logger;
  registry: Registry;
  providers: ProviderService;
  credentials: CredentialService;
  egress: EgressPolicy;
  /** Host-only directory for the per-sandbox sockets. */
  runDir: string;
  /** Lifetime of a broker token if the sandbox is never stopped cleanly. */
  tokenTtlMs?: number;
  /** The platform's default provider for tenants without their own. */
  platformProvider?: PlatformProvider;
  /** Tokens each capped call reserves at least while in flight (docs/operations/replicas.md, Budgets). */
  reserveTokens?: number;
  /** Reads (and removes) the task tag a task turn's system text carries (src/broker/task-tag.ts). */
  taskTags?: TaskTags;
  /** Refuses scheduled model calls beyond the tenant's caps (src/governance/scheduled.ts). */
  scheduledCaps?: ScheduledAdmission;
}

/** Handles broker paths other than the model APIs (grants, tool egress), mounted by later modules. */
export type BrokerExtension = (req: http.IncomingMessage, res: http.ServerResponse, sandboxStartId: string | undefined) => Promise<boolean>;

/**
 * The broker: the only way out of a sandbox (issue 5). Each sandbox start gets a token and its own Unix
 * socket (local driver); `listenTcp` serves the same API on an internal port for drivers whose sandboxes
 * reach the broker over the network (Kubernetes), where the token alone identifies the caller.
 */
export class Broker implements SandboxBroker {
  readonly tokens: SandboxTokens;
  readonly budgets: Budgets;
  readonly prices: PriceTable;
  readonly usage: UsageWriter;
  readonly proxy: BrokerProxy;
  readonly egress: EgressProxy;
  /** The guarded way out (SSRF check, pinned address, no redirects); also used for approval delivery to chat. */
  readonly upstreams: Upstreams;
  private readonly opts: BrokerOptions;
  private readonly servers = new Set<http.Server>();
  private readonly extensions: BrokerExtension[] = [];
  private readonly closedListeners: ((tenantId: string, sandboxStartId: string) => Promise<unknown>)[] = [];

  constructor(opts: BrokerOptions) {
    this.opts = opts;
    this.tokens = new SandboxTokens(opts.db, opts.events);
    this.budgets = new Budgets(opts.db, {
      log: opts.log.child({ component: 'broker-budgets' }),
      ...(opts.reserveTokens !== undefined ? { reserveTokens: opts.reserveTokens } : {}),
    });
    opts.events.on('governance.changed', ({ tenantId }) => this.budgets.forget(tenantId));
    this.prices = new PriceTable(opts.db);
    this.usage = new UsageWriter(opts.db, opts.log.child({ component: 'broker-usage' }));
    this.upstreams = new Upstreams(opts.egress);
    this.proxy = new BrokerProxy({
      db: opts.db,
      events: opts.events,
      log: opts.log.child({ component: 'broker' }),
      tokens: this.tokens,
      providers: opts.providers,
      credentials: opts.credentials,
      budgets: this.budgets,
      prices: this.prices,
      usage: this.usage,
      upstreams: this.upstreams,
      metrics: createBrokerMetrics(opts.registry),
      ...(opts.platformProvider ? { platformProvider: opts.platformProvider } : {}),
      ...(opts.taskTags ? { taskTags: opts.taskTags } : {}),
      ...(opts.scheduledCaps ? { scheduledCaps: opts.scheduledCaps } : {}),
    });
    this.egress = new EgressProxy({
      db: opts.db,
      events: opts.events,
      tokens: this.tokens,
      policy: opts.egress,
      credentials: opts.credentials,
      upstreams: this.upstreams,
      log: opts.log.child({ component: 'broker-egress' }),
    });
  }

  /** Runs when a sandbox start's registration closes (e.g. revoke its tool grants). */
  onSandboxClosed(listener: (tenantId: string, sandboxStartId: string) => Promise<unknown>): void {
    this.closedListeners.push(listener);
  }

  /** Adds handlers for non-model paths (e.g. POST /broker/grants); tried in order before a 404. */
  extend(handler: BrokerExtension): void {
    this.extensions.push(handler);
  }

  async registerSandbox(input: { tenantId: string; instanceId: string; sandboxId: string }): Promise<SandboxRegistration> {
    const { identity, token } = await this.tokens.issue({ ...input, ttlMs: this.opts.tokenTtlMs ?? 7 * 24 * 3600 * 1000 });
    await mkdir(this.opts.runDir, { recursive: true, mode: 0o711 });
    const socketPath = path.join(this.opts.runDir, `${identity.id}.sock`);
    await rm(socketPath, { force: true });
    const server = this.server(identity.id);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    // The sandbox runs as its tenant's own uid: it must be able to connect; the token still decides.
    await chmod(socketPath, 0o666);
    let closed = false;
    return {
      socketPath,
      token,
      sandboxStartId: identity.id,
      close: async () => {
        if (closed) return;
        closed = true;
        await this.tokens.revoke(identity.id);
        for (const l of this.closedListeners) {
          await l(input.tenantId, identity.id).catch((err: unknown) => this.opts.log.error({ err }, 'sandbox close hook failed'));
        }
        await this.closeServer(server);
        await rm(socketPath, { force: true });
      },
    };
  }

  revokeOtherTokens(registration: SandboxRegistration | null, sandboxId: string): Promise<void> {
    return this.tokens.revokeOthers(sandboxId, registration?.sandboxStartId ?? null);
  }

  /** Serves the broker on an internal TCP port (default loopback); returns the bound address. */
  async listenTcp(port: number, host = '127.0.0.1'): Promise<string> {
    const server = this.server(undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const a = server.address() as AddressInfo;
    return `http://${host}:${a.port}`;
  }

  async close(): Promise<void> {
    await Promise.all([...this.servers].map((s) => this.closeServer(s)));
    this.upstreams.close();
    await this.usage.close();
  }

  private server(boundTo: string | undefined): http.Server {
    const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
      // The parent is the sandbox supervisor's span (it stamps `traceparent` on the gateway's calls).
      void inSpan(
        'broker.request',
        { 'http.request.method': req.method ?? '', 'url.path': (req.url ?? '/').split('?')[0] ?? '/' },
        () => this.dispatch(req, res, boundTo),
        { kind: SpanKind.SERVER, parent: extractTraceContext(req.headers) },
      ).catch((err: unknown) => {
        this.opts.log.error({ err }, 'broker request failed');
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { message: '[clawplane] The broker failed on this request.', type: 'server_error', code: 'broker_error' } }));
        } else res.destroy();
      });
    });
    server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.egress.connect(req, socket, head, boundTo).catch((err: unknown) => {
        this.opts.log.error({ err }, 'broker CONNECT failed');
        socket.destroy();
      });
    });
    this.servers.add(server);
    return server;
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse, boundTo: string | undefined): Promise<void> {
    const url = req.url ?? '/';
    if (!url.startsWith('/v1/')) {
      if (url.startsWith('/skills/') && (await this.egress.skill(req, res, boundTo))) return;
      for (const ext of this.extensions) if (await ext(req, res, boundTo)) return;
    }
    await this.proxy.handle(req, res, boundTo);
  }

  private closeServer(s: http.Server): Promise<void> {
    this.servers.delete(s);
    return new Promise((resolve) => {
      s.close(() => resolve());
      s.closeIdleConnections();
      // Keep-alive clients (the supervisors) would hold the server open: cut them after a grace period.
      setTimeout(() => s.closeAllConnections(), 1_000);
    });
  }
}
