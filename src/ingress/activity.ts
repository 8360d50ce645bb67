/**
 * What counts as activity for the idle reaper (issue 7): any ingress traffic (each request, each
 * WebSocket frame) and anything still in flight (a streaming answer, an open run). In memory: after a
 * control-plane restart every instance starts a fresh idle period, which errs towards keeping it up.
 */
export class Activity {
  readonly #last = new Map<string, number>();
  readonly #inflight = new Map<string, number>();

  touch(instanceId: string): void {
    this.#last.set(instanceId, Date.now());
  }

  /** Marks work in flight until the returned function is called (idempotent). */
  begin(instanceId: string): () => void {
    this.touch(instanceId);
    this.#inflight.set(instanceId, (this.#inflight.get(instanceId) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.touch(instanceId);
      const n = (this.#inflight.get(instanceId) ?? 1) - 1;
      if (n <= 0) this.#inflight.delete(instanceId);
      else this.#inflight.set(instanceId, n);
    };
  }

  busy(instanceId: string): boolean {
    return (this.#inflight.get(instanceId) ?? 0) > 0;
  }

  /** Last activity (ms since epoch), or undefined when none was seen since this process started. */
  last(instanceId: string): number | undefined {
    return this.#last.get(instanceId);
  }

  forget(instanceId: string): void {
    this.#last.delete(instanceId);
  }
}
