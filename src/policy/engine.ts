import { preparsePolicySet, preparseSchema, statefulIsAuthorized, type AuthorizationAnswer, type EntityJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { CompiledPolicy } from './compile.ts';
import { CEDAR_SCHEMA, type DeterminingPolicy, type PolicyDecision, type Tool, type ToolContext } from './types.ts';

const SCHEMA_NAME = 'clawplane-tool-use';
let schemaLoaded = false;
let engineSeq = 0;

/** A policy set preparsed inside Cedar (thread-local in the wasm module), with what we know of each policy. */
export interface LoadedPolicySet {
  /** Id of the full set (baseline + tenant). */
  fullId: string;
  /** Id of the same set without @approval forbids, consulted only to tell "approval" from "no". */
  hardId: string;
  meta: Map<string, CompiledPolicy>;
}

/** One request as the engine sees it: who, which tool (from the registry), which context. */
export interface EngineRequest {
  tenantId: string;
  execPolicy: 'deny' | 'ask';
  agent: string;
  tool: Tool;
  context: ToolContext;
}

function describe(p: CompiledPolicy): DeterminingPolicy {
  return { id: p.id, effect: p.effect, origin: p.origin, description: p.description, approval: p.approval };
}

function quote(ps: CompiledPolicy[]): string {
  return ps.map((p) => (p.description ? `${p.id} ("${p.description}")` : p.id)).join(', ');
}

/**
 * Cedar evaluation with preparsed policy sets (statefulIsAuthorized: ~7× faster than isAuthorized,
 * which re-parses everything per call; notes/security-and-sandbox.md A2) and only the three entities a
 * request needs: the tenant, the agent and the tool.
 *
 * "Requires approval" as a third outcome: Cedar only answers allow or deny, so an approval rule is a
 * forbid annotated @approval("required"). It makes the full set deny; when every forbid that fired is
 * such a rule, the engine asks the "hard" set (the same policies without the approval forbids): if that
 * allows, a permit applies and no hard forbid does, so the outcome is requires_approval. An approval
 * forbid can therefore turn an allow into requires_approval, never a deny into anything else.
 */
export class PolicyEngine {
  private readonly prefix: string;

  constructor() {
    if (!schemaLoaded) {
      const r = preparseSchema(SCHEMA_NAME, CEDAR_SCHEMA);
      if (r.type === 'failure') throw new Error(`The built-in Cedar schema does not parse: ${r.errors.map((e) => e.message).join('; ')}`);
      schemaLoaded = true;
    }
    // Preparsed sets live for the whole process; one prefix per engine keeps two engines apart.
    this.prefix = `e${++engineSeq}`;
  }

  /** Preparses (or replaces) the set named `key`; call again with the same key when its policies change. */
  load(key: string, policies: CompiledPolicy[]): LoadedPolicySet {
    const fullId = `${this.prefix}:${key}:full`;
    const hardId = `${this.prefix}:${key}:hard`;
    const put = (id: string, ps: CompiledPolicy[]) => {
      const r = preparsePolicySet(id, { staticPolicies: Object.fromEntries(ps.map((p) => [p.id, p.json])) });
      if (r.type === 'failure') throw new Error(`Policy set ${key} does not parse: ${r.errors.map((e) => e.message).join('; ')}`);
    };
    put(fullId, policies);
    put(
      hardId,
      policies.filter((p) => !p.approval),
    );
    return { fullId, hardId, meta: new Map(policies.map((p) => [p.id, p])) };
  }

  /** Frees a replaced set's memory inside Cedar; a late decision on it finds no policy and denies. */
  unload(set: LoadedPolicySet): void {
    preparsePolicySet(set.fullId, { staticPolicies: {} });
    preparsePolicySet(set.hardId, { staticPolicies: {} });
  }

  decide(set: LoadedPolicySet, req: EngineRequest): PolicyDecision {
    const full = this.evaluate(set.fullId, req);
    if ('error' in full) return this.failClosed(req, full.error);
    const fired = full.reason.map((id) => set.meta.get(id)).filter((p): p is CompiledPolicy => p !== undefined);
    if (full.allow) {
      return {
        outcome: 'allow',
        policyIds: fired.map((p) => p.id),
        policies: fired.map(describe),
        explanation: `Allowed: ${quote(fired)} permits ${this.subject(req)}, and no forbid applies.`,
        errors: [],
      };
    }
    if (fired.length === 0) {
      return {
        outcome: 'deny',
        policyIds: [],
        policies: [],
        explanation: `Denied: no policy permits ${this.subject(req)}, and Cedar denies what is not permitted.`,
        errors: [],
      };
    }
    const hard = fired.filter((p) => !p.approval);
    if (hard.length > 0) {
      return {
        outcome: 'deny',
        policyIds: hard.map((p) => p.id),
        policies: hard.map(describe),
        explanation: `Denied: ${quote(hard)} forbids ${this.subject(req)}.`,
        errors: [],
      };
    }
    const without = this.evaluate(set.hardId, req);
    if ('error' in without) return this.failClosed(req, without.error);
    if (!without.allow) {
      return {
        outcome: 'deny',
        policyIds: [],
        policies: [],
        explanation: `Denied: no policy permits ${this.subject(req)}, and Cedar denies what is not permitted.`,
        errors: [],
      };
    }
    const permits = without.reason.map((id) => set.meta.get(id)).filter((p): p is CompiledPolicy => p !== undefined);
    return {
      outcome: 'requires_approval',
      policyIds: [...fired, ...permits].map((p) => p.id),
      policies: [...fired, ...permits].map(describe),
      explanation: `Needs a person's approval: ${quote(fired)} requires it for ${this.subject(req)}; once approved, ${quote(permits)} permits it.`,
      errors: [],
    };
  }

  private subject(req: EngineRequest): string {
    const ctx = Object.entries(req.context)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${String(v)}`);
    return `agent "${req.agent}" using ${req.tool.risk}-risk tool "${req.tool.name}"${ctx.length ? ` (${ctx.join(', ')})` : ''}`;
  }

  private failClosed(req: EngineRequest, error: string): PolicyDecision {
    return {
      outcome: 'deny',
      policyIds: [],
      policies: [],
      explanation: `Denied: a policy could not be evaluated for ${this.subject(req)}, so the request is refused (${error}).`,
      errors: [error],
    };
  }

  private evaluate(setId: string, req: EngineRequest): { allow: boolean; reason: string[] } | { error: string } {
    const tenant = { type: 'Tenant', id: req.tenantId };
    const agent = { type: 'Agent', id: req.agent };
    const entities: EntityJson[] = [
      { uid: tenant, attrs: { execPolicy: req.execPolicy }, parents: [] },
      { uid: agent, attrs: { tenant: { __entity: tenant } }, parents: [tenant] },
      {
        uid: { type: 'Tool', id: req.tool.name },
        attrs: { name: req.tool.name, risk: req.tool.risk, group: req.tool.group, channels: req.tool.channels, repos: req.tool.repos, hosts: req.tool.hosts },
        parents: [],
      },
    ];
    const context: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.context)) if (typeof v === 'string') context[k] = v;
    const answer: AuthorizationAnswer = statefulIsAuthorized({
      principal: agent,
      action: { type: 'Action', id: 'UseTool' },
      resource: { type: 'Tool', id: req.tool.name },
      context,
      preparsedSchemaName: SCHEMA_NAME,
      // Checks the context against the schema; measured free (bench/policy.ts), and a mistyped context fails closed.
      validateRequest: true,
      preparsedPolicySetId: setId,
      entities,
    });
    if (answer.type === 'failure') return { error: answer.errors.map((e) => e.message).join('; ') };
    // Cedar skips a policy that errors; for a forbid that would widen access, so any error denies.
    const errs = answer.response.diagnostics.errors;
    if (errs.length > 0) return { error: errs.map((e) => `${e.policyId}: ${e.error.message}`).join('; ') };
    return { allow: answer.response.decision === 'allow', reason: answer.response.diagnostics.reason };
  }
}
