import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { ClawplaneError, type ErrorCode } from '../errors.ts';
import type { SandboxIdentity } from './identity.ts';

/** A broker sub-app whose every request carries a resolved sandbox identity. */
export type SandboxEnv = { Variables: { caller: SandboxIdentity } };

/** An error answer of the broker's own routes: `{ code, message }`. */
export function problem(c: Context, status: number, code: ErrorCode, message: string): Response {
  return c.json({ code, message }, status as 400);
}

/** The request's JSON body; a body that is not JSON is a 400, not a 500. */
export async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw new ClawplaneError('bad_json', 400, 'The request body is not valid JSON.');
  }
}

/**
 * The set-up every broker sub-app a sandbox calls shares (knowledge, governance): errors as `{ code, message }`
 * (validation as 400, never a 500), and `prefix`* answered only for a sandbox broker token, whose identity the
 * handlers read as `c.get('caller')`. The token is the only identity: it names the tenant, so no path or body
 * can. Add routes, then `notFound(app, prefix)` last.
 */
export function sandboxApp(prefix: string, resolve: (token: string) => Promise<SandboxIdentity | undefined>): Hono<SandboxEnv> {
  const app = new Hono<SandboxEnv>();
  app.onError((err, c) => {
    if (err instanceof ClawplaneError) return problem(c, err.status, err.code, err.message);
    if (err instanceof z.ZodError)
      return problem(
        c,
        400,
        'validation_failed',
        `The request is invalid: ${err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.code === 'unrecognized_keys' ? `unknown field(s): ${i.keys.join(', ')}` : i.message}`).join('; ')}`,
      );
    throw err;
  });
  app.use(`${prefix}*`, async (c, next) => {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    const caller = m?.[1] ? await resolve(m[1]) : undefined;
    if (!caller)
      return problem(c, 401, 'unauthenticated', 'Send this sandbox\'s broker token as "Authorization: Bearer <token>"; it is unknown, expired or revoked.');
    c.set('caller', caller);
    await next();
  });
  return app;
}

/** Answers 404 for anything else under `prefix` (register after the routes). */
export function notFound(app: Hono<SandboxEnv>, prefix: string): Hono<SandboxEnv> {
  app.all(`${prefix}*`, (c) => problem(c, 404, 'not_found', `The broker does not serve ${c.req.method} ${c.req.path}.`));
  return app;
}
