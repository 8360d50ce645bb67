/**
 * Names and labels of a sandbox's Kubernetes objects (docs/adr/0011-kubernetes.md). The labels are the
 * ones the docker driver puts on its containers (ADR 0010), so `list()` is a label query and adoption
 * after a control-plane restart works the same way; `managed-by` and `component` are what the Helm
 * chart's static sandbox NetworkPolicy and operators' `kubectl get -l` select on.
 */
export { LABEL } from '../docker/labels.ts';

/** Kubernetes' recommended labels on every object the driver applies. */
export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'clawplane', 'app.kubernetes.io/component': 'sandbox' } as const;

/** The field manager of every server-side apply (ADR 0011: fields the API server defaults are never ours). */
export const FIELD_MANAGER = 'clawplane';

/** Annotation: when the sandbox started (an ISO time is not a valid label value). */
export const STARTED_ANNOTATION = 'io.clawplane.started';

/** The pod's ports: the supervisor's ingress on the pod IP; executors (18789 + 10 i) and egress (18080) stay on loopback. */
export const GATEWAY_PORT = 18780;
/** The supervisor's control API, on the pod's loopback only (reached through pods/exec, never the network). */
export const CONTROL_PORT = 18781;

/** Per instance: the Pod, its Service and NetworkPolicy, and the state volume. */
export function podName(instanceId: string): string {
  return `cp-${instanceId}`;
}
export function pvcName(instanceId: string): string {
  return `cp-${instanceId}-state`;
}
/** The short-lived pod that reaches a stopped instance's state volume (export, import). */
export function archivePodName(instanceId: string): string {
  return `cp-${instanceId}-archive`;
}
/**
 * Per sandbox start: the Secret (tokens) and ConfigMap (rendered configs). A start's own name means a
 * replica that loses a race for the Pod never overwrites the winner's token (it deletes its own).
 */
export function startObjectName(instanceId: string, sandboxId: string): string {
  return `cp-${instanceId}-${sandboxId.slice(0, 8)}`;
}
