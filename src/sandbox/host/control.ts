/**
 * The host's side of the supervisor's control socket (health, exec, stop, quiesce), wherever the driver
 * put that socket on this host.
 */
import type { Logger } from 'pino';
import { ClawplaneError } from '../../errors.ts';
import type { SupervisorExecResult, SupervisorHealth, SupervisorRunRequest } from '../supervisor/protocol.ts';
import type { ExecResult, SandboxHealth } from '../types.ts';
import { socketRequest } from './socket-http.ts';

export class SupervisorControl {
  readonly #socket: string;

  constructor(socketPath: string) {
    this.#socket = socketPath;
  }

  /** The supervisor's /health; one retry, so a single failed read on a busy host is not reported as "no health". */
  async health(log: Logger, instanceId: string): Promise<SandboxHealth | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await socketRequest(this.#socket, { path: '/health', timeoutMs: 5000 });
        if (r.status !== 200) throw new Error(`status ${r.status}`);
        const h = JSON.parse(r.body) as SupervisorHealth;
        return { ready: h.ready, executors: h.executors, supervisorRssBytes: h.rssBytes };
      } catch (err) {
        if (attempt >= 2) {
          log.warn({ instance_id: instanceId, err: (err as Error).message }, 'the sandbox supervisor did not answer /health');
          return undefined;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async exec(argv: string[], timeoutMs = 30_000): Promise<ExecResult> {
    const r = await socketRequest(this.#socket, {
      method: 'POST',
      path: '/exec',
      body: JSON.stringify({ argv, timeoutMs }),
      headers: { 'content-type': 'application/json' },
      timeoutMs: timeoutMs + 5000,
    });
    if (r.status !== 200) throw new ClawplaneError('sandbox_exec_failed', 502, `exec in the sandbox failed: ${r.body}`);
    return JSON.parse(r.body) as SupervisorExecResult;
  }

  /** Runs exactly these executors from now on (PUT /executors); the supervisor's health after the change. */
  async setExecutors(run: string[]): Promise<SandboxHealth> {
    const r = await socketRequest(this.#socket, {
      method: 'PUT',
      path: '/executors',
      body: JSON.stringify({ run } satisfies SupervisorRunRequest),
      headers: { 'content-type': 'application/json' },
      timeoutMs: 10_000,
    });
    if (r.status !== 200) throw new ClawplaneError('sandbox_control_failed', 502, `the sandbox supervisor refused the executors to run: ${r.body}`);
    const h = JSON.parse(r.body) as SupervisorHealth;
    return { ready: h.ready, executors: h.executors, supervisorRssBytes: h.rssBytes };
  }

  /** Asks the supervisor to drain and stop its gateways; false when it did not take the request. */
  async stop(): Promise<boolean> {
    return socketRequest(this.#socket, { method: 'POST', path: '/stop', timeoutMs: 3000 }).then(
      (r) => r.status === 202,
      () => false,
    );
  }

  /** Before a warm-resume dump: the supervisor closes its idle connections to the host. */
  async quiesce(): Promise<void> {
    await socketRequest(this.#socket, { method: 'POST', path: '/quiesce', headers: { connection: 'close' }, timeoutMs: 5000 }).catch(() => undefined);
  }

  /** A health read with a fresh connection (after a restore: the sockets were given back). */
  async healthFresh(): Promise<number> {
    return (await socketRequest(this.#socket, { path: '/health', headers: { connection: 'close' }, timeoutMs: 10_000 })).status;
  }
}
