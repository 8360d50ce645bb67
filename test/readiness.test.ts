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
import { onboard } from './helpers/client.ts';
import type { TestServer } from './helpers/server.ts';

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

  test('PostgreSQL restarted under write load: clear 503s while it is down, full recovery, nothing lost or half-written', async () => {
    // Onboarding reads only the server's URL and the setup code in its data directory.
    await onboard({ url: server.url, config: { dataDir: dir } } as unknown as TestServer);
    const tenant = await server.services.tenants.create({ slug: 'restart-load', name: 'Restart load' }, { actor: 'test' });
    const { token } = await server.services.tokens.create(tenant.id, { name: 'writer', role: 'tenant_admin', createdBy: null }, { actor: 'test' });
    let n = 0;
    const outcomes: { name: string; status: number; code?: string; retryAfter: string | null }[] = [];
    const write = async () => {
      const name = `key-${n++}`;
      const r = await fetch(`${server.url}/api/v1/tenants/restart-load/credentials`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, type: 'api_key', value: `sk-load-${name}-0123456789` }),
      });
      const body = (await r.json()) as { code?: string };
      outcomes.push({ name, status: r.status, ...(body.code ? { code: body.code } : {}), retryAfter: r.headers.get('retry-after') });
      return r.status;
    };
    // Four writers run throughout; the database is stopped while their requests are in flight.
    let phase: 'before' | 'down' | 'after' = 'before';
    let okAfter = 0;
    const writer = async () => {
      while (phase !== 'after' || okAfter < 20) {
        const status = await write();
        if (phase === 'after' && status === 201) okAfter++;
        if (phase === 'down') await sleep(20);
      }
    };
    const writers = [writer(), writer(), writer(), writer()];
    while (outcomes.filter((o) => o.status === 201).length < 20) await sleep(10);
    phase = 'down';
    await pg.stop({ force: true });
    const downFrom = outcomes.length;
    while (outcomes.length < downFrom + 12) await sleep(20);
    await pg.start();
    phase = 'after';
    await Promise.all(writers);

    const bad = outcomes.filter((o) => o.status !== 201 && !(o.status === 503 && o.code === 'database_unavailable' && o.retryAfter === '5'));
    assert.deepEqual(bad, [], 'every answer is a success or a 503 database_unavailable with Retry-After');
    assert.ok(
      outcomes.slice(downFrom, downFrom + 12).every((o) => o.status === 503),
      'requests while it is down get 503',
    );
    const saved = await server.db.query<{ name: string; audited: boolean }>(
      `SELECT c.name, EXISTS (SELECT 1 FROM audit_events a WHERE a.action = 'credential.create' AND a.target = 'credential:' || c.id) AS audited
         FROM credentials c WHERE c.tenant_id = $1`,
      [tenant.id],
    );
    const names = new Set(saved.rows.map((r) => r.name));
    for (const o of outcomes.filter((x) => x.status === 201)) assert.ok(names.has(o.name), `${o.name} was acknowledged and is saved`);
    assert.deepEqual(
      saved.rows.filter((r) => !r.audited),
      [],
      'no credential without its audit row (nothing half-written)',
    );
    assert.equal((await ready()).status, 200);
  });

  test('metrics count requests by route', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /clawplane_http_requests_total\{method="GET",route="\/readyz",status="503"\} \d+/);
    assert.match(text, /clawplane_http_requests_total\{method="GET",route="\/readyz",status="200"\} \d+/);
  });
});
