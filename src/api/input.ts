import type { MiddlewareHandler } from 'hono';
import { ValidationError } from '../errors.ts';
import type { AppEnv } from './env.ts';

/**
 * Refuses, before any route or database sees it, text PostgreSQL cannot store: NUL (text and jsonb
 * cannot hold U+0000) and lone UTF-16 surrogates (not encodable as UTF-8), in the path, the query, the
 * headers and every string (and object key) of a JSON body. Each refusal names the field, as the
 * schema validator does (`body.messages.0.content`, `query.cursor`, `path.tenant`).
 */
export function storableInput(routes: () => { method: string; path: string }[]): MiddlewareHandler<AppEnv> {
  let patterns: { method: string; re: RegExp; names: (string | undefined)[] }[] | undefined;
  /** The route's parameter name at each path segment (undefined for fixed segments). */
  const paramNames = (method: string, pathname: string): (string | undefined)[] => {
    patterns ??= routes().map((r) => ({
      method: r.method.toUpperCase(),
      re: new RegExp(`^${r.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{\w+\\?\}/g, '[^/]*')}$`),
      names: r.path
        .split('/')
        .slice(1)
        .map((t) => /^\{(\w+)\}$/.exec(t)?.[1]),
    }));
    return (patterns.find((p) => p.method === method && p.re.test(pathname)) ?? patterns.find((p) => p.re.test(pathname)))?.names ?? [];
  };
  return async (c, next) => {
    const issues: { path: string; message: string }[] = [];
    const url = new URL(c.req.url);
    const segments = url.pathname.split('/').slice(1);
    let names: (string | undefined)[] | undefined;
    segments.forEach((seg, i) => {
      let why: string | undefined;
      try {
        why = unstorable(decodeURIComponent(seg));
      } catch {
        why = 'is not valid percent-encoded UTF-8';
      }
      if (why) {
        names ??= paramNames(c.req.method, url.pathname);
        issues.push({ path: `path.${names[i] ?? `segment ${i + 1}`}`, message: why });
      }
    });
    for (const [k, v] of url.searchParams) {
      const why = unstorable(k) ?? unstorable(v);
      if (why) issues.push({ path: `query.${safeName(k)}`, message: why });
    }
    c.req.raw.headers.forEach((v, k) => {
      const why = unstorable(v);
      if (why) issues.push({ path: `header.${k}`, message: why });
    });
    if (issues.length === 0 && c.req.method !== 'GET' && c.req.method !== 'HEAD' && /json/i.test(c.req.header('content-type') ?? '')) {
      let body: unknown;
      try {
        // Cached by Hono: the route's validator reads the same parsed body.
        body = await c.req.json();
      } catch {
        body = undefined; // not JSON: the validator answers bad_json
      }
      if (body !== undefined) walk(body, issues);
    }
    if (issues.length > 0) throw new ValidationError(`The request is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, issues.slice(0, 20));
    await next();
  };
}

/** Why PostgreSQL cannot store `s` as text, or undefined when it can. */
export function unstorable(s: string): string | undefined {
  if (s.includes('\u0000')) return 'must not contain the NUL character (U+0000)';
  if (!s.isWellFormed()) return 'must be valid Unicode (it contains a lone surrogate)';
  return undefined;
}

/** A field name fit to quote back: the bad characters replaced. */
function safeName(k: string): string {
  return k.toWellFormed().replaceAll('\u0000', '\\u0000').slice(0, 100);
}

/** Every string and key of a parsed JSON value, without recursion (a deeply nested body must not overflow the stack). */
function walk(root: unknown, issues: { path: string; message: string }[]): void {
  const stack: [unknown, string][] = [[root, 'body']];
  while (stack.length > 0 && issues.length < 20) {
    const [v, at] = stack.pop() as [unknown, string];
    if (typeof v === 'string') {
      const why = unstorable(v);
      if (why) issues.push({ path: at, message: why });
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => stack.push([x, `${at}.${i}`]));
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        const why = unstorable(k);
        if (why) issues.push({ path: `${at}.${safeName(k)}`, message: `field name ${why}` });
        stack.push([x, `${at}.${safeName(k)}`]);
      }
    }
  }
}
