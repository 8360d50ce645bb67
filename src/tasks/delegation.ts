import { z } from 'zod';
import { SWARM_POLICIES } from '../swarms/types.ts';
import { AGENT_TYPES } from './types.ts';

/**
 * How an agent asks for delegation (issue 8): its answer contains one fenced block tagged
 * `clawplane-delegate` holding JSON, e.g.
 *
 *     ```clawplane-delegate
 *     {"tasks": [{"capability": "research", "input": "find the Q4 numbers"}, {"agent": "writer", "input": "…"}]}
 *     ```
 *
 * Each entry names a capability or an agent (or both), optionally an agent type (its executor pool), and the
 * child's input; an optional `policy` (all | any | quorum, with `quorum`) decides the fan-in as for swarms. At
 * most 5 children per task and 3 levels below the root; anything malformed is ignored and reported in the trace.
 */
export const MAX_CHILDREN = 5;
export const MAX_DEPTH = 3;

const Child = z
  .strictObject({
    capability: z.string().min(1).max(64).optional(),
    agent: z.string().min(1).max(64).optional(),
    agentType: z.enum(AGENT_TYPES).optional(),
    input: z.string().min(1).max(20_000),
  })
  .refine((c) => c.capability !== undefined || c.agent !== undefined, 'name a capability or an agent');
const Request = z
  .strictObject({
    tasks: z.array(Child).min(1).max(MAX_CHILDREN),
    policy: z.enum(SWARM_POLICIES).optional(),
    quorum: z.number().int().min(1).max(MAX_CHILDREN).optional(),
  })
  .refine((r) => (r.policy === 'quorum') === (r.quorum !== undefined), { message: 'give quorum exactly when the policy is quorum', path: ['quorum'] });
export type DelegationRequest = z.infer<typeof Request>;

const BLOCK = /```clawplane-delegate\s*\n([\s\S]*?)```/;

export function parseDelegation(output: string): { request?: DelegationRequest; error?: string; rest: string } {
  const m = BLOCK.exec(output);
  if (!m) return { rest: output };
  const rest = output.replace(BLOCK, '').trim();
  let json: unknown;
  try {
    json = JSON.parse(m[1] ?? '');
  } catch {
    return { error: 'the clawplane-delegate block is not valid JSON', rest };
  }
  const p = Request.safeParse(json);
  if (!p.success)
    return { error: `the clawplane-delegate block is invalid: ${p.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, rest };
  return { request: p.data, rest };
}
