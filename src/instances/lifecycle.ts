import type { SandboxRef } from '../sandbox/types.ts';
import type { InstanceRow } from './instances.ts';

export type ResumeOutcome = { resumed: true; ms: number } | { resumed: false; reason: string };

/**
 * What the reconciler tells the rest of this process about an instance's gateway, by name, with its payload.
 * Handlers are awaited in the order they subscribed, before the reconciler goes on: each is a step of the
 * transition, not a notice (a notice for other replicas goes on the EventChannel, docs/adr/0009).
 */
export interface InstanceLifecycleEvents {
  /**
   * The gateway of an instance stopped on request, after a sandbox really ran. The backup of its state is taken
   * here; a wake of this instance waits for it (docs/architecture.md, "Backups").
   */
  stopped: { row: InstanceRow };
  /**
   * A sandbox was resumed from a snapshot and is ready, before it serves: the credentials the snapshot holds are
   * issued again here (src/instances/credentials.ts). A handler that throws fails the resume (a cold start follows).
   */
  resuming: { row: InstanceRow; handle: SandboxRef };
  /** How a resume from a snapshot ended (metrics). */
  resumed: { row: InstanceRow; outcome: ResumeOutcome };
}

type Handler<K extends keyof InstanceLifecycleEvents> = (event: InstanceLifecycleEvents[K]) => void | Promise<void>;

/** The typed, awaited in-process channel of instance transitions. */
export class InstanceLifecycle {
  readonly #handlers: { [K in keyof InstanceLifecycleEvents]: Handler<K>[] } = { stopped: [], resuming: [], resumed: [] };

  /** Subscribes; returns the unsubscribe. */
  on<K extends keyof InstanceLifecycleEvents>(name: K, handler: Handler<K>): () => void {
    const list = this.#handlers[name] as Handler<K>[];
    list.push(handler);
    return () => {
      const i = list.indexOf(handler);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /** Runs every handler of `name` in turn; the first that throws stops the rest and the error reaches the caller. */
  async emit<K extends keyof InstanceLifecycleEvents>(name: K, event: InstanceLifecycleEvents[K]): Promise<void> {
    for (const h of [...(this.#handlers[name] as Handler<K>[])]) await h(event);
  }
}
