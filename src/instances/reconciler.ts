import type { Logger } from 'pino';
import type { AgentDefaults } from '../identity/onboarding.ts';
import { toolPolicyFor, type ToolRestrictions } from '../runtime/config.ts';
import { renderForLayout } from '../governance/settings.ts';
import type { RuntimeStore } from '../runtime/store.ts';
import type { SandboxDriver, SandboxHealth, SandboxLimits, SandboxRef, SandboxSpec } from '../sandbox/types.ts';
import type { ClaimIdentity } from '../replicas/claims.ts';
import { soloIdentity, WorkClaims } from '../replicas/claims.ts';
import type { InstanceRow, InstanceService } from './instances.ts';
import { suspendedReason } from './reasons.ts';
import { InstanceLifecycle, type ResumeOutcome } from './lifecycle.ts';
import type { TenantRenderInput } from '../governance/settings.ts';
import { GatewayConfigRefusedError } from '../sandbox/host/reload.ts';

/**
 * The tenant's versioned configuration (src/governance, docs/adr/0013-gateway-config-versions.md): what a start
 * renders, and the outcome of the check that follows it.
 */
export interface GatewayConfigSource {
  forStart(tenantId: string): Promise<{ version: number; input: TenantRenderInput }>;
  applied(tenantId: string, instanceId: string, version: number, how?: 'hot' | 'restart'): Promise<void>;
  /** What a running gateway asked to reload in place should do (src/governance/versions.ts hotPlan). */
  hotPlan(
    tenantId: string,
    instanceId: string,
    o: { canHot: boolean; rewrite?: boolean },
  ): Promise<{ way: 'hot'; version: number; input: TenantRenderInput; paths: string[] } | { way: 'restart'; reason: string } | null>;
  restartInstead(tenantId: string, instanceId: string): Promise<void>;
  failed(tenantId: string, instanceId: string, version: number, reason: string): Promise<{ fallback: number } | null>;
}

/** How long a running gateway may take to reload a new configuration in place before it is restarted onto it. */
const HOT_APPLY_TIMEOUT_MS = 30_000;

/** How often a starting sandbox's health is read until its gateways are ready (one local socket request). */
const START_POLL_MS = 100;

export interface ReconcilerOptions {
  instances: InstanceService;
  driver: SandboxDriver;
  runtimes: RuntimeStore;
  agentDefaults: () => Promise<AgentDefaults>;
  /** What the tenant's tool policy takes away from its gateways (none when absent). */
  toolRestrictions?: (tenantId: string, agent: string) => Promise<ToolRestrictions>;
  log: Logger;
  /** How often desired and actual state are compared and health is polled. */
  intervalMs: number;
  /** How long a start may take to become ready before it counts as failed. */
  readyTimeoutMs: number;
  /** A gateway that crashed this many times before it was ever ready fails the start at once (a broken version). */
  crashLoopRestarts?: number;
  /** Who claims instances here (docs/adr/0009-replica-coordination.md); default: a single-process identity. */
  claims?: ClaimIdentity;
  /** Versioned configuration; without it every start renders from the live inputs (no history, no rollback). */
  gatewayConfig?: GatewayConfigSource;
  /**
   * Which of an instance's declared executors should run (a pool's sandbox: its active slots, src/pools);
   * null: all of them. Read at every start and every pass over a running sandbox, which is made to match.
   */
  executorsToRun?: (row: InstanceRow) => Promise<string[] | null>;
  /** The sandbox's own memory and CPU limits (a pool's sandbox); null: the driver's configured ones. */
  sandboxLimits?: (row: InstanceRow) => Promise<SandboxLimits | null>;
}

/** Why a resume fell back to a cold start, for metrics and the audit (issue 10). */

/**
 * Converges sandboxes to the desired state in the database (issue 6). Idempotent: every pass looks at
 * what is (the driver) and what should be (the row) and does only the difference. On start it adopts
 * sandboxes that survived a control-plane restart (no duplicate is started) and stops sandboxes of
 * this control plane that no instance wants (orphans). Work on one instance never overlaps itself.
 */
export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #busy = new Map<string, Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #pass: Promise<void> | undefined;
  #again = false;
  #clusterId: string | undefined;
  /** Adoption could not run yet (the driver was unavailable): no pass starts anything until it has. */
  #adoptPending = false;
  readonly #claims: WorkClaims;
  /** When (in #seq ticks) work on each instance last ended: a pass that read the row before acts on stale data. */
  readonly #finished = new Map<string, number>();
  #seq = 0;
  /** Instances whose lease this replica holds, with when (local clock) that lease lapses unless renewed. */
  readonly #owned = new Map<string, number>();
  /** Instances on another node already reported as left alone (said once, again after they change hands). */
  readonly #elsewhere = new Set<string>();
  /**
   * The executor set last sent to each instance's sandbox (`<sandbox id>:<ids>`), for drivers whose health does
   * not list executors (kubernetes). Per process and harmless so: a replica that takes an instance over sends
   * its set once more (setExecutors is idempotent). One entry per instance, replaced when its sandbox changes.
   */
  readonly #sentRun = new Map<string, string>();
  /** Stopped, resuming, resumed: the steps other services take in these transitions (src/instances/lifecycle.ts). */
  readonly lifecycle = new InstanceLifecycle();

  constructor(opts: ReconcilerOptions) {
    this.#o = opts;
    this.#claims = new WorkClaims(opts.instances.db, opts.claims ?? soloIdentity(opts.instances.node));
  }

  /** This replica's identity as a claimer of instances. */
  get claimIdentity(): ClaimIdentity {
    return this.#claims.id;
  }

  /**
   * Whether this replica holds the instance's lease (renewed by passes and idle sweeps once past its half-life).
   * A margin of a tenth of the TTL keeps us from acting on a lease that may lapse while we act.
   */
  owns(instanceId: string): boolean {
    const until = this.#owned.get(instanceId);
    return until !== undefined && until - this.#claims.id.ttlMs / 10 > Date.now();
  }

  /**
   * Reads the instances of `which` and claims them in one statement (InstanceService.claim): the rows this
   * replica holds, after adopting the sandboxes of those it just took over from a dead peer on this node.
   */
  async claimed(which: 'reconcile' | 'running'): Promise<InstanceRow[]> {
    const id = this.#claims.id;
    const t0 = Date.now();
    const rows = await this.#o.instances.claim(which, { ...id, nodeBound: this.#o.driver.name === 'local' });
    const mine: InstanceRow[] = [];
    for (const c of rows) {
      const { row } = c;
      if (!c.claimed) {
        this.#owned.delete(row.id);
        this.#sentRun.delete(row.id);
        if (!c.heldLive && row.sandbox && row.sandboxNode !== null && row.sandboxNode !== id.node && !this.#elsewhere.has(row.id)) {
          // Its sandbox runs on another node: only a replica there may touch it (local sandboxes belong to their host).
          this.#elsewhere.add(row.id);
          this.#o.log.warn(
            { instance_id: row.id, tenant_id: row.tenantId, node: row.sandboxNode, here: id.node },
            'leaving an instance alone: its sandbox runs on another node and no live replica there holds it',
          );
          await this.#o.instances.note(
            row,
            `sandbox runs on node ${row.sandboxNode}; waiting for a reconciler on that node (replica on ${id.node} leaves it alone)`,
          );
        }
        continue;
      }
      this.#elsewhere.delete(row.id);
      const was = this.#owned.has(row.id);
      // At least half the TTL is left (a lease is renewed only past its half-life).
      this.#owned.set(row.id, t0 + id.ttlMs / 2);
      if (!was && c.heldBy !== null && c.heldBy !== id.owner && row.sandbox) {
        // A dead peer's instance on this node: re-attach what the sandbox needs from a control plane.
        if (await this.#o.driver.adopt(row.sandbox).catch(() => false)) {
          this.#o.log.info({ instance_id: row.id, tenant_id: row.tenantId, from: c.heldBy }, 'adopted a running sandbox from a replica whose claim lapsed');
          await this.#o.instances.note(row, `sandbox ${row.sandbox.sandboxId} adopted from replica ${c.heldBy}, whose claim lapsed`);
        }
      }
      mine.push(row);
    }
    return mine;
  }

  /** Adopts what is running, removes orphans, then reconciles every interval. */
  async start(): Promise<void> {
    this.#clusterId = await this.#o.instances.clusterId();
    try {
      await this.adoptAndSweep();
    } catch (err) {
      // E.g. the Docker engine is down: serve anyway (instances say why), and adopt before any start.
      this.#adoptPending = true;
      this.#o.log.error({ err }, 'could not list running sandboxes to adopt them; retrying before each pass');
    }
    // Passes renew the leases: at least three per TTL, so a live owner never lets one lapse.
    this.#timer = setInterval(() => this.kick(), Math.min(this.#o.intervalMs, Math.max(100, Math.floor(this.#claims.id.ttlMs / 3))));
    this.#timer.unref();
    this.kick();
  }

  /** Stops reconciling and waits for work in flight. Sandboxes keep running: they survive us. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const started = this.#timer !== undefined;
    clearInterval(this.#timer);
    await this.#pass?.catch(() => undefined);
    await Promise.allSettled([...this.#busy.values()]);
    await this.#o.driver.close();
    // A clean stop hands our instances over at once rather than after the TTL.
    if (started) {
      this.#owned.clear();
      await this.#claims
        .releaseAll('instance')
        .catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'could not release instance claims; they lapse after the TTL'));
    }
  }

  /**
   * Runs a pass now (coalesced with one in flight). Only once started: a CLI command builds the same
   * services to write desired state, and must leave the work to the server's reconciler (it once pulled
   * a runtime and started a sandbox beside the server's own).
   */
  kick(): void {
    if (this.#stopped || this.#timer === undefined) return;
    if (this.#pass) {
      this.#again = true;
      return;
    }
    this.#pass = this.reconcileAll()
      .catch((err: unknown) => this.#o.log.error({ err }, 'reconcile pass failed'))
      .finally(() => {
        this.#pass = undefined;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  /** Resolves when no instance work is in flight and no pass is running (tests). */
  async idle(): Promise<void> {
    while (this.#pass || this.#busy.size > 0) {
      await this.#pass?.catch(() => undefined);
      await Promise.allSettled([...this.#busy.values()]);
    }
  }

  async adoptAndSweep(): Promise<void> {
    const clusterId = this.#clusterId ?? (await this.#o.instances.clusterId());
    const rows = await this.#o.instances.allForReconcile();
    const byId = new Map(rows.map((r) => [r.id, r]));
    // A live peer on this node owns these: it may be starting one (not yet recorded) or serving it.
    const others = await this.#claims.heldByOthers('instance');
    for (const h of await this.#o.driver.list()) {
      if (h.owner.clusterId !== clusterId) continue; // another control plane's sandbox on a shared node
      if (others.has(h.instanceId)) continue;
      const row = byId.get(h.instanceId);
      if (!row || row.sandbox?.sandboxId !== h.sandboxId) {
        this.#o.log.warn({ instance_id: h.instanceId, sandbox: h.sandboxId }, 'stopping an orphaned sandbox no instance owns');
        await this.#o.driver.stop(h);
        continue;
      }
      if (await this.#o.driver.adopt(h)) {
        this.#o.log.info(
          { instance_id: h.instanceId, tenant_id: h.tenantId, sandbox: h.sandboxId, node: h.owner.nodeId },
          'adopted a running sandbox after a control-plane restart',
        );
        await this.#o.instances.note(row, `sandbox ${h.sandboxId} adopted after a control-plane restart`);
      }
    }
  }

  async reconcileAll(): Promise<void> {
    if (this.#adoptPending) {
      await this.adoptAndSweep();
      this.#adoptPending = false;
    }
    const readAt = this.#seq;
    // Only the instances this replica holds a lease on (one owner at a time across replicas).
    const rows = await this.claimed('reconcile');
    for (const row of rows) {
      if (this.#busy.has(row.id)) continue;
      // Work on it ended after our read: the row is stale (it would destroy twice or start a second sandbox).
      if ((this.#finished.get(row.id) ?? -1) > readAt) continue;
      const p = this.reconcile(row)
        .catch((err: unknown) => this.#o.log.error({ err, instance_id: row.id, tenant_id: row.tenantId }, 'reconcile failed'))
        .finally(() => {
          this.#busy.delete(row.id);
          this.#finished.set(row.id, ++this.#seq);
        });
      this.#busy.set(row.id, p);
    }
  }

  /** One instance, one step towards its desired state. */
  async reconcile(row: InstanceRow): Promise<void> {
    const { driver, instances } = this.#o;
    const handle = row.sandbox;
    const actual = handle ? await driver.status(handle) : undefined;
    const running = actual?.running === true;

    if (row.desiredState === 'destroyed') {
      if (row.status !== 'destroying') row = await instances.recordStatus(row, 'destroying', 'destroy requested');
      await this.#discardSnapshot(row);
      await driver.destroy({ tenantId: row.tenantId, instanceId: row.id }, { deleteState: row.deleteState });
      await instances.removeDestroyed(row);
      return;
    }

    if (row.desiredState === 'stopped') {
      // Suspended is stopped with a process snapshot kept for the next start (issue 10).
      if (row.status === 'suspended' && !handle) return;
      if (running && handle) await driver.stop(handle);
      if (row.status !== 'stopped' || row.sandbox) {
        await instances.saveHealth(row.id, null);
        // Why it was asked to stop (InstanceService.stop): idle, quota, an operator…
        const why = /^stopping \((.+)\)$/.exec(row.statusReason)?.[1];
        const stopped = await instances.recordStatus(
          row,
          'stopped',
          why ? `stopped: ${why}` : 'stopped on request',
          { sandbox: null },
          { action: 'instance.stopped', decision: 'success' },
        );
        // Only after a gateway really ran (a sandbox existed): its state may have changed.
        if (handle) await this.lifecycle.emit('stopped', { row: stopped });
      }
      return;
    }

    // desired: running
    if (running && handle && row.observedGeneration >= row.generation) {
      const health = actual.running ? actual.health : undefined;
      // A running sandbox whose supervisor did not answer keeps its last reading (health_checked_at shows its
      // age) rather than flapping to "no health"; the next pass reads again.
      if (health !== undefined || !actual.running) await instances.saveHealth(row.id, health ?? null);
      if (health?.ready && row.status !== 'running') await instances.recordStatus(row, 'running', 'healthy', { failures: 0 });
      if (health) await this.#converge(row, handle, health);
      // A new configuration version to reload in place (docs/adr/0013-gateway-config-versions.md, "Apply").
      if (health?.ready && row.status === 'running' && row.configTarget !== null && row.configTarget !== row.configVersion) await this.#hotApply(row, handle);
      return;
    }
    if (row.nextAttemptAt && row.nextAttemptAt.getTime() > Date.now()) return; // backing off after a failure

    const upgrading = row.previousRuntimeVersion !== null && handle !== null && handle.runtimeVersion !== row.runtimeVersion;
    if (running && handle) {
      // A restart or an upgrade was asked for: replace the sandbox (state dirs stay).
      row = await instances.recordStatus(
        row,
        upgrading ? 'upgrading' : 'provisioning',
        upgrading ? `stopping ${handle.runtimeVersion} to start ${row.runtimeVersion}` : 'restarting',
      );
      await driver.stop(handle);
      await instances.saveSandbox(row.id, null);
    } else if (handle && !running) {
      const reason = actual && !actual.running ? actual.reason : 'sandbox gone';
      row = await instances.recordStatus(row, row.status === 'upgrading' ? 'upgrading' : 'provisioning', `sandbox not running (${reason}); starting it`, {
        sandbox: null,
      });
      await driver.stop(handle); // clears relays, records and cgroups of the dead one
    } else if (row.status !== 'provisioning' && row.status !== 'upgrading') {
      row = await instances.recordStatus(row, 'provisioning', 'starting');
    }

    if (row.snapshot) {
      // Resume from the snapshot when it is for this version and nothing asked for a fresh sandbox since.
      const outcome = await this.#resume(row);
      await this.lifecycle.emit('resumed', { row, outcome });
      if (outcome.resumed) return;
      row = await instances.recordStatus(
        row,
        'provisioning',
        `resume failed (${outcome.reason}); starting cold with the state the suspend left`,
        { snapshot: null },
        { action: 'instance.resume_failed', decision: 'failure', detail: { reason: outcome.reason } },
      );
    }

    let configVersion: number | null = null;
    try {
      const h = await this.#startAndWait(row, row.runtimeVersion, (v) => (configVersion = v));
      // Status and health in one write: a reader that sees "running" sees the health that made it so.
      await instances.recordStatus(
        row,
        'running',
        upgrading ? `upgraded to ${row.runtimeVersion}` : 'ready',
        { sandbox: h.handle, observedGeneration: row.generation, failures: 0, nextAttemptAt: null, health: h.health },
        {
          action: upgrading ? 'instance.upgraded' : 'instance.running',
          decision: 'success',
          detail: { runtimeVersion: row.runtimeVersion, readyMs: h.readyMs, ...(h.configVersion !== null ? { configVersion: h.configVersion } : {}) },
        },
      );
      if (h.configVersion !== null) await this.#o.gatewayConfig?.applied(row.tenantId, row.id, h.configVersion);
    } catch (err) {
      const reason = (err as Error).message;
      const previous = row.previousRuntimeVersion;
      // A configuration version that was never healthy fails its check here: back to the last known good one
      // (docs/adr/0013-gateway-config-versions.md), the same way a failed runtime upgrade goes back below.
      const fallback =
        configVersion !== null && !upgrading && !this.#stopped ? await this.#o.gatewayConfig?.failed(row.tenantId, row.id, configVersion, reason) : null;
      if (fallback) {
        const failed = configVersion;
        row = await instances.recordStatus(
          row,
          'provisioning',
          `configuration version ${failed} failed its check (${reason}); rolling back to version ${fallback.fallback}`,
        );
        try {
          const h = await this.#startAndWait(row, row.runtimeVersion);
          await instances.recordStatus(
            row,
            'running',
            `rolled back to configuration version ${h.configVersion ?? fallback.fallback} after version ${failed} failed: ${reason}`,
            { sandbox: h.handle, observedGeneration: row.generation, failures: 0, nextAttemptAt: null, health: h.health },
            {
              action: 'instance.running',
              decision: 'success',
              detail: { runtimeVersion: row.runtimeVersion, readyMs: h.readyMs, configVersion: h.configVersion },
            },
          );
          if (h.configVersion !== null) await this.#o.gatewayConfig?.applied(row.tenantId, row.id, h.configVersion);
          return;
        } catch (err2) {
          return this.#failed(row, `rollback to configuration version ${fallback.fallback} failed too: ${(err2 as Error).message}`);
        }
      }
      if (row.status === 'upgrading' && previous && previous !== row.runtimeVersion) {
        // Roll back: the old version with the same state dirs (issue 6).
        this.#o.log.warn({ instance_id: row.id, from: row.runtimeVersion, to: previous, reason }, 'upgrade failed its health check; rolling back');
        const failed = row.runtimeVersion;
        row = await instances.recordStatus(
          row,
          'upgrading',
          `upgrade to ${failed} failed (${reason}); rolling back to ${previous}`,
          { runtimeVersion: previous, previousRuntimeVersion: null },
          { action: 'instance.upgrade_failed', decision: 'failure', detail: { from: previous, to: failed } },
        );
        try {
          const h = await this.#startAndWait(row, previous);
          await instances.recordStatus(
            row,
            'running',
            `rolled back to ${previous} after upgrade to ${failed} failed: ${reason}`,
            { sandbox: h.handle, observedGeneration: row.generation, failures: 0, nextAttemptAt: null },
            { action: 'instance.rolled_back', decision: 'success', detail: { runtimeVersion: previous } },
          );
          await instances.saveHealth(row.id, h.health);
          if (h.configVersion !== null) await this.#o.gatewayConfig?.applied(row.tenantId, row.id, h.configVersion);
          return;
        } catch (err2) {
          return this.#failed(row, `rollback to ${previous} failed too: ${(err2 as Error).message}`);
        }
      }
      await this.#failed(row, reason);
    }
  }

  /**
   * Makes a running sandbox run the executors it should (a pool scaled up or down: docs/adr/0014-executor-pools.md):
   * starts the missing ones beside those serving and stops the others, by one control request.
   */
  async #converge(row: InstanceRow, handle: SandboxRef, health: SandboxHealth): Promise<void> {
    const asked = await this.#o.executorsToRun?.(row);
    if (!asked) return;
    // Only what this sandbox declares (a sandbox started with fewer executors keeps them until its next start).
    const want = health.executors.length > 0 ? asked.filter((id) => health.executors.some((e) => e.id === id)) : asked;
    const key = [...want].sort().join(',');
    let differs: boolean;
    if (health.executors.length > 0) {
      const running = health.executors.filter((e) => e.state !== 'stopped').map((e) => e.id);
      differs = running.length !== want.length || running.some((id) => !want.includes(id));
    } else differs = this.#sentRun.get(row.id) !== `${handle.sandboxId}:${key}`;
    if (!differs) return;
    const t0 = Date.now();
    const after = await this.#o.driver.setExecutors(handle, want);
    this.#sentRun.set(row.id, `${handle.sandboxId}:${key}`);
    if (after) await this.#o.instances.saveHealth(row.id, after);
    this.#o.log.info({ instance_id: row.id, tenant_id: row.tenantId, run: want, ms: Date.now() - t0 }, 'changed the executors a running sandbox runs');
  }

  /**
   * Applies the tenant's newest configuration version to a running gateway without restarting it: the driver
   * writes the rendered files into the sandbox and waits until every gateway reloaded them, then the gateway
   * must still be ready (the check a start makes). A version a gateway refuses as invalid is failed and the
   * gateway's file goes back to the last known good version (which it still runs); any other failure (a
   * gateway that did not apply it in time, an exited sandbox) restarts the instance onto the version instead,
   * where the start's check and rollback decide.
   */
  async #hotApply(row: InstanceRow, handle: SandboxRef): Promise<void> {
    const { driver, instances } = this.#o;
    const gc = this.#o.gatewayConfig;
    if (!gc) return;
    const canHot = driver.applyConfigs !== undefined;
    const plan = await gc.hotPlan(row.tenantId, row.id, { canHot });
    if (!plan) return;
    if (plan.way === 'restart') {
      await instances.note(row, `configuration change needs a restart (${plan.reason})`);
      return;
    }
    const apply = async (input: TenantRenderInput) => {
      const configs: Record<string, string> = {};
      for (let i = 0; i < row.executors; i++) configs[`e${i}`] = JSON.stringify(renderForLayout(driver.layout, input, i), null, 2);
      // A reload takes seconds; one OpenClaw could not finish (e.g. a plugin refusing its new settings when it
      // reloads: the file validated, the gateway keeps the old runtime) is settled by a restart, not waited out.
      await driver.applyConfigs?.(handle, configs, {
        gatewayToken: await instances.gatewayToken(row.id),
        timeoutMs: Math.min(this.#o.readyTimeoutMs, HOT_APPLY_TIMEOUT_MS),
      });
      const st = await driver.status(handle);
      if (!st.running) throw new Error(`the sandbox exited after the reload (${st.reason})`);
      if (!st.health?.ready) throw new Error('a gateway was not ready after the reload');
      return st.health;
    };
    try {
      const health = await apply(plan.input);
      await gc.applied(row.tenantId, row.id, plan.version, 'hot');
      await instances.recordStatus(
        row,
        'running',
        `configuration version ${plan.version} applied without a restart`,
        { health },
        { action: 'instance.config_reloaded', decision: 'success', detail: { configVersion: plan.version, paths: plan.paths.slice(0, 20) } },
      );
    } catch (err) {
      const reason = (err as Error).message;
      this.#o.log.warn({ instance_id: row.id, tenant_id: row.tenantId, version: plan.version, reason }, 'hot apply of a configuration version failed');
      if (err instanceof GatewayConfigRefusedError) {
        const fallback = await gc.failed(row.tenantId, row.id, plan.version, reason);
        if (fallback) {
          // The gateway still runs the last known good version: its file says so again.
          const back = await gc.hotPlan(row.tenantId, row.id, { canHot, rewrite: true });
          try {
            if (back?.way === 'hot') {
              const health = await apply(back.input);
              await gc.applied(row.tenantId, row.id, back.version, 'hot');
              await instances.recordStatus(
                row,
                'running',
                `rolled back to configuration version ${back.version} after version ${plan.version} failed: ${reason}`,
                { health },
                { action: 'instance.config_reloaded', decision: 'failure', detail: { configVersion: back.version, failed: plan.version } },
              );
              return;
            }
          } catch (err2) {
            this.#o.log.warn(
              { instance_id: row.id, tenant_id: row.tenantId, reason: (err2 as Error).message },
              'could not write the last known good configuration back; restarting',
            );
          }
        }
      }
      await instances.note(row, `configuration version ${plan.version} could not be applied without a restart (${reason}); restarting onto it`);
      await gc.restartInstead(row.tenantId, row.id);
    }
  }

  /** Runs `fn` in the instance's reconcile slot: never alongside a reconcile of the same instance. */
  async #exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    for (let cur = this.#busy.get(id); cur; cur = this.#busy.get(id)) await cur.catch(() => undefined);
    let release!: () => void;
    this.#busy.set(id, new Promise<void>((r) => (release = r)));
    try {
      return await fn();
    } finally {
      this.#busy.delete(id);
      this.#finished.set(id, ++this.#seq);
      release();
    }
  }

  /**
   * Suspends a running instance to a process snapshot instead of stopping it (issue 10; the idle
   * reaper's choice when the driver supports it). The row becomes status "suspended" with desired state
   * "stopped", so passes leave it alone until a start resumes it. Resolves with why not, leaving the
   * instance running, when it cannot be suspended; the caller then stops it.
   */
  async suspend(
    instanceId: string,
    actor: string,
    why = `requested by ${actor}`,
  ): Promise<{ suspended: true; dumpMs: number; imageBytes: number } | { suspended: false; reason: string }> {
    const { driver, instances } = this.#o;
    const snapshots = driver.snapshots;
    if (!snapshots) return { suspended: false, reason: `the ${driver.name} sandbox driver cannot suspend (no warm resume on this driver)` };
    const support = await snapshots.support();
    if (!support.supported) return { suspended: false, reason: support.reason };
    return this.#exclusive(instanceId, async () => {
      const row = await instances.byId(instanceId);
      if (!row || row.status !== 'running' || row.desiredState !== 'running' || !row.sandbox)
        return { suspended: false, reason: `the instance is ${row?.status ?? 'gone'}` };
      try {
        const snapshot = await snapshots.suspend(row.sandbox);
        await instances.saveHealth(row.id, null);
        await instances.recordStatus(
          row,
          'suspended',
          suspendedReason(why, snapshot.imageBytes, snapshot.dumpMs),
          { sandbox: null, snapshot, desiredState: 'stopped' },
          {
            action: 'instance.suspended',
            decision: 'success',
            detail: { actor, dumpMs: snapshot.dumpMs, imageBytes: snapshot.imageBytes, stateBytes: snapshot.stateBytes },
          },
        );
        return { suspended: true, dumpMs: snapshot.dumpMs, imageBytes: snapshot.imageBytes };
      } catch (err) {
        const reason = (err as Error).message;
        this.#o.log.warn({ instance_id: row.id, tenant_id: row.tenantId, reason }, 'suspend failed; the instance keeps running');
        await instances.note(row, `suspend failed: ${reason}`);
        return { suspended: false, reason };
      }
    });
  }

  /** Resumes the instance from its snapshot; on any failure the snapshot is gone and the state intact. */
  async #resume(row: InstanceRow): Promise<ResumeOutcome> {
    const { driver, instances } = this.#o;
    const snap = row.snapshot;
    if (!snap) return { resumed: false, reason: 'no snapshot' };
    const t0 = Date.now();
    let handle: SandboxRef | undefined;
    try {
      if (!driver.snapshots) throw new Error(`the ${driver.name} sandbox driver cannot resume snapshots`);
      if (snap.runtimeVersion !== row.runtimeVersion) throw new Error(`the snapshot is of ${snap.runtimeVersion}, the instance now runs ${row.runtimeVersion}`);
      if (row.observedGeneration < row.generation) throw new Error('a restart was asked for since the suspend');
      const spec = await this.spec(row, row.runtimeVersion);
      handle = await driver.snapshots.resume(spec, snap);
      await instances.saveSandbox(row.id, handle);
      for (;;) {
        const st = await driver.status(handle);
        if (!st.running) throw new Error(`the resumed sandbox exited (${st.reason})`);
        if (st.health?.ready) {
          await instances.saveHealth(row.id, st.health);
          break;
        }
        if (Date.now() - t0 > 30_000) throw new Error('the resumed gateway was not ready within 30 s');
        await new Promise((r) => setTimeout(r, START_POLL_MS));
      }
      await this.lifecycle.emit('resuming', { row, handle });
      const ms = Date.now() - t0;
      // Used once: the images and the state archive go (they hold the old tokens and memory in clear).
      await driver.snapshots.discard(snap);
      await instances.recordStatus(
        row,
        'running',
        `resumed from a snapshot in ${ms} ms`,
        { sandbox: handle, snapshot: null, observedGeneration: row.generation, failures: 0, nextAttemptAt: null },
        { action: 'instance.resumed', decision: 'success', detail: { ms, suspendedAt: snap.suspendedAt } },
      );
      return { resumed: true, ms };
    } catch (err) {
      if (handle) {
        await driver.stop(handle).catch(() => undefined);
        await instances.saveSandbox(row.id, null);
      }
      await driver.snapshots
        ?.discard(snap)
        .catch((e: unknown) => this.#o.log.warn({ instance_id: row.id, err: (e as Error).message }, 'could not discard a snapshot'));
      const reason = (err as Error).message.split('\n')[0] ?? 'unknown';
      this.#o.log.warn({ instance_id: row.id, tenant_id: row.tenantId, reason }, 'resume failed; starting cold');
      return { resumed: false, reason };
    }
  }

  /** Deletes a snapshot nobody will resume (destroy; the row keeps no pointer to it). */
  async #discardSnapshot(row: InstanceRow): Promise<void> {
    if (!row.snapshot) return;
    await this.#o.driver.snapshots?.discard(row.snapshot);
  }

  /**
   * Pulls a missing runtime (the platform default: InstanceService refuses others it does not have), with
   * its progress as the instance's status reason, throttled to one write a second.
   */
  async #ensureRuntime(row: InstanceRow, version: string): Promise<void> {
    const { runtimes, instances } = this.#o;
    if (await runtimes.has(version)) return;
    row = await instances.recordStatus(row, row.status === 'upgrading' ? 'upgrading' : 'provisioning', `pulling runtime openclaw@${version}`);
    const t0 = Date.now();
    let last = 0;
    let phase = '';
    const writes: Promise<void>[] = [];
    try {
      await runtimes.pull(version, (e) => {
        if (e.phase === phase && Date.now() - last < 1000) return;
        phase = e.phase;
        last = Date.now();
        writes.push(instances.progress(row.id, `pulling runtime openclaw@${version}: ${e.message}`).catch(() => undefined));
      });
    } catch (err) {
      throw new Error(`pulling runtime openclaw@${version} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      await Promise.all(writes);
    }
    await instances.note(row, `runtime openclaw@${version} pulled in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await instances.progress(row.id, 'starting the sandbox');
  }

  async #failed(row: InstanceRow, reason: string): Promise<void> {
    const failures = row.failures + 1;
    const delayMs = Math.min(5 * 60_000, 2_000 * 2 ** Math.min(failures - 1, 8));
    this.#o.log.warn({ instance_id: row.id, tenant_id: row.tenantId, failures, delayMs, reason }, 'instance start failed');
    await this.#o.instances.recordStatus(
      row,
      'error',
      `${reason} (attempt ${failures}; retrying in ${Math.round(delayMs / 1000)} s)`,
      { sandbox: null, failures, nextAttemptAt: new Date(Date.now() + delayMs) },
      { action: 'instance.start_failed', decision: 'failure', detail: { failures } },
    );
    await this.#o.instances.saveHealth(row.id, null);
  }

  async spec(row: InstanceRow, version: string): Promise<SandboxSpec> {
    return (await this.#spec(row, version)).spec;
  }

  /** The sandbox spec and the configuration version it renders (null without versioned configuration). */
  async #spec(row: InstanceRow, version: string): Promise<{ spec: SandboxSpec; configVersion: number | null }> {
    // Independent reads side by side: this is on the path of every start and every wake (issue 7).
    const [runtime, tenantPart, gatewayToken, hooksToken, tenantUid, clusterId] = await Promise.all([
      this.#o.runtimes.resolve(version),
      this.#o.gatewayConfig
        ? this.#o.gatewayConfig.forStart(row.tenantId)
        : this.#o.agentDefaults().then(async (defaults) => {
            const restrictions = this.#o.toolRestrictions ? await this.#o.toolRestrictions(row.tenantId, defaults.agentName) : { deny: [], execDenied: false };
            const input: TenantRenderInput = {
              agents: [{ id: defaults.agentName, name: defaults.agentName }],
              models: [defaults.defaultModel ?? 'default'],
              tools: toolPolicyFor(defaults.execPolicy, restrictions),
            };
            return { version: null, input };
          }),
      this.#o.instances.gatewayToken(row.id),
      this.#o.instances.hooksToken(row.id),
      this.#o.instances.tenantUid(row.tenantId),
      this.#clusterId ?? this.#o.instances.clusterId(),
    ]);
    const layout = this.#o.driver.layout;
    const configs: Record<string, string> = {};
    for (let i = 0; i < row.executors; i++) configs[`e${i}`] = JSON.stringify(renderForLayout(layout, tenantPart.input, i), null, 2);
    const run = (await this.#o.executorsToRun?.(row)) ?? null;
    const limits = (await this.#o.sandboxLimits?.(row)) ?? null;
    const spec: SandboxSpec = {
      tenantId: row.tenantId,
      instanceId: row.id,
      runtime,
      configs,
      ...(run ? { run: run.filter((id) => id in configs) } : {}),
      ...(limits ? { limits } : {}),
      gatewayToken,
      hooksToken,
      tenantUid,
      clusterId,
    };
    return { spec, configVersion: tenantPart.version };
  }

  async #startAndWait(
    row: InstanceRow,
    version: string,
    onConfig?: (configVersion: number) => void,
  ): Promise<{ handle: SandboxRef; health: SandboxHealth; readyMs: number; configVersion: number | null }> {
    const { driver, instances } = this.#o;
    const tSpec = Date.now();
    await this.#ensureRuntime(row, version);
    const { spec, configVersion } = await this.#spec(row, version);
    if (configVersion !== null) onConfig?.(configVersion);
    const t0 = Date.now();
    const handle = await driver.start(spec);
    const tStarted = Date.now();
    // Persist at once: if we die while waiting, the next control plane adopts (or stops) this sandbox.
    await instances.saveSandbox(row.id, handle);
    const limit = this.#o.crashLoopRestarts ?? 2;
    try {
      for (;;) {
        if (this.#stopped) throw new Error('control plane shutting down');
        const st = await driver.status(handle);
        if (!st.running) throw new Error(`the sandbox exited during start (${st.reason}); see the instance logs`);
        const h = st.health;
        if (h?.ready) {
          const now = Date.now();
          // Where a start's time went (bench/boot.ts splits the part inside the sandbox the same way).
          const gw = h.executors[0];
          const spawnedAt = gw?.startedAt ? Date.parse(gw.startedAt) : undefined;
          this.#o.log.debug(
            {
              instance_id: row.id,
              tenant_id: row.tenantId,
              specMs: t0 - tSpec,
              driverStartMs: tStarted - t0,
              ...(spawnedAt !== undefined && gw?.readyMs != null
                ? { spawnedAtMs: spawnedAt - t0, gatewayMs: gw.readyMs, noticeMs: now - spawnedAt - gw.readyMs }
                : {}),
            },
            'sandbox ready: start phases',
          );
          return { handle, health: h, readyMs: now - t0, configVersion };
        }
        const looping = h?.executors.find((e) => e.restarts >= limit && e.readyMs === null);
        if (looping) {
          const exit = looping.lastExit ? `last exit code ${looping.lastExit.code ?? looping.lastExit.signal}` : 'no exit recorded';
          throw new Error(`gateway ${looping.id} crashed ${looping.restarts} times before becoming ready (${exit}); see the instance logs`);
        }
        if (Date.now() - t0 > this.#o.readyTimeoutMs) throw new Error(`not ready within ${Math.round(this.#o.readyTimeoutMs / 1000)} s`);
        // The supervisor answers /health with a fresh probe of a starting gateway, so a short poll here is
        // what bounds how late a ready gateway is noticed (issue 7: a woken request waits on this).
        await new Promise((r) => setTimeout(r, START_POLL_MS));
      }
    } catch (err) {
      await driver.stop(handle).catch(() => undefined);
      await instances.saveSandbox(row.id, null);
      throw err;
    }
  }
}
