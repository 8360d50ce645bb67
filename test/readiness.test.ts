import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseConfig } from '../src/config/schema.ts';
import { EmbeddedDatabase } from '../src/db/embedded.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer } from '../src/server/serve.ts';

// This file runs its own embedded PostgreSQL (not the shared test server) because it stops and restarts it.
describe('readiness follows the database', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-ready-'));
  const log = createLogger('silent');
  const pg = new EmbeddedDatabase({ dataDir: dir, port: 0, log });
  const url = await pg.start();
  const server = await startServer(
    parseConfig({ DATABASE_URL: url, CLAWPLANE_SECRET_KEY: randomBytes(32).toString('hex'), CLAWPLANE_PORT: '0', CLAWPLANE_DATA_DIR: dir }),
    log,
  );
  after(async () => {
    await server.stop().catch(() => undefined);
    await pg.stop({ force: true }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  const ready = async () => {
    const r = await fetch(`${server.url}/readyz`);
    return { status: r.status, body: (await r.json()) as { checks: { database: string } } };
  };

  test('200 when the database is up, 503 while it is down, 200 again when it returns', async () => {
    assert.equal((await ready()).status, 200);
    await pg.stop({ force: true });
    const down = await ready();
    assert.equal(down.status, 503);
    assert.equal(down.body.checks.database, 'unreachable');
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200, 'the process itself stays up');
    await pg.start();
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await ready()).status;
      if (status !== 200) await sleep(200);
    }
    assert.equal(status, 200);
  });

  test('metrics count requests by route', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /clawplane_http_requests_total\{method="GET",route="\/readyz",status="503"\} \d+/);
    assert.match(text, /clawplane_http_requests_total\{method="GET",route="\/readyz",status="200"\} \d+/);
  });
});
