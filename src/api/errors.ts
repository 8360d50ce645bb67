import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { BadJsonError, ClawplaneError, PayloadTooLargeError } from '../errors.ts';
import type { AppEnv } from './env.ts';

/** The JSON body of every error response. */
export interface ErrorBody {
  code: string;
  message: string;
  requestId: string;
  details?: Record<string, unknown>;
}

/**
 * The one place errors become HTTP (issue 2). Known errors keep their code, status and message; anything
 * else is logged with its stack and answered with a generic 500 that carries only the request id.
 */
export function toClawplaneError(err: unknown, bodyLimitBytes: number): ClawplaneError | undefined {
  if (err instanceof ClawplaneError) return err;
  if (err instanceof HTTPException) {
    if (err.status === 413) return new PayloadTooLargeError(bodyLimitBytes);
    if (err.status === 400 && /json/i.test(err.message)) return new BadJsonError();
    return new ClawplaneError('http_error', err.status, err.message || 'The request could not be processed.');
  }
  return undefined;
}

export function errorResponse(c: Context<AppEnv>, err: unknown, bodyLimitBytes: number): Response {
  const requestId = c.get('requestId') ?? 'unknown';
  const known = toClawplaneError(err, bodyLimitBytes);
  const log = c.get('log');
  if (!known) {
    log?.error({ err }, 'unhandled error');
    const body: ErrorBody = {
      code: 'internal',
      message: 'Something went wrong on our side. Quote the request id when reporting it.',
      requestId,
    };
    return c.json(body, 500);
  }
  if (known.status >= 500) log?.error({ err: known, cause: known.cause }, known.message);
  else log?.debug({ code: known.code }, known.message);
  const body: ErrorBody = { code: known.code, message: known.message, requestId };
  if (known.details) body.details = known.details;
  // The unread rest of an oversized body makes the connection unusable: tell the client not to reuse it.
  if (known.status === 413) c.header('Connection', 'close');
  const retry = known.details?.['retryAfterSeconds'];
  if (typeof retry === 'number') c.header('Retry-After', String(Math.ceil(retry)));
  return c.json(body, known.status as ContentfulStatusCode);
}
