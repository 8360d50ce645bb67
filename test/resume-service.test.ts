/**
 * Warm resume as the product does it (issue 10), on a real OpenClaw gateway under bubblewrap with
 * CLAWPLANE_WARM_RESUME=true: the idle reaper suspends an idle tenant's gateway to a process snapshot
 * instead of stopping it; the next chat resumes it (history intact), the gateway and broker tokens are
 * re-issued (the old gateway token is refused); a deliberately corrupted snapshot falls back to a cold
 * start with the state intact, and the reason is recorded. The only stand-in is the LLM provider (the
 * fake behind the real broker). Skipped without root or without the patched CRIU (scripts/build-criu.sh).
 */
import assert from 'node:assert/strict';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local/driver.ts';
import { transportRequest } from '../src/sandbox/gateway-rpc.ts';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot, transportOf, waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import type { SnapshotRef } from '../src/sandbox/types.ts';
import { uidBase } from './helpers/gateway.ts';

/** The local driver's snapshot directory (its part of the ref). */
const snapDir = (s: SnapshotRef): string => (s.native as { dir: string }).dir;

const CRIU_BIN = process.env['CLAWPLANE_CRIU_BIN'] ?? '/var/tmp/clawplane-criu/bin/criu';
const IDLE_MS = 4000;

async function skipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (CRIU, and the uid drop before bubblewrap)';
  const d = new LocalSandboxDriver({
    root: '/tmp/unused',
    broker: undefined,
    log: pino({ level: 'silent' }),
    dataBytes: 1,
    nproc: 1,
    nofile: 1,
    tmpBytes: 1,
    cgroup: { memoryBytes: 0, pids: 0, cpus: 0 },
    criuBin: CRIU_BIN,
    warmResume: true,
  });
  const s = await d.snapshots.support();
  return s.supported ? false : `${s.reason} (CI does not build CRIU)`;
}

describe('warm resume through the idle reaper and the wake', { skip: await skipReason(), timeout: 1_200_000 }, async () => {
  const fake = await startFakeLlm();
  const root = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
    CLAWPLANE_WARM_RESUME: 'true',
    CLAWPLANE_CRIU_BIN: CRIU_BIN,
    CLAWPLANE_IDLE_TIMEOUT_MS: String(IDLE_MS),
    // The test sweeps by hand.
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
  });
  after(async () => {
    for (const h of await server.services.sandboxes.list()) await server.services.sandboxes.stop(h);
  });
  await server.services.runtimes.pull(OPENCLAW_VERSION);
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  const by = { actor: 'test', userId: a.ownerId };
  const key = await server.services.credentials.create(a.id, { name: 'fake-llm-key', type: 'api_key', value: 'sk-fake-0123456789abcdef' }, by);
  const provider = await server.services.providers.create(a.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] }, by);
  const member = new ApiClient(server.url, {
    bearer: (await server.services.tokens.create(a.id, { name: 'm', role: 'member', createdBy: a.ownerId }, { actor: 'test' })).token,
  });
  const chatUrl = `/api/v1/tenants/${a.slug}/chat/completions`;
  const chatBody = (content: string) => ({ model: 'agent/main', messages: [{ role: 'user', content }], session: 'hist' });
  const row = async (id: string) => server.services.instances.byId(id);
  const metrics = async () => (await fetch(`${server.url}/metrics`)).text();
  const audit = async (action: string, id: string) =>
    (
      await server.db.query<{ detail: Record<string, unknown> }>(`SELECT detail FROM audit_events WHERE action = $1 AND target = $2 ORDER BY seq`, [
        action,
        `instance:${id}`,
      ])
    ).rows.map((r) => r.detail);
  const idleSuspend = async (id: string) => {
    await new Promise((r) => setTimeout(r, IDLE_MS + 500));
    assert.deepEqual(await server.services.reaper.sweep(), [id]);
    const r = await row(id);
    assert.equal(r?.status, 'suspended', r?.statusReason);
    assert.equal(r?.desiredState, 'stopped');
    // Says why (idle, not "on request") with numbers for people.
    assert.match(r?.statusReason ?? '', /^suspended to a snapshot: idle for [\d.]+ s, past the idle timeout \(\d+ MiB, dumped in [\d.]+ (ms|s)\)$/);
    assert.ok(r?.snapshot, 'the row remembers its snapshot');
    assert.equal(r.sandbox, null);
    assert.equal((await server.services.sandboxes.list()).length, 0, 'the sandbox is gone while suspended');
    return r.snapshot;
  };

  let inst = '';
  test('chat wakes a fresh instance (cold) and it remembers a word', async () => {
    const r = await member.call('POST', chatUrl, chatBody('Remember the word PELICAN.'));
    assert.equal(r.status, 200, await r.clone().text());
    inst = r.headers.get('x-clawplane-instance') ?? '';
    assert.ok(inst);
  });

  test('idle: suspended, not stopped; the next chat resumes it with history, new tokens, the old one refused', async () => {
    const oldToken = await server.services.instances.gatewayToken(inst);
    const snap = await idleSuspend(inst);
    const m0 = await metrics();
    assert.match(m0, new RegExp(`clawplane_instance_idle_suspends_total\\{tenant="${a.id}"\\} 1`));
    assert.match(m0, new RegExp(`clawplane_instance_suspend_seconds_count\\{tenant="${a.id}"\\} 1`));
    assert.ok(
      Number(new RegExp(`clawplane_instance_snapshot_bytes\\{tenant="${a.id}"\\} (\\d+)`).exec(m0)?.[1]) > 100 * 2 ** 20,
      'a gateway image is hundreds of MiB',
    );
    assert.equal((await stat(snapDir(snap))).mode & 0o077, 0, 'the snapshot (tokens and memory in clear) is root-only');
    const n = fake.requests.length;
    const t0 = Date.now();
    const r = await member.call('POST', chatUrl, chatBody('What word did I ask you to remember?'));
    const ms = Date.now() - t0;
    assert.equal(r.status, 200, await r.clone().text());
    console.log(`chat to a suspended instance answered in ${ms} ms (resume + turn)`);
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /PELICAN/, 'the earlier turn is in what the model receives');
    const cur = await row(inst);
    assert.equal(cur?.status, 'running');
    assert.match(cur?.statusReason ?? '', /resumed from a snapshot in \d+ ms/);
    assert.equal(cur?.snapshot, null);
    await assert.rejects(stat(snapDir(snap)), /ENOENT/, 'a snapshot is used once, then deleted');
    const newToken = await server.services.instances.gatewayToken(inst);
    assert.notEqual(newToken, oldToken);
    const sock = await transportOf(server.services, inst);
    const direct = async (t: string) =>
      (await transportRequest(sock, { path: '/v1/models', headers: { authorization: `Bearer ${t}`, connection: 'close' } })).status;
    assert.equal(await direct(oldToken), 401, 'the token in the snapshot no longer opens the gateway');
    assert.equal(await direct(newToken), 200);
    assert.equal((await audit('instance.credentials_rotated', inst)).at(-1)?.['reason'], 'resume');
    assert.equal((await audit('instance.suspended', inst)).length, 1);
    assert.equal((await audit('instance.resumed', inst)).length, 1);
    const m = await metrics();
    assert.match(m, new RegExp(`clawplane_instance_resumes_total\\{tenant="${a.id}",outcome="resumed"\\} 1`));
    assert.match(m, new RegExp(`clawplane_instance_resume_seconds_count\\{tenant="${a.id}"\\} 1`));
  });

  test('a corrupted snapshot falls back to a cold start with the state intact, and says why', async () => {
    // Suspended on request this time (tenant.operate), not by the reaper.
    assert.equal(
      (
        await new ApiClient(server.url, {
          bearer: (await server.services.tokens.create(a.id, { name: 'v', role: 'viewer', createdBy: a.ownerId }, { actor: 'test' })).token,
        }).call('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/suspend`)
      ).status,
      403,
    );
    const s = await member.json<{ status: string }>('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/suspend`, undefined, 200);
    assert.equal(s.status, 'suspended');
    const snap = (await row(inst))?.snapshot;
    assert.ok(snap);
    const again = await member.call('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/suspend`);
    assert.equal(again.status, 409, 'a suspended instance is not suspended twice');
    const img = path.join(snapDir(snap), 'img');
    assert.ok((await readdir(img)).includes('inventory.img'));
    const fh = await open(path.join(img, 'inventory.img'), 'r+');
    await fh.write(Buffer.alloc(16, 0xee), 0, 16, 0);
    await fh.close();
    const n = fake.requests.length;
    const r = await member.call('POST', chatUrl, chatBody('And now, which word?'));
    assert.equal(r.status, 200, await r.clone().text());
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /PELICAN/, 'the cold start kept the state');
    const failed = await audit('instance.resume_failed', inst);
    assert.equal(failed.length, 1);
    console.log(`fallback reason: ${String(failed[0]?.['reason'])}`);
    assert.ok(String(failed[0]?.['reason']).length > 10);
    const events = (await a.client.json<{ items: { reason: string }[] }>('GET', `/api/v1/tenants/${a.slug}/instances/${inst}/events`)).items.map(
      (e) => e.reason,
    );
    assert.ok(
      events.some((e) => /resume failed \(.+\); starting cold/.test(e)),
      events.join(' | '),
    );
    assert.match(await metrics(), new RegExp(`clawplane_instance_resumes_total\\{tenant="${a.id}",outcome="cold_start"\\} 1`));
    await assert.rejects(stat(snapDir(snap)), /ENOENT/);
  });
});
