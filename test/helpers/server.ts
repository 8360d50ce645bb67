import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll } from './after-all.ts';
import { parseConfig, type Config } from '../../src/config/schema.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { startServer, type RunningServer } from '../../src/server/serve.ts';
import { keepForScan, seenBodies } from './client.ts';
import { testDatabase, type TestDatabase } from './db.ts';

/** Every log line any server in this test process wrote: tests scan it for planted canaries. */
export const capturedLogs: string[] = [];

export interface TestServer extends RunningServer {
  config: Config;
  database: TestDatabase;
  /** fetch relative to the server, JSON in and out. */
  call(method: string, path: string, opts?: { body?: unknown; headers?: Record<string, string>; raw?: string }): Promise<Response>;
}

/** A real Clawplane server in this process on its own cloned database, stopped after the file's tests. */
export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const database = await testDatabase({ autoDrop: false });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-srv-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    DATABASE_URL: database.url,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_PORT: '0',
    CLAWPLANE_LOG_LEVEL: 'debug',
    ...env,
  });
  // CLAWPLANE_TEST_LOG_FILE=path keeps the server's log lines for debugging a failed run.
  const logFile = process.env['CLAWPLANE_TEST_LOG_FILE'];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      capturedLogs.push(chunk.toString());
      if (logFile) appendFileSync(logFile, chunk);
      cb();
    },
  });
  const server = await startServer(config, createLogger(config.logLevel, sink));
  // One hook, in this order: sandboxes (they outlive a stopped server by design), the server (drains
  // requests, stops workflows), then the database and the data directory.
  afterAll(async () => {
    // No error body or status reason showed the host: tenants must not read its paths or uids.
    const hostDetail = new RegExp(
      `${[dataDir, config.instances.sandboxRoot, os.tmpdir() + '/', '/var/tmp/', '/proc/']
        .filter((d) => d.length > 1)
        .map((d) => d.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        .join('|')}|\\buid[=: ]+\\d{3,}`,
    );
    const leaks = seenBodies.filter((b) => hostDetail.test(b.text)).map((b) => `${b.what}: ${b.text.slice(0, 300)}`);
    seenBodies.length = 0;
    for (const h of await server.services.sandboxes.list().catch(() => [])) await server.services.sandboxes.stop(h).catch(() => undefined);
    await server.stop();
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
    if (leaks.length > 0) throw new Error(`host details in API answers: ${leaks.join(' | ')}`);
  });
  const call: TestServer['call'] = async (method, p, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    let body: string | undefined = opts.raw;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await fetch(server.url + p, { method, headers, body });
    keepForScan(`${method} ${p}`, res);
    return res;
  };
  return { ...server, config, database, call };
}
