/**
 * A GatewayTransport over a Unix socket on this host (the ingress socket of a local or docker sandbox).
 * Keep-alive per socket path: the in-sandbox supervisor proxies each request on, and reusing the Unix
 * connection keeps the added latency small.
 */
import http from 'node:http';
import WebSocket from 'ws';
import {
  injectTraceContext,
  recordSupervisorSpan,
  SpanKind,
  startSpan,
  SUPERVISOR_SPAN_HEADER,
  tracingOn,
  withSpan,
  failSpan,
} from '../../observability/tracing.ts';
import type { GatewayTransport } from '../types.ts';

/**
 * `timeout` is what makes Node's agent honour the server's `Keep-Alive: timeout=N` hint (it retires an idle
 * socket one second before the server would; with no agent timeout the hint is ignored, `_http_agent.js`
 * keepSocketAlive). Without it a request could be written to a socket the supervisor had just closed and
 * fail with EPIPE. It applies to idle sockets only: a stream that pauses longer is not cut.
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: 64, timeout: 60_000 });

export function unixTransport(socketPath: string): GatewayTransport {
  return {
    request(opts) {
      const req = http.request({
        socketPath,
        agent,
        method: opts.method ?? 'GET',
        path: opts.path,
        headers: { host: 'gateway', ...opts.headers },
        ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
      });
      if (opts.timeoutMs) req.on('timeout', () => req.destroy(new Error(`the gateway did not answer within ${opts.timeoutMs} ms`)));
      if (tracingOn()) traceHop(req, opts.method ?? 'GET', opts.path);
      return req;
    },
    websocket(opts = {}) {
      return new WebSocket(`ws+unix://${socketPath}:/`, { perMessageDeflate: false, headers: opts.headers ?? {} });
    },
  };
}

/**
 * The hop into the sandbox: a client span whose context goes to the supervisor in `traceparent`, and the
 * supervisor's own span, which it reports in a response header (observability/tracing.ts). Both end when
 * the answer has been read to its end or cut.
 */
function traceHop(req: http.ClientRequest, method: string, path: string): void {
  const sentAt = Date.now();
  const hop = startSpan('sandbox.request', { 'http.request.method': method, 'url.path': path.split('?')[0] ?? '/' }, { kind: SpanKind.CLIENT });
  const headers: Record<string, string> = {};
  withSpan(hop, () => injectTraceContext(headers));
  for (const [k, v] of Object.entries(headers)) req.setHeader(k, v);
  req.once('response', (res) => {
    hop.setAttribute('http.response.status_code', res.statusCode ?? 0);
    const sup = recordSupervisorSpan(res.headers[SUPERVISOR_SPAN_HEADER], hop, sentAt);
    res.once('close', () => {
      if (!res.complete) {
        failSpan(hop, Object.assign(new Error('cut'), { code: 'stream_cut' }));
        if (sup) failSpan(sup, Object.assign(new Error('cut'), { code: 'stream_cut' }));
      }
      sup?.end();
      hop.end();
    });
  });
  req.once('error', (err) => {
    failSpan(hop, err);
    hop.end();
  });
}
