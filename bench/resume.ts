/**
 * `npm run bench -- resume` (issue 10): in one run, on this machine, the same sandbox (local driver,
 * warm resume on, a real OpenClaw gateway under the supervisor) started cold vs resumed from a CRIU
 * snapshot: p50 start/resume-to-ready through the ingress socket (target: warm <= 2 s and <= 0.15x
 * cold), snapshot size (process images and the tenant-state archive) and suspend time. The gateway
 * answers one chat before each suspend (a broker stand-in answers the model call), so the images are
 * those of a used gateway. Needs root and the patched CRIU (scripts/build-criu.sh).
 * BENCH_COLD_CYCLES (default 3), BENCH_RESUME_CYCLES (default 3).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { SandboxBroker, SandboxRegistration } from '../src/broker/types.ts';
import { createLogger } from '../src/observability/logger.ts';
import { DEFAULT_TOOL_POLICY, renderOpenclawConfig } from '../src/runtime/config.ts';
import { RuntimeStore } from '../src/runtime/store.ts';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local/driver.ts';
import { socketRequest } from '../src/sandbox/host/socket-http.ts';
import type { SandboxRef, SandboxSpec } from '../src/sandbox/types.ts';
import { SANDBOX_LAYOUT } from '../src/sandbox/host/dirs.ts';

/** The local driver's init pid of a sandbox (its part of the ref). */
const pidOf = (r: SandboxRef): number => (r.native as { pid: number }).pid;

const VERSION = process.env['CLAWPLANE_RUNTIME_DEFAULT_VERSION'] ?? '2026.9.6';
const CACHE = process.env['CLAWPLANE_RUNTIME_CACHE'] ?? '/var/tmp/clawplane-runtime-cache';
const CRIU_BIN = process.env['CLAWPLANE_CRIU_BIN'] ?? '/var/tmp/clawplane-criu/bin/criu';
const COLD = Number(process.env['BENCH_COLD_CYCLES'] ?? 3);
const WARM = Number(process.env['BENCH_RESUME_CYCLES'] ?? 3);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const p50 = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] ?? 0) : ((s[s.length / 2 - 1] ?? 0) + (s[s.length / 2] ?? 0)) / 2;
};
const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

/** The broker stand-in: answers every chat completion itself, saying how many turns it was sent. */
function standInBroker(dir: string): SandboxBroker {
  let n = 0;
  return {
    async registerSandbox(): Promise<SandboxRegistration> {
      const token = randomBytes(16).toString('hex');
      const socketPath = path.join(dir, `broker-${++n}.sock`);
      const server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          const j = JSON.parse(body || '{}') as { model?: string; stream?: boolean; messages?: { role: string }[] };
          const turns = (j.messages ?? []).filter((m) => m.role === 'user' || m.role === 'assistant').length;
          const text = `bench reply: saw ${turns} turns`;
          const usage = { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 };
          if (!j.stream) {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(
              JSON.stringify({
                id: 'c',
                object: 'chat.completion',
                created: 1,
                model: j.model,
                choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
                usage,
              }),
            );
            return;
          }
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          const base = { id: 'c', object: 'chat.completion.chunk', created: 1, model: j.model };
          res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: text }, finish_reason: null }] })}\n\n`);
          res.end(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage })}\n\ndata: [DONE]\n\n`);
        });
      });
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
      return {
        socketPath,
        token,
        sandboxStartId: String(n),
        async close() {
          server.closeAllConnections();
          await new Promise<void>((resolve) => server.close(() => resolve()));
        },
      };
    },
  };
}

async function untilReady(sock: string, t0: number, driver: LocalSandboxDriver, handle: SandboxRef): Promise<number> {
  for (;;) {
    const r = await socketRequest(sock, { path: '/readyz', headers: { connection: 'close' }, timeoutMs: 3000 }).catch(() => undefined);
    if (r?.status === 200) return performance.now() - t0;
    if (!(await driver.status(handle)).running) throw new Error('the sandbox exited before it was ready');
    await sleep(25);
  }
}

async function chat(sock: string, token: string, content: string): Promise<string> {
  const r = await socketRequest(sock, {
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-openclaw-session-key': 'bench', connection: 'close' },
    body: JSON.stringify({ model: 'openclaw/main', messages: [{ role: 'user', content }] }),
    timeoutMs: 120_000,
  });
  if (r.status !== 200) throw new Error(`chat answered ${r.status}: ${r.body.slice(0, 300)}`);
  return (JSON.parse(r.body) as { choices: { message: { content: string } }[] }).choices[0]?.message.content ?? '';
}

export async function main(): Promise<void> {
  const log = createLogger('warn');
  const store = new RuntimeStore({ dir: CACHE, nodePackageVersion: '24.21.0' });
  await store.pull(VERSION, (e) => process.stderr.write(`\r${e.message}   `));
  process.stderr.write('\n');
  const runtime = await store.resolve(VERSION);
  const sbRoot = await mkdtemp('/var/tmp/clawplane-bench-resume-');
  await chmod(sbRoot, 0o711);
  const brokerDir = await mkdtemp('/var/tmp/clawplane-bench-broker-');
  await chmod(brokerDir, 0o700);
  const driver = new LocalSandboxDriver({
    root: sbRoot,
    broker: standInBroker(brokerDir),
    log,
    dataBytes: 16 * 2 ** 30,
    nproc: 4096,
    nofile: 8192,
    tmpBytes: 64 * 2 ** 20,
    cgroup: { memoryBytes: 3 * 2 ** 30, pids: 512, cpus: 0 },
    criuBin: CRIU_BIN,
    warmResume: true,
  });
  let handle: SandboxRef | undefined;
  try {
    const support = await driver.snapshots.support();
    if (!support.supported) throw new Error(`warm resume is not supported here: ${support.reason}`);
    const instanceId = '00000000-0000-4000-8000-00000000be11';
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
      tenantId: '00000000-0000-4000-8000-00000000be10',
      instanceId,
      runtime,
      configs: { e0: JSON.stringify(config) },
      gatewayToken: 'bench-resume-token-0000',
      hooksToken: 'bench-resume-hooks-token',
      tenantUid: 299_998,
      clusterId: 'test',
    };
    const sock = driver.dirs(instanceId).ingress;
    const cold: number[] = [];
    for (let i = 0; i < COLD; i++) {
      process.stderr.write(`cold start ${i + 1}/${COLD}… `);
      const t0 = performance.now();
      handle = await driver.start(spec);
      cold.push(await untilReady(sock, t0, driver, handle));
      process.stderr.write(`${sec(cold.at(-1) ?? 0)}\n`);
      if (i < COLD - 1) {
        await driver.stop(handle);
        handle = undefined;
      }
    }
    if (!handle) throw new Error('no sandbox');
    const warm: number[] = [];
    const dump: number[] = [];
    const suspendTotal: number[] = [];
    const image: number[] = [];
    const state: number[] = [];
    const replies: string[] = [];
    for (let i = 0; i < WARM; i++) {
      replies.push(await chat(sock, spec.gatewayToken, `turn ${i + 1}`));
      const snap = path.join(sbRoot, 'snapshots', String(i));
      process.stderr.write(`suspend/resume ${i + 1}/${WARM}… `);
      const t0 = performance.now();
      const s = await driver.snapshots.suspendInto(handle, snap);
      suspendTotal.push(performance.now() - t0);
      dump.push(s.dumpMs);
      image.push(s.imageBytes);
      state.push(s.stateBytes);
      const t1 = performance.now();
      handle = await driver.snapshots.resumeFrom(spec, snap);
      warm.push(await untilReady(sock, t1, driver, handle));
      await rm(snap, { recursive: true, force: true });
      process.stderr.write(`dump ${sec(s.dumpMs)}, resume to ready ${sec(warm.at(-1) ?? 0)}\n`);
    }
    replies.push(await chat(sock, spec.gatewayToken, 'after the last resume'));
    await driver.stop(handle);
    handle = undefined;

    const ratio = p50(warm) / p50(cold);
    const rows = [
      [`cold start to ready, p50 of ${cold.length} (start(): bubblewrap + supervisor + gateway)`, `${sec(p50(cold))}  [${cold.map(sec).join(', ')}]`],
      [`warm resume to ready, p50 of ${warm.length} (resume(): state check + CRIU restore)`, `${sec(p50(warm))}  [${warm.map(sec).join(', ')}]`],
      ['  target warm p50 <= 2 s', p50(warm) <= 2000 ? 'met' : 'NOT met'],
      ['  ratio warm / cold (target <= 0.15)', `${ratio.toFixed(3)} ${ratio <= 0.15 ? 'met' : 'NOT met'}`],
      ['suspend (quiesce + dump + state archive), p50', `${sec(p50(suspendTotal))}  [${suspendTotal.map(sec).join(', ')}]`],
      ['  of which CRIU dump, p50', `${sec(p50(dump))}  [${dump.map(sec).join(', ')}]`],
      ['snapshot: process images, p50', `${mib(p50(image))}  [${image.map(mib).join(', ')}]`],
      ['snapshot: tenant-state archive (work, shared-rw, log; tar.gz), p50', `${(p50(state) / 2 ** 20).toFixed(1)} MiB`],
      ['chat answers (the model saw the whole history each time)', replies.join(' / ')],
    ];
    const w = Math.max(...rows.map((r) => (r[0] ?? '').length));
    console.log(`\nresume bench: OpenClaw ${VERSION}, ${os.cpus().length} CPUs, CRIU ${CRIU_BIN}\n`);
    for (const [k, v] of rows) console.log(`${(k ?? '').padEnd(w)}  ${v ?? ''}`);
  } finally {
    if (handle) await driver.stop(handle).catch(() => undefined);
    await driver.close();
    await rm(sbRoot, { recursive: true, force: true });
    await rm(brokerDir, { recursive: true, force: true });
  }
}
