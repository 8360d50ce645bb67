/**
 * The one error hierarchy. Every failure a caller can see is a ClawplaneError with a stable `code`
 * and an HTTP status; `api/errors.ts` is the only place that turns it into a response. Messages say
 * what went wrong and what to do, and never carry a secret or another tenant's data.
 */
export type ErrorDetails = Record<string, unknown>;

export class ClawplaneError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: ErrorDetails | undefined;

  constructor(code: string, status: number, message: string, options?: { cause?: unknown; details?: ErrorDetails }) {
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
  constructor(message: string, code = 'conflict') {
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
