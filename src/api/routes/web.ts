import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Context } from 'hono';
import type { App } from '../app.ts';
import type { AppEnv } from '../env.ts';

/** Where `npm run build:web` writes the console (issue 9). */
export const WEB_DIST = path.resolve(import.meta.dirname, '../../../web/dist');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * No inline script anywhere (the Vite build puts every script in a file); styles from files only, API
 * calls to this origin only, and no framing.
 */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

function secure(c: Context<AppEnv>): void {
  c.header('Content-Security-Policy', CONSOLE_CSP);
  c.header('X-Content-Type-Options', 'nosniff');
  c.header('Referrer-Policy', 'same-origin');
  c.header('X-Frame-Options', 'DENY');
}

const MISSING = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clawplane: console not built</title></head>
<body>
<h1>The web console is not built</h1>
<p>This server has no <code>web/dist</code>. Build it with <code>npm run build:web</code> (or start with
<code>npm start</code>, which builds it when missing), then reload.</p>
<p>The API works meanwhile: <a href="/api/v1/docs">/api/v1/docs</a>.</p>
</body></html>`;

/** A file under `root` for a URL path, or undefined when the path leaves it or names no file. */
async function fileFor(root: string, urlPath: string): Promise<string | undefined> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0')) return undefined;
  const full = path.resolve(root, `.${path.posix.normalize(decoded)}`);
  if (full !== root && !full.startsWith(root + path.sep)) return undefined;
  try {
    return (await stat(full)).isFile() ? full : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The web console at `/`, same origin as the API (cookie session). Registered last: every API route
 * wins. Hashed assets are cached for a year; index.html is revalidated so a new build shows at once;
 * any other path that is not under /api/ and names no file gets index.html (the app routes itself).
 */
export function registerWeb(app: App, opts: { distDir?: string } = {}): void {
  const root = path.resolve(opts.distDir ?? WEB_DIST);
  app.on(['GET', 'HEAD'], '*', async (c) => {
    const p = c.req.path;
    if (p === '/api' || p.startsWith('/api/')) return c.notFound();
    secure(c);
    const index = path.join(root, 'index.html');
    const file = await fileFor(root, p);
    if (file && file !== index) {
      const type = TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
      c.header('Content-Type', type);
      c.header('Cache-Control', p.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'public, max-age=3600');
      return c.body(await readFile(file));
    }
    // A missing asset is a 404, not the app: a stale page asking for an old bundle must not get HTML.
    if (p.startsWith('/assets/') || /\.[a-z0-9]{1,8}$/i.test(p)) {
      if (p !== '/index.html') return c.text('Not found', 404);
    }
    let html: Buffer;
    try {
      html = await readFile(index);
    } catch {
      c.header('Cache-Control', 'no-store');
      return c.html(MISSING, 503);
    }
    c.header('Cache-Control', 'no-cache');
    return c.html(html.toString('utf8'), 200);
  });
}
