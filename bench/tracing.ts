/**
 * `npm run bench -- tracing [seconds-per-level]`: the broker bench (bench/broker.ts) with OpenTelemetry
 * tracing on, exporting every span to an OTLP/HTTP receiver in this process that counts and discards
 * them. Compare its added latency with `npm run bench -- broker` (tracing off) in the same session.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../src/observability/logger.ts';
import { flushTracing, startTracing } from '../src/observability/tracing.ts';

export async function main(args: string[]): Promise<void> {
  let bytes = 0;
  let posts = 0;
  const sink = http.createServer((req, res) => {
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      posts++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const { port } = sink.address() as AddressInfo;
  await startTracing({ endpoint: `http://127.0.0.1:${port}`, log: createLogger('warn') });
  console.log('tracing ON: every broker request is a server span with a provider client span, exported over OTLP/HTTP');
  const { main: broker } = (await import('./broker.ts')) as { main: (a: string[]) => Promise<void> };
  await broker(args);
  await flushTracing();
  console.log(`exported: ${posts} OTLP requests, ${(bytes / 1024).toFixed(0)} KiB`);
  sink.close();
}
