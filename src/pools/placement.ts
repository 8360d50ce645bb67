import type { AgentType } from '../tasks/types.ts';

/**
 * Where a pool's executor runs (docs/adr/0014-executor-pools.md, Scaling). Slot k of shard s is the pool's
 * gateway number g = k·shards + s, counted across its sandboxes: sandbox ⌊g / perSandbox⌋, gateway
 * `e<g mod perSandbox>` there. Slots fill a sandbox shard by shard (slot 0 of every shard first), so a
 * backlog adds executors inside the first sandbox up to its size and only then reaches the next one.
 */
export function placement(shard: number, slot: number, shards: number, perSandbox: number): { sandbox: number; gateway: string } {
  const g = slot * shards + shard;
  return { sandbox: Math.floor(g / perSandbox), gateway: `e${g % perSandbox}` };
}

/** Sandboxes a pool runs when every shard has `perShard` executors. */
export const sandboxesFor = (shards: number, perShard: number, perSandbox: number) => Math.ceil((shards * perShard) / perSandbox);

/** The instance (sandbox) of a pool: `pool-<agentType>` for the first, `pool-<agentType>-<n>` after it. */
export const poolSandboxName = (agentType: AgentType, sandbox: number) => (sandbox === 0 ? `pool-${agentType}` : `pool-${agentType}-${sandbox}`);

/** The pool sandbox an instance name stands for, or null when it is not one. */
export function parsePoolSandboxName(name: string): { agentType: string; sandbox: number } | null {
  const m = /^pool-([a-z]+)(?:-([1-9][0-9]?))?$/.exec(name);
  return m ? { agentType: m[1] as string, sandbox: m[2] ? Number(m[2]) : 0 } : null;
}

/**
 * Places slots again after a pool's shards or executorsPerSandbox changed (docs/adr/0014-executor-pools.md,
 * Changing a pool): `want` in slot-major order (as placement() numbers them) each gets the lowest free
 * position of the new layout — sandbox n holds gateways e0…e(capacity(n) − 1) — skipping positions `taken`
 * by executors that stay where they run. Returns the positions in `want`'s order.
 */
export function replace(
  want: number,
  taken: ReadonlySet<string>,
  perSandbox: number,
  capacity: (sandbox: number) => number,
): { sandbox: number; gateway: string }[] {
  const out: { sandbox: number; gateway: string }[] = [];
  for (let g = 0; out.length < want; g++) {
    const sandbox = Math.floor(g / perSandbox);
    const i = g % perSandbox;
    const gateway = `e${i}`;
    if (i < Math.min(perSandbox, capacity(sandbox)) && !taken.has(`${sandbox}/${gateway}`)) out.push({ sandbox, gateway });
  }
  return out;
}
