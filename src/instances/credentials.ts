/**
 * Rotating a running instance's credentials (issue 10: after a warm resume, whose process image holds
 * the old ones; also on request). The gateway takes its new token first (the driver rewrites its token
 * file and has it re-read; the old token is refused from then on); only then is the new token stored,
 * so the host never holds a token the gateway does not accept. If storing fails, the gateway is put
 * back on the old token. The broker token is re-issued by the driver in the same call.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { ConflictError } from '../errors.ts';
import type { SandboxDriver, SandboxRef } from '../sandbox/types.ts';
import type { Audited, InstanceService } from './instances.ts';

export class CredentialRotator {
  readonly #o: { db: Db; instances: InstanceService; driver: SandboxDriver; log: Logger };
  readonly #busy = new Map<string, Promise<unknown>>();

  constructor(o: { db: Db; instances: InstanceService; driver: SandboxDriver; log: Logger }) {
    this.#o = o;
  }

  async rotate(
    tenantId: string,
    instanceId: string,
    by: Audited,
    reason: 'request' | 'resume' = 'request',
  ): Promise<{ instanceId: string; rotated: string[] }> {
    const prev = this.#busy.get(instanceId) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => this.#rotate(tenantId, instanceId, by, reason));
    this.#busy.set(instanceId, run);
    try {
      return await run;
    } finally {
      if (this.#busy.get(instanceId) === run) this.#busy.delete(instanceId);
    }
  }

  async #rotate(tenantId: string, instanceId: string, by: Audited, reason: string): Promise<{ instanceId: string; rotated: string[] }> {
    const { instances, driver, db, log } = this.#o;
    const row = await instances.get(tenantId, instanceId);
    const live = row.sandbox ? await driver.status(row.sandbox) : undefined;
    if (row.status !== 'running' || !row.sandbox || !live?.running) {
      throw new ConflictError(
        `Instance "${row.name}" is ${row.status}: credentials are rotated on a running gateway. Start it, then retry.`,
        'instance_not_running',
      );
    }
    return this.#swap(tenantId, instanceId, row.sandbox, by, reason);
  }

  /**
   * The rotation itself, for a sandbox the caller knows is up: the reconciler calls it right after a
   * resume, before the instance is marked running (issue 10).
   */
  rotateSandbox(tenantId: string, instanceId: string, handle: SandboxRef, by: Audited, reason: 'resume'): Promise<{ instanceId: string; rotated: string[] }> {
    return this.#swap(tenantId, instanceId, handle, by, reason);
  }

  async #swap(tenantId: string, instanceId: string, handle: SandboxRef, by: Audited, reason: string): Promise<{ instanceId: string; rotated: string[] }> {
    const { instances, driver, db, log } = this.#o;
    const current = await instances.gatewayToken(instanceId);
    const next = randomBytes(32).toString('hex');
    await driver.rotateCredentials(handle, { current, next });
    try {
      await instances.replaceGatewayToken(instanceId, next);
    } catch (err) {
      log.error({ err, instance_id: instanceId }, 'could not store the new gateway token; putting the gateway back on the old one');
      await driver.rotateCredentials(handle, { current: next, next: current });
      throw err;
    }
    const rotated = ['gateway_token', 'broker_token'];
    await db.tx((tx) =>
      appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'instance.credentials_rotated',
        target: `instance:${instanceId}`,
        decision: 'success',
        detail: { rotated, reason },
        requestId: by.requestId ?? null,
      }),
    );
    log.info({ tenant_id: tenantId, instance_id: instanceId, reason }, 'instance credentials rotated');
    return { instanceId, rotated };
  }
}
