import { useCallback, useEffect, useRef, useState } from 'react';

/** Loading / error / data of one GET, with a reload for after a change. */
export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads `load()` when `deps` change. With `opts.pollMs`, also refreshes in the background every so many
 * milliseconds while the browser tab is visible (issue 9: the approvals inbox and the task list show new
 * state without a reload). A refresh keeps the shown data until the answer arrives (no flicker) and keeps
 * the old object when nothing changed, so what the user typed or selected below it stays put.
 */
export function useResource<T>(load: () => Promise<T>, deps: readonly unknown[], opts: { pollMs?: number } = {}): Resource<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const [tick, setTick] = useState(0);
  // The caller names the dependencies, as with useEffect.
  const stableLoad = useCallback(load, deps);
  const inFlight = useRef(false);
  // The load that last answered (data or error): another run of the same load is a refresh, which keeps
  // what is shown until its own answer arrives; a new load (new deps) starts clean.
  const settled = useRef<unknown>(undefined);
  useEffect(() => {
    let live = true;
    const refresh = settled.current === stableLoad;
    inFlight.current = true;
    setState((s) => (refresh ? { ...s, loading: true } : { ...s, loading: true, error: undefined }));
    stableLoad()
      .then(
        (data) => {
          if (!live) return;
          settled.current = stableLoad;
          setState((s) => ({ data: refresh && sameJson(s.data, data) ? s.data : data, error: undefined, loading: false }));
        },
        (error: unknown) => {
          if (!live) return;
          settled.current = stableLoad;
          // A failed refresh keeps the data it had: Async shows the error (with "Try again") until a later refresh works.
          setState((s) => ({ data: refresh ? s.data : undefined, error, loading: false }));
        },
      )
      .finally(() => {
        if (live) inFlight.current = false;
      });
    return () => {
      live = false;
      inFlight.current = false;
    };
  }, [stableLoad, tick]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  useVisibleInterval(() => {
    if (!inFlight.current) reload();
  }, opts.pollMs);
  return { ...state, reload };
}

/**
 * Calls `fn` every `ms` milliseconds while the page is visible, and once at once when it becomes visible
 * again (a hidden tab does not poll the server). `ms` undefined or 0: never.
 */
export function useVisibleInterval(fn: () => void, ms: number | undefined): void {
  const latest = useRef(fn);
  useEffect(() => {
    latest.current = fn;
  });
  useEffect(() => {
    if (!ms) return;
    let timer: ReturnType<typeof setInterval> | undefined;
    const start = () => {
      timer ??= setInterval(() => latest.current(), ms);
    };
    const stop = () => {
      clearInterval(timer);
      timer = undefined;
    };
    const onVisibility = () => {
      if (document.visibilityState === 'visible') {
        latest.current();
        start();
      } else stop();
    };
    if (document.visibilityState === 'visible') start();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stop();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [ms]);
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === undefined) return false;
  try {
    return JSON.stringify(a) === JSON.stringify(b);
  } catch {
    return false;
  }
}
