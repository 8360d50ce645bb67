import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { App } from '../app.ts';

const require = createRequire(import.meta.url);
const swaggerDir = path.dirname(require.resolve('swagger-ui-dist/package.json'));
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
};

export const API_VERSION = '0.1.0';

/**
 * /api/v1/openapi.json (generated from the routes' zod schemas) and /api/v1/docs, a Swagger UI served
 * from the swagger-ui-dist package so the docs work with no internet access.
 */
export function registerDocs(app: App): void {
  app.doc31('/api/v1/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'Clawplane API',
      version: API_VERSION,
      description:
        "Multi-tenant control plane for OpenClaw gateways. Errors are JSON: {code, message, requestId, details?}; on the OpenAI-compatible routes (tag openai) in OpenAI's shape, {error: {message, type, code, param, request_id}}. Every answer carries X-Request-Id.",
    },
  });
  app.get('/api/v1/docs', (c) =>
    c.html(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clawplane API</title>
<link rel="stylesheet" href="/api/v1/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/v1/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: '/api/v1/openapi.json', dom_id: '#swagger-ui' });</script>
</body></html>`),
  );
  app.get('/api/v1/docs/assets/:file', async (c) => {
    const file = c.req.param('file');
    const type = ASSETS[file];
    if (!type) return c.notFound();
    c.header('Content-Type', type);
    c.header('Cache-Control', 'public, max-age=3600');
    return c.body(await readFile(path.join(swaggerDir, file)));
  });
}
