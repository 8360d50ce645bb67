import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Ingress metrics per tenant (issue 7, item 8). */
export interface IngressMetrics {
  wakes: Counter<'tenant' | 'outcome'>;
  wakeSeconds: Histogram<'tenant'>;
  idleStops: Counter<'tenant'>;
  idleSuspends: Counter<'tenant'>;
  suspendSeconds: Histogram<'tenant'>;
  snapshotBytes: Gauge<'tenant'>;
  resumes: Counter<'tenant' | 'outcome'>;
  resumeSeconds: Histogram<'tenant'>;
}

export function createIngressMetrics(registry: Registry): IngressMetrics {
  return {
    wakes: new Counter({
      name: 'clawplane_instance_wakes_total',
      help: 'Stopped instances started by an incoming request, by outcome (ready, failed, timeout)',
      labelNames: ['tenant', 'outcome'],
      registers: [registry],
    }),
    wakeSeconds: new Histogram({
      name: 'clawplane_instance_wake_seconds',
      help: 'From the first request for a stopped instance until it was ready',
      labelNames: ['tenant'],
      buckets: [1, 2.5, 5, 10, 15, 20, 30, 45, 60, 120, 300],
      registers: [registry],
    }),
    idleStops: new Counter({
      name: 'clawplane_instance_idle_stops_total',
      help: 'Instances stopped (after a backup) by the idle reaper',
      labelNames: ['tenant'],
      registers: [registry],
    }),
    idleSuspends: new Counter({
      name: 'clawplane_instance_idle_suspends_total',
      help: 'Instances suspended to a process snapshot by the idle reaper (issue 10)',
      labelNames: ['tenant'],
      registers: [registry],
    }),
    suspendSeconds: new Histogram({
      name: 'clawplane_instance_suspend_seconds',
      help: 'CRIU dump time of an idle instance being suspended (issue 10)',
      labelNames: ['tenant'],
      buckets: [0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    snapshotBytes: new Gauge({
      name: 'clawplane_instance_snapshot_bytes',
      help: 'Size of the last process snapshot taken of a tenant instance (issue 10)',
      labelNames: ['tenant'],
      registers: [registry],
    }),
    resumes: new Counter({
      name: 'clawplane_instance_resumes_total',
      help: 'Starts of suspended instances, by outcome (resumed, or fell back to a cold start)',
      labelNames: ['tenant', 'outcome'],
      registers: [registry],
    }),
    resumeSeconds: new Histogram({
      name: 'clawplane_instance_resume_seconds',
      help: 'From resume to a ready gateway with new credentials (issue 10)',
      labelNames: ['tenant'],
      buckets: [0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30],
      registers: [registry],
    }),
  };
}
