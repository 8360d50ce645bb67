/**
 * The one error hierarchy. Every failure a caller can see is a ClawplaneError with a stable `code`
 * and an HTTP status; `api/errors.ts` is the only place that turns it into a response. Messages say
 * what went wrong and what to do, and never carry a secret or another tenant's data.
 */
/**
 * Every error code a caller can see, with what it means: the one list (docs/errors.md is generated from it by
 * `node scripts/error-table.ts`, and test/docs.test.ts checks the two agree). A code is a contract: clients
 * branch on it, so an existing code keeps its meaning; a new failure a client must tell apart gets a new code
 * here first (ClawplaneError takes only these).
 */
export const ERROR_CODES = {
  // Requests
  validation_failed: 'A field of the request is missing or wrong; `details.issues` names each by path.',
  bad_json: 'The body is not valid JSON.',
  unsupported_media_type: 'The body is not sent as application/json.',
  payload_too_large: 'The body is larger than the limit.',
  http_error: 'The HTTP layer refused the request before a route ran (the status says how).',
  not_found: 'No such route, or no such resource visible to the caller (another tenant’s resources are reported the same way).',
  upgrade_required: 'A WebSocket endpoint was called without a WebSocket upgrade.',
  not_served_here: 'This replica does not run the API role: send requests to one that does.',
  internal: 'An unexpected failure; the server log has it under the request id.',
  // Identity and access
  unauthenticated: 'No valid session, token or broker token.',
  forbidden: 'The caller’s role does not allow the action.',
  account_locked: 'Too many failed sign-ins: the account is locked for a while (`details.retryAfterSeconds`).',
  account_conflict: 'A single sign-on identity would take over an account that belongs to another identity.',
  oidc_disabled: 'Single sign-on is not configured.',
  oidc_failed: 'The identity provider’s answer could not be used.',
  admin_exists: 'The breakglass admin already exists (onboarding).',
  onboarding_incomplete: 'First-boot onboarding is not finished.',
  onboarding_complete: 'Onboarding is finished: change the settings from the admin pages.',
  onboarding_out_of_order: 'An onboarding step was sent before the steps it depends on.',
  already_member: 'The person is already a member of the tenant.',
  already_revoked: 'The token is already revoked.',
  last_admin: 'The change would leave the tenant without a tenant admin.',
  grant_invalid: 'A sandbox’s tool grant is missing, expired, forged or for another sandbox.',
  grant_key_missing: 'The current grant signing key is missing from the vault: a platform admin rotates it.',
  grant_key_unavailable: 'No grant signing key could be loaded or created.',
  // Tenants, quotas, budgets, policy
  slug_taken: 'A tenant with that slug already exists.',
  tenant_suspended: 'The tenant is suspended: readable, but it cannot start work.',
  quota_exceeded: 'A tenant quota refuses the request; `details.quota` names it.',
  budget_exceeded: 'A daily budget or a cap is spent; the message names it and when it resets.',
  rate_limited: 'Too many requests; `details.retryAfterSeconds` says when to retry.',
  policy_denied: 'The tool policy forbids the action; `details.policyIds` name the policies that decided.',
  platform_rule: 'A platform rule refuses a tenant setting (tenant settings may only narrow it); the rule is named.',
  egress_refused: 'The broker refuses an address (SSRF rules, the allow-list, a project’s repositories).',
  egress_failed: 'The upstream of a brokered call failed.',
  egress_policy_invalid: 'The platform’s egress allow-list has an entry that is not a CIDR range.',
  // Generic conflicts and availability
  conflict: 'The resource changed under the request; read it again and retry.',
  already_exists: 'A resource with that name already exists.',
  no_change: 'The request changes nothing.',
  stale_version: 'The resource changed since the version the request was based on.',
  unavailable: 'A dependency is unavailable right now; retry.',
  not_available: 'The feature is not available in this process or on this driver; the message says where it is.',
  database_unavailable: 'The database cannot be reached; nothing was half-written; retry shortly.',
  replica_id_in_use: 'Another live process already uses this replica id.',
  config_invalid: 'A setting is invalid; the message names the variable and the fix.',
  migration_failed: 'A database migration failed; nothing after it was applied.',
  // Vault and providers
  vault_decrypt_failed: 'A stored secret does not open with its key and context (a changed secret key or an altered row).',
  vault_master_key_mismatch: 'CLAWPLANE_SECRET_KEY is not the key that created the vault’s master key.',
  vault_unknown_format: 'A secret is sealed in a layout this release does not know.',
  vault_unknown_key: 'A data key is wrapped by a master key this vault does not have.',
  vault_unknown_key_version: 'A master key version is not registered.',
  credential_name_taken: 'A credential with that name already exists in the tenant.',
  credential_expired: 'The credential is past its expiry: a tenant admin adds a new one.',
  credential_revoked: 'The credential is revoked: a tenant admin adds a new one.',
  credential_rotation_failed: 'A gateway did not take its new token; it keeps the current one.',
  provider_name_taken: 'A provider with that name already exists in the tenant.',
  provider_test_failed: 'The provider’s connection test failed, so nothing was saved.',
  completion_failed: 'Every model route of the call failed at the provider.',
  embeddings_failed: 'The embeddings provider failed; search falls back to words.',
  // Instances, runtimes, sandboxes
  instance_name_taken: 'An instance with that name already exists in the tenant.',
  instance_ambiguous: 'The tenant has several instances: name the one meant.',
  instance_busy: 'The instance is in the middle of another operation.',
  instance_destroying: 'The instance is being destroyed.',
  instance_not_running: 'The operation needs a running instance.',
  instance_not_stopped: 'The operation needs a stopped instance.',
  instance_wake_failed: 'The instance could not be started; its events and logs say why.',
  instance_wake_timeout: 'The instance was not ready in time; it keeps starting in the background.',
  same_version: 'The instance already runs that OpenClaw version.',
  runtime_missing: 'The OpenClaw version is not installed on this control plane.',
  runtime_exists: 'The OpenClaw version is already installed.',
  runtime_corrupt: 'An installed OpenClaw version failed its integrity check.',
  runtime_node_too_old: 'Installing OpenClaw needs a newer Node on PATH.',
  runtime_pull_failed: 'Installing OpenClaw failed (npm).',
  sandbox_unavailable: 'The sandbox driver cannot serve the request (its API or host is unavailable); the message says what to fix.',
  sandbox_running: 'A sandbox for the instance is already running.',
  sandbox_not_running: 'The instance’s sandbox is not running.',
  sandbox_control_failed: 'The sandbox’s supervisor refused a control request.',
  sandbox_exec_failed: 'A command in the sandbox could not be run.',
  sandbox_resume_failed: 'Warm resume failed; `details.errors` has each attempt.',
  sandbox_not_suspendable: 'The sandbox cannot be suspended in its current state.',
  suspend_unsupported: 'Warm suspend is not supported on this host or driver.',
  suspend_unavailable: 'The instance was not suspended; the message says why.',
  suspend_failed: 'A suspend was dumped but its snapshot could not be completed; the instance is stopped, its state untouched.',
  snapshot_exists: 'A snapshot already exists where a new one would be written.',
  kubernetes_conflict: 'The Kubernetes API refused a change that conflicts with another writer.',
  // Gateways
  gateway_unreachable: 'The instance’s gateway could not be reached (it may be restarting).',
  gateway_busy: 'The gateway did not admit the run in time: retry with the same Idempotency-Key.',
  gateway_hook_failed: 'The gateway refused a webhook.',
  gateway_stream_cut: 'The gateway stopped answering mid-stream (an SSE error event).',
  gateway_config_refused: 'A gateway refused a configuration as invalid and kept the one it ran.',
  hooks_not_enabled: 'The instance’s gateway has no webhook endpoints yet: restart it.',
  broker_error: 'The broker failed on a sandbox’s request (seen by the gateway, not by API callers).',
  // Backups
  backup_failed: 'The instance’s state could not be archived; the previous backup is still the latest.',
  backup_corrupted: 'A backup cannot be used; nothing was changed.',
  live_backup_failed: 'OpenClaw’s backup inside the sandbox failed; the previous backup is still the latest.',
  nothing_to_back_up: 'The instance has no state yet (never started).',
  // Governance, lanes, tasks, pools
  not_pending: 'The configuration version is not waiting for review.',
  not_waiting: 'The task or step is not waiting for that decision.',
  no_pending_approval: 'There is no pending approval to decide.',
  invalid_spec: 'A Kubernetes resource’s spec cannot be applied.',
  agent_name_taken: 'An agent with that name already exists in the tenant.',
  lane_name_taken: 'A lane with that name already exists in the tenant.',
  lane_busy: 'The lane has a run in progress.',
  run_ended: 'The lane run already ended.',
  task_ended: 'The task already ended.',
  pool_exists: 'The tenant already has a pool for that agent type.',
  pool_busy: 'The pool still has unfinished tasks.',
  pool_draining: 'The pool is draining and takes no new tasks.',
} as const satisfies Record<string, string>;

/** A stable error code (see ERROR_CODES). */
export type ErrorCode = keyof typeof ERROR_CODES;

export type ErrorDetails = Record<string, unknown>;

export class ClawplaneError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: ErrorDetails | undefined;

  constructor(code: ErrorCode, status: number, message: string, options?: { cause?: unknown; details?: ErrorDetails }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.details = options?.details;
  }
}

/** A request did not match its schema; `issues` name each bad field by path. */
export class ValidationError extends ClawplaneError {
  constructor(message: string, issues?: { path: string; message: string }[]) {
    super('validation_failed', 400, message, issues ? { details: { issues } } : undefined);
  }
}

/** The body was not parseable JSON. */
export class BadJsonError extends ClawplaneError {
  constructor() {
    super('bad_json', 400, 'The request body is not valid JSON. Send a JSON object with Content-Type: application/json.');
  }
}

export class UnauthenticatedError extends ClawplaneError {
  constructor(message = 'Sign in first: send a session cookie or an "Authorization: Bearer <token>" header.') {
    super('unauthenticated', 401, message);
  }
}

export class ForbiddenError extends ClawplaneError {
  constructor(message = 'Your role does not allow this action.') {
    super('forbidden', 403, message);
  }
}

/** Also used when a resource exists but belongs to another tenant: callers must not learn it exists. */
export class NotFoundError extends ClawplaneError {
  /** `what` is a noun phrase ("Instance", `Tenant "acme"`); `next`, a sentence saying what to do. */
  constructor(what: string, next?: string) {
    super('not_found', 404, next ? `${what} was not found. ${next}` : `${what} was not found.`);
  }
}

/** No route answers this method and path. */
export class RouteNotFoundError extends ClawplaneError {
  constructor(method: string, path: string) {
    super('not_found', 404, `There is no route ${method} ${path}. The API is described at /api/v1/docs.`);
  }
}

export class ConflictError extends ClawplaneError {
  constructor(message: string, code: ErrorCode = 'conflict') {
    super(code, 409, message);
  }
}

export class PayloadTooLargeError extends ClawplaneError {
  constructor(limitBytes: number) {
    super('payload_too_large', 413, `The request body is larger than the limit of ${limitBytes} bytes. Send less data.`);
  }
}

export class QuotaExceededError extends ClawplaneError {
  /** `details.quota` names the quota (e.g. maxCpuMillis) where one decided. */
  constructor(message: string, details?: { quota: string; limit: number; requested: number }) {
    super('quota_exceeded', 429, message, details ? { details } : undefined);
  }
}

export class RateLimitedError extends ClawplaneError {
  constructor(message: string, retryAfterSeconds: number) {
    super('rate_limited', 429, message, { details: { retryAfterSeconds } });
  }
}

export class UnavailableError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('unavailable', 503, message, { cause });
  }
}

/** Bad configuration: names the variable and how to fix it. Stops the process at start-up. */
export class ConfigError extends ClawplaneError {
  constructor(message: string) {
    super('config_invalid', 500, message);
  }
}

export class UnsupportedMediaTypeError extends ClawplaneError {
  constructor() {
    super('unsupported_media_type', 415, 'Send the request body as JSON with Content-Type: application/json.');
  }
}
