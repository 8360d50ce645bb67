/**
 * A GatewayTransport over a Unix socket on this host (the ingress socket of a local or docker sandbox).
 * Keep-alive per socket path: the in-sandbox supervisor proxies each request on, and reusing the Unix
 * connection keeps the added latency small.
 */
import http from 'node:http';
import WebSocket from 'ws';
import type { GatewayTransport } from '../types.ts';

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

export function unixTransport(socketPath: string): GatewayTransport {
  return {
    request(opts) {
      const req = http.request({ socketPath, agent, method: opts.method ?? 'GET', path: opts.path, headers: { host: 'gateway', ...opts.headers }, ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}) });
      if (opts.timeoutMs) req.on('timeout', () => req.destroy(new Error(`the gateway did not answer within ${opts.timeoutMs} ms`)));
      return req;
    },
    websocket(opts = {}) {
      return new WebSocket(`ws+unix://${socketPath}:/`, { perMessageDeflate: false, headers: opts.headers ?? {} });
    },
  };
}
