/**
 * One operator call to a gateway over its WebSocket protocol (v4), through a sandbox's transport:
 * wait for `connect.challenge`, connect as a trusted local backend with the gateway token, send one
 * request, close. For the host's own administrative calls (`secrets.reload` after a token rotation);
 * tenants reach the protocol only through src/ingress/ws.ts and its allow-list.
 */
import type http from 'node:http';
import type WebSocket from 'ws';
import type { GatewayTransport } from './types.ts';

/** One message of the gateway's WebSocket protocol (v4). */
export interface GatewayFrame {
  type?: string;
  id?: string;
  event?: string;
  ok?: boolean;
  payload?: unknown;
  error?: { code?: string; message?: string };
}

/** A WebSocket message as a protocol frame; undefined when it is not JSON. */
export function parseGatewayFrame(data: WebSocket.RawData): GatewayFrame | undefined {
  try {
    return JSON.parse((Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer)).toString('utf8')) as GatewayFrame;
  } catch {
    return undefined;
  }
}

/** The `connect` request's params for Clawplane as a trusted local backend with the gateway token. */
export function backendConnectParams(token: string, scopes: string[], caps?: string[]): Record<string, unknown> {
  return {
    minProtocol: 4,
    maxProtocol: 4,
    client: { id: 'gateway-client', version: 'clawplane', platform: 'linux', mode: 'backend' },
    role: 'operator',
    scopes,
    ...(caps ? { caps } : {}),
    auth: { token },
  };
}

export async function gatewayRpc(
  transport: GatewayTransport,
  token: string,
  method: string,
  params: unknown,
  opts: { executor?: string; timeoutMs?: number } = {},
): Promise<unknown> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const ws = transport.websocket({ headers: opts.executor ? { 'x-clawplane-executor': opts.executor } : {} });
  const done = Promise.withResolvers<unknown>();
  const timer = setTimeout(() => done.reject(new Error(`the gateway did not answer ${method} within ${timeoutMs} ms`)), timeoutMs);
  const send = (id: string, m: string, p: unknown) => ws.send(JSON.stringify({ type: 'req', id, method: m, params: p }));
  ws.on('message', (data: WebSocket.RawData) => {
    const f = parseGatewayFrame(data);
    if (!f) return;
    if (f.type === 'event' && f.event === 'connect.challenge') {
      send('connect', 'connect', backendConnectParams(token, ['operator.admin']));
      return;
    }
    if (f.type !== 'res') return;
    if (!f.ok) {
      done.reject(
        new Error(`${f.id === 'connect' ? 'connect' : method} refused by the gateway: ${f.error?.code ?? 'ERROR'}: ${f.error?.message ?? 'no reason given'}`),
      );
      return;
    }
    if (f.id === 'connect') send('call', method, params);
    else if (f.id === 'call') done.resolve(f.payload);
  });
  ws.on('error', (err) => done.reject(err));
  ws.on('close', () => done.reject(new Error(`the gateway closed the connection before answering ${method}`)));
  try {
    return await done.promise;
  } finally {
    clearTimeout(timer);
    ws.terminate();
  }
}

/** One buffered request through a transport (the host's own small calls: probes, rotation checks). */
export function transportRequest(
  transport: GatewayTransport,
  opts: { method?: string; path: string; headers?: http.OutgoingHttpHeaders; body?: string; timeoutMs?: number },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = transport.request({ ...opts, timeoutMs: opts.timeoutMs ?? 30_000 });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
