import { z } from 'zod';
import { AGENT_TYPES, type AgentType } from '../tasks/types.ts';

/**
 * Swarms (docs/adr/0014-executor-pools.md, "Swarms"): a task whose capability matches one of its tenant's
 * swarm rules is decomposed into child tasks, one per step, each for an agent type (so each runs on that
 * type's pool); the children run in parallel and the parent aggregates them under the rule's policy.
 */
export const SWARM_POLICIES = ['all', 'any', 'quorum'] as const;
export type SwarmPolicy = (typeof SWARM_POLICIES)[number];
export const MAX_SWARM_STEPS = 8;

const Name = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/, 'lowercase letters, digits and inner hyphens, at most 40, e.g. "review"');
const Capability = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, 'a capability such as "summarise"');

export const swarmStep = z.strictObject({
  agentType: z.enum(AGENT_TYPES).describe('The child runs on an agent of this type (and its executor pool, if any)'),
  capability: Capability.describe("The child's capability (dispatch picks the agent of that type with it)"),
  input: z.string().min(1).max(20_000).optional().describe("The child's input; \"{{input}}\" is replaced by the parent's. Default: the parent's input"),
});

export const swarmRuleInput = z
  .strictObject({
    name: Name,
    capability: Capability.describe('Tasks created with this capability (and no named agent or agent type) become this swarm'),
    steps: z.array(swarmStep).min(2).max(MAX_SWARM_STEPS),
    policy: z.enum(SWARM_POLICIES).default('all').describe('all: every child must complete; any: one is enough; quorum: at least `quorum`'),
    quorum: z.number().int().min(1).max(MAX_SWARM_STEPS).optional(),
  })
  .refine((r) => (r.policy === 'quorum') === (r.quorum !== undefined), { message: 'give quorum exactly when the policy is quorum', path: ['quorum'] })
  .refine((r) => r.quorum === undefined || r.quorum <= r.steps.length, { message: 'quorum may not exceed the number of steps', path: ['quorum'] });
export type SwarmRuleInput = z.input<typeof swarmRuleInput>;

export interface SwarmStep {
  agentType: AgentType;
  capability: string;
  input?: string | undefined;
}

export interface SwarmRule {
  id: string;
  tenantId: string;
  name: string;
  capability: string;
  steps: SwarmStep[];
  policy: SwarmPolicy;
  quorum: number | null;
  createdAt: string;
  updatedAt: string;
}

/**
 * Whether the policy is already decided while some children still run: true (met whatever they do), false
 * (can no longer be met), or null (they matter). `all` fails at the first failure (fail-fast); `any` is met
 * at the first success; a quorum once reached, or once out of reach.
 */
export function policyDecided(policy: SwarmPolicy, quorum: number | null, completed: number, failed: number, total: number): boolean | null {
  const need = policy === 'all' ? total : policy === 'any' ? 1 : Math.min(quorum ?? total, total);
  if (completed >= need) return true;
  if (total - failed < need) return false;
  return null;
}

/** Whether a swarm's children outcome satisfies its policy. */
export function policyMet(policy: SwarmPolicy, quorum: number | null, completed: number, total: number): boolean {
  if (policy === 'all') return completed === total;
  if (policy === 'any') return completed >= 1;
  return completed >= (quorum ?? total);
}
