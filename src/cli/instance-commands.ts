import { resolveSecretKey } from '../config/secret-key.ts';
import { NotFoundError } from '../errors.ts';
import { ingressSettings } from '../ingress/setup.ts';
import { instanceSettings } from '../instances/setup.ts';
import { createServices, type Services } from '../server/services.ts';
import { EventChannel } from '../events/channel.ts';
import type { CliKit } from './identity-commands.ts';

const common = { help: { type: 'boolean', short: 'h' }, 'data-dir': { type: 'string' }, json: { type: 'boolean' }, tenant: { type: 'string' }, into: { type: 'string' }, name: { type: 'string' }, 'no-start': { type: 'boolean' } } as const;
const by = { actor: 'cli' };

const size = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

/**
 * `clawplane instance backups|backup|restore` (issue 7): backups of an instance's state (a running one through OpenClaw's own backup in its sandbox),
 * encrypted with the tenant's key, in the configured object store; restore into a stopped instance or
 * a new one. The server's reconciler starts a restored instance on its next pass.
 */
export function instanceCommands(kit: CliKit) {
  return {
    instance: {
      summary: 'Instance backups. Subcommands: backups | backup INSTANCE_ID | restore BACKUP_ID [--into INSTANCE_ID | --name NAME] [--no-start]; all need --tenant.',
      usage: 'clawplane instance backups --tenant SLUG [--json] | instance backup INSTANCE_ID --tenant SLUG | instance restore BACKUP_ID --tenant SLUG [--into INSTANCE_ID | --name NAME] [--no-start] [--data-dir DIR]',
      options: { ...common },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        const [sub, arg] = pos;
        if (sub !== 'backups' && sub !== 'backup' && sub !== 'restore') throw kit.usage('instance: expected backups, backup or restore');
        if (typeof values['tenant'] !== 'string') throw kit.usage('instance: name the tenant with --tenant SLUG (or its id)');
        if (sub !== 'backups' && !arg) throw kit.usage(`instance ${sub}: name the ${sub === 'backup' ? 'instance' : 'backup'} id`);
        const cfg = kit.config(values);
        return kit.withDatabase(cfg, async (db, log) => {
          const secretKey = await resolveSecretKey(cfg, log);
          const s: Services = createServices({ db, events: new EventChannel({ url: db.url, log }), secretKey, dataDir: cfg.dataDir, publicOrigin: cfg.publicUrl ?? `http://${cfg.host}:${cfg.port}`, egressAllowHosts: cfg.egressAllowHosts, log, instances: instanceSettings(cfg), ingress: ingressSettings(cfg) });
          const tenant = await s.tenants.find(values['tenant'] as string);
          if (!tenant) throw new NotFoundError(`Tenant "${String(values['tenant'])}"`);
          const out = (o: unknown, text: string) => process.stdout.write(values['json'] ? JSON.stringify(o) + '\n' : text);
          if (sub === 'backups') {
            const items = await s.backups.list(tenant.id);
            out({ items }, items.length === 0 ? 'no backups\n' : items.map((b) => `${b.id}\t${b.instanceName} (${b.instanceId})\t${b.reason}\t${size(b.sizeBytes)}\t${b.createdAt}`).join('\n') + '\n');
            return kit.EXIT.ok;
          }
          if (sub === 'backup') {
            const b = await s.backups.create(tenant.id, arg ?? '', 'manual', by);
            out(b, `backed up ${b.instanceName} as ${b.id} (${size(b.sizeBytes)} in the ${s.backups.storeKind} store, ${b.durationMs} ms)\n`);
            return kit.EXIT.ok;
          }
          const into = typeof values['into'] === 'string' ? values['into'] : undefined;
          const name = typeof values['name'] === 'string' ? values['name'] : undefined;
          const r = await s.backups.restore(tenant.id, arg ?? '', { instanceId: into, name, start: values['no-start'] !== true }, by);
          out(r, `restored ${r.backup.id} into instance ${r.instance.name} (${r.instance.id}); ${values['no-start'] ? 'left stopped' : 'the server starts it on its next reconcile'}\n`);
          return kit.EXIT.ok;
        });
      },
    },
  };
}
