/**
 * Kubernetes Events for the operator's refusals (docs/adr/0011-kubernetes.md): `kubectl describe` and
 * `kubectl get events` show why a Tenant or ExecutorPool was not applied, beside its Ready condition.
 * core/v1 Events (what `kubectl describe` lists), built with kubernetes-models and validated before they
 * are sent; one per change of a refusal (the status write is skipped when nothing changed, and so is the
 * Event), so a resource refused on every pass does not flood the namespace.
 */
import { randomBytes } from 'node:crypto';
import { KubernetesObjectApi, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { Event } from 'kubernetes-models/v1/Event';
import type { Logger } from 'pino';

/** The reporting component of every Event the operator writes. */
export const EVENT_COMPONENT = 'clawplane-operator';

export interface Involved {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string };
}

export class OperatorEvents {
  readonly #api: KubernetesObjectApi;
  readonly #namespace: string;
  readonly #log: Logger;

  constructor(kc: KubeConfig, namespace: string, log: Logger) {
    this.#api = KubernetesObjectApi.makeApiClient(kc);
    this.#namespace = namespace;
    this.#log = log;
  }

  /** A Warning Event on the resource; a failure to write it is logged, never fails the pass (the condition says it too). */
  warn(on: Involved, reason: string, message: string): Promise<void> {
    return this.#write('Warning', on, reason, message);
  }

  /** A Normal Event: what the operator did on the resource's deletion (the resource is gone right after). */
  normal(on: Involved, reason: string, message: string): Promise<void> {
    return this.#write('Normal', on, reason, message);
  }

  async #write(type: 'Warning' | 'Normal', on: Involved, reason: string, message: string): Promise<void> {
    const ns = on.metadata.namespace ?? this.#namespace;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const ev = new Event({
      metadata: { name: `${on.metadata.name}.${randomBytes(8).toString('hex')}`, namespace: ns },
      involvedObject: {
        apiVersion: on.apiVersion,
        kind: on.kind,
        name: on.metadata.name,
        namespace: ns,
        ...(on.metadata.uid ? { uid: on.metadata.uid } : {}),
        ...(on.metadata.resourceVersion ? { resourceVersion: on.metadata.resourceVersion } : {}),
      },
      type,
      reason,
      // The API server caps an Event's message at 1 KiB.
      message: message.slice(0, 1024),
      source: { component: EVENT_COMPONENT },
      reportingComponent: `clawplane.dev/${EVENT_COMPONENT}`,
      reportingInstance: EVENT_COMPONENT,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
    ev.validate();
    try {
      await this.#api.create(ev.toJSON() as KubernetesObject);
    } catch (err) {
      this.#log.warn({ resource: `${on.kind}/${on.metadata.name}`, reason, err: (err as Error).message }, 'could not write a Kubernetes Event');
    }
  }
}
