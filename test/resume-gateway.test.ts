/**
 * Warm resume through the local driver (issue 10), on a real OpenClaw gateway: a suspendable sandbox
 * (warmResume) answers a chat, is suspended (gone afterwards, its broker token revoked), resumed from
 * the snapshot (new pid; adopt/status work) and answers again with the earlier turn in what the model
 * receives, with the isolation kept; after resume the credentials rotate (old gateway token 401). A
 * suspend while a request is in flight fails and leaves the sandbox running. A snapshot is used once. A
 * corrupted image makes resume throw with CRIU's error lines, leaving the state for a cold start.
 * The only stand-in is the LLM provider (a fake broker relays to it). Skipped without root or without
 * the patched CRIU (scripts/build-criu.sh), with the reason.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import type { SandboxBroker, SandboxRegistration } from '../src/broker/types.ts';
import { DEFAULT_TOOL_POLICY, renderOpenclawConfig } from '../src/runtime/config.ts';
import { RuntimeStore } from '../src/runtime/store.ts';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local/driver.ts';
import { SandboxResumeError } from '../src/sandbox/types.ts';
import { socketRequest } from '../src/sandbox/host/socket-http.ts';
import type { SandboxRef, SandboxSpec } from '../src/sandbox/types.ts';
import { SANDBOX_LAYOUT } from '../src/sandbox/host/dirs.ts';
import { unixTransport } from '../src/sandbox/host/unix-transport.ts';

/** The local driver's init pid of a sandbox (its part of the ref). */
const pidOf = (r: SandboxRef): number => (r.native as { pid: number }).pid;
import { startFakeLlm, type FakeLlm } from './helpers/fake-llm.ts';
import { chat, OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot, waitFor } from './helpers/sandbox.ts';

const CRIU_BIN = process.env['CLAWPLANE_CRIU_BIN'] ?? '/var/tmp/clawplane-criu/bin/criu';

function driverFor(root: string, broker: SandboxBroker | undefined, warmResume: boolean): LocalSandboxDriver {
  return new LocalSandboxDriver({
    root,
    broker,
    log: pino({ level: 'silent' }),
    dataBytes: 16 * 2 ** 30,
    nproc: 4096,
    nofile: 4096,
    tmpBytes: 64 * 2 ** 20,
    cgroup: { memoryBytes: 3 * 2 ** 30, pids: 1024, cpus: 0 },
    criuBin: CRIU_BIN,
    warmResume,
  });
}

async function skipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (CRIU, and the uid drop before bubblewrap)';
  const s = await driverFor('/tmp/unused', undefined, true).snapshots.support();
  return s.supported ? false : `${s.reason} (CI does not build CRIU)`;
}

/** A broker stand-in: one Unix socket per registration, relaying model calls to the fake LLM when the token is live. */
function fakeBroker(dir: string, llm: FakeLlm): SandboxBroker & { live: Set<string>; revoked: string[] } {
  let n = 0;
  const live = new Set<string>();
  const revoked: string[] = [];
  return {
    live,
    revoked,
    async registerSandbox(): Promise<SandboxRegistration> {
      const token = randomBytes(16).toString('hex');
      const socketPath = path.join(dir, `broker-${++n}.sock`);
      const server = http.createServer((req, res) => {
        if (req.headers.authorization !== `Bearer ${token}` || !live.has(token)) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"message":"bad broker token"}}');
          return;
        }
        const up = http.request(
          `${llm.url}${req.url ?? '/'}`,
          { method: req.method, headers: { 'content-type': req.headers['content-type'] ?? 'application/json' } },
          (ur) => {
            res.writeHead(ur.statusCode ?? 502, ur.headers);
            ur.pipe(res);
          },
        );
        up.on('error', () => res.destroy());
        req.pipe(up);
      });
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
      live.add(token);
      return {
        socketPath,
        token,
        sandboxStartId: String(n),
        async close() {
          if (live.delete(token)) revoked.push(token);
          server.closeAllConnections();
          await new Promise<void>((resolve) => server.close(() => resolve()));
        },
      };
    },
  };
}

const readyz = async (sock: string) =>
  (await socketRequest(sock, { path: '/readyz', headers: { connection: 'close' }, timeoutMs: 3000 }).catch(() => undefined))?.status === 200;

/** Every entry below `dir` with its size (what a cold start after a failed resume must find again). */
async function listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(e.parentPath, e.name);
    const s = await stat(full).catch(() => undefined);
    out.push(`${path.relative(dir, full)} ${e.isFile() ? (s?.size ?? '?') : 'dir'}`);
  }
  return out.sort();
}

test('warm resume of a real gateway through the driver: chat, suspend, resume with history, rotate, one use per image, corrupted image falls back', {
  skip: await skipReason(),
  timeout: 900_000,
}, async () => {
  const llm = await startFakeLlm();
  const root = await sandboxRoot();
  const brokerDir = await mkdtemp('/var/tmp/clawplane-test-broker-');
  await chmod(brokerDir, 0o700);
  const broker = fakeBroker(brokerDir, llm);
  const store = new RuntimeStore({ dir: RUNTIME_CACHE, nodePackageVersion: '24.21.0' });
  await store.pull(OPENCLAW_VERSION);
  const runtime = await store.resolve(OPENCLAW_VERSION);
  const driver = driverFor(root, broker, true);
  const instanceId = '00000000-0000-4000-8000-0000000010c1';
  const config = renderOpenclawConfig({
    gatewayPort: SANDBOX_LAYOUT.executorPort(0),
    egressPort: SANDBOX_LAYOUT.egressPort,
    stateDir: '/tenant/work/e0',
    logFile: '/tenant/log/e0.openclaw.log',
    agents: [{ id: 'main', name: 'main' }],
    models: ['default'],
    tools: DEFAULT_TOOL_POLICY,
    hooks: true,
    gatewayTokenFile: '/conf/gateway-token',
  });
  const spec: SandboxSpec = {
    tenantId: '00000000-0000-4000-8000-0000000010c0',
    instanceId,
    runtime,
    configs: { e0: JSON.stringify(config) },
    gatewayToken: 'resume-test-gateway-token-0001',
    hooksToken: 'resume-test-hooks-token-0001',
    tenantUid: 61_991,
    clusterId: 'test',
  };
  const sock = driver.dirs(instanceId).ingress;
  const handles: SandboxRef[] = [];
  try {
    assert.deepEqual(await driver.snapshots.support(), { supported: true });
    const t0 = performance.now();
    const first = await driver.start(spec);
    handles.push(first);
    await waitFor('the cold-started gateway', () => readyz(sock), 240_000);
    const coldMs = performance.now() - t0;
    const c1 = await chat(unixTransport(sock), spec.gatewayToken, 'Remember this word: PAPAYA', 'resume-s1');
    assert.equal(c1.status, 200, c1.body);
    assert.match(c1.text, /Hello from/);
    const brokerToken1 = [...broker.live][0];

    // A request still in flight on the ingress socket: CRIU cannot dump that connection; the suspend
    // fails and the sandbox keeps running and answering.
    const busy = net.connect(sock);
    await new Promise<void>((resolve) => busy.once('connect', () => resolve()));
    busy.write('POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-length: 100\r\n\r\n{');
    const busySnap = path.join(root, 'snapshots', 'busy');
    const failed = await driver.snapshots.suspendInto(first, busySnap).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    busy.destroy();
    assert.ok(failed, 'the suspend with an open connection failed');
    assert.match(failed.message, /Unix socket \d+ not found|half of stream/, failed.message);
    assert.ok((await driver.status(first)).running, 'a failed dump leaves the sandbox running');
    await waitFor('the gateway after the failed dump', () => readyz(sock), 30_000);
    assert.ok(!(await readdir(busySnap)).includes('img'), 'no partial images left');

    // Suspend: the sandbox is gone, its broker registration revoked.
    const snap = path.join(root, 'snapshots', 'one');
    const s = await driver.snapshots.suspendInto(first, snap);
    assert.ok(s.imageBytes > 100 * 2 ** 20, `an image of the gateway's memory (${s.imageBytes} bytes)`);
    assert.ok(s.stateBytes > 0);
    assert.deepEqual(await driver.status(first), { running: false, reason: 'the sandbox process is gone' });
    assert.ok(!(await readyz(sock)), 'nothing answers while suspended');
    assert.ok(brokerToken1 && broker.revoked.includes(brokerToken1), 'the broker token of the suspended sandbox is revoked');
    assert.equal((await stat(snap)).mode & 0o777, 0o700, 'the snapshot is root-only');

    // Resume: a new pid, ready at once, the earlier turn still in the conversation.
    const t1 = performance.now();
    const resumed = await driver.snapshots.resumeFrom(spec, snap);
    handles.push(resumed);
    await waitFor('the resumed gateway', () => readyz(sock), 30_000);
    const resumeMs = performance.now() - t1;
    assert.notEqual(pidOf(resumed), pidOf(first));
    const st = await driver.status(resumed);
    assert.ok(st.running && st.health?.ready, JSON.stringify(st));
    assert.equal(st.running && st.health?.executors[0]?.restarts, 0, 'the same gateway process, not a restart');
    assert.equal(await driver.adopt(resumed), true);
    // The isolation after restore, from a fresh process inside (the supervisor's exec) and from the host.
    const probe = await driver.exec(resumed, [
      '/bin/sh',
      '-c',
      'grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status | tr -s "\t" " "; for f in /x /usr/x /conf/x /tenant/work/x; do (: >"$f") 2>/dev/null && echo "write $f ok" || echo "write $f refused"; done; rm -f /tenant/work/x; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "; unshare -U true 2>/dev/null && echo userns-ok || echo userns-refused',
    ]);
    assert.deepEqual(
      probe.stdout.trim().split('\n'),
      [
        'CapEff: 0000000000000000',
        'CapBnd: 0000000000000000',
        'NoNewPrivs: 1',
        'Seccomp: 2',
        'write /x refused',
        'write /usr/x refused',
        'write /conf/x refused',
        'write /tenant/work/x ok',
        'lo',
        'userns-refused',
      ],
      probe.stderr,
    );
    assert.match(await readFile(`/proc/${pidOf(resumed)}/status`, 'utf8'), new RegExp(`\\nUid:\\s+${spec.tenantUid}\\s`), "the tenant's own host uid");
    assert.deepEqual(
      (await driver.list()).map((h) => pidOf(h)),
      [pidOf(resumed)],
    );
    const before = llm.requests.length;
    const c2 = await chat(unixTransport(sock), spec.gatewayToken, 'What was the word?', 'resume-s1');
    const logTail = async () => (await driver.logs({ tenantId: spec.tenantId, instanceId }, { tail: 15 })).map((l) => `${l.source}: ${l.line}`).join('\n');
    assert.equal(c2.status, 200, `${c2.body}\n${await logTail()}`);
    const seen = JSON.stringify(llm.requests.slice(before).map((r) => r.body['messages']));
    assert.match(seen, /PAPAYA/, 'the model sees the turn from before the suspend');
    assert.ok(!broker.revoked.includes([...broker.live][0] ?? ''), 'a new broker registration serves the resumed sandbox');

    // Rotate after resume: the old gateway token is refused from then on.
    const next = 'resume-test-gateway-token-0002';
    await driver.rotateCredentials(resumed, { current: spec.gatewayToken, next });
    const models = async (token: string) =>
      (await socketRequest(sock, { path: '/v1/models', headers: { authorization: `Bearer ${token}`, connection: 'close' }, timeoutMs: 10_000 })).status;
    assert.equal(await models(spec.gatewayToken), 401);
    assert.equal(await models(next), 200);
    spec.gatewayToken = next;

    // One restore per image.
    assert.ok(!(await readdir(snap)).includes('img'), 'the images are deleted after use');
    await assert.rejects(driver.snapshots.resumeFrom(spec, snap), (err: unknown) => err instanceof SandboxResumeError && /already used/.test(err.message));

    // A corrupted image: resume throws with CRIU's own error lines; the state is intact; a cold start works.
    const snap2 = path.join(root, 'snapshots', 'two');
    await driver.snapshots.suspendInto(resumed, snap2);
    const work = path.join(root, instanceId, 'work');
    const stateBefore = await listing(work);
    const fh = await open(path.join(snap2, 'img', 'inventory.img'), 'r+');
    await fh.write(Buffer.alloc(16, 0xee), 0, 16, 0);
    await fh.close();
    const err = await driver.snapshots.resumeFrom(spec, snap2).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SandboxResumeError, String(err));
    assert.ok(err.errors.length > 0 && err.errors.every((l) => l.length > 0), 'CRIU error lines');
    assert.ok(err.message.includes(err.errors[0] ?? '\u0000'), err.message);
    assert.ok(!(await driver.list()).length, 'nothing left running');
    assert.deepEqual(await listing(work), stateBefore, 'the tenant state is as at the suspend');
    assert.ok((await readFile(path.join(snap2, 'restore.log'), 'utf8')).length > 0, "CRIU's log is kept for the record");
    const cold = await driver.start(spec);
    handles.push(cold);
    await waitFor('the cold start after a failed resume', () => readyz(sock), 240_000);
    const c3 = await chat(unixTransport(sock), spec.gatewayToken, 'And now?', 'resume-s1');
    assert.equal(c3.status, 200, c3.body);
    assert.match(JSON.stringify(llm.requests.at(-1)?.body['messages']), /PAPAYA/, 'the history survived the fallback');
    await driver.stop(cold);
    console.log(
      `warm resume (driver): cold start ${Math.round(coldMs)} ms; suspend ${Math.round(s.dumpMs)} ms dump, image ${(s.imageBytes / 2 ** 20).toFixed(0)} MiB, state ${(s.stateBytes / 2 ** 20).toFixed(1)} MiB; resume to /readyz ${Math.round(resumeMs)} ms; corrupted image: ${err.errors.join(' | ')}`,
    );
  } finally {
    // Only what this test started: the pid with its recorded start time.
    for (const h of handles) if ((await driver.status(h)).running) process.kill(pidOf(h), 'SIGKILL');
    await driver.close();
    await rm(brokerDir, { recursive: true, force: true });
  }
});
