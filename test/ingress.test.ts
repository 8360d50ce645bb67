/**
 * The ingress on a real OpenClaw 2026.9.6 under bubblewrap (issue 7), with the fake provider behind the
 * real broker (the one allowed stand-in). ONE gateway for the file (each costs ~20 s and ~1 GB): it is
 * woken by chat, streamed through, reached over the WebSocket, reaped when idle (and backed up), woken by
 * a webhook, its credentials rotated, and restored from a backup past a corrupted one. Backup → destroy →
 * restore as another instance and live backups are lifecycle cases (test/helpers/lifecycle-suite.ts).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { FRAME_BURST, FRAME_RATE } from '../src/ingress/ws.ts';
import type { Instance } from '../src/instances/instances.ts';
import { transportRequest } from '../src/sandbox/gateway-rpc.ts';
import { ApiClient, onboard, twoTenants } from './helpers/client.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot, transportOf, waitFor } from './helpers/sandbox.ts';
import { capturedLogs, startTestServer } from './helpers/server.ts';
import { uidBase } from './helpers/gateway.ts';

const IDLE_MS = 6000;

interface SseRead {
  status: number;
  headers: Headers;
  events: { event: string | undefined; data: string }[];
  text: string;
  firstContentAt: number | undefined;
}

/** Reads an SSE answer event by event, noting when the first content chunk arrived. */
async function readSse(res: Response, stopAfterFirstContent = false, ac?: AbortController, onFirstContent?: () => void): Promise<SseRead> {
  const out: SseRead = { status: res.status, headers: res.headers, events: [], text: '', firstContentAt: undefined };
  if (!res.body) return out;
  const dec = new TextDecoder();
  let buf = '';
  const reader = res.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1] ?? '';
      out.events.push({ event, data });
      if (!event && data.startsWith('{')) {
        const d = (JSON.parse(data) as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content;
        if (d) {
          if (out.firstContentAt === undefined) {
            out.firstContentAt = Date.now();
            onFirstContent?.();
          }
          out.text += d;
          if (stopAfterFirstContent) {
            ac?.abort();
            await reader.cancel().catch(() => undefined);
            return out;
          }
        }
      }
    }
  }
  return out;
}

describe('ingress on real OpenClaw', { timeout: 1_500_000 }, async () => {
  const fake = await startFakeLlm();
  fake.slowMs = 1500;
  const root = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
    CLAWPLANE_LOG_LEVEL: 'info',
    CLAWPLANE_IDLE_TIMEOUT_MS: String(IDLE_MS),
    // The test sweeps by hand, so nothing is reaped between tests by surprise.
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    // This file covers the stop-and-backup path of idle instances (warm resume: test/resume-service.test.ts).
    CLAWPLANE_WARM_RESUME: 'false',
  });
  after(async () => {
    for (const h of await server.services.sandboxes.list()) await server.services.sandboxes.stop(h);
  });
  await server.services.runtimes.pull(OPENCLAW_VERSION);
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const by = { actor: 'test', userId: a.ownerId };
  const key = await server.services.credentials.create(a.id, { name: 'fake-llm-key', type: 'api_key', value: 'sk-fake-0123456789abcdef' }, by);
  const provider = await server.services.providers.create(a.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  // "slow": the fake provider pauses after its first word, so streaming and aborts are observable.
  await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'slow' }] }, by);
  const member = new ApiClient(server.url, {
    bearer: (await server.services.tokens.create(a.id, { name: 'm', role: 'member', createdBy: a.ownerId }, { actor: 'test' })).token,
  });
  const viewerToken = (await server.services.tokens.create(a.id, { name: 'v', role: 'viewer', createdBy: a.ownerId }, { actor: 'test' })).token;
  await admin.json('PATCH', `/api/v1/tenants/${a.slug}`, { quotas: { maxInstances: 3 } });
  const inst = (await a.client.json<Instance>('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'main', start: false }, 202)).id;
  const chatUrl = `/api/v1/tenants/${a.slug}/chat/completions`;
  const chatBody = (content: string, session: string, stream = false) => ({ model: 'agent/main', messages: [{ role: 'user', content }], stream, session });
  const secrets = async () => {
    return [await server.services.instances.gatewayToken(inst), await server.services.instances.hooksToken(inst)];
  };
  const audits = async (action: string, id = inst) =>
    (await server.db.query(`SELECT 1 FROM audit_events WHERE action = $1 AND target = $2`, [action, `instance:${id}`])).rowCount ?? 0;
  const status = async (id: string) => (await server.services.instances.byId(id))?.status;

  test('a stopped instance is woken by chat: 10 concurrent requests, one start, all succeed; SSE sees waking/ready', async () => {
    assert.equal(await status(inst), 'stopped');
    const t0 = Date.now();
    const calls = Array.from({ length: 10 }, (_, i) =>
      i === 0
        ? member.call('POST', chatUrl, chatBody('wake up', 'wake-0', true), { 'x-clawplane-progress': 'events' }).then((r) => readSse(r))
        : member.call('POST', chatUrl, chatBody(`wake up ${i}`, `wake-${i}`)).then(async (r) => ({ status: r.status, body: await r.text() })),
    );
    const results = await Promise.all(calls);
    console.log(`cold wake + 10 chats: ${Date.now() - t0} ms`);
    const sse = results[0] as SseRead;
    assert.equal(sse.status, 200);
    const progress = sse.events.filter((e) => e.event === 'clawplane.progress').map((e) => (JSON.parse(e.data) as { state: string }).state);
    assert.deepEqual(progress, ['waking', 'ready']);
    assert.equal(sse.text, 'Hello from slow');
    for (const r of results.slice(1) as { status: number; body: string }[]) {
      assert.equal(r.status, 200, r.body);
      assert.equal((JSON.parse(r.body) as { choices: { message: { content: string } }[] }).choices[0]?.message.content, 'Hello from slow');
    }
    assert.equal(await audits('instance.start'), 1, 'one start for ten requests');
    assert.equal(await audits('instance.running'), 1);
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(m, new RegExp(`clawplane_instance_wakes_total\\{tenant="${a.id}",outcome="ready"\\} 1`));
    assert.match(m, new RegExp(`clawplane_instance_wake_seconds_count\\{tenant="${a.id}"\\} 1`));
  });

  test('streaming: the first chunk arrives before the upstream finishes; the turn is archived and searchable', async () => {
    const n = fake.requests.length;
    const t0 = Date.now();
    // The provider holds the rest of its answer for up to 30 s and is let go once the client has the first
    // chunk: through OpenClaw and Clawplane, a buffering hop would deliver nothing until the 30 s were up.
    fake.slowMs = 30_000;
    const res = await member.call('POST', chatUrl, chatBody('remember the word PELICAN', 'hist', true));
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    assert.equal(res.headers.get('x-clawplane-session'), 'hist');
    let upstreamDoneAtFirst: boolean | undefined;
    const r = await readSse(res, false, undefined, () => {
      upstreamDoneAtFirst = fake.requests.slice(n).some((q) => q.finishedAt !== undefined);
      fake.releaseSlow();
    }).finally(() => (fake.slowMs = 1500));
    assert.equal(r.text, 'Hello from slow');
    const up = fake.requests.slice(n).find((q) => q.finishedAt !== undefined);
    assert.ok(up?.finishedAt && r.firstContentAt);
    assert.equal(upstreamDoneAtFirst, false, `the first chunk reached the client (${r.firstContentAt - t0} ms) while the provider still held the rest`);
    const hist = await member.json<{ items: { role: string; content: string }[] }>('GET', `/api/v1/tenants/${a.slug}/chat/sessions/hist/messages`);
    assert.deepEqual(
      hist.items.map((x) => [x.role, x.content]),
      [
        ['user', 'remember the word PELICAN'],
        ['assistant', 'Hello from slow'],
      ],
    );
    const found = await member.json<{ items: { sessionId: string; snippet: string }[] }>('GET', `/api/v1/tenants/${a.slug}/chat/search?q=pelican`);
    assert.equal(found.items[0]?.sessionId, 'hist');
    assert.match(found.items[0]?.snippet ?? '', /«PELICAN»/);
    const sessions = await member.json<{ items: { sessionId: string }[] }>('GET', `/api/v1/tenants/${a.slug}/chat/sessions`);
    assert.ok(sessions.items.some((s) => s.sessionId === 'hist'));
  });

  test('a client disconnect aborts the upstream run', async () => {
    fake.slowMs = 15_000;
    try {
      const n = fake.requests.length;
      const ac = new AbortController();
      const res = await fetch(server.url + chatUrl, {
        method: 'POST',
        headers: { authorization: `Bearer ${member.bearer}`, 'content-type': 'application/json' },
        body: JSON.stringify(chatBody('this will be cut off', 'abort-me', true)),
        signal: ac.signal,
      });
      const r = await readSse(res, true, ac);
      assert.equal(r.text, 'Hello');
      const t0 = Date.now();
      const req = await waitFor('the provider call aborted', async () => fake.requests.slice(n).find((q) => q.aborted), 12_000);
      assert.equal(req.finishedAt, undefined);
      console.log(`upstream aborted ${Date.now() - t0} ms after the client went away`);
    } finally {
      fake.slowMs = 1500;
    }
  });

  test("WebSocket: chat for a member, config.patch refused; tenant A cannot reach B's gateway by any id, session or socket", async () => {
    const wsUrl = (slug: string, q = '') => `${server.url.replace('http', 'ws')}/api/v1/tenants/${slug}/gateway/ws${q}`;
    const open = (url: string, token: string) =>
      new Promise<{ ws: WebSocket; frames: Record<string, unknown>[] }>((resolve, reject) => {
        const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
        const frames: Record<string, unknown>[] = [];
        ws.on('message', (d: Buffer) => frames.push(JSON.parse(d.toString()) as Record<string, unknown>));
        ws.on('open', () => resolve({ ws, frames }));
        ws.on('unexpected-response', (req, res) => {
          req.destroy();
          reject(new Error(`HTTP ${res.statusCode}`));
        });
        ws.on('error', reject);
      });
    const rpc = async (c: { ws: WebSocket; frames: Record<string, unknown>[] }, id: string, method: string, params: unknown) => {
      c.ws.send(JSON.stringify({ type: 'req', id, method, params }));
      return waitFor(`${method} answer`, async () => c.frames.find((f) => f['type'] === 'res' && f['id'] === id), 60_000);
    };
    const c = await open(wsUrl(a.slug), member.bearer ?? '');
    try {
      const hello = await rpc(c, 'c1', 'connect', { minProtocol: 4, maxProtocol: 4, client: { id: 'console', version: '1', platform: 'web', mode: 'ui' } });
      assert.equal(hello['ok'], true, JSON.stringify(hello));
      const patch = await rpc(c, 'p1', 'config.patch', { raw: '{}', baseHash: 'x' });
      assert.equal(patch['ok'], false);
      assert.match(JSON.stringify(patch['error']), /not available through Clawplane/);
      for (const m of ['exec.approval.resolve', 'config.get', 'secrets.list']) assert.equal((await rpc(c, `x-${m}`, m, {}))['ok'], false, m);
      const sent = await rpc(c, 's1', 'chat.send', { sessionKey: 'agent:main:ws-test', message: 'hello over the socket', idempotencyKey: 'k1' });
      assert.equal(sent['ok'], true, JSON.stringify(sent));
      await waitFor(
        'chat final event',
        async () => c.frames.find((f) => f['type'] === 'event' && f['event'] === 'chat' && JSON.stringify(f['payload']).includes('"final"')),
        90_000,
      );
      const list = await rpc(c, 'l1', 'sessions.list', {});
      assert.equal(list['ok'], true, JSON.stringify(list));
      for (const s of await secrets()) assert.ok(!JSON.stringify(c.frames).includes(s), 'the gateway token never reaches the client');
    } finally {
      c.ws.close();
    }
    // A viewer may read but not chat.
    const v = await open(wsUrl(a.slug), viewerToken);
    try {
      assert.equal((await rpc(v, 'c1', 'connect', {}))['ok'], true);
      assert.equal((await rpc(v, 's1', 'chat.send', { sessionKey: 'agent:main:ws-test', message: 'x', idempotencyKey: 'k2' }))['ok'], false);
    } finally {
      v.ws.close();
    }
    // A flood of frames: the excess over the socket's burst is refused RATE_LIMITED at once (neither
    // forwarded nor queued behind access checks); the socket stays usable once the client slows down.
    const f = await open(wsUrl(a.slug), member.bearer ?? '');
    try {
      assert.equal((await rpc(f, 'c1', 'connect', {}))['ok'], true);
      const flood = FRAME_BURST * 10;
      for (let i = 0; i < flood; i++) f.ws.send(JSON.stringify({ type: 'req', id: `h${i}`, method: 'health', params: {} }));
      const answers = await waitFor(
        'an answer to every flooded frame',
        async () => {
          const got = f.frames.filter((x) => x['type'] === 'res' && String(x['id']).startsWith('h'));
          return got.length === flood ? got : undefined;
        },
        60_000,
      );
      const limited = answers.filter((x) => JSON.stringify(x['error'] ?? {}).includes('RATE_LIMITED'));
      assert.ok(limited.length > 0, `the excess was refused (${limited.length} of ${flood})`);
      assert.ok(answers.length - limited.length >= FRAME_BURST - 1, 'the burst itself was forwarded');
      assert.match(JSON.stringify(limited[0]?.['error']), /frames a second .* slow down/);
      await new Promise((r) => setTimeout(r, (FRAME_BURST / FRAME_RATE) * 1000));
      assert.equal((await rpc(f, 'after-flood', 'sessions.list', {}))['ok'], true, 'the socket works again after the client slows down');
      assert.equal(f.ws.readyState, WebSocket.OPEN);
    } finally {
      f.ws.close();
    }
    // An open socket does not outlive its access. A revoked token: the next request frame is not
    // forwarded, the socket closes 1008 saying why.
    const closing = (x: { ws: WebSocket }) =>
      new Promise<{ code: number; reason: string }>((resolve) =>
        x.ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
      );
    const short = await server.services.tokens.create(a.id, { name: 'short-lived', role: 'member', createdBy: a.ownerId }, { actor: 'test' });
    const r1 = await open(wsUrl(a.slug), short.token);
    const r1Closed = closing(r1);
    assert.equal((await rpc(r1, 'c1', 'connect', {}))['ok'], true);
    await server.services.tokens.revoke(a.id, short.info.id, { actor: 'test' });
    const before = fake.requests.length;
    r1.ws.send(
      JSON.stringify({
        type: 'req',
        id: 's1',
        method: 'chat.send',
        params: { sessionKey: 'agent:main:ws-revoked', message: 'after revocation', idempotencyKey: 'k-revoked' },
      }),
    );
    assert.deepEqual(await r1Closed, { code: 1008, reason: 'the API token was revoked or expired' });
    assert.ok(!r1.frames.some((f) => f['id'] === 's1' && f['ok'] === true), 'the chat after the revocation was not forwarded');
    // A suspended tenant: a socket sending frames and an idle one (checked again while open) both close.
    const busy = await open(wsUrl(a.slug), member.bearer ?? '');
    const idle = await open(wsUrl(a.slug), member.bearer ?? '');
    const busyClosed = closing(busy);
    const idleClosed = closing(idle);
    assert.equal((await rpc(busy, 'c1', 'connect', {}))['ok'], true);
    await admin.json('POST', `/api/v1/tenants/${a.slug}/suspend`, { reason: 'test: open sockets close' });
    try {
      busy.ws.send(
        JSON.stringify({
          type: 'req',
          id: 's2',
          method: 'chat.send',
          params: { sessionKey: 'agent:main:ws-suspended', message: 'after suspension', idempotencyKey: 'k-suspended' },
        }),
      );
      assert.deepEqual(await busyClosed, { code: 1008, reason: `tenant "${a.slug}" was suspended` });
      assert.deepEqual(await idleClosed, { code: 1008, reason: `tenant "${a.slug}" was suspended` });
      assert.ok(
        busy.frames.some((f) => f['event'] === 'clawplane.error' && JSON.stringify(f['payload']).includes('Access withdrawn')),
        'the client is told why',
      );
      assert.equal(
        fake.requests.slice(before).filter((q) => JSON.stringify(q.body).includes('after')).length,
        0,
        'no turn reached the provider after the access was withdrawn',
      );
    } finally {
      await admin.json('POST', `/api/v1/tenants/${a.slug}/resume`, {});
    }
    // Tenant A against B: B's slug, B's id, B's instance id (as header or query), B's session.
    await assert.rejects(open(wsUrl(b.slug), a.client.bearer ?? ''), /HTTP 404/);
    await assert.rejects(open(wsUrl(b.id), member.bearer ?? ''), /HTTP 404/);
    await assert.rejects(open(wsUrl(a.slug, `?instance=${b.instanceId}`), member.bearer ?? ''), /HTTP 404/);
    const viaB = await member.call('POST', chatUrl, chatBody('hi', 'x'), { 'x-clawplane-instance': b.instanceId });
    assert.equal(viaB.status, 404);
    assert.equal((await member.call('POST', `/api/v1/tenants/${b.slug}/chat/completions`, chatBody('hi', 'x'))).status, 404);
    assert.equal((await member.call('GET', `/api/v1/tenants/${a.slug}/chat/sessions/${b.sessionId}/messages`)).status, 404);
    assert.equal((await member.call('GET', `/api/v1/tenants/${b.slug}/chat/sessions/${b.sessionId}/messages`)).status, 404);
  });

  test('idle reaper: stops (and backs up) an idle instance', async () => {
    await new Promise((r) => setTimeout(r, IDLE_MS + 500));
    assert.deepEqual(await server.services.reaper.sweep(), [inst]);
    await waitFor('stopped', async () => (await status(inst)) === 'stopped', 120_000);
    const backups = await waitFor(
      'idle backup',
      async () => {
        const l = await member.json<{ items: { reason: string; sizeBytes: number }[] }>('GET', `/api/v1/tenants/${a.slug}/instances/${inst}/backups`);
        return l.items.find((x) => x.reason === 'idle') ? l.items : undefined;
      },
      60_000,
    );
    assert.ok((backups[0]?.sizeBytes ?? 0) > 1000);
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(m, new RegExp(`clawplane_instance_idle_stops_total\\{tenant="${a.id}"\\} 1`));
    assert.match(m, new RegExp(`clawplane_backup_duration_seconds_count\\{tenant="${a.id}",reason="idle"\\} 1`));
    // It stays stopped: the next test's webhook wakes it (a chat waking a stopped instance is the first test).
  });

  test("an inbound webhook wakes the instance the reaper stopped and reaches OpenClaw's hooks (agent turn and wake event); the history is intact", async () => {
    assert.equal(await status(inst), 'stopped');
    const hooks = `/api/v1/tenants/${a.slug}/hooks`;
    // Refused before anything wakes: a viewer, a body OpenClaw would not take.
    assert.equal((await new ApiClient(server.url, { bearer: viewerToken }).call('POST', `${hooks}/agent`, { message: 'x' })).status, 403);
    assert.equal((await member.call('POST', `${hooks}/agent`, { message: 'x', sessionKey: 'agent:main:main' })).status, 400);
    assert.equal(await status(inst), 'stopped');
    const n = fake.requests.length;
    const r = await member.call(
      'POST',
      `${hooks}/agent`,
      { message: 'Webhook: the nightly import of ORCA-7 finished', name: 'import', deliver: false, waitForCompletion: true },
      { 'idempotency-key': 'hook-test-1' },
    );
    const text = await r.text();
    assert.equal(r.status, 200, text);
    const body = JSON.parse(text) as { ok?: boolean; runId?: string; completion?: { status?: string } };
    assert.equal(body.ok, true, text);
    assert.equal(body.completion?.status, 'ok', text);
    assert.equal(r.headers.get('x-clawplane-instance'), inst);
    assert.equal(await status(inst), 'running', 'the webhook woke the instance');
    assert.ok(
      fake.requests.slice(n).some((q) => JSON.stringify(q.body).includes('ORCA-7')),
      'the hook message reached the model through the broker',
    );
    const w = await member.call('POST', `${hooks}/wake`, { text: 'Deploy finished', mode: 'next-heartbeat' });
    const wt = await w.text();
    assert.equal(w.status, 200, wt);
    assert.match(wt, /"eventOutcome":"(queued|coalesced)"/);
    for (const s of await secrets()) assert.ok(!text.includes(s) && !wt.includes(s), 'no gateway credential in a hook answer');
    const m = fake.requests.length;
    const c = await member.call('POST', chatUrl, chatBody('what word did I ask you to remember?', 'hist'));
    assert.equal(c.status, 200, await c.clone().text());
    // The wake event above may add a heartbeat turn of its own: the chat's model call is the one asking.
    const asked = fake.requests.slice(m).find((q) => JSON.stringify(q.body).includes('what word did I ask'));
    assert.match(JSON.stringify(asked?.body), /PELICAN/, 'the earlier turn came back with the woken gateway');
  });

  test('credentials rotate in place: the old gateway and broker tokens are refused, chat and hooks go on', async () => {
    const sock = await transportOf(server.services, inst);
    const direct = async (token: string) => (await transportRequest(sock, { path: '/v1/models', headers: { authorization: `Bearer ${token}` } })).status;
    const oldGateway = await server.services.instances.gatewayToken(inst);
    const brokerFile = path.join(root, inst, 'out', 'broker.token');
    const oldBroker = (await readFile(brokerFile, 'utf8')).trim();
    assert.equal(await direct(oldGateway), 200);
    // Only tenant admins rotate; members may not.
    assert.equal((await member.call('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/rotate-credentials`)).status, 403);
    const r = await a.client.json<{ rotated: string[] }>('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/rotate-credentials`, undefined, 200);
    assert.deepEqual(r.rotated, ['gateway_token', 'broker_token']);
    const newGateway = await server.services.instances.gatewayToken(inst);
    assert.notEqual(newGateway, oldGateway);
    assert.equal(await direct(oldGateway), 401, 'the old gateway token is refused by the running gateway');
    assert.equal(await direct(newGateway), 200);
    const newBroker = (await readFile(brokerFile, 'utf8')).trim();
    assert.notEqual(newBroker, oldBroker);
    const revoked = await server.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM sandbox_tokens WHERE instance_id = $1 AND revoked_at IS NULL`, [inst]);
    assert.equal(revoked.rows[0]?.n, 1, 'only the new broker token is live');
    // The ingress picked the new token up; a model call goes through the broker with the new broker token.
    const n = fake.requests.length;
    const c = await member.call('POST', chatUrl, chatBody('after the rotation', 'rot'));
    assert.equal(c.status, 200, await c.clone().text());
    assert.ok(fake.requests.length > n, 'the model call reached the provider through the broker');
    const h = await member.call('POST', `/api/v1/tenants/${a.slug}/hooks/wake`, { text: 'still hooked', mode: 'next-heartbeat' });
    assert.equal(h.status, 200, await h.clone().text());
    assert.equal(await status(inst), 'running', 'no restart');
    // Without warm resume a suspend is refused with the reason, and nothing changes.
    const s = await member.call('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/suspend`);
    assert.equal(s.status, 409);
    assert.match(((await s.json()) as { message: string }).message, /was not suspended: .*warm resume is off/);
    assert.equal(await status(inst), 'running');
  });

  test('a corrupted backup is refused with a clear error and changes nothing; the previous one still restores', async () => {
    // Backup, destroy and restore as another instance, and live backups: test/helpers/lifecycle-suite.ts.
    const before = (await a.client.json<{ items: { id: string }[] }>('GET', `/api/v1/tenants/${a.slug}/instances/${inst}/backups`)).items.map((x) => x.id);
    await a.client.json('POST', `/api/v1/tenants/${a.slug}/instances/${inst}/stop`, undefined, 202);
    const list = await waitFor(
      'stop backup',
      async () => {
        const l = await a.client.json<{ items: { id: string; reason: string }[] }>('GET', `/api/v1/tenants/${a.slug}/instances/${inst}/backups`);
        return l.items.some((x) => x.reason === 'stop' && !before.includes(x.id)) ? l.items : undefined;
      },
      120_000,
    );
    await waitFor('stopped', async () => (await status(inst)) === 'stopped', 120_000);
    // Newest first: the stop backup just taken, then the one before it (both after the PELICAN turn).
    const [newest, previous] = list;
    assert.ok(newest && previous && !before.includes(newest.id) && before.includes(previous.id));
    const file = path.join(server.config.dataDir, 'backups', a.id, inst, `${newest.id}.cpbk`);
    const buf = await readFile(file);
    buf[Math.floor(buf.length / 2)] = (buf[Math.floor(buf.length / 2)] ?? 0) ^ 0xff;
    await writeFile(file, buf);
    const refused = await a.client.call('POST', `/api/v1/tenants/${a.slug}/backups/${newest.id}/restore`, { instanceId: inst });
    assert.equal(refused.status, 422);
    const body = (await refused.json()) as { code: string; message: string };
    assert.equal(body.code, 'backup_corrupted');
    assert.match(body.message, /Nothing was changed; restore an earlier backup/);
    assert.equal(await status(inst), 'stopped');
    const ok = await a.client.json<{ instance: Instance }>('POST', `/api/v1/tenants/${a.slug}/backups/${previous.id}/restore`, { instanceId: inst });
    assert.equal(ok.instance.id, inst);
    await waitFor('running again', async () => (await status(inst)) === 'running', 240_000);
    const n = fake.requests.length;
    const c = await member.call('POST', chatUrl, chatBody('still there?', 'hist'));
    assert.equal(c.status, 200);
    assert.equal(c.headers.get('x-clawplane-instance'), inst);
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /PELICAN/);
    for (const s of await secrets()) assert.ok(!capturedLogs.join('').includes(s), 'no gateway or hooks token in any log line');
  });

  test('shutdown: sandboxes stopped by pid, then the server (before its database goes)', async () => {
    for (const h of await server.services.sandboxes.list()) await server.services.sandboxes.stop(h);
    await server.stop();
  });
});
