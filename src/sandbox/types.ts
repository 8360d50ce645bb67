/**
 * The sandbox driver port (issue 6). A sandbox is where one instance runs: a supervisor and N gateway
 * executors, with no network, reachable only through the ingress the host holds and able to reach only
 * the broker. `local` (bubblewrap) implements it here; docker and kubernetes drivers will implement the
 * same interface. Drivers keep no state the database cannot rebuild: `handle` is persisted by the
 * caller and given back after a control-plane restart.
 */
import type { ResolvedRuntime } from '../runtime/store.ts';

/** What a driver needs to run one instance. The rendered configs hold no secret. */
export interface SandboxSpec {
  tenantId: string;
  instanceId: string;
  runtime: ResolvedRuntime;
  /** Per-executor openclaw.json, rendered from the database; keys are executor ids. */
  configs: Record<string, string>;
  /** The gateway token (an owner credential of the gateway); written only where the gateway can read it. */
  gatewayToken: string;
  /** The token the gateway's inbound webhooks accept (only the ingress sends it). */
  hooksToken: string;
  /** Per-tenant unprivileged host uid (the local driver runs everything in the sandbox as it). */
  hostUid: number;
}

/** Persisted by the caller (instances.sandbox) to find a running sandbox again. */
export interface SandboxHandle {
  driver: string;
  sandboxId: string;
  instanceId: string;
  tenantId: string;
  runtimeVersion: string;
  /** Host pid of the sandbox's init and its start time (clock ticks), so a reused pid is not mistaken for it. */
  pid: number;
  pidStartTime: number;
  startedAt: string;
  /** The control plane that started it (sandbox_cluster.cluster_id). */
  clusterId: string;
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

/** How the host reaches a running sandbox's gateways (for the ingress module and tests; never shown to users). */
export interface SandboxEndpoint {
  /** Host path of the ingress socket (root-only directory). */
  socketPath: string;
}

/** Whether this driver can suspend a running sandbox to a process snapshot here, and if not, why (issue 10). */
export type SuspendSupport = { supported: true } | { supported: false; reason: string };

export interface SandboxDriver {
  readonly name: string;
  /** Fails closed with the fix when the driver cannot isolate on this host (e.g. bubblewrap missing). */
  preflight(): Promise<void>;
  /** Prepares directories and files for the instance (idempotent); does not start anything. */
  create(spec: SandboxSpec): Promise<void>;
  /** Starts the sandbox; refuses when one is already running for the instance. */
  start(spec: SandboxSpec, clusterId: string): Promise<SandboxHandle>;
  /** Re-attaches to a sandbox that survived a control-plane restart (re-registers it with the broker). */
  adopt(handle: SandboxHandle): Promise<boolean>;
  /** Graceful stop (supervisor first, then the whole sandbox); state stays. Idempotent. */
  stop(handle: SandboxHandle, opts?: { timeoutMs?: number }): Promise<void>;
  /** Stops (when running) and removes the sandbox; with deleteState also the tenant's state and logs. */
  destroy(instanceId: string, opts: { deleteState: boolean; handle?: SandboxHandle | undefined }): Promise<void>;
  status(handle: SandboxHandle): Promise<SandboxState>;
  logs(instanceId: string, opts: { tail: number }): Promise<LogLine[]>;
  /** Follows the logs from now on until the signal aborts. */
  followLogs(instanceId: string, signal: AbortSignal, onLine: (l: LogLine) => void): Promise<void>;
  /** Runs a command inside the sandbox, as its gateways run (for backups, diagnostics and probes). */
  exec(handle: SandboxHandle, argv: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /**
   * A consistent archive of a RUNNING sandbox's state (issue 7: periodic and manual backups): OpenClaw's
   * own `backup create` per executor (SQLite's online backup API, never live database files), written to
   * `destFile` as a tar.gz in the layout of a stopped instance's work directory (one state dir per
   * executor), so one restore path serves both.
   */
  archiveLiveState(handle: SandboxHandle, hostUid: number, destFile: string, opts?: { timeoutMs?: number }): Promise<{ executors: string[] }>;
  /**
   * Re-issues a running sandbox's credentials in place (issue 10: after a resume; also on request): the
   * gateway token (the token file is rewritten and every gateway re-reads it with `secrets.reload`; the
   * current one is refused from then on, which is checked) and the broker token (a new registration; the
   * old token is revoked). Throws, with the gateway left on `current`, when the gateway refuses.
   */
  rotateCredentials(handle: SandboxHandle, tokens: { current: string; next: string }): Promise<void>;
  /** The sandboxes this driver finds running on this host, for adoption and orphan removal. */
  list(): Promise<SandboxHandle[]>;
  endpoint(instanceId: string): SandboxEndpoint;
  /**
   * Warm resume (issue 10): whether suspend/resume works on this host. When it does not, callers stop
   * the sandbox instead (and later cold-start it); the reason is recorded with that decision.
   */
  suspendSupport(): Promise<SuspendSupport>;
  /**
   * Suspends a running sandbox to a process snapshot in `snapshotDir` (root-only; created, must be empty):
   * the process images plus an archive of the tenant's directories as they were at that instant. Only an
   * idle sandbox can be suspended: callers stop routing to it first. Afterwards the sandbox is gone (its
   * broker token revoked); on failure it keeps running. The snapshot holds the gateway token and the
   * gateways' memory in clear: encrypt it before it leaves the host, delete it after use.
   */
  suspend(handle: SandboxHandle, snapshotDir: string): Promise<{ dumpMs: number; imageBytes: number; stateBytes: number }>;
  /**
   * Resumes a suspended sandbox from `snapshotDir`, once (the images are deleted whatever the outcome),
   * on the host that suspended it, with the tenant's directories as the suspend left them (a stale
   * snapshot is refused); the sandbox gets a new broker registration
   * and a new pid (the returned handle replaces the old one). `spec.gatewayToken` must be the token the
   * gateway had; rotate it with rotateCredentials afterwards. Throws SandboxResumeError with CRIU's error
   * lines when the snapshot cannot be used; the tenant's state is then intact for a cold start().
   */
  resume(spec: SandboxSpec, snapshotDir: string, clusterId: string): Promise<SandboxHandle>;
  /** Releases host-side resources (broker relays) without stopping sandboxes: they survive us. */
  close(): Promise<void>;
}
