import http from 'node:http';
import type { Logger } from 'pino';
import type { Db } from '../db/pool.ts';
import { UnavailableError } from '../errors.ts';
import type { Instance, InstanceService } from '../instances/instances.ts';
import type { SandboxDriver } from '../sandbox/types.ts';
import type { RiskClass, TaskExecutor, Turn, TurnResult } from './types.ts';

/**
 * Runs a task's turn on the tenant's OpenClaw gateway (issue 8): wake the instance for the agent's risk
 * class, send the turn to the gateway's OpenAI-compatible HTTP endpoint through the sandbox's ingress
 * socket (streamed; progress goes into the trace), with `x-clawplane-task` so the broker can meter per task.
 *
 * High-risk agents (shell, browser) run on their own instance, `tasks-high-risk`, so their sandbox is
 * never the one the tenant's other agents use; it counts against the tenant's maxInstances.
 *
 * Metering: the gateway does not pass request headers on to its model calls, so the broker sees no
 * x-clawplane-task from a gateway. Until the supervisor stamps egress calls with the task of the turn in
 * flight, the executor attributes the instance's unattributed usage rows written during the turn to the
 * task, with turns on one instance serialised in this process so that attribution is exact.
 */
export const HIGH_RISK_INSTANCE = 'tasks-high-risk';

export interface Endpoint {
  instanceId: string;
  socketPath: string;
  token: string;
}

/** Wakes (starts, or deploys) the tenant's instance for a risk class and waits until it is ready. */
export type WakeFn = (tenantId: string, risk: RiskClass, signal: AbortSignal) => Promise<Endpoint>;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason as Error)), { once: true });
  });

/**
 * The stand-in for the ingress module's wake-on-demand (issue 7): one function, to swap when that lands.
 * Picks `main` (or the first other instance) for standard agents and `tasks-high-risk` for high-risk
 * ones; starts it when stopped, deploys it when missing, then waits for status running with health ready.
 */
export function instanceWaker(o: { instances: InstanceService; sandboxes: SandboxDriver; readyTimeoutMs: number }): WakeFn {
  const by = { actor: 'system:tasks' };
  return async (tenantId, risk, signal) => {
    const all = await o.instances.list(tenantId);
    const pickStd = (xs: Instance[]) => xs.find((i) => i.name === 'main') ?? xs.find((i) => i.status === 'running') ?? xs[0];
    const std = all.filter((i) => i.name !== HIGH_RISK_INSTANCE && i.desiredState !== 'destroyed');
    let inst = risk === 'high' ? all.find((i) => i.name === HIGH_RISK_INSTANCE && i.desiredState !== 'destroyed') : pickStd(std);
    if (!inst) inst = await o.instances.deploy(tenantId, { name: risk === 'high' ? HIGH_RISK_INSTANCE : 'main' }, by);
    else if (inst.desiredState !== 'running' || inst.status === 'error') inst = await o.instances.start(tenantId, inst.id, by);
    const t0 = Date.now();
    for (;;) {
      signal.throwIfAborted();
      const row = await o.instances.get(tenantId, inst.id);
      if (row.status === 'running' && row.sandbox) {
        const st = await o.sandboxes.status(row.sandbox);
        if (st.running && st.health?.ready) return { instanceId: row.id, socketPath: o.sandboxes.endpoint(row.id).socketPath, token: await o.instances.gatewayToken(row.id) };
      }
      if (Date.now() - t0 > o.readyTimeoutMs) throw new UnavailableError(`Instance "${row.name}" did not become ready within ${o.readyTimeoutMs} ms (status ${row.status}: ${row.statusReason}).`);
      await sleep(500, signal);
    }
  };
}

export class GatewayExecutor implements TaskExecutor {
  readonly name = 'gateway';
  readonly #wake: WakeFn;
  readonly #db: Db;
  readonly #log: Logger;
  readonly #flushUsage: () => Promise<void>;
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(o: { wake: WakeFn; db: Db; log: Logger; flushUsage: () => Promise<void> }) {
    this.#wake = o.wake;
    this.#db = o.db;
    this.#log = o.log;
    this.#flushUsage = o.flushUsage;
  }

  async run(turn: Turn, ctx: { signal: AbortSignal; trace: (kind: string, detail?: Record<string, unknown>) => Promise<void> }): Promise<TurnResult> {
    await ctx.trace('wake', { riskClass: turn.agent.riskClass });
    const ep = await this.#wake(turn.tenantId, turn.agent.riskClass, ctx.signal);
    await ctx.trace('gateway_ready', { instanceId: ep.instanceId });
    // One turn at a time per instance in this process (see the class comment on metering).
    const prev = this.#locks.get(ep.instanceId) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.#locks.set(ep.instanceId, chain);
    await prev;
    try {
      const since = (await this.#db.query<{ now: Date }>('SELECT now()')).rows[0]?.now ?? new Date();
      const output = await this.#turn(ep, turn, ctx);
      await this.#flushUsage();
      const claimed = await this.#db.query(
        `UPDATE llm_usage SET task_id = $3 WHERE tenant_id = $1 AND instance_id = $2 AND task_id IS NULL AND created_at >= $4`,
        [turn.tenantId, ep.instanceId, turn.taskId, since],
      );
      await ctx.trace('metered', { usageRows: claimed.rowCount ?? 0 });
      return { output };
    } finally {
      release();
      if (this.#locks.get(ep.instanceId) === chain) this.#locks.delete(ep.instanceId);
    }
  }

  #turn(ep: Endpoint, turn: Turn, ctx: { signal: AbortSignal; trace: (kind: string, detail?: Record<string, unknown>) => Promise<void> }): Promise<string> {
    const body = JSON.stringify({
      model: `openclaw/main`,
      stream: true,
      messages: [{ role: 'user', content: turn.prompt }],
    });
    return new Promise<string>((resolve, reject) => {
      let text = '';
      let chunks = 0;
      let pending: Promise<void> = Promise.resolve();
      const req = http.request(
        {
          socketPath: ep.socketPath,
          method: 'POST',
          path: '/v1/chat/completions',
          headers: {
            host: 'sandbox',
            authorization: `Bearer ${ep.token}`,
            'content-type': 'application/json',
            'x-openclaw-session-key': turn.sessionKey,
            'x-clawplane-task': turn.taskId,
            'x-clawplane-agent': turn.agent.name,
          },
          signal: ctx.signal,
        },
        (res) => {
          if ((res.statusCode ?? 0) !== 200) {
            const err: Buffer[] = [];
            res.on('data', (c: Buffer) => err.push(c));
            res.on('end', () => reject(new Error(`the gateway answered ${res.statusCode}: ${Buffer.concat(err).toString('utf8').slice(0, 300)}`)));
            return;
          }
          pending = pending.then(() => ctx.trace('stream_started', { status: res.statusCode }));
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            buf += c;
            let i: number;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const evt = buf.slice(0, i);
              buf = buf.slice(i + 2);
              for (const line of evt.split('\n')) {
                if (!line.startsWith('data:')) continue;
                const data = line.slice(5).trim();
                if (data === '[DONE]') continue;
                try {
                  const j = JSON.parse(data) as { choices?: { delta?: { content?: string } }[] };
                  const d = j.choices?.[0]?.delta?.content;
                  if (d) {
                    text += d;
                    chunks++;
                    // Progress into the trace, coalesced: the first chunk and then every 20th.
                    if (chunks === 1 || chunks % 20 === 0) pending = pending.then(() => ctx.trace('stream_progress', { chunks, chars: text.length }));
                  }
                } catch {
                  this.#log.debug({ task_id: turn.taskId }, 'ignored a non-JSON stream line from the gateway');
                }
              }
            }
          });
          res.on('end', () => {
            pending = pending.then(() => ctx.trace('stream_done', { chunks, chars: text.length }));
            pending.then(() => resolve(text), reject);
          });
          res.on('error', reject);
        },
      );
      req.setTimeout(0);
      req.on('error', reject);
      req.end(body);
    });
  }
}
