import { chmod, chown, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { SandboxBroker, SandboxRegistration } from '../../broker/types.ts';

/**
 * The sandbox's end of the broker (issue 6). The sandbox sees a directory `out/` (read-only) holding
 * `broker.sock` and `broker.token`. We bind the directory, not the broker's socket: a bind mount pins
 * an inode, and after a control-plane restart the broker's socket is a new one. So the host listens on
 * `out/broker.sock` and pipes each connection to the broker's current socket, and rewrites
 * `broker.token` on every registration; the supervisor reads the token per request.
 */
export class BrokerRelay {
  readonly #server: net.Server;
  readonly #registration: SandboxRegistration | undefined;

  private constructor(server: net.Server, registration: SandboxRegistration | undefined) {
    this.#server = server;
    this.#registration = registration;
  }

  /** Registers the sandbox with the broker (when there is one) and starts relaying. */
  static async open(opts: {
    broker: SandboxBroker | undefined;
    outDir: string;
    gid: number;
    tenantId: string;
    instanceId: string;
    sandboxId: string;
    log: Logger;
  }): Promise<BrokerRelay> {
    const reg = opts.broker
      ? await opts.broker.registerSandbox({ tenantId: opts.tenantId, instanceId: opts.instanceId, sandboxId: opts.sandboxId })
      : undefined;
    const tokenFile = path.join(opts.outDir, 'broker.token');
    const tmp = `${tokenFile}.tmp`;
    // No broker configured: an empty token; the relay answers 503 so the gateway reports a clear error.
    await writeFile(tmp, reg?.token ?? '', { mode: 0o640 });
    await chown(tmp, 0, opts.gid);
    await rename(tmp, tokenFile);
    const sock = path.join(opts.outDir, 'broker.sock');
    await rm(sock, { force: true });
    const server = net.createServer((c) => {
      if (!reg) {
        c.end(
          'HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":{"message":"no broker is configured on this control plane","type":"clawplane_broker"}}',
        );
        return;
      }
      const up = net.connect(reg.socketPath);
      c.pipe(up).pipe(c);
      const end = () => {
        c.destroy();
        up.destroy();
      };
      up.on('error', (err) => {
        opts.log.warn({ instance_id: opts.instanceId, err: err.message }, 'broker socket not reachable');
        end();
      });
      c.on('error', end);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sock, () => resolve());
    });
    await chown(sock, 0, opts.gid);
    await chmod(sock, 0o660);
    return new BrokerRelay(server, reg);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await this.#registration?.close();
  }
}
