import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { BadJsonError, ClawplaneError, ConflictError, PayloadTooLargeError, ValidationError, type ErrorCode } from '../errors.ts';
import { scrubHostDetails } from '../observability/host-details.ts';
import type { AppEnv } from './env.ts';
import { isOpenAiRoute, toOpenAiError } from './openai-errors.ts';

/** The JSON body of every error response. */
export interface ErrorBody {
  code: ErrorCode;
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
  const db = fromDatabase(err) ?? databaseUnreachable(err);
  if (db) return db;
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
    return c.json(isOpenAiRoute(c.req.path) ? toOpenAiError(body, 500) : body, 500);
  }
  if (known.status >= 500) log?.error({ err: known, cause: known.cause }, known.message);
  else if (known !== err) log?.warn({ err }, `refused by the database: ${known.message}`);
  else log?.debug({ code: known.code }, known.message);
  // The net under messages written for people: no host path or uid reaches a caller (the log has them, by request id).
  const message = scrubHostDetails(known.message);
  if (message !== known.message) log?.warn({ code: known.code, detail: known.message }, 'host details removed from an error body');
  const body: ErrorBody = { code: known.code, message, requestId };
  if (known.details) body.details = known.details;
  // The unread rest of an oversized body makes the connection unusable: tell the client not to reuse it.
  if (known.status === 413) c.header('Connection', 'close');
  const retry = known.details?.['retryAfterSeconds'];
  if (typeof retry === 'number') c.header('Retry-After', String(Math.ceil(retry)));
  // OpenAI clients read only OpenAI's shape; the rest of the API keeps its own (docs/openai-compatible.md).
  return c.json(isOpenAiRoute(c.req.path) ? toOpenAiError(body, known.status) : body, known.status as ContentfulStatusCode);
}

/** PostgreSQL's error fields (node-postgres DatabaseError) that say which value it refused. */
interface PgError {
  code: string;
  message: string;
  column?: string | undefined;
  constraint?: string | undefined;
  severity?: string | undefined;
}

const isPgError = (e: unknown): e is PgError => {
  const code = e instanceof Error && 'severity' in e ? (e as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
};

/**
 * A value PostgreSQL refused is the caller's input, not our fault: data errors (SQLSTATE class 22: out
 * of range, bad encoding, invalid text for the type), check and not-null violations and values too
 * large to index are 400s; a unique violation (a race between two writers) is a 409. The schemas and
 * storableInput refuse most of these first, naming the field; this is the net under them.
 */
function fromDatabase(err: unknown): ClawplaneError | undefined {
  const e = isPgError(err) ? err : isPgError((err as { cause?: unknown } | undefined)?.cause) ? (err as { cause: PgError }).cause : undefined;
  if (!e) return undefined;
  const field = e.column ?? 'body';
  if (e.code.startsWith('22') || e.code === '23502' || e.code === '23514' || e.code === '54000') {
    const what =
      e.code === '54000'
        ? 'is too large to store'
        : e.code === '23514'
          ? 'is not allowed here'
          : e.code === '23502'
            ? 'is required'
            : 'cannot be stored (out of range or not valid for its type)';
    return new ValidationError(`The request is invalid: a value ${what}. Check the request's numbers, dates and text.`, [{ path: field, message: what }]);
  }
  if (e.code === '23505') return new ConflictError('This conflicts with a change made at the same time (the name or key is already taken): reload and retry.');
  return undefined;
}

/** SQLSTATEs of a database that is going away, not ready, or full of connections (classes 08 and 57P, 53300). */
const GONE_STATES = /^(08...|57P0[1-3]|53300)$/;
/** What node-postgres and the socket say when the server is not there or the connection dropped. */
const GONE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);
const GONE_MESSAGES =
  /Connection terminated|Connection ended|timeout exceeded when trying to connect|Client has encountered a connection error|the database system is (starting up|shutting down|in recovery mode)/;

/**
 * The database is unreachable (stopped, restarting, failing over): a 503 that says so and when to retry,
 * never a 500. Nothing was committed by the failed request's transaction unless the connection dropped
 * during COMMIT itself, which PostgreSQL makes all or nothing.
 */
function databaseUnreachable(err: unknown): ClawplaneError | undefined {
  const seen = new Set<unknown>();
  const walk = (e: unknown): boolean => {
    if (!(e instanceof Error) || seen.has(e)) return false;
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (GONE_STATES.test(code) || GONE_CODES.has(code))) return true;
    if (GONE_MESSAGES.test(e.message)) return true;
    if (e instanceof AggregateError && e.errors.some(walk)) return true;
    return walk((e as { cause?: unknown }).cause);
  };
  if (!walk(err)) return undefined;
  return new ClawplaneError(
    'database_unavailable',
    503,
    'The control plane cannot reach its database right now (it may be restarting): retry in a few seconds. A change this request was saving was saved whole or not at all; read it back before repeating it.',
    { cause: err, details: { retryAfterSeconds: 5 } },
  );
}
