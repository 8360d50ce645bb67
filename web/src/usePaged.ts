import { useCallback, useEffect, useState } from 'react';
import { useResource, type Resource } from './useResource.ts';

/** One page of a list the API pages by cursor (docs/adr/0008-keyset-paging.md). */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** A paged list: the current page, and moves to the next and previous pages. */
export interface Paged<T> extends Resource<Page<T>> {
  /** 1-based number of the page shown. */
  page: number;
  next: (() => void) | undefined;
  prev: (() => void) | undefined;
}

/**
 * Loads one page at a time: `load(cursor)` with the cursor of the page to show. The cursors of the
 * pages before are kept, so Previous goes back without the API needing backward cursors. A change of
 * `deps` (the search, filter or sort) starts again at the first page.
 */
export function usePaged<T>(load: (cursor: string | undefined) => Promise<Page<T>>, deps: readonly unknown[], opts: { pollMs?: number } = {}): Paged<T> {
  const key = JSON.stringify(deps);
  // The cursors of the pages shown so far, for this search; another search starts at the first page.
  const [nav, setNav] = useState<{ key: string; cursors: (string | undefined)[] }>({ key, cursors: [undefined] });
  const cursors = nav.key === key ? nav.cursors : [undefined];
  const cursor = cursors.at(-1);
  const resource = useResource(() => load(cursor), [key, cursor], opts);
  const nextCursor = resource.data?.nextCursor ?? null;
  const next = useCallback(() => {
    if (nextCursor !== null) setNav({ key, cursors: [...cursors, nextCursor] });
  }, [key, cursors, nextCursor]);
  const prev = useCallback(() => setNav({ key, cursors: cursors.length > 1 ? cursors.slice(0, -1) : cursors }), [key, cursors]);
  return { ...resource, page: cursors.length, next: nextCursor !== null ? next : undefined, prev: cursors.length > 1 ? prev : undefined };
}

/** `value` once it stopped changing for `ms` (a search box does not query per keystroke). */
export function useDebounced<T>(value: T, ms = 300): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return settled;
}
