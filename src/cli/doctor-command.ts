import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { decodeKey } from '../config/schema.ts';
import { createDb, type Db } from '../db/pool.ts';
import { EventChannel } from '../events/channel.ts';
import { formatReport, runDoctor } from '../doctor/doctor.ts';
import { doctorDeps } from '../doctor/setup.ts';
import { createInstanceServices, instanceSettings } from '../instances/setup.ts';
import type { Logger } from '../observability/logger.ts';
import { openDatabase } from '../server/serve.ts';
import { createIdentityServices, createSecretServices } from '../server/services.ts';
import type { CliKit } from './identity-commands.ts';

/** `clawplane doctor [--json] [--full]`: is this installation healthy? Exit 1 when a check fails. */
export function doctorCommand(kit: CliKit & { logger(cfg: ReturnType<CliKit['config']>): Logger }) {
  return {
    doctor: {
      summary:
        'Check this installation: sandbox prerequisites, database, secret key, runtimes, sandboxes, broker, public ports, disk, clock. Exit 1 when a check fails.',
      usage: 'clawplane doctor [--json] [--full (re-hash every runtime file)] [--data-dir DIR]',
      options: { help: { type: 'boolean', short: 'h' }, 'data-dir': { type: 'string' }, json: { type: 'boolean' }, full: { type: 'boolean' } },
      run: async (values: Record<string, string | boolean | undefined>): Promise<number> => {
        const cfg = kit.config(values);
        const log = kit.logger(cfg);
        // Read an existing key but never generate one: the doctor changes nothing.
        if (!cfg.secretKey && cfg.databaseUrl === undefined) {
          cfg.secretKey = decodeKey(await readFile(path.join(cfg.dataDir, 'secret.key'), 'utf8').catch(() => ''));
        }
        let opened: { db: Db; close(): Promise<void> } | { error: string };
        try {
          const { db, embedded } = await openDatabase(cfg, log);
          opened = { db, close: async () => (await db.close(), await embedded?.stop()) };
        } catch (err) {
          opened = { error: (err as Error).message };
        }
        // Services are only constructed (nothing starts); without a database they point at nowhere and go unused.
        const db = 'db' in opened ? opened.db : createDb(cfg.databaseUrl ?? 'postgres://127.0.0.1:1/unreachable', log);
        try {
          const events = EventChannel.local(log);
          const { vault } = createSecretServices({ db, events, log, secretKey: cfg.secretKey ?? randomBytes(32) });
          const { onboarding } = createIdentityServices({
            db,
            events,
            log,
            vault,
            dataDir: cfg.dataDir,
            publicOrigin: cfg.publicUrl ?? `http://${cfg.host}:${cfg.port}`,
          });
          const services = createInstanceServices({ db, vault, events, onboarding, broker: undefined, settings: instanceSettings(cfg), log });
          const report = await runDoctor({
            ...doctorDeps(cfg, 'db' in opened ? db : opened, services, { host: cfg.host, port: cfg.port }),
            full: values['full'] === true,
          });
          process.stdout.write(values['json'] ? JSON.stringify(report) + '\n' : formatReport(report));
          return report.ok ? kit.EXIT.ok : kit.EXIT.failed;
        } finally {
          if ('close' in opened) await opened.close();
          else await db.close().catch(() => undefined);
        }
      },
    },
  };
}
