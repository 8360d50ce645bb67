import { Gauge, Histogram, type Registry } from 'prom-client';

/** Backup metrics per tenant (issue 7, item 8). */
export interface BackupMetrics {
  bytes: Gauge<'tenant'>;
  seconds: Histogram<'tenant' | 'reason'>;
}

export function createBackupMetrics(registry: Registry): BackupMetrics {
  return {
    bytes: new Gauge({
      name: 'clawplane_backup_last_size_bytes',
      help: "Size of the tenant's last backup (encrypted object)",
      labelNames: ['tenant'],
      registers: [registry],
    }),
    seconds: new Histogram({
      name: 'clawplane_backup_duration_seconds',
      help: 'Time to archive, encrypt and store one backup',
      labelNames: ['tenant', 'reason'],
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
  };
}
