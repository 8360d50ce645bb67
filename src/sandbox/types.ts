/**
 * The sandbox driver port (docs/adr/0010-sandbox-port.md). A sandbox is where one instance runs: a
 * supervisor and N gateway executors, with no network, reachable only through the transport its driver
 * gives (connect) and able to reach only the broker. Drivers: `local` (bubblewrap, ADR 0005) and
 * `docker` (one container per sandbox) and `kubernetes` (one pod per sandbox, ADR 0011).
 *
 * Keying: a method about a running sandbox takes its SandboxRef; a method about an instance's stored
 * state (prepare, destroy, logs, state export/import) takes its InstanceKey. Drivers keep no state the
 * database cannot rebuild: the ref is persisted by the caller and given back after a restart.
 */
import type http from 'node:http';
import type { Readable } from 'node:stream';
import type WebSocket from 'ws';
import type { ResolvedRuntime } from '../runtime/store.ts';
import { ClawplaneError } from '../errors.ts';

/** The drivers a control plane can be configured with (CLAWPLANE_SANDBOX_DRIVER). */
export const SANDBOX_DRIVERS = ['local', 'docker', 'kubernetes'] as const;
export type SandboxDriverName = (typeof SANDBOX_DRIVERS)[number];

/** Which control plane (sandbox_cluster.cluster_id) and which node (host, Docker engine) a sandbox belongs to. */
export interface SandboxOwner {
  clusterId: string;
  nodeId: string;
}

/** An instance's identity as the driver keys its stored state. */
export interface InstanceKey {
  tenantId: string;
  instanceId: string;
}

/** What a driver needs to run one instance. The rendered configs hold no secret. */
export interface SandboxSpec extends InstanceKey {
  runtime: ResolvedRuntime;
  /** Per-executor openclaw.json, rendered from the database with the driver's layout(); keys are executor ids. */
  configs: Record<string, string>;
  /** The gateway token (an owner credential of the gateway); written only where the gateway can read it. */
  gatewayToken: string;
  /** The token the gateway's inbound webhooks accept (only the ingress sends it). */
  hooksToken: string;
  /** The tenant's own unprivileged uid: everything in its sandboxes runs as it (a host uid, a container user). */
  tenantUid: number;
  /** The control plane starting it (the node is the driver's own). */
  clusterId: string;
  /** The tenant's tier (kubernetes: picks the RuntimeClass); absent: the driver's default tier. */
  tier?: string;
  /**
   * The executors (keys of `configs`) to run at start; absent: all. The others are declared and stopped until
   * setExecutors asks for them (a pool's sandbox, docs/adr/0014-executor-pools.md).
   */
  run?: string[];
  /**
   * The sandbox's own memory and CPU limits (a pool's sandbox: its executors' reservations); absent: the driver's
   * configured per-sandbox limits (CLAWPLANE_SANDBOX_MEMORY_MB, CLAWPLANE_SANDBOX_CPUS).
   */
  limits?: SandboxLimits;
}

/** Memory in bytes and CPU in cores (0: no CPU limit) for one sandbox as a whole. */
export interface SandboxLimits {
  memoryBytes: number;
  cpus: number;
}

/**
 * A running sandbox, as the caller persists it (instances.sandbox). `native` is the driver's own part
 * (local: pid and start time; docker: container id) and means nothing outside it.
 */
export interface SandboxRef {
  driver: string;
  sandboxId: string;
  instanceId: string;
  tenantId: string;
  runtimeVersion: string;
  startedAt: string;
  owner: SandboxOwner;
  native: unknown;
}

/** Where the rendered gateway config must point, as the driver lays the sandbox out (runtime/config.ts renders it). */
export interface GatewayLayout {
  /** The loopback port of executor `index` inside the sandbox. */
  executorPort(index: number): number;
  /** The loopback port where the supervisor takes the gateways' model calls for the broker. */
  egressPort: number;
  stateDir(executorId: string): string;
  logFile(executorId: string): string;
  /** The file holding the gateway token (OpenClaw's file SecretRef). */
  gatewayTokenFile: string;
  /**
   * Where the driver puts the knowledge tool plugin (src/sandbox/gateway-plugin) inside the sandbox;
   * absent where it does not, and then the rendered config does not load it.
   */
  knowledgePluginDir?: string;
}

/**
 * How the host reaches a running sandbox's gateways: plain HTTP requests and the WebSocket protocol,
 * with the executor chosen by the `x-clawplane-executor` header. Nothing outside a driver knows whether
 * this is a Unix socket, a TCP port or a pod.
 */
export interface GatewayTransport {
  /** One HTTP request to the sandbox's ingress; the caller ends it and reads the response. */
  request(opts: { method?: string; path: string; headers?: http.OutgoingHttpHeaders; timeoutMs?: number }): http.ClientRequest;
  /** A WebSocket to a gateway's protocol endpoint. */
  websocket(opts?: { headers?: Record<string, string> }): WebSocket;
}

export interface ExecutorHealth {
  id: string;
  state: 'starting' | 'ready' | 'backoff' | 'stopped';
  pid: number | null;
  restarts: number;
  startedAt: string | null;
  readyMs: number | null;
  lastExit: { code: number | null; signal: string | null; at: string } | null;
}

export interface SandboxHealth {
  /** Every executor answered /readyz 200. */
  ready: boolean;
  executors: ExecutorHealth[];
  supervisorRssBytes?: number;
}

export type SandboxState = { running: true; health: SandboxHealth | undefined } | { running: false; reason: string };

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface LogLine {
  source: string;
  line: string;
}

/** Whether this driver can suspend a running sandbox here, and if not, why (ADR 0006). */
export type SuspendSupport = { supported: true } | { supported: false; reason: string };

/** A suspended sandbox, as the caller persists it (instances.snapshot); `native` is the driver's own. */
export interface SnapshotRef {
  driver: string;
  instanceId: string;
  runtimeVersion: string;
  suspendedAt: string;
  dumpMs: number;
  imageBytes: number;
  stateBytes: number;
  native: unknown;
}

/**
 * Warm resume (ADR 0006), an optional capability. A snapshot holds the gateway token and the gateways'
 * memory in clear: it never leaves the node, and is used once.
 */
export interface SandboxSnapshots {
  /** Whether suspend/resume works here; when not, callers stop the sandbox instead and record the reason. */
  support(): Promise<SuspendSupport>;
  /**
   * Suspends an idle running sandbox (callers stop routing to it first). Afterwards the sandbox is gone
   * (its broker token revoked); on failure it keeps running.
   */
  suspend(ref: SandboxRef): Promise<SnapshotRef>;
  /**
   * Resumes once (the snapshot is spent whatever the outcome) with the tenant's state as the suspend left
   * it; `spec.gatewayToken` must be the token the gateway had (rotate afterwards). Throws
   * SandboxResumeError when the snapshot cannot be used; the state is then intact for a cold start.
   */
  resume(spec: SandboxSpec, snapshot: SnapshotRef): Promise<SandboxRef>;
  /** Deletes a snapshot nobody will resume. Idempotent. */
  discard(snapshot: SnapshotRef): Promise<void>;
}

export interface SandboxDriver {
  readonly name: SandboxDriverName;
  /** Where rendered configs must point (ports and paths inside this driver's sandboxes). */
  readonly layout: GatewayLayout;
  /** Present only where the driver can suspend and resume (local with CRIU); absent elsewhere. */
  readonly snapshots?: SandboxSnapshots;
  /** Fails closed with the fix when the driver cannot isolate here (bubblewrap missing, Docker unreachable). */
  preflight(): Promise<void>;
  /** Prepares the instance's storage and files (idempotent); starts nothing. */
  prepare(spec: SandboxSpec): Promise<void>;
  /** Starts the sandbox; refuses when one is already running for the instance. */
  start(spec: SandboxSpec): Promise<SandboxRef>;
  /** Re-attaches to a sandbox that survived a control-plane restart (re-registers it with the broker). */
  adopt(ref: SandboxRef): Promise<boolean>;
  /** Graceful stop (supervisor first, then the whole sandbox); state stays. Idempotent. */
  stop(ref: SandboxRef, opts?: { timeoutMs?: number }): Promise<void>;
  /** Stops what runs for the instance and removes the sandbox; with deleteState also its state and logs. */
  destroy(key: InstanceKey, opts: { deleteState: boolean }): Promise<void>;
  status(ref: SandboxRef): Promise<SandboxState>;
  /** The gateways of a running sandbox. */
  connect(ref: SandboxRef): Promise<GatewayTransport>;
  logs(key: InstanceKey, opts: { tail: number }): Promise<LogLine[]>;
  /** Follows the logs from now on until the signal aborts. */
  followLogs(key: InstanceKey, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void>;
  /**
   * Makes a running sandbox run exactly these of its declared executors: starts the missing ones while the
   * others keep serving, stops the rest. The health after the change (executors' own states).
   */
  setExecutors(ref: SandboxRef, run: string[]): Promise<SandboxHealth | undefined>;
  /** Runs a command inside the sandbox, as its gateways run (diagnostics and probes). */
  exec(ref: SandboxRef, argv: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /**
   * A tar.gz of a STOPPED instance's state (one state dir per executor); never read while a gateway
   * writes. The stream errors when the archive cannot be made.
   */
  exportState(key: InstanceKey): Promise<Readable>;
  /**
   * A consistent tar.gz of a RUNNING sandbox's state in the same layout: OpenClaw's own `backup create`
   * per executor (SQLite's online backup API, never live database files), so one restore path serves both.
   */
  exportLiveState(ref: SandboxRef, opts?: { timeoutMs?: number }): Promise<Readable>;
  /** Replaces a stopped, prepared instance's state with an archive from exportState/exportLiveState. */
  importState(key: InstanceKey, archive: Readable): Promise<void>;
  /**
   * Re-issues a running sandbox's credentials in place: the gateway token (every gateway re-reads it
   * with `secrets.reload`; the current one is refused from then on, which is checked) and the broker
   * token (a new registration; the old one revoked). Throws, with the gateway left on `current`, when the
   * gateway refuses.
   */
  rotateCredentials(ref: SandboxRef, tokens: { current: string; next: string }): Promise<void>;
  /**
   * Hot apply (optional; docs/adr/0013-gateway-config-versions.md, "Apply"): writes new per-executor configs
   * into the running sandbox and resolves once every gateway reloaded them in place. Throws
   * GatewayConfigRefusedError (src/sandbox/host/reload.ts) when a gateway refused the file as invalid (it keeps
   * running what it ran), another error when a gateway did not apply it in `timeoutMs`. Absent: restart instead.
   */
  applyConfigs?(ref: SandboxRef, configs: Record<string, string>, o: { gatewayToken: string; timeoutMs: number }): Promise<void>;
  /** The sandboxes this driver finds on its node, for adoption and orphan removal. */
  list(): Promise<SandboxRef[]>;
  /** Releases host-side resources (broker relays, API connections) without stopping sandboxes: they survive us. */
  close(): Promise<void>;
}

/** The driver cannot run sandboxes here (or right now); the message names the fix. */
export class SandboxUnavailableError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('sandbox_unavailable', 503, message, { cause });
  }
}

/** Resume failed; `errors` are the snapshot tool's own error lines when it failed (the reason to record), else the message. */
export class SandboxResumeError extends ClawplaneError {
  readonly errors: string[];
  constructor(message: string, errors: string[], cause?: unknown) {
    super('sandbox_resume_failed', 503, message, { cause, details: { errors } });
    this.errors = errors;
  }
}

/**
 * A ref as stored by an earlier release (a local handle with pid, pidStartTime and clusterId at the top)
 * in the current shape, so sandboxes started before an upgrade are still adopted.
 */
export function storedSandboxRef(stored: unknown): SandboxRef | null {
  if (!stored || typeof stored !== 'object') return null;
  const s = stored as Record<string, unknown>;
  if (s['owner'] && 'native' in s) return s as unknown as SandboxRef;
  const { pid, pidStartTime, clusterId, ...rest } = s;
  return {
    ...(rest as unknown as Omit<SandboxRef, 'owner' | 'native'>),
    owner: { clusterId: String(clusterId ?? ''), nodeId: '' },
    native: { pid, pidStartTime },
  };
}

/** A snapshot as stored by an earlier release (a host directory at the top) in the current shape. */
export function storedSnapshotRef(stored: unknown, instanceId: string): SnapshotRef | null {
  if (!stored || typeof stored !== 'object') return null;
  const s = stored as Record<string, unknown>;
  if ('native' in s) return s as unknown as SnapshotRef;
  const { dir, ...rest } = s;
  return { driver: 'local', instanceId, ...(rest as unknown as Omit<SnapshotRef, 'driver' | 'instanceId' | 'native'>), native: { dir } };
}
