import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { checkUrl, EgressRefusedError, type EgressPolicy } from '../net/ssrf.ts';
import type { CredentialService } from '../vault/credentials.ts';
import type { SandboxIdentity, SandboxTokens } from './identity.ts';
import type { Upstreams } from './upstream.ts';

const CACHE_MS = 5_000;

/**
 * A further rule on a sandbox's way out, on top of the tenant's allow-list and the SSRF guard (lanes: the hosts
 * of the project whose step is running, docs/lanes.md). `path` is the URL path where the broker sees it (skill
 * routes; a tunnel shows only host and port). Null admits; a refusal names its rule. A rule that throws
 * refuses (the CONNECT fails).
 */
export type EgressRestriction = (tenantId: string, host: string, port: number, path?: string) => Promise<{ rule: string; message: string } | null>;

/**
 * Egress for tools (issue 5, item 7). Two ways out, both only to what the tenant configured:
 * - an HTTPS forward proxy (CONNECT host:port) to the tenant's allow-listed hosts, after the SSRF guard
 *   (private, loopback and metadata addresses stay refused unless the platform allows them), pinned to
 *   the checked address;
 * - reverse-proxy routes `/skills/<name>/<path>` to a configured skill API, adding the tenant's
 *   credential on the way out, so skill tokens never enter the sandbox either.
 * On a per-sandbox socket the socket itself identifies the sandbox; elsewhere the broker token does
 * (`Proxy-Authorization: Bearer <token>` or Basic with the token as password).
 */
export class EgressProxy {
  private readonly db: Db;
  private readonly tokens: SandboxTokens;
  private readonly policy: EgressPolicy;
  private readonly credentials: CredentialService;
  private readonly upstreams: Upstreams;
  private readonly log: Logger;
  private readonly events: EventChannel;
  private readonly hostCache = new Map<string, { at: number; hosts: { host: string; port: number }[] }>();
  private readonly lastDenyAudit = new Map<string, number>();
  private readonly restrictions: EgressRestriction[] = [];

  constructor(opts: {
    db: Db;
    events: EventChannel;
    tokens: SandboxTokens;
    policy: EgressPolicy;
    credentials: CredentialService;
    upstreams: Upstreams;
    log: Logger;
  }) {
    this.db = opts.db;
    this.events = opts.events;
    // The allow-list guards the way out: a change anywhere applies at once, and nothing is kept while the
    // event channel is down.
    opts.events.on('governance.changed', ({ tenantId }) => this.forgetTenant(tenantId));
    opts.events.onReset(() => this.hostCache.clear());
    this.tokens = opts.tokens;
    this.policy = opts.policy;
    this.credentials = opts.credentials;
    this.upstreams = opts.upstreams;
    this.log = opts.log;
  }

  /** Adds a rule every CONNECT and skill call must also pass. */
  restrict(r: EgressRestriction): void {
    this.restrictions.push(r);
  }

  private async restricted(tenantId: string, host: string, port: number, path?: string): Promise<{ rule: string; message: string } | null> {
    for (const r of this.restrictions) {
      const refused = await r(tenantId, host.toLowerCase().replace(/\.$/, ''), port, path);
      if (refused) return refused;
    }
    return null;
  }

  forgetTenant(tenantId: string): void {
    this.hostCache.delete(tenantId);
  }

  /** Whether host:port is on the tenant's allow-list (`*.example.com` matches sub-domains; port 0 = any). */
  async allowed(tenantId: string, host: string, port: number): Promise<boolean> {
    const live = this.events.live;
    const epoch = this.events.epoch;
    let hit = live ? this.hostCache.get(tenantId) : undefined;
    if (!hit || Date.now() - hit.at > CACHE_MS) {
      const r = await this.db.query<{ host: string; port: number }>('SELECT host, port FROM tenant_egress_hosts WHERE tenant_id = $1', [tenantId]);
      hit = { at: Date.now(), hosts: r.rows };
      if (live && epoch === this.events.epoch && this.events.live) this.hostCache.set(tenantId, hit);
    }
    const h = host.toLowerCase().replace(/\.$/, '');
    return hit.hosts.some((e) => (e.port === 0 || e.port === port) && (e.host === h || (e.host.startsWith('*.') && h.endsWith(e.host.slice(1)))));
  }

  private async identify(header: string | undefined, boundTo: string | undefined): Promise<SandboxIdentity | undefined> {
    let token: string | undefined;
    const m = /^(Bearer|Basic)\s+(\S+)$/i.exec(header ?? '');
    if (m?.[1]?.toLowerCase() === 'bearer') token = m[2];
    else if (m?.[2]) token = Buffer.from(m[2], 'base64').toString('utf8').split(':').slice(1).join(':');
    const id = token ? await this.tokens.resolve(token) : undefined;
    if (boundTo === undefined) return id;
    // A per-sandbox socket is reachable only from its sandbox: the socket identifies it; a token, if
    // sent, must be that sandbox's own.
    if (id) return id.id === boundTo ? id : undefined;
    return this.tokens.byId(boundTo);
  }

  /** Handles `CONNECT host:port`: tunnels to an allow-listed host or answers 403 with the reason. */
  async connect(req: http.IncomingMessage, client: Duplex, head: Buffer, boundTo: string | undefined): Promise<void> {
    const refuse = (status: number, why: string) => {
      client.end(
        `HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : status === 407 ? 'Proxy Authentication Required' : 'Bad Gateway'}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n[clawplane] ${why}\n`,
      );
    };
    const identity = await this.identify(req.headers['proxy-authorization'], boundTo);
    if (!identity) return refuse(407, 'This sandbox is not recognised: its broker token is missing, expired or revoked.');
    const target = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(req.url ?? '');
    const host = target?.[1];
    const port = Number(target?.[2]);
    if (!host || !(port > 0 && port < 65536)) return refuse(403, 'CONNECT needs host:port.');
    if (!(await this.allowed(identity.tenantId, host, port))) {
      await this.auditDeny(identity, `${host}:${port}`, 'not on the tenant egress allow-list');
      return refuse(403, `${host}:${port} is not on this tenant's egress allow-list. A tenant admin can add it.`);
    }
    const rule = await this.restricted(identity.tenantId, host, port);
    if (rule) {
      await this.auditDeny(identity, `${host}:${port}`, rule.message, rule.rule);
      return refuse(403, rule.message);
    }
    let address: { address: string; family: number } | undefined;
    try {
      const checked = await checkUrl(`https://${host.includes(':') ? `[${host}]` : host}:${port}/`, this.policy);
      address = checked.addresses[0];
    } catch (err) {
      const why = err instanceof EgressRefusedError ? err.message : 'the address check failed';
      await this.auditDeny(identity, `${host}:${port}`, why);
      return refuse(403, why);
    }
    if (!address) return refuse(502, `${host} has no addresses.`);
    const up = net.connect({ host: address.address, port, family: address.family });
    up.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    up.once('error', (err) => {
      if (!client.destroyed) refuse(502, `Could not reach ${host}:${port} (${(err as NodeJS.ErrnoException).code ?? err.message}).`);
    });
    client.once('error', () => up.destroy());
    client.once('close', () => up.destroy());
  }

  /** Handles `/skills/<name>/<path>`; returns false for other paths. */
  async skill(req: http.IncomingMessage, res: http.ServerResponse, boundTo: string | undefined): Promise<boolean> {
    const m = /^\/skills\/([a-z0-9][a-z0-9_-]{0,39})(\/[^?]*)?(\?.*)?$/.exec(req.url ?? '');
    if (!m?.[1]) return false;
    const send = (status: number, message: string) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `[clawplane] ${message}`, type: 'clawplane_egress' } }));
    };
    const identity = await this.identify(req.headers['authorization'], boundTo);
    if (!identity) {
      req.resume();
      send(401, 'This sandbox is not recognised: its broker token is missing, expired or revoked.');
      return true;
    }
    const name = m[1];
    const r = await this.db.query<{ base_url: string; credential_id: string | null; auth_style: 'bearer' | 'header'; header_name: string | null }>(
      'SELECT base_url, credential_id, auth_style, header_name FROM skill_endpoints WHERE tenant_id = $1 AND name = $2',
      [identity.tenantId, name],
    );
    const ep = r.rows[0];
    if (!ep) {
      req.resume();
      await this.auditDeny(identity, `skill:${name}`, 'no such skill endpoint');
      send(404, `No skill endpoint "${name}" is configured for this tenant.`);
      return true;
    }
    // The URL is resolved once (dot segments, %2e%2e) and that is both what the rules judge and what is sent.
    const base = new URL(ep.base_url);
    let target: URL;
    try {
      target = new URL(`${ep.base_url.replace(/\/+$/, '')}${m[2] ?? ''}${m[3] ?? ''}`);
    } catch {
      req.resume();
      send(400, 'The skill path does not make a valid URL.');
      return true;
    }
    const basePath = base.pathname.replace(/\/+$/, '');
    if (basePath && target.pathname !== basePath && !target.pathname.startsWith(`${basePath}/`)) {
      req.resume();
      await this.auditDeny(identity, `skill:${name}`, 'the path leaves the skill base URL');
      send(400, `The path leaves the base URL of skill "${name}".`);
      return true;
    }
    const rule = await this.restricted(
      identity.tenantId,
      target.hostname.replace(/^\[|\]$/g, ''),
      Number(target.port) || (target.protocol === 'https:' ? 443 : 80),
      target.pathname,
    );
    if (rule) {
      req.resume();
      await this.auditDeny(identity, `skill:${name}`, rule.message, rule.rule);
      send(403, rule.message);
      return true;
    }
    const body = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 16 * 1024 * 1024) req.destroy(new Error('too big'));
        else chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    }).catch(() => undefined);
    if (!body) {
      send(413, 'The request body is too large.');
      return true;
    }
    const headers: Record<string, string> = {};
    for (const h of ['content-type', 'accept', 'user-agent']) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    if (ep.credential_id) {
      try {
        const c = await this.credentials.decryptForBroker(identity.tenantId, ep.credential_id, { actor: `sandbox:${identity.id}`, purpose: `skill:${name}` });
        if (ep.auth_style === 'header' && ep.header_name) headers[ep.header_name.toLowerCase()] = c.value;
        else headers['authorization'] = `Bearer ${c.value}`;
      } catch {
        send(503, `The credential of skill "${name}" is revoked, expired or unreadable. A tenant admin must attach a valid one.`);
        return true;
      }
    }
    const url = target.href;
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    try {
      const up = await this.upstreams.request(url, { method: req.method ?? 'GET', headers, body, timeoutMs: 60_000, signal: abort.signal });
      const out: Record<string, string> = {};
      for (const h of ['content-type', 'cache-control', 'etag', 'last-modified']) {
        const v = up.headers[h];
        if (typeof v === 'string') out[h] = v;
      }
      res.writeHead(up.statusCode ?? 502, out);
      up.pipe(res);
    } catch (err) {
      const why =
        err instanceof EgressRefusedError
          ? err.message
          : `the skill API could not be reached (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
      send(502, why);
    }
    return true;
  }

  private async auditDeny(identity: SandboxIdentity, target: string, reason: string, rule?: string): Promise<void> {
    const k = `${identity.tenantId}/${target}/${rule ?? ''}`;
    const now = Date.now();
    if (now - (this.lastDenyAudit.get(k) ?? 0) < 60_000) return;
    this.lastDenyAudit.set(k, now);
    await this.db
      .tx((tx) =>
        appendAudit(tx, {
          actor: `sandbox:${identity.id}`,
          tenantId: identity.tenantId,
          action: 'broker.egress_denied',
          target,
          decision: 'deny',
          detail: { reason, ...(rule ? { rule } : {}) },
        }),
      )
      .catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'audit of an egress denial failed'));
  }
}
