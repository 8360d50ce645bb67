import { ClawplaneError } from '../errors.ts';

/**
 * The Cedar schema of tool use (issue 5, item 5). One action, UseTool: an agent (principal, a member of
 * its tenant) uses a tool (resource) in a context the broker fills in from the request. The tenant's
 * governance travels on the Tenant entity, reached through `principal.tenant`; tools carry their risk
 * class, group and scopes (allowed channels, repos, hosts; empty = any).
 */
export const CEDAR_SCHEMA = `
entity Tenant = { execPolicy: String };
entity Agent in [Tenant] = { tenant: Tenant };
entity Tool = {
  name: String,
  risk: String,
  group: String,
  channels: Set<String>,
  repos: Set<String>,
  hosts: Set<String>,
};
action UseTool appliesTo {
  principal: [Agent],
  resource: [Tool],
  context: { channel?: String, repo?: String, host?: String, taskId?: String },
};
`;

export const RISKS = ['low', 'medium', 'high', 'critical'] as const;
export type Risk = (typeof RISKS)[number];

/** A tool of the registry (table policy_tools). */
export interface Tool {
  name: string;
  risk: Risk;
  group: string;
  description: string;
  channels: string[];
  repos: string[];
  hosts: string[];
}

/** What the caller says about one use of a tool; every field is optional. */
export interface ToolContext {
  channel?: string;
  repo?: string;
  host?: string;
  taskId?: string;
}

export interface ToolRequest {
  /** The agent (OpenClaw agent id) asking; one Cedar Agent entity per name within the tenant. */
  agent: string;
  tool: string;
  context: ToolContext;
}

/** Where a policy comes from: the platform baseline, or a tenant's restrictions. */
export type PolicyOrigin = 'baseline' | 'tenant';

/** Scope of a tenant restriction: only this agent, only this channel (both: both must match). */
export interface PolicyScope {
  agent?: string;
  channel?: string;
}

/** A policy as people write and read it. */
export interface PolicySource {
  id: string;
  description: string;
  cedar: string;
  scope?: PolicyScope;
}

export type Outcome = 'allow' | 'deny' | 'requires_approval';

/** One policy named in a decision, with what it says. */
export interface DeterminingPolicy {
  id: string;
  effect: 'permit' | 'forbid';
  origin: PolicyOrigin;
  description: string;
  approval: boolean;
}

/** A decision with the ids of the policies that determined it and a sentence a person can read. */
export interface PolicyDecision {
  outcome: Outcome;
  /** Ids of the determining policies: `baseline/<id>` or `tenant/<id>`. Empty for a default deny. */
  policyIds: string[];
  policies: DeterminingPolicy[];
  explanation: string;
  /** Evaluation errors (the decision is then deny: errors fail closed). */
  errors: string[];
}

/** The effective tool lists for rendering into a tenant's OpenClaw config (defence in depth). */
export interface EffectiveToolLists {
  /** Usable without asking (maybe only in some contexts: the broker still checks each use). */
  allow: string[];
  /** Usable only after a person approves each use (render as exec "ask" or leave to the broker). */
  requiresApproval: string[];
  /** Never usable by this agent. */
  deny: string[];
}

/** A tool use refused by policy: 403 with the explanation and the determining policy ids. */
export class PolicyDeniedError extends ClawplaneError {
  constructor(decision: PolicyDecision) {
    super('policy_denied', 403, decision.explanation, { details: { outcome: decision.outcome, policyIds: decision.policyIds } });
  }
}
