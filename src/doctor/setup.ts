import path from 'node:path';
import type { Config } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import { instanceSettings } from '../instances/setup.ts';
import type { Services } from '../server/services.ts';
import type { DoctorDeps } from './doctor.ts';

/** The doctor's inputs from the configuration and the built services (server, API and CLI alike). */
export function doctorDeps(
  config: Config,
  db: Db | { error: string },
  services: Pick<Services, 'runtimes' | 'sandboxes' | 'instances'>,
  listen: { host: string; port: number },
): DoctorDeps {
  const s = instanceSettings(config);
  return {
    config,
    db,
    runtimes: services.runtimes,
    sandboxes: services.sandboxes,
    instances: 'error' in db ? undefined : services.instances,
    brokerRunDir: path.resolve(config.dataDir, 'run', 'broker'),
    dirs: [
      { label: 'data directory', dir: config.dataDir },
      { label: 'sandboxes', dir: s.sandboxRoot },
      { label: 'runtimes', dir: s.runtimeCache },
    ],
    listen: [listen],
  };
}
