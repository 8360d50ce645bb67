import http from 'node:http';
import https from 'node:https';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { checkUrl, type CheckedUrl, type EgressPolicy } from '../net/ssrf.ts';
import { failSpan, SpanKind, startSpan } from '../observability/tracing.ts';

/** How often a provider's address is checked again (DNS changes are re-validated). */
export const DEFAULT_RECHECK_MS = 60_000;

interface Pinned {
  checked: CheckedUrl;
  address: string;
  agent: http.Agent;
  at: number;
  /** Requests sent through this pool whose answers have not ended yet. */
  inflight: number;
  /** Replaced by a newer pool: destroyed once its last answer has ended, never before. */
  retired: boolean;
}

/**
 * The broker's way to providers: every base URL passes the SSRF guard, the connection is pinned to the
 * checked address (no DNS rebinding between check and connect), redirects are never followed, and
 * keep-alive agents are reused per checked origin so a model call does not pay a new TCP/TLS handshake.
 * The check is repeated every `recheckMs` so DNS changes are re-validated. Housekeeping never cuts a
 * stream: when the address is unchanged the pool is kept; when it changed the old pool is retired and
 * destroyed only once the answers still streaming through it have ended (a slow stream outlives many
 * re-checks).
 */
export class Upstreams {
  private readonly policy: EgressPolicy;
  private readonly recheckMs: number;
  private readonly pinned = new Map<string, Pinned>();

  constructor(policy: EgressPolicy, opts: { recheckMs?: number } = {}) {
    this.policy = policy;
    this.recheckMs = opts.recheckMs ?? DEFAULT_RECHECK_MS;
  }

  private async pin(origin: string): Promise<Pinned> {
    const hit = this.pinned.get(origin);
    if (hit && Date.now() - hit.at < this.recheckMs) return hit;
    const checked = await checkUrl(origin, this.policy);
    const addr = checked.addresses[0];
    if (!addr) throw new Error(`${checked.hostname} has no addresses`);
    // Same address: the pool (and every stream in it) stays; only the check is renewed.
    if (hit && hit.address === addr.address) {
      hit.checked = checked;
      hit.at = Date.now();
      return hit;
    }
    const lookup = (_h: string, opts: LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
      if (opts.all) cb(null, [{ address: addr.address, family: addr.family }]);
      else cb(null, addr.address, addr.family);
    };
    const Agent = checked.url.protocol === 'https:' ? https.Agent : http.Agent;
    if (hit) this.retire(hit);
    const agent = new Agent({ keepAlive: true, maxSockets: 256, lookup } as http.AgentOptions);
    const p: Pinned = { checked, address: addr.address, agent, at: Date.now(), inflight: 0, retired: false };
    this.pinned.set(origin, p);
    return p;
  }

  /** No new request goes to `p`; it is destroyed when its last answer has ended. */
  private retire(p: Pinned): void {
    p.retired = true;
    if (p.inflight === 0) p.agent.destroy();
  }

  private release(p: Pinned): void {
    p.inflight--;
    if (p.retired && p.inflight === 0) p.agent.destroy();
  }

  /** Sends one request; resolves with the response head (the body is still streaming). */
  async request(
    url: string,
    init: { method: string; headers: Record<string, string>; body: Buffer; timeoutMs: number; signal: AbortSignal; spanPath?: string },
  ): Promise<http.IncomingMessage> {
    const u = new URL(url);
    const p = await this.pin(u.origin);
    const mod = u.protocol === 'https:' ? https : http;
    p.inflight++;
    let released = false;
    // The provider call: host and path only (a provider may take its key in the query string; an API that
    // takes it in the path, such as Telegram's bot API, passes the path to show instead).
    const span = startSpan(
      'provider.request',
      { 'http.request.method': init.method, 'server.address': u.hostname, 'url.path': init.spanPath ?? u.pathname },
      { kind: SpanKind.CLIENT },
    );
    const done = () => {
      if (released) return;
      released = true;
      this.release(p);
      span.end();
    };
    return new Promise((resolve, reject) => {
      const req = mod.request(u, {
        method: init.method,
        headers: { ...init.headers, 'content-length': String(init.body.length) },
        agent: p.agent,
        signal: init.signal,
      });
      req.setTimeout(init.timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${init.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => {
        failSpan(span, err);
        done();
        reject(err);
      });
      req.on('close', () => {
        // The request's close follows the response's end or abort: the pool may be destroyed from here on.
        done();
      });
      req.on('response', (res) => {
        // Waiting for the first byte is covered by the timeout above; a long stream is not.
        req.setTimeout(0);
        const status = res.statusCode ?? 0;
        span.setAttribute('http.response.status_code', status);
        if (status >= 300 && status < 400) {
          res.destroy();
          reject(Object.assign(new Error(`the provider answered with a redirect (${status}); redirects are not followed`), { code: 'EREDIRECT' }));
          return;
        }
        resolve(res);
      });
      req.end(init.body);
    });
  }

  close(): void {
    for (const p of this.pinned.values()) p.agent.destroy();
    this.pinned.clear();
  }
}
