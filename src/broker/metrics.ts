import { Counter, Histogram, type Registry } from 'prom-client';

/** Broker metrics with a `tenant` label (issue 5, item 4). */
export interface BrokerMetrics {
  requests: Counter<'tenant' | 'api' | 'outcome'>;
  tokens: Counter<'tenant' | 'direction'>;
  cost: Counter<'tenant'>;
  upstreamLatency: Histogram<'provider_kind'>;
  refusals: Counter<'tenant' | 'limit'>;
}

export function createBrokerMetrics(registry: Registry): BrokerMetrics {
  return {
    requests: new Counter({
      name: 'clawplane_broker_requests_total',
      help: 'Model calls through the broker by tenant, API and outcome',
      labelNames: ['tenant', 'api', 'outcome'],
      registers: [registry],
    }),
    tokens: new Counter({
      name: 'clawplane_broker_tokens_total',
      help: 'Tokens metered by the broker',
      labelNames: ['tenant', 'direction'],
      registers: [registry],
    }),
    cost: new Counter({ name: 'clawplane_broker_cost_usd_total', help: 'Cost metered by the broker in USD', labelNames: ['tenant'], registers: [registry] }),
    upstreamLatency: new Histogram({
      name: 'clawplane_broker_upstream_seconds',
      help: "Time to the provider's response head",
      labelNames: ['provider_kind'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    refusals: new Counter({
      name: 'clawplane_broker_refusals_total',
      help: 'Calls refused before reaching a provider, by limit',
      labelNames: ['tenant', 'limit'],
      registers: [registry],
    }),
  };
}
