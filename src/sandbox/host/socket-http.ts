import http from 'node:http';

/** One HTTP request over a Unix socket the host owns (a sandbox's ingress or control socket). */
export interface SocketResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export function socketRequest(
  socketPath: string,
  opts: { method?: string; path: string; headers?: Record<string, string>; body?: string; timeoutMs?: number },
): Promise<SocketResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath, method: opts.method ?? 'GET', path: opts.path, headers: { host: 'sandbox', ...opts.headers }, timeout: opts.timeoutMs ?? 30_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${opts.timeoutMs ?? 30_000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}
