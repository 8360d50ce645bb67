import type { Logger } from 'pino';
import type { TaskTags } from '../broker/task-tag.ts';
import type { Db } from '../db/pool.ts';
import { UnavailableError } from '../errors.ts';
import type { GatewayGate } from '../ingress/access.ts';
import { gatewayRequest } from '../ingress/gateway.ts';
import type { Instance, InstanceService } from '../instances/instances.ts';
import { spanAttributes } from '../observability/tracing.ts';
import { WorkClaims, type ClaimIdentity } from '../replicas/claims.ts';
import type { GatewayTransport, SandboxDriver } from '../sandbox/types.ts';
import { GatewayApprovalWatch, type ExecApprovalRequest } from './exec-approvals.ts';
import type { ExecutorClaim } from '../pools/types.ts';
import type { RiskClass, TaskExecutor, Turn, TurnResult } from './types.ts';

/**
 * Runs a task's turn on the tenant's OpenClaw gateway (issue 8): wake the instance for the agent's risk
 * class, send the turn to the gateway's OpenAI-compatible HTTP endpoint through the sandbox's ingress
 * socket (streamed; progress goes into the trace), with the task's tag in its system text so the broker
 * meters every model call of the turn to the task (src/broker/task-tag.ts).
 *
 * High-risk agents (shell, browser) run on their own instance, `tasks-high-risk`, so their sandbox is
 * never the one the tenant's other agents use; it counts against the tenant's maxInstances.
 *
 * Metering: the gateway does not pass request headers on to its model calls, but it does pass the
 * request's system text; the tag there is how usage rows get the task at the broker, so chats running on
 * the same gateway at the same time are never counted to the task (and no time window is needed).
 *
 * Exec approvals (exec mode ask): each new turn first opens a GatewayApprovalWatch. When the gateway holds
 * the turn at an `exec` call, `run` returns the approval (the workflow parks) and the HTTP turn stays in
 * flight here; the next `run` for the task allows the command (`exec.approval.resolve` allow-once) and
 * follows that turn on; `decided` denies it on reject or expiry. In memory only: after a restart the
 * resumed turn starts afresh and the agent asks again (docs/architecture.md, Tasks).
 */
export const HIGH_RISK_INSTANCE = 'tasks-high-risk';

export interface Endpoint {
  instanceId: string;
  transport: GatewayTransport;
  token: string;
  /** The gateway process of the sandbox to use (a pool executor); absent: the supervisor's choice. */
  gateway?: string;
}

/**
 * `p`, or the signal's reason as soon as it aborts. An abort listener added to a signal that has already
 * aborted never runs (EventTarget semantics), so every wait on a turn's signal goes through here or checks
 * `aborted` first.
 */
function unlessAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Wakes (starts, or deploys) the tenant's instance for a risk class — or, for a pooled turn, its pool's own
 * instance (docs/adr/0014-executor-pools.md) — and waits until it is ready.
 */
export type WakeFn = (tenantId: string, risk: RiskClass, signal: AbortSignal, pool?: ExecutorClaim) => Promise<Endpoint>;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = () => (clearTimeout(t), reject(signal.reason as Error));
    const t = setTimeout(() => (signal.removeEventListener('abort', onAbort), resolve()), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });

/**
 * The stand-in for the ingress module's wake-on-demand (issue 7): one function, to swap when that lands.
 * Picks `main` (or the first other instance) for standard agents and `tasks-high-risk` for high-risk
 * ones; starts it when stopped, deploys it when missing, then waits for status running with health ready.
 */
export function instanceWaker(o: { gate: GatewayGate; instances: InstanceService; sandboxes: SandboxDriver; readyTimeoutMs: number }): WakeFn {
  const by = { actor: 'system:tasks' };
  return async (tenantId, risk, signal, pool) => {
    // A task queued before its tenant was suspended must not wake its gateway now.
    await o.gate.admitSystem(tenantId, 'task', by);
    const all = await o.instances.list(tenantId);
    const pickStd = (xs: Instance[]) => xs.find((i) => i.name === 'main') ?? xs.find((i) => i.status === 'running') ?? xs[0];
    // Pool instances and the high-risk instance are never a standard agent's shared instance.
    const std = all.filter((i) => i.name !== HIGH_RISK_INSTANCE && !i.name.startsWith('pool-') && i.desiredState !== 'destroyed');
    let inst: Instance | undefined;
    if (pool) {
      // The executor's sandbox, one of its pool's own (src/pools/placement.ts); deployed on its first work,
      // declaring every gateway it may run (the supervisor runs the active ones: the reconciler's executorsToRun).
      inst = all.find((i) => i.name === pool.instanceName && i.desiredState !== 'destroyed');
      if (!inst) {
        inst = await o.instances
          .deploy(tenantId, { name: pool.instanceName, executors: pool.gateways }, by, { poolSandbox: true })
          .catch(async (err: unknown) => {
            // Another worker deployed it first.
            const again = (await o.instances.list(tenantId)).find((i) => i.name === pool.instanceName);
            if (again) return again;
            throw err;
          });
        if (pool.sandbox === 0)
          await o.instances.db.query('UPDATE executor_pools SET instance_id = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2', [
            tenantId,
            pool.poolId,
            inst.id,
          ]);
      }
    } else inst = risk === 'high' ? all.find((i) => i.name === HIGH_RISK_INSTANCE && i.desiredState !== 'destroyed') : pickStd(std);
    if (!inst) inst = await o.instances.deploy(tenantId, { name: risk === 'high' ? HIGH_RISK_INSTANCE : 'main' }, by);
    else if (inst.desiredState !== 'running' || inst.status === 'error') inst = await o.instances.start(tenantId, inst.id, by);
    const t0 = Date.now();
    for (;;) {
      signal.throwIfAborted();
      const row = await o.instances.get(tenantId, inst.id);
      if (row.status === 'running' && row.sandbox) {
        const st = await o.sandboxes.status(row.sandbox);
        // A pool's turn needs its own executor ready, not the whole sandbox (another may be starting beside it).
        const own = pool ? st.running && st.health?.executors.find((e) => e.id === pool.gateway) : undefined;
        const ready = own ? own.state === 'ready' : st.running && st.health?.ready;
        if (ready) return { instanceId: row.id, transport: await o.sandboxes.connect(row.sandbox), token: await o.instances.gatewayToken(row.id) };
      }
      if (Date.now() - t0 > o.readyTimeoutMs)
        throw new UnavailableError(`Instance "${row.name}" did not become ready within ${o.readyTimeoutMs} ms (status ${row.status}: ${row.statusReason}).`);
      await sleep(500, signal);
    }
  };
}

/** How often a turn waiting for another worker's turn on the same gateway asks again. */
const TURN_LEASE_POLL_MS = 200;

type TurnCtx = { signal: AbortSignal; trace: (kind: string, detail?: Record<string, unknown>) => Promise<void> };

interface Inflight {
  ep: Endpoint;
  taskId: string;
  watch: GatewayApprovalWatch | undefined;
  abort: AbortController;
  turn: Promise<string>;
  requests: (ExecApprovalRequest & { resolved: boolean; reported?: boolean })[];
  waiters: Set<() => void>;
  /** Exec commands a person already approved for this task, allowed once each when the gateway asks (Turn.approvedExec). */
  preapproved: string[];
  /** A step is following this turn now (false while the task is parked at an approval). */
  followed: boolean;
  done: boolean;
  output: string | undefined;
  error: Error | undefined;
}

export class GatewayExecutor implements TaskExecutor {
  readonly name = 'gateway';
  readonly #wake: WakeFn;
  readonly #db: Db;
  readonly #log: Logger;
  readonly #flushUsage: () => Promise<void>;
  readonly #taskTags: TaskTags;
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Turns the gateway holds at an exec approval, by task (this process only: lost on restart). */
  readonly #inflight = new Map<string, Inflight>();

  readonly #claims: ClaimIdentity | undefined;

  constructor(o: { wake: WakeFn; db: Db; log: Logger; flushUsage: () => Promise<void>; taskTags: TaskTags; claims?: ClaimIdentity }) {
    this.#wake = o.wake;
    this.#db = o.db;
    this.#log = o.log;
    this.#flushUsage = o.flushUsage;
    this.#taskTags = o.taskTags;
    this.#claims = o.claims;
  }

  /**
   * One turn per gateway across workers (docs/adr/0009-replica-coordination.md): a lease ('gateway.turn',
   * instance) held by this task on this replica, renewed while the turn runs and released after it; a dead
   * worker's lease lapses after the replica expiry. Waits (polling) while another worker's turn holds it.
   */
  async #turnLease(instanceId: string, taskId: string, signal: AbortSignal): Promise<() => Promise<void>> {
    if (!this.#claims) return () => Promise.resolve();
    const lease = new WorkClaims(this.#db, { ...this.#claims, owner: `${this.#claims.owner}/${taskId}` });
    let waited = false;
    while (!(await lease.claim('gateway.turn', instanceId))) {
      signal.throwIfAborted();
      if (!waited) this.#log.info({ instance_id: instanceId, task_id: taskId }, "waiting for another worker's turn on this gateway");
      waited = true;
      await new Promise((r) => setTimeout(r, TURN_LEASE_POLL_MS));
    }
    const renew = setInterval(
      () => {
        lease.claim('gateway.turn', instanceId).then(
          (ok) =>
            ok ||
            this.#log.error(
              { instance_id: instanceId, task_id: taskId },
              'lost the turn lease of a gateway while a turn runs (this replica was silent past the expiry)',
            ),
          (err: unknown) => this.#log.warn({ instance_id: instanceId, err: (err as Error).message }, 'could not renew the turn lease; retrying'),
        );
      },
      Math.max(100, Math.floor(this.#claims.ttlMs / 3)),
    );
    renew.unref();
    return async () => {
      clearInterval(renew);
      await lease
        .release('gateway.turn', instanceId)
        .catch((err: unknown) =>
          this.#log.warn({ instance_id: instanceId, err: (err as Error).message }, 'could not release the turn lease; it lapses after the expiry'),
        );
    };
  }

  async run(turn: Turn, ctx: TurnCtx): Promise<TurnResult> {
    const held = this.#inflight.get(turn.taskId);
    if (held && held.done) this.#inflight.delete(turn.taskId);
    const live = held && !held.done ? held : undefined;
    let ep: Endpoint;
    if (live) {
      // The approved commands this turn was holding are resolved by #continue; any other is allowed once if asked.
      const left = [...(turn.approvedExec ?? [])];
      for (const r of live.requests.filter((x) => !x.resolved)) {
        const i = left.indexOf(r.command);
        if (i >= 0) left.splice(i, 1);
      }
      live.preapproved.push(...left);
      ep = live.ep;
      await ctx.trace('gateway_ready', { instanceId: ep.instanceId, continuing: 'the turn held at an exec approval' });
    } else {
      await ctx.trace('wake', {
        riskClass: turn.agent.riskClass,
        ...(turn.executor ? { pool: turn.executor.instanceName, gateway: turn.executor.gateway } : {}),
      });
      ep = await this.#wake(turn.tenantId, turn.agent.riskClass, ctx.signal, turn.executor);
      if (turn.executor) ep = { ...ep, gateway: turn.executor.gateway };
      await ctx.trace('gateway_ready', { instanceId: ep.instanceId, ...(ep.gateway ? { gateway: ep.gateway } : {}) });
    }
    spanAttributes({ 'clawplane.tenant_id': turn.tenantId, 'clawplane.task_id': turn.taskId, 'clawplane.instance_id': ep.instanceId });
    // One turn at a time per gateway in this process (see the class comment on metering): per instance, or
    // per gateway process of a pool's sandbox (each executor of a pool runs its own turn).
    const lockKey = ep.gateway ? `${ep.instanceId}/${ep.gateway}` : ep.instanceId;
    const prev = this.#locks.get(lockKey) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.#locks.set(lockKey, chain);
    let unlease: (() => Promise<void>) | undefined;
    try {
      // A turn cancelled while it waits here (behind another task's turn on this gateway) must not start later.
      await unlessAborted(prev, ctx.signal);
      // Then across processes: another worker may be driving this gateway.
      unlease = await this.#turnLease(lockKey, turn.taskId, ctx.signal);
      const res = live ? await this.#continue(live, ctx) : await this.#start(ep, turn, ctx);
      // The broker wrote the turn's usage rows with the task (from the tag); flushed so the evaluation reads them.
      await this.#flushUsage();
      const metered = await this.#db.query<{ n: number }>(`SELECT count(*)::int AS n FROM llm_usage WHERE tenant_id = $1 AND task_id = $2`, [
        turn.tenantId,
        turn.taskId,
      ]);
      await ctx.trace('metered', { usageRows: metered.rows[0]?.n ?? 0 });
      return res;
    } finally {
      await unlease?.();
      release();
      if (this.#locks.get(lockKey) === chain) this.#locks.delete(lockKey);
    }
  }

  /**
   * A new turn: the approvals watcher first (so no request of this session is missed), then the HTTP
   * turn. Returns when the turn ends, or as soon as the gateway holds it at an exec approval: the turn
   * then stays in flight here (the workflow parks) until `decided` or the next `run` for the task.
   */
  async #start(ep: Endpoint, turn: Turn, ctx: TurnCtx): Promise<TurnResult> {
    const mark = `task-${turn.taskId}`;
    let watch: GatewayApprovalWatch | undefined;
    try {
      watch = await GatewayApprovalWatch.connect(ep.transport, ep.token, (k) => k === turn.sessionKey || (k?.endsWith(mark) ?? false), undefined, ep.gateway);
      await ctx.trace('approvals_watch', { connected: true });
    } catch (err) {
      // Without a watcher the gateway has no approval surface and denies asked commands at once.
      this.#log.warn({ task_id: turn.taskId, err: (err as Error).message }, 'could not watch the gateway for exec approvals; asked commands will be denied');
      await ctx.trace('approvals_watch', { connected: false, error: (err as Error).message });
    }
    // Cancelled while the watcher connected: no turn is started (nothing would ever stop it).
    if (ctx.signal.aborted) {
      watch?.close();
      ctx.signal.throwIfAborted();
    }
    const abort = new AbortController();
    const h: Inflight = {
      ep,
      taskId: turn.taskId,
      watch,
      abort,
      requests: [],
      waiters: new Set(),
      preapproved: [...(turn.approvedExec ?? [])],
      followed: true,
      done: false,
      output: undefined,
      error: undefined,
      turn: Promise.resolve(''),
    };
    if (watch) {
      const w = watch;
      w.onRequest = (r) => {
        // A change of worker: the turn that asked the person was lost with its worker, and this new turn asks
        // for the same command again. The person's decision stands: allowed once, not asked twice.
        const i = h.preapproved.indexOf(r.command);
        if (i >= 0) {
          h.preapproved.splice(i, 1);
          h.requests.push({ ...r, resolved: true, reported: true });
          void w.resolve(r.id, 'allow-once').then(
            () => ctx.trace('exec_approval_resolved', { gatewayApprovalId: r.id, decision: 'allow-once', command: r.command, approvedBefore: true }),
            (err: unknown) =>
              this.#log.warn({ task_id: turn.taskId, err: (err as Error).message }, 'could not allow an exec command approved before; it times out there'),
          );
          return;
        }
        h.requests.push({ ...r, resolved: false });
        for (const wake of h.waiters) wake();
      };
    }
    h.turn = this.#turn(ep, turn, ctx, abort.signal);
    void h.turn
      .then(
        (out) => (h.output = out),
        (err: unknown) => (h.error = err instanceof Error ? err : new Error(String(err))),
      )
      .finally(() => {
        h.done = true;
        // Not close(): a resolve sent by #continue may be answered only after the turn it released ended.
        watch?.closeWhenSettled();
        for (const w of h.waiters) w();
      });
    this.#inflight.set(turn.taskId, h);
    return this.#await(turn.taskId, h, ctx);
  }

  /** The turn after a person approved: allow the held command(s) on the gateway and follow the turn on. */
  async #continue(h: Inflight, ctx: TurnCtx): Promise<TurnResult> {
    for (const r of h.requests.filter((x) => !x.resolved)) {
      r.resolved = true;
      await h.watch?.resolve(r.id, 'allow-once');
      await ctx.trace('exec_approval_resolved', { gatewayApprovalId: r.id, decision: 'allow-once', command: r.command });
    }
    return this.#await(h.taskId, h, ctx);
  }

  /** Waits until the turn ends (its output) or the gateway asks for a new exec approval (parks). */
  async #await(taskId: string, h: Inflight, ctx: TurnCtx): Promise<TurnResult> {
    h.followed = true;
    const onAbort = () => {
      h.abort.abort(ctx.signal.reason);
      h.watch?.close();
      this.#inflight.delete(taskId);
    };
    // Already aborted (cancelled while a trace was written): stop the turn now, the listener would never run.
    if (ctx.signal.aborted) onAbort();
    else ctx.signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        ctx.signal.throwIfAborted();
        const asked = h.requests.filter((r) => !r.resolved && !r.reported);
        if (asked.length > 0) {
          for (const r of asked) r.reported = true;
          h.followed = false;
          await ctx.trace('exec_approval_requested', { requests: asked.map((r) => ({ gatewayApprovalId: r.id, command: r.command })) });
          return { output: '', approvals: asked.map((r) => ({ kind: 'exec' as const, tool: 'exec', summary: r.command })) };
        }
        if (h.done) {
          this.#inflight.delete(taskId);
          if (h.error) throw h.error;
          return { output: h.output ?? '' };
        }
        await new Promise<void>((resolve) => {
          h.waiters.add(resolve);
          if (ctx.signal.aborted) resolve();
          else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
        }).finally(() => h.waiters.clear());
      }
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Lets go of the turns parked at an exec approval here, as a worker that stops does (its process takes them
   * along when it dies): the HTTP turn is closed, so the gateway ends that run, and the watcher goes. The task's
   * workflow, recovered or resumed wherever it runs next, starts a new turn after the decision; the commands
   * the person approved are allowed there once without asking again (Turn.approvedExec). Turns a step is
   * following are left alone (their step fails and is retried). Returns how many were let go.
   */
  abandonParked(): number {
    let n = 0;
    for (const [taskId, h] of this.#inflight) {
      if (h.done || h.followed) continue;
      h.abort.abort(new Error('this worker let go of the parked turn'));
      h.watch?.close();
      this.#inflight.delete(taskId);
      n++;
    }
    return n;
  }

  /**
   * A person rejected, or nobody answered in time: refuse the held command(s) on the gateway, so the turn
   * ends with a denied tool result. Approvals are left to the next `run` (see #continue). A no-op when
   * this process holds no turn for the task (after a restart the gateway's request is gone or times out).
   */
  async decided(taskId: string, decision: 'approved' | 'rejected' | 'expired'): Promise<void> {
    const h = this.#inflight.get(taskId);
    if (!h || decision === 'approved') return;
    this.#inflight.delete(taskId);
    for (const r of h.requests.filter((x) => !x.resolved)) {
      r.resolved = true;
      try {
        await h.watch?.resolve(r.id, 'deny');
      } catch (err) {
        this.#log.warn({ task_id: taskId, err: (err as Error).message }, 'could not deny an exec approval on the gateway; it times out there');
      }
    }
  }

  #turn(ep: Endpoint, turn: Turn, ctx: TurnCtx, signal: AbortSignal): Promise<string> {
    return streamTurn({
      transport: ep.transport,
      token: ep.token,
      headers: {
        'x-openclaw-session-key': turn.sessionKey,
        'x-clawplane-agent': turn.agent.name,
        ...(ep.gateway ? { 'x-clawplane-executor': ep.gateway } : {}),
      },
      body: JSON.stringify({
        model: `openclaw/main`,
        stream: true,
        messages: [
          { role: 'system', content: this.#taskTags.tag(turn.tenantId, turn.taskId) },
          { role: 'user', content: turn.prompt },
        ],
      }),
      signal,
      trace: ctx.trace,
      onIgnored: () => this.#log.debug({ task_id: turn.taskId }, 'ignored a non-JSON stream line from the gateway'),
    });
  }
}

/**
 * One streamed chat turn on a gateway (`POST /v1/chat/completions`, SSE): resolves with the answer's text when the
 * stream ends, rejects on a non-200 answer or a broken stream. Sent through the ingress's `gatewayRequest`, so a
 * turn written to a kept-alive socket the supervisor just closed is sent once more on a fresh one (it never reached
 * the gateway), and with no idle timeout (a turn held at an approval is silent until a person decides).
 */
export function streamTurn(o: {
  transport: GatewayTransport;
  token: string;
  headers: Record<string, string>;
  body: string;
  signal: AbortSignal;
  trace: (kind: string, detail?: Record<string, unknown>) => Promise<void>;
  onIgnored?: () => void;
}): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let text = '';
    let chunks = 0;
    let pending: Promise<void> = Promise.resolve();
    const call = gatewayRequest({
      transport: o.transport,
      token: o.token,
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { ...o.headers, 'content-type': 'application/json' },
      body: o.body,
      idleTimeoutMs: 0,
    });
    const onAbort = () => {
      call.abort();
      reject(o.signal.reason instanceof Error ? o.signal.reason : new Error('the turn was aborted'));
    };
    if (o.signal.aborted) onAbort();
    else o.signal.addEventListener('abort', onAbort, { once: true });
    call.response.then(
      (res) => {
        let ended = false;
        res.on('close', () => {
          o.signal.removeEventListener('abort', onAbort);
          if (!ended) reject(new Error('the gateway closed the stream before it ended'));
        });
        if ((res.statusCode ?? 0) !== 200) {
          const err: Buffer[] = [];
          res.on('data', (c: Buffer) => err.push(c));
          res.on('end', () => reject(new Error(`the gateway answered ${res.statusCode}: ${Buffer.concat(err).toString('utf8').slice(0, 300)}`)));
          return;
        }
        pending = pending.then(() => o.trace('stream_started', { status: res.statusCode }));
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
                  if (chunks === 1 || chunks % 20 === 0) pending = pending.then(() => o.trace('stream_progress', { chunks, chars: text.length }));
                }
              } catch {
                o.onIgnored?.();
              }
            }
          }
        });
        res.on('end', () => {
          ended = true;
          pending = pending.then(() => o.trace('stream_done', { chunks, chars: text.length }));
          pending.then(() => resolve(text), reject);
        });
        res.on('error', reject);
      },
      (err: unknown) => {
        o.signal.removeEventListener('abort', onAbort);
        reject(o.signal.aborted && o.signal.reason instanceof Error ? o.signal.reason : err);
      },
    );
  });
}
