/**
 * The per-instance directory on this host, for drivers whose sandboxes run here (local, docker): what
 * is root's, what the sandbox reads, what the tenant owns, and the files a start writes into it (the
 * tokens, the gateway configs, the supervisor and its config). Modes and owners are the isolation:
 * docs/adr/0005-local-sandbox-bubblewrap.md.
 */
import { chmod, chown, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SandboxUnavailableError, type GatewayLayout, type SandboxSpec } from '../types.ts';
import type { SupervisorConfig, SupervisorListen } from '../supervisor/protocol.ts';
import { KNOWLEDGE_PLUGIN_ID, knowledgePluginManifest, knowledgePluginPackage } from '../gateway-plugin/knowledge.ts';

/** The supervisor program's folder; its JavaScript is written to each sandbox's read-only /conf. */
export const SUPERVISOR_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'supervisor');
/** The gateway plugins' sources; the knowledge plugin is written to each sandbox's read-only /conf. */
const GATEWAY_PLUGIN_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'gateway-plugin');

/**
 * V8 flags for every gateway (NODE_OPTIONS, so its worker processes too; the gateway command stays [node, entry, …]).
 * A young generation capped at 8 MB semi-spaces (Node's default here is larger): measured on warm starts of OpenClaw
 * 2026.9.6 under Clawplane's config, gateway RSS 10 s after ready 826 MB instead of 922 (medians of 3), CPU to ready
 * 10.8 s vs 11.0; 1, 2 and 4 MB saved no more and cost up to 1 s of CPU. The old generation is not capped: a gateway
 * holds ~1 GB at peak under real chats. (--optimize-for-size and --lite-mode: 700 / 660 MB but 2-3x the CPU to ready.)
 */
export const GATEWAY_NODE_OPTIONS = '--max-semi-space-size=8';

/** Fixed ports inside the sandbox's own network namespace: no other tenant shares it. */
const GATEWAY_BASE_PORT = 18789;

/** The paths inside a sandbox, the same on both host drivers (the binds below put them there). */
export const SANDBOX_LAYOUT: GatewayLayout = {
  executorPort: (index) => GATEWAY_BASE_PORT + index * 10,
  egressPort: 18080,
  stateDir: (id) => `/tenant/work/${id}`,
  logFile: (id) => `/tenant/log/${id}.openclaw.log`,
  gatewayTokenFile: '/conf/gateway-token',
};

/**
 * The layout of the drivers that prepare sandboxes with prepareInstanceDirs (local, docker): it also
 * writes the knowledge tool plugin, so their gateways load it. A driver that does not (Kubernetes today)
 * uses SANDBOX_LAYOUT and its gateways render no plugin (a missing load path would fail the config).
 */
export const HOST_SANDBOX_LAYOUT: GatewayLayout = { ...SANDBOX_LAYOUT, knowledgePluginDir: `/conf/plugins/${KNOWLEDGE_PLUGIN_ID}` };

/** Mount points inside the sandbox of the instance directories. */
export const MOUNTS = {
  runtime: '/opt/runtime',
  conf: '/conf',
  out: '/run/clawplane/out',
  in: '/run/clawplane/in',
  work: '/tenant/work',
  sharedRw: '/tenant/shared-rw',
  sharedRo: '/tenant/shared-ro',
  log: '/tenant/log',
} as const;

export interface InstanceDirs {
  dir: string;
  /** Root-only: records, host sockets, logs of the runtime (bwrap.log). */
  host: string;
  /** Read-only inside: tokens, configs, the supervisor. */
  conf: string;
  /** Read-only inside: the broker relay's socket and token. */
  out: string;
  /** docker: where the supervisor makes its sockets (sealed by the host once they exist). */
  in: string;
  work: string;
  sharedRo: string;
  sharedRw: string;
  log: string;
  ingress: string;
  control: string;
  record: string;
  suspendable: string;
  /** criu restore --root (restore-root.ts); root-owned 0755, in the 0711 instance dir. */
  rootfs: string;
}

export function instanceDirs(root: string, instanceId: string): InstanceDirs {
  if (!/^[0-9a-f-]{36}$/.test(instanceId)) throw new Error(`bad instance id ${instanceId}`);
  const dir = path.join(root, instanceId);
  const host = path.join(dir, 'host');
  return {
    dir,
    host,
    conf: path.join(dir, 'conf'),
    out: path.join(dir, 'out'),
    in: path.join(dir, 'in'),
    work: path.join(dir, 'work'),
    sharedRo: path.join(dir, 'shared-ro'),
    sharedRw: path.join(dir, 'shared-rw'),
    log: path.join(dir, 'log'),
    ingress: path.join(host, 'ingress.sock'),
    control: path.join(host, 'control.sock'),
    record: path.join(host, 'sandbox.json'),
    suspendable: path.join(host, 'suspendable.json'),
    rootfs: path.join(dir, 'rootfs'),
  };
}

/**
 * Makes the instance's directories and writes what a start needs (idempotent): the tokens, the gateway
 * configs, the supervisor (as plain JavaScript) and its config. `listen` says where the supervisor
 * serves the host; `nodeBin` is the Node that runs gateways inside.
 */
export async function prepareInstanceDirs(
  p: InstanceDirs,
  spec: SandboxSpec,
  opts: { ingress: SupervisorListen; control: SupervisorListen; supervisorDir?: string | undefined },
): Promise<SupervisorConfig> {
  const uid = spec.tenantUid;
  // Host-only, root-owned: the sandbox's uid can pass through but not list or write.
  await mkdirMode(p.dir, 0o711, 0, 0);
  await mkdirMode(p.host, 0o700, 0, 0);
  // Readable by the sandbox's group, written only by us; bound read-only.
  await mkdirMode(p.conf, 0o750, 0, uid);
  await mkdirMode(p.out, 0o750, 0, uid);
  await mkdirMode(p.sharedRo, 0o750, 0, uid);
  // The tenant's own: bound read-write; 0700 so no other uid on the host reads them.
  for (const d of [p.work, p.sharedRw, p.log]) await mkdirMode(d, 0o700, uid, uid);
  for (const id of Object.keys(spec.configs)) await mkdirMode(path.join(p.work, id), 0o700, uid, uid);

  await writePrivate(path.join(p.conf, 'gateway-token'), spec.gatewayToken + '\n', uid);
  await writeOwned(path.join(p.conf, 'hooks-token'), spec.hooksToken + '\n', uid);
  const executors = Object.entries(spec.configs).map(([id, json], i) => ({ id, json, port: SANDBOX_LAYOUT.executorPort(i) }));
  for (const e of executors) {
    await mkdirMode(path.join(p.conf, e.id), 0o750, 0, uid);
    await writeOwned(path.join(p.conf, e.id, 'openclaw.json'), e.json, uid);
  }
  const nodeBin = `${MOUNTS.runtime}/${spec.runtime.nodeRel}`;
  const conf: SupervisorConfig = {
    executors: executors.map((e) => ({
      id: e.id,
      port: e.port,
      stateDir: SANDBOX_LAYOUT.stateDir(e.id),
      configPath: `${MOUNTS.conf}/${e.id}/openclaw.json`,
      logFile: `${MOUNTS.log}/${e.id}.log`,
    })),
    ...(spec.run ? { run: spec.run } : {}),
    command: [nodeBin, `${MOUNTS.runtime}/${spec.runtime.entryRel}`, 'gateway', 'run', '--bind', 'loopback'],
    env: {
      PATH: `${path.posix.dirname(nodeBin)}:/usr/bin:/bin`,
      TMPDIR: '/tmp',
      // Headless, offline, quiet: openclaw-runtime.md §1.
      OPENCLAW_DISABLE_BONJOUR: '1',
      OPENCLAW_SKIP_CHANNELS: '1',
      OPENCLAW_NO_RESPAWN: '1',
      OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
      OPENCLAW_NO_AUTO_UPDATE: '1',
      OPENCLAW_OFFLINE: '1',
      NODE_OPTIONS: GATEWAY_NODE_OPTIONS,
    },
    gatewayTokenFile: SANDBOX_LAYOUT.gatewayTokenFile,
    hooksTokenFile: `${MOUNTS.conf}/hooks-token`,
    egressPort: SANDBOX_LAYOUT.egressPort,
    brokerSocket: `${MOUNTS.out}/broker.sock`,
    brokerTokenFile: `${MOUNTS.out}/broker.token`,
    ingress: opts.ingress,
    control: opts.control,
    logFile: `${MOUNTS.log}/supervisor.log`,
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
  };
  await writeOwned(path.join(p.conf, 'sandbox.json'), JSON.stringify(conf, null, 2), uid);
  // Plain JavaScript inside: type stripping would load its WASM compiler and cost ~40 MB of RSS per
  // sandbox (measured: 91 MB vs ~50 MB), against the bench target of supervisor ≤ 3% of a gateway.
  const ts = await readFile(path.join(opts.supervisorDir ?? SUPERVISOR_DIR, 'supervisor.ts'), 'utf8');
  await writeOwned(path.join(p.conf, 'supervisor.mjs'), stripTypeScriptTypes(ts, { mode: 'strip' }), uid);
  await writeKnowledgePlugin(p, uid);
  return conf;
}

/**
 * The knowledge tool plugin (docs/adr/0007), read-only inside like the supervisor, so a tenant cannot
 * change what its tools do. Owned by the sandbox's uid, not root: OpenClaw blocks a plugin whose folder or
 * entry belongs to neither its own uid nor root (its discovery's ownership check), and host root is not
 * mapped into the sandbox's user namespace (it shows as the overflow uid). The owner cannot write either:
 * /conf is bound read-only on every driver, and the parent is root's.
 */
async function writeKnowledgePlugin(p: InstanceDirs, uid: number): Promise<void> {
  const dir = path.join(p.conf, 'plugins', KNOWLEDGE_PLUGIN_ID);
  await mkdirMode(path.join(p.conf, 'plugins'), 0o750, 0, uid);
  await mkdirMode(dir, 0o500, uid, uid);
  for (const [name, text] of Object.entries(await knowledgePluginFiles())) {
    const file = path.join(dir, name);
    const tmp = `${file}.tmp`;
    await rm(tmp, { force: true });
    await writeFile(tmp, text, { mode: 0o400, flag: 'wx' });
    await chown(tmp, uid, uid);
    await chmod(tmp, 0o400);
    await rename(tmp, file);
  }
}

/** The knowledge plugin's folder as file name → content: its code as plain JavaScript, manifest, package.json. */
export async function knowledgePluginFiles(): Promise<Record<string, string>> {
  const ts = await readFile(path.join(GATEWAY_PLUGIN_DIR, 'knowledge.ts'), 'utf8');
  return {
    'index.js': stripTypeScriptTypes(ts, { mode: 'strip' }),
    'openclaw.plugin.json': JSON.stringify(knowledgePluginManifest(), null, 2),
    'package.json': JSON.stringify(knowledgePluginPackage(), null, 2),
  };
}

/** The supervisor config a start wrote (root-owned conf dir: trusted). */
export async function readSupervisorConfig(p: InstanceDirs): Promise<SupervisorConfig> {
  return JSON.parse(await readFile(path.join(p.conf, 'sandbox.json'), 'utf8')) as SupervisorConfig;
}

/** The tenant's uid as its directories record it (the group of the root-owned conf dir). */
export async function tenantUidOf(p: InstanceDirs): Promise<number> {
  return (await stat(p.work)).uid;
}

export async function mkdirMode(dir: string, mode: number, uid: number, gid: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  await chown(dir, uid, gid);
  await chmod(dir, mode);
}

/**
 * A file only the sandbox's uid reads (0600, its owner), in a root-owned directory it cannot write: what
 * OpenClaw's file SecretRef provider requires (private, regular, one link) for the gateway token.
 */
export async function writePrivate(file: string, text: string, uid: number): Promise<void> {
  const tmp = `${file}.tmp`;
  await rm(tmp, { force: true });
  await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
  await chown(tmp, uid, uid);
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

export async function writeOwned(file: string, text: string, gid: number): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, text, { mode: 0o640 });
  await chown(tmp, 0, gid);
  await chmod(tmp, 0o640);
  await rename(tmp, file);
}

/**
 * Sandbox uids resolve bind sources (bwrap 0.8 resolves even `--bind-fd` by path) or traverse to their
 * files, so every parent directory must let "others" pass (x bit). Say which one does not.
 */
export async function assertTraversable(dir: string, setting: string): Promise<void> {
  let cur = path.resolve(dir);
  for (;;) {
    const parent = path.dirname(cur);
    if (parent === cur) return;
    cur = parent;
    const s = await stat(cur);
    if ((s.mode & 0o001) === 0) {
      throw new SandboxUnavailableError(
        `${dir} (${setting}) is not reachable by sandbox users: ${cur} has mode ${(s.mode & 0o777).toString(8)}. Run "chmod o+x ${cur}" or move ${setting} below a directory others may traverse (e.g. /var/lib/clawplane).`,
      );
    }
  }
}
