import { policySetTextToParts, policyToJson, policyToText, validate, type DetailedError, type Expr, type PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { ValidationError } from '../errors.ts';
import { CEDAR_SCHEMA, type PolicyOrigin, type PolicyScope, type PolicySource } from './types.ts';

/** A policy parsed, scoped and ready to load into a Cedar policy set. */
export interface CompiledPolicy {
  /** `baseline/<id>` or `tenant/<id>`: what decisions and audit records name. */
  id: string;
  origin: PolicyOrigin;
  effect: 'permit' | 'forbid';
  description: string;
  /** @approval("required"): a match means "a person must approve", not "no" (see engine.ts). */
  approval: boolean;
  /** @contextual("true"): depends on the request context; left out of rendered config lists. */
  contextual: boolean;
  /** The policy as evaluated (scope folded in), in Cedar text. */
  text: string;
  json: PolicyJson;
}

const MAX_POLICY_CHARS = 10_000;

function message(errors: DetailedError[]): string {
  return errors.map((e) => e.message + (e.help ? ` (${e.help})` : '')).join('; ');
}

const contextAttr = (attr: string): Expr => ({ '.': { left: { Var: 'context' }, attr } });

/**
 * Folds a restriction's scope into the policy as extra `when` clauses (Cedar conjoins them):
 * agent → `principal == Agent::"<agent>"`, channel → `context has channel && context.channel == "<c>"`.
 * A scope can only narrow when a forbid applies, so it cannot widen anything.
 */
function addScope(json: PolicyJson, scope: PolicyScope | undefined): PolicyJson {
  if (!scope) return json;
  const conditions = [...json.conditions];
  if (scope.agent !== undefined) {
    conditions.push({ kind: 'when', body: { '==': { left: { Var: 'principal' }, right: { Value: { __entity: { type: 'Agent', id: scope.agent } } } } } });
  }
  if (scope.channel !== undefined) {
    conditions.push({
      kind: 'when',
      body: {
        '&&': {
          left: { has: { left: { Var: 'context' }, attr: 'channel' } },
          right: { '==': { left: contextAttr('channel'), right: { Value: scope.channel } } },
        },
      },
    });
  }
  return { ...json, conditions };
}

/** A ValidationError whose one issue names `path` (the policy's field in the request). */
function fieldError(path: string) {
  return class extends ValidationError {
    constructor(message: string) {
      super(message, [{ path, message }]);
    }
  };
}

/**
 * Parses one policy written by a person. Exactly one static policy per entry (templates are refused:
 * a template link could be added later without going through this check).
 */
export function compilePolicy(origin: PolicyOrigin, src: PolicySource, at = 'cedar'): CompiledPolicy {
  const where = `policy "${src.id}"`;
  const ValidationError = fieldError(at);
  if (src.cedar.length > MAX_POLICY_CHARS) throw new ValidationError(`${where} is longer than ${MAX_POLICY_CHARS} characters.`);
  const parts = policySetTextToParts(src.cedar);
  if (parts.type === 'failure') throw new ValidationError(`${where} is not valid Cedar: ${message(parts.errors)}`);
  if (parts.policy_templates.length > 0) throw new ValidationError(`${where} is a template (it uses ?principal or ?resource); write a static policy.`);
  if (parts.policies.length !== 1)
    throw new ValidationError(`${where} must hold exactly one Cedar policy; it holds ${parts.policies.length}. Give each policy its own entry.`);
  const parsed = policyToJson(parts.policies[0] ?? '');
  if (parsed.type === 'failure') throw new ValidationError(`${where} is not valid Cedar: ${message(parsed.errors)}`);
  const annotations = parsed.json.annotations ?? {};
  const approvalValue = annotations['approval'];
  if (approvalValue !== undefined && approvalValue !== 'required') throw new ValidationError(`${where}: the only value of @approval is "required".`);
  if (approvalValue !== undefined && parsed.json.effect !== 'forbid') throw new ValidationError(`${where}: @approval("required") belongs on a forbid policy.`);
  const json = addScope(parsed.json, src.scope);
  const text = policyToText(json);
  if (text.type === 'failure') throw new ValidationError(`${where} could not be rendered: ${message(text.errors)}`);
  return {
    id: `${origin}/${src.id}`,
    origin,
    effect: parsed.json.effect,
    description: src.description,
    approval: approvalValue === 'required',
    contextual: annotations['contextual'] === 'true',
    text: text.text,
    json,
  };
}

/**
 * Tenant, agent and channel restrictions may only add forbids (issue 5): the baseline's permits are the
 * ceiling of what a tenant's agents can do. A permit is refused here, when it is written, so it never
 * reaches a policy set. Then the set is validated against the schema.
 */
export function compileTenantPolicies(sources: PolicySource[]): CompiledPolicy[] {
  const compiled = sources.map((s, i) => compilePolicy('tenant', s, `policies.${i}.cedar`));
  const permit = compiled.find((p) => p.effect !== 'forbid');
  if (permit) {
    throw new (fieldError(`policies.${compiled.indexOf(permit)}.cedar`))(
      `Tenant restrictions may only forbid: ${permit.id.replace('tenant/', 'policy "')}" is a ${permit.effect}. The platform baseline decides what is permitted; write "forbid (…) when { … };" to take something away.`,
    );
  }
  validatePolicies(compiled);
  return compiled;
}

/** Compiles and validates the platform baseline (permits and forbids). */
export function compileBaseline(sources: PolicySource[]): CompiledPolicy[] {
  const compiled = sources.map((s, i) => compilePolicy('baseline', s, `policies.${i}.cedar`));
  validatePolicies(compiled);
  return compiled;
}

/**
 * Strict validation against CEDAR_SCHEMA: unknown attributes, actions or entity types, and unguarded
 * optional context attributes (`context.repo` without `context has repo`) are refused, so a policy
 * cannot fail at evaluation time and be silently skipped.
 */
export function validatePolicies(policies: CompiledPolicy[]): void {
  if (policies.length === 0) return;
  const ids = new Set<string>();
  for (const p of policies) {
    if (ids.has(p.id))
      throw new ValidationError(`Two policies have the id "${p.id}"; ids must be unique.`, [{ path: 'policies', message: `the id "${p.id}" is used twice` }]);
    ids.add(p.id);
  }
  const answer = validate({
    schema: CEDAR_SCHEMA,
    policies: { staticPolicies: Object.fromEntries(policies.map((p) => [p.id, p.json])) },
    validationSettings: { mode: 'strict' },
  });
  if (answer.type === 'failure')
    throw new ValidationError(`The policies could not be validated: ${message(answer.errors)}`, [{ path: 'policies', message: message(answer.errors) }]);
  if (answer.validationErrors.length > 0) {
    const issues = answer.validationErrors.map((e) => ({ path: e.policyId, message: e.error.message + (e.error.help ? ` (${e.error.help})` : '') }));
    throw new ValidationError(`The policies do not match the tool-use schema: ${issues.map((i) => i.message).join('; ')}`, issues);
  }
}
