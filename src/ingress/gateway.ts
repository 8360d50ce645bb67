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
}

/** Sends one request; resolves at the response head (the body is a stream, not buffered). */
export function gatewayRequest(call: GatewayCall): { response: Promise<http.IncomingMessage>; abort(): void } {
  const req = call.transport.request({
    method: call.method,
    path: call.path,
    headers: { ...call.headers, authorization: `Bearer ${call.token}`, ...(call.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(call.body)) }) },
  });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.on('response', resolve);
    req.on('error', reject);
  });
  req.end(call.body);
  return { response, abort: () => req.destroy(new Error('aborted by the client')) };
}

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
