/**
 * The host side of a sandbox's ingress (issue 7): HTTP requests to the gateway, through the transport
 * the sandbox driver gives, with the gateway token attached here, so it never reaches a client.
 */
import type http from 'node:http';
import type { GatewayTransport } from '../sandbox/types.ts';

export interface GatewayCall {
  transport: GatewayTransport;
  token: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** The socket's idle timeout for this request; 0 for none (a task turn held at an approval is silent for hours). */
  idleTimeoutMs?: number;
}

/**
 * Sends one request; resolves at the response head (the body is a stream, not buffered). A request that
 * fails on a reused keep-alive socket before any answer (the server closed it as we wrote: EPIPE,
 * ECONNRESET) never reached the gateway, so it is sent once more on a fresh socket (Node's documented
 * pattern, `request.reusedSocket`).
 */
export function gatewayRequest(call: GatewayCall): { response: Promise<http.IncomingMessage>; abort(): void } {
  let current: http.ClientRequest | undefined;
  let aborted: Error | undefined;
  const send = (retry: boolean): Promise<http.IncomingMessage> =>
    new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = call.transport.request({
        method: call.method,
        path: call.path,
        headers: {
          ...call.headers,
          authorization: `Bearer ${call.token}`,
          ...(call.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(call.body)) }),
        },
      });
      current = req;
      if (call.idleTimeoutMs !== undefined) req.setTimeout(call.idleTimeoutMs);
      let answered = false;
      req.on('response', (res) => {
        answered = true;
        resolve(res);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (retry && !answered && !aborted && req.reusedSocket && STALE_SOCKET.has(err.code ?? '')) resolve(send(false));
        else reject(err);
      });
      if (aborted) req.destroy(aborted);
      else req.end(call.body);
    });
  return {
    response: send(true),
    abort: () => {
      aborted = new Error('aborted by the client');
      current?.destroy(aborted);
    },
  };
}

const STALE_SOCKET = new Set(['ECONNRESET', 'EPIPE']);

export async function readAll(res: http.IncomingMessage, limit = 16 << 20): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    if (n > limit) throw new Error(`gateway answer larger than ${limit} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
