import { Counter, Histogram, type Registry } from 'prom-client';

/** Ingress metrics per tenant (issue 7, item 8). */
export interface IngressMetrics {
  wakes: Counter<'tenant' | 'outcome'>;
  wakeSeconds: Histogram<'tenant'>;
  idleStops: Counter<'tenant'>;
}

export function createIngressMetrics(registry: Registry): IngressMetrics {
  return {
    wakes: new Counter({ name: 'clawplane_instance_wakes_total', help: 'Stopped instances started by an incoming request, by outcome (ready, failed, timeout)', labelNames: ['tenant', 'outcome'], registers: [registry] }),
    wakeSeconds: new Histogram({ name: 'clawplane_instance_wake_seconds', help: 'From the first request for a stopped instance until it was ready', labelNames: ['tenant'], buckets: [1, 2.5, 5, 10, 15, 20, 30, 45, 60, 120, 300], registers: [registry] }),
    idleStops: new Counter({ name: 'clawplane_instance_idle_stops_total', help: 'Instances stopped (after a backup) by the idle reaper', labelNames: ['tenant'], registers: [registry] }),
  };
}
