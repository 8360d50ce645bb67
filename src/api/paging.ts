import { z } from '@hono/zod-openapi';
import { sortNames } from '../db/keyset.ts';

/** Page size when a list request names none, and the most one page may hold. */
export const PAGE_DEFAULT = 50;
export const PAGE_MAX = 200;

/**
 * The query fragment every paged list takes: `limit`, `cursor` and `sort` (a name, `-name` for
 * descending; the first is the default). Routes extend it with their own `q` and filters.
 */
export function pageQuery<S extends string>(sorts: readonly [S, ...S[]], defaultSort: S | `-${S}`) {
  return z.object({
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(PAGE_MAX)
      .default(PAGE_DEFAULT)
      .openapi({ param: { name: 'limit', in: 'query' }, description: `Items per page (1–${PAGE_MAX}, default ${PAGE_DEFAULT})` }),
    cursor: z
      .string()
      .min(1)
      .max(4096)
      .optional()
      .openapi({
        param: { name: 'cursor', in: 'query' },
        description: 'The nextCursor of the previous page, unchanged (opaque; only valid with the same sort)',
      }),
    sort: z
      .enum(sortNames(sorts) as [string, ...string[]])
      .default(defaultSort)
      .openapi({ param: { name: 'sort', in: 'query' }, description: `Order: ${sorts.join(', ')}; prefix - for descending` }),
  });
}

/** A case-insensitive substring search, for the fields each route names in its description. */
export const searchParam = (fields: string) =>
  z
    .string()
    .trim()
    .min(1)
    .max(100)
    .optional()
    .openapi({ param: { name: 'q', in: 'query' }, description: `Case-insensitive substring of ${fields}` });

/** A paged list: the page's items and the cursor of the next page. */
export const pageOf = <T extends z.ZodType>(item: T) =>
  z.object({
    items: z.array(item),
    nextCursor: z.string().nullable().openapi({ description: 'Pass as cursor to get the next page; null on the last page' }),
  });
