/**
 * A sandbox pod's phase, conditions and container states as an instance status with its reason
 * (docs/adr/0011-kubernetes.md). The kubelet reports why a container is not running in
 * `state.waiting.reason` (ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError) and why it
 * last ended in `lastState.terminated.reason` (OOMKilled, Error); the scheduler reports an unplaceable
 * pod as `PodScheduled=False, reason=Unschedulable` with its message.
 */
import type { SandboxState } from '../../types.ts';
import type { KubeObject } from './api.ts';

interface ContainerState {
  waiting?: { reason?: string; message?: string };
  running?: { startedAt?: string };
  terminated?: { reason?: string; exitCode?: number; message?: string };
}
interface PodStatus {
  phase?: string;
  podIP?: string;
  reason?: string;
  message?: string;
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
  containerStatuses?: { name: string; ready?: boolean; restartCount?: number; state?: ContainerState; lastState?: ContainerState }[];
  initContainerStatuses?: { name: string; state?: ContainerState }[];
}

/** Waiting reasons that will not resolve by themselves: a start fails at once with the reason. */
export const FATAL_WAITING = new Set([
  'ErrImagePull',
  'ImagePullBackOff',
  'InvalidImageName',
  'CreateContainerConfigError',
  'CreateContainerError',
  'CrashLoopBackOff',
  'RunContainerError',
]);

export interface PodView {
  /** The supervisor's container runs (the pod may not be Ready yet). */
  running: boolean;
  /** The Ready condition: the readiness probe (the first gateway's /readyz) passes. */
  ready: boolean;
  podIP: string | undefined;
  /** Why it is not running, or why it is not ready; undefined when running and ready. */
  reason: string | undefined;
  /** The reason will not resolve without a change (image, config, crash loop, a failed pod). */
  fatal: boolean;
  restarts: number;
}

export function viewPod(pod: KubeObject | null): PodView {
  if (!pod)
    return {
      running: false,
      ready: false,
      podIP: undefined,
      reason: 'the sandbox pod is gone (deleted outside Clawplane, or its node was lost)',
      fatal: true,
      restarts: 0,
    };
  const st = (pod['status'] ?? {}) as PodStatus;
  const c = st.containerStatuses?.find((x) => x.name === 'supervisor');
  const restarts = c?.restartCount ?? 0;
  const cond = (t: string) => st.conditions?.find((x) => x.type === t);
  const deleting = Boolean(pod.metadata.deletionTimestamp);
  if (deleting) return { running: false, ready: false, podIP: st.podIP, reason: 'the sandbox pod is being deleted', fatal: true, restarts };
  if (st.phase === 'Failed' || st.phase === 'Succeeded') {
    const t = c?.state?.terminated ?? c?.lastState?.terminated;
    return {
      running: false,
      ready: false,
      podIP: st.podIP,
      reason: `the sandbox pod ${st.phase === 'Failed' ? 'failed' : 'ended'}${st.reason ? ` (${st.reason}${st.message ? `: ${st.message}` : ''})` : t ? ` (${terminatedText(t)})` : ''}`,
      fatal: true,
      restarts,
    };
  }
  const waitingInit = st.initContainerStatuses?.find((x) => x.state?.waiting?.reason && x.state.waiting.reason !== 'PodInitializing');
  const waiting = waitingInit?.state?.waiting ?? c?.state?.waiting;
  if (waiting?.reason && waiting.reason !== 'ContainerCreating' && waiting.reason !== 'PodInitializing') {
    const last = c?.lastState?.terminated;
    const why = `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}${waiting.reason === 'CrashLoopBackOff' && last ? ` (last exit: ${terminatedText(last)}, ${restarts} restarts)` : ''}`;
    return {
      running: false,
      ready: false,
      podIP: st.podIP,
      reason: `the sandbox container is not running: ${why}`,
      fatal: FATAL_WAITING.has(waiting.reason),
      restarts,
    };
  }
  const scheduled = cond('PodScheduled');
  if (scheduled?.status === 'False')
    return {
      running: false,
      ready: false,
      podIP: undefined,
      reason: `the sandbox pod cannot be scheduled (${scheduled.reason ?? 'Unschedulable'}${scheduled.message ? `: ${scheduled.message}` : ''})`,
      fatal: false,
      restarts,
    };
  if (st.phase !== 'Running' || !c?.state?.running)
    return {
      running: false,
      ready: false,
      podIP: st.podIP,
      reason: `the sandbox pod is starting (phase ${st.phase ?? 'Pending'}${waiting?.reason ? `, ${waiting.reason}` : ''})`,
      fatal: false,
      restarts,
    };
  const ready = cond('Ready')?.status === 'True';
  return {
    running: true,
    ready,
    podIP: st.podIP,
    reason: ready ? undefined : `the gateways are not ready yet${cond('Ready')?.reason ? ` (${cond('Ready')?.reason})` : ''}`,
    fatal: false,
    restarts,
  };
}

function terminatedText(t: NonNullable<ContainerState['terminated']>): string {
  return `${t.reason ?? 'exited'}${t.exitCode !== undefined ? `, exit code ${t.exitCode}` : ''}${t.message ? `: ${t.message}` : ''}`;
}

/** The port's view: running with its health, or not running with the reason. */
export function sandboxState(pod: KubeObject | null): SandboxState {
  const v = viewPod(pod);
  if (!v.running) return { running: false, reason: v.reason ?? 'the sandbox pod is not running' };
  return { running: true, health: { ready: v.ready, executors: [] } };
}
