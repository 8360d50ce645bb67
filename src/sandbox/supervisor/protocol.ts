/**
 * The contract between a driver and the in-sandbox supervisor: the config file the driver writes
 * (/conf/sandbox.json) and the control API's answers. The supervisor imports it with `import type`,
 * which type stripping erases, so nothing of Clawplane is loaded inside the sandbox.
 */

/** One gateway process. */
export interface ExecutorSpec {
  id: string;
  port: number;
  stateDir: string;
  configPath: string;
  logFile: string;
}

/**
 * Where the supervisor serves the host: a listening socket the host made and passed in as a file
 * descriptor (local driver: no path exists inside), a socket path the supervisor creates in a
 * directory bound from the host (docker driver: file descriptors cannot be passed into a container), or
 * a TCP port of the pod (kubernetes driver).
 */
export type SupervisorListen = { fd: number } | { path: string } | { port: number; host: string };

export interface SupervisorConfig {
  /** Every executor the sandbox may run (their configs are in place from the start). */
  executors: ExecutorSpec[];
  /**
   * The executors to run at start; absent: all. The rest wait, stopped, until PUT /executors asks for them
   * (a pool scaling up inside its sandbox, docs/adr/0014-executor-pools.md).
   */
  run?: string[];
  /** argv[0..] of a gateway; the executor's port is appended after `--port`. */
  command: string[];
  /** Extra environment for gateways (no secrets: the gateway token is read from gatewayTokenFile). */
  env: Record<string, string>;
  gatewayTokenFile: string;
  /** The gateway's inbound-webhook token (`hooks.token` is `${CLAWPLANE_HOOKS_TOKEN}`); absent: hooks off. */
  hooksTokenFile?: string;
  egressPort: number;
  brokerSocket: string;
  /** The broker over TCP (kubernetes driver: its Service's address, ADR 0011); when set, brokerSocket is unused. */
  brokerUrl?: string;
  brokerTokenFile: string;
  ingress: SupervisorListen;
  control: SupervisorListen;
  logFile: string;
  backoff: { initialMs: number; maxMs: number; resetAfterMs: number };
}

/** GET /health on the control socket. */
export interface SupervisorHealth {
  ready: boolean;
  pid: number;
  rssBytes: number;
  executors: {
    id: string;
    state: 'starting' | 'ready' | 'backoff' | 'stopped';
    pid: number | null;
    restarts: number;
    startedAt: string | null;
    readyMs: number | null;
    lastExit: { code: number | null; signal: string | null; at: string } | null;
  }[];
}

/** PUT /executors on the control socket: the executors to run from now on (others are stopped); answers SupervisorHealth. */
export interface SupervisorRunRequest {
  run: string[];
}

/** POST /exec on the control socket. */
export interface SupervisorExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}
