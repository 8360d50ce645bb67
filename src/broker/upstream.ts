import http from 'node:http';
import https from 'node:https';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { checkUrl, type CheckedUrl, type EgressPolicy } from '../net/ssrf.ts';

const CHECK_TTL_MS = 60_000;

interface Pinned {
  checked: CheckedUrl;
  agent: http.Agent;
  at: number;
}

/**
 * The broker's way to providers: every base URL passes the SSRF guard, the connection is pinned to the
 * checked address (no DNS rebinding between check and connect), redirects are never followed, and
 * keep-alive agents are reused per checked origin so a model call does not pay a new TCP/TLS handshake.
 * The check is repeated every minute so DNS changes are re-validated.
 */
export class Upstreams {
  private readonly policy: EgressPolicy;
  private readonly pinned = new Map<string, Pinned>();

  constructor(policy: EgressPolicy) {
    this.policy = policy;
  }

  private async pin(origin: string): Promise<Pinned> {
    const hit = this.pinned.get(origin);
    if (hit && Date.now() - hit.at < CHECK_TTL_MS) return hit;
    const checked = await checkUrl(origin, this.policy);
    const addr = checked.addresses[0];
    if (!addr) throw new Error(`${checked.hostname} has no addresses`);
    const lookup = (_h: string, opts: LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
      if (opts.all) cb(null, [{ address: addr.address, family: addr.family }]);
      else cb(null, addr.address, addr.family);
    };
    const Agent = checked.url.protocol === 'https:' ? https.Agent : http.Agent;
    hit?.agent.destroy();
    const agent = new Agent({ keepAlive: true, maxSockets: 256, lookup } as http.AgentOptions);
    const p = { checked, agent, at: Date.now() };
    this.pinned.set(origin, p);
    return p;
  }

  /** Sends one request; resolves with the response head (the body is still streaming). */
  async request(url: string, init: { method: string; headers: Record<string, string>; body: Buffer; timeoutMs: number; signal: AbortSignal }): Promise<http.IncomingMessage> {
    const u = new URL(url);
    const p = await this.pin(u.origin);
    const mod = u.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(u, { method: init.method, headers: { ...init.headers, 'content-length': String(init.body.length) }, agent: p.agent, signal: init.signal });
      req.setTimeout(init.timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${init.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', reject);
      req.on('response', (res) => {
        // Waiting for the first byte is covered by the timeout above; a long stream is not.
        req.setTimeout(0);
        const status = res.statusCode ?? 0;
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
