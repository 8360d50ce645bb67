/**
 * OpenAI's error shape for the tenant's OpenAI-compatible routes (docs/openai-compatible.md). The
 * official clients read `error.message` (the AI SDK shows nothing else), so the same failure that the
 * rest of the API answers as {code, message, requestId} is answered here as OpenAI's
 * {"error": {message, type, code, param}}, with Clawplane's code in `code` and the request id beside it.
 */
import type { ErrorBody } from './errors.ts';

/** A tenant base URL plus the OpenAI path a client appends to it (`…/chat/completions`, `…/models/x`). */
const OPENAI_ROUTE =
  /^\/api\/v1\/tenants\/[^/]+\/(chat\/completions|completions|models(\/.*)?|responses(\/.*)?|embeddings|moderations|images\/.*|audio\/.*|files(\/.*)?|batches(\/.*)?)\/?$/;

/** True for a path an OpenAI client builds from the tenant's base URL. */
export function isOpenAiRoute(path: string): boolean {
  return OPENAI_ROUTE.test(path);
}

export interface OpenAiErrorBody {
  /** OpenAI's four fields, then Clawplane's request id and details (each bad field, by path). */
  error: { message: string; type: string; code: string; param: string | null; request_id: string; details?: Record<string, unknown> };
}

// OpenAI's `type` per status: what its own API answers, which the SDKs map to their typed errors
// (BadRequestError, AuthenticationError, ...) by status, not by type.
function typeOf(status: number, code: string): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 409) return 'conflict_error';
  if (status === 429) return code === 'quota_exceeded' || code === 'budget_exceeded' ? 'insufficient_quota' : 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** The first field a validation error names, as OpenAI's `param` ("messages.0.role"). */
function paramOf(body: ErrorBody): string | null {
  const issues = body.details?.['issues'];
  if (!Array.isArray(issues)) return null;
  const first = issues[0] as { path?: unknown } | undefined;
  if (typeof first?.path !== 'string') return null;
  return first.path.replace(/^(body|query|header|path)\.?/, '') || null;
}

export function toOpenAiError(body: ErrorBody, status: number): OpenAiErrorBody {
  const error: OpenAiErrorBody['error'] = {
    message: body.message,
    type: typeOf(status, body.code),
    code: body.code,
    param: paramOf(body),
    request_id: body.requestId,
  };
  if (body.details) error.details = body.details;
  return { error };
}
