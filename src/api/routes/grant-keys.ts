import { createRoute, z } from '@hono/zod-openapi';
import type { App, RouteDeps } from '../app.ts';
import { allowPlatform } from '../auth.ts';
import { GRANT_MAX_TTL_SECONDS } from '../../broker/grants.ts';
import { errorResponses, json, jsonBody } from '../schemas.ts';

const GrantKeySchema = z
  .object({
    kid: z.string().openapi({ description: 'Key id (the `kid` header of the grants it signs)' }),
    current: z.boolean().openapi({ description: 'The key new grants are signed with' }),
    createdAt: z.string(),
    retiredAt: z.string().nullable(),
    verifyUntil: z.string().nullable().openapi({ description: 'A retired key verifies the grants it signed until then' }),
  })
  .openapi('GrantKey');

const RotateSchema = z.strictObject({
  overlapSeconds: z
    .number()
    .int()
    .min(0)
    .max(86_400)
    .default(GRANT_MAX_TTL_SECONDS)
    .openapi({
      description: `How long the old key still verifies the grants it signed (default ${GRANT_MAX_TTL_SECONDS}: the longest grant lifetime). 0 refuses them at once (a leaked key).`,
    }),
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** The grant signing keys (platform admins): listed without key material, rotated with an overlap. */
export function registerGrantKeys(app: App, deps: RouteDeps<'grantKeys'>): void {
  const keys = deps.grantKeys;
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/grant-keys',
      tags: ['platform'],
      summary: 'The tool-grant signing keys: the current one and the retired ones still verifying (never the keys themselves)',
      responses: { 200: json(z.object({ items: z.array(GrantKeySchema) })), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      const items = (await keys.list()).map((k) => ({
        kid: k.kid,
        current: k.current,
        createdAt: k.createdAt.toISOString(),
        retiredAt: iso(k.retiredAt),
        verifyUntil: iso(k.verifyUntil),
      }));
      return c.json({ items }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/platform/grant-keys/rotate',
      tags: ['platform'],
      summary: 'Rotate the tool-grant signing key now; the old key verifies its grants for overlapSeconds more',
      request: { body: jsonBody(RotateSchema) },
      responses: { 200: json(z.object({ kid: z.string(), retired: z.string().nullable(), overlapSeconds: z.number().int() })), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      const { overlapSeconds } = c.req.valid('json');
      const r = await keys.rotate({ actor: by.actor, requestId: by.requestId, overlapSeconds });
      return c.json({ kid: r.kid, retired: r.retired, overlapSeconds }, 200);
    },
  );
}
