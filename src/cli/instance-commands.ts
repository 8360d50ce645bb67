import { resolveSecretKey } from '../config/secret-key.ts';
import { NotFoundError } from '../errors.ts';
import { Registry } from 'prom-client';
import { createIngressServices, ingressSettings } from '../ingress/setup.ts';
import { createInstanceServices, instanceSettings } from '../instances/setup.ts';
import { createIdentityServices, createSecretServices } from '../server/services.ts';
import { EventChannel } from '../events/channel.ts';
import type { CliKit } from './identity-commands.ts';

const common = {
  help: { type: 'boolean', short: 'h' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  tenant: { type: 'string' },
  into: { type: 'string' },
  name: { type: 'string' },
  'no-start': { type: 'boolean' },
  runtime: { type: 'string' },
  wait: { type: 'boolean' },
  timeout: { type: 'string' },
} as const;
const by = { actor: 'cli' };

const size = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

/** The phase a status reason belongs to, for the progress lines of --wait. */
function phaseOf(status: string, reason: string): string {
  if (/^pulling runtime/.test(reason)) return 'pulling runtime';
  if (/ requested( \(.*\))?$/.test(reason) && status !== 'running' && status !== 'stopped') return 'waiting for the server';
  if (status === 'running') return 'gateway ready';
  if (status === 'provisioning' || status === 'upgrading') return /resum/.test(reason) ? 'resuming' : 'starting sandbox';
  return status;
}

/**
 * Follows an instance until it reaches `want` (or error), printing each phase with the time since the
 * command started: "[  3.1 s] pulling runtime: openclaw@… hashing 1200/5400 files". On a terminal the
 * line of a phase rewrites itself; in a log each phase and each new reason is one line.
 */
async function waitForInstance(
  read: () => Promise<{ status: string; statusReason: string }>,
  want: 'running' | 'stopped',
  t0: number,
  timeoutMs: number,
  print: boolean,
): Promise<{ ok: boolean; seconds: number; instance: { status: string; statusReason: string } }> {
  const tty = process.stderr.isTTY && print;
  const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s]`;
  const phaseStart = new Map<string, number>();
  let lastKey = '';
  let lastPhase = '';
  let idleHint = false;
  for (;;) {
    const i = await read();
    const phase = phaseOf(i.status, i.statusReason);
    if (!phaseStart.has(phase)) phaseStart.set(phase, Date.now());
    if (print && phase !== lastPhase && lastPhase) {
      const took = ((Date.now() - (phaseStart.get(lastPhase) ?? t0)) / 1000).toFixed(1);
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}${stamp()} ${lastPhase}: done in ${took} s\n`);
    }
    // Progress counters change every second: a log gets a line per new kind of reason, a terminal all of them.
    const key = `${phase}|${i.statusReason.replace(/[0-9.]+/g, '#')}`;
    if (print && (tty || key !== lastKey)) process.stderr.write(`${tty ? '\r\x1b[K' : ''}${stamp()} ${phase}: ${i.statusReason}${tty ? '' : '\n'}`);
    lastKey = key;
    lastPhase = phase;
    const seconds = Math.round((Date.now() - t0) / 100) / 10;
    if (i.status === want) {
      if (print) process.stderr.write(`${tty ? '\n' : ''}${want} after ${seconds} s\n`);
      return { ok: true, seconds, instance: i };
    }
    if (i.status === 'error') {
      if (print) process.stderr.write(`${tty ? '\n' : ''}failed after ${seconds} s: ${i.statusReason}\n`);
      return { ok: false, seconds, instance: i };
    }
    if (Date.now() - t0 > timeoutMs) {
      if (print) process.stderr.write(`${tty ? '\n' : ''}still ${i.status} after ${seconds} s (--timeout); it goes on in the background\n`);
      return { ok: false, seconds, instance: i };
    }
    if (!idleHint && print && Date.now() - t0 > 15_000 && /requested$/.test(i.statusReason)) {
      idleHint = true;
      process.stderr.write(`${tty ? '\n' : ''}${stamp()} nothing has picked this up yet: the running server (clawplane serve) carries it out\n`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * `clawplane instance deploy|start|stop|upgrade [--wait]` and `clawplane instance backups|backup|restore` (issue 7): backups of an instance's state (a running one through OpenClaw's own backup in its sandbox),
 * encrypted with the tenant's key, in the configured object store; restore into a stopped instance or
 * a new one. The server's reconciler starts a restored instance on its next pass.
 */
export function instanceCommands(kit: CliKit) {
  return {
    instance: {
      summary:
        'Instances. Subcommands: deploy [--name N] [--runtime V] | start ID | stop ID | upgrade ID --runtime V (each with --wait: phases and time taken) | backups | backup INSTANCE_ID | restore BACKUP_ID [--into INSTANCE_ID | --name NAME] [--no-start]; all need --tenant.',
      usage:
        'clawplane instance deploy --tenant SLUG [--name main] [--runtime openclaw@V] [--no-start] [--wait [--timeout S]] | instance start|stop ID --tenant SLUG [--wait] | instance upgrade ID --tenant SLUG --runtime openclaw@V [--wait] | instance backups --tenant SLUG [--json] | instance backup INSTANCE_ID --tenant SLUG | instance restore BACKUP_ID --tenant SLUG [--into INSTANCE_ID | --name NAME] [--no-start] [--data-dir DIR]',
      options: { ...common },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        const [sub, arg] = pos;
        const lifecycle = ['deploy', 'start', 'stop', 'upgrade'];
        if (!['backups', 'backup', 'restore', ...lifecycle].includes(sub ?? ''))
          throw kit.usage('instance: expected deploy, start, stop, upgrade, backups, backup or restore');
        if (typeof values['tenant'] !== 'string') throw kit.usage('instance: name the tenant with --tenant SLUG (or its id)');
        if (sub !== 'backups' && sub !== 'deploy' && !arg) throw kit.usage(`instance ${sub}: name the ${sub === 'restore' ? 'backup' : 'instance'} id`);
        if (sub === 'upgrade' && typeof values['runtime'] !== 'string') throw kit.usage('instance upgrade: name the version with --runtime openclaw@VERSION');
        const timeoutS = values['timeout'] === undefined ? 900 : Number(values['timeout']);
        if (!(Number.isInteger(timeoutS) && timeoutS > 0)) throw kit.usage('--timeout must be a whole number of seconds');
        const cfg = kit.config(values);
        return kit.withDatabase(cfg, async (db, log) => {
          const secretKey = await resolveSecretKey(cfg, log);
          // The instance records, the sandbox driver (for a live backup) and backups: no broker, no workflows, no
          // loops. The server's reconciler carries out what this changes.
          const events = new EventChannel({ url: db.url, log });
          const { vault } = createSecretServices({ db, events, log, secretKey });
          const { tenants, onboarding } = createIdentityServices({
            db,
            events,
            log,
            vault,
            dataDir: cfg.dataDir,
            publicOrigin: cfg.publicUrl ?? `http://${cfg.host}:${cfg.port}`,
          });
          const settings = instanceSettings(cfg);
          const instanceServices = createInstanceServices({ db, vault, events, onboarding, broker: undefined, settings, log });
          const { backups } = createIngressServices({
            db,
            events,
            vault,
            onboarding,
            instances: instanceServices,
            instanceSettings: settings,
            settings: ingressSettings(cfg),
            dataDir: cfg.dataDir,
            registry: new Registry(),
            log,
          });
          const s = { tenants, instances: instanceServices.instances, backups };
          const tenant = await s.tenants.find(values['tenant'] as string);
          if (!tenant) throw new NotFoundError(`Tenant "${String(values['tenant'])}"`);
          const out = (o: unknown, text: string) => process.stdout.write(values['json'] ? JSON.stringify(o) + '\n' : text);
          if (sub === 'deploy' || sub === 'start' || sub === 'stop' || sub === 'upgrade') {
            const t0 = Date.now();
            const runtime = typeof values['runtime'] === 'string' ? values['runtime'] : undefined;
            const i =
              sub === 'deploy'
                ? await s.instances.deploy(
                    tenant.id,
                    {
                      name: typeof values['name'] === 'string' ? values['name'] : 'main',
                      start: values['no-start'] !== true,
                      ...(runtime ? { runtimeVersion: runtime } : {}),
                    },
                    by,
                  )
                : sub === 'start'
                  ? await s.instances.start(tenant.id, arg ?? '', by)
                  : sub === 'stop'
                    ? await s.instances.stop(tenant.id, arg ?? '', by)
                    : await s.instances.upgrade(tenant.id, arg ?? '', { runtimeVersion: runtime ?? '' }, by);
            if (!values['wait'] || (sub === 'deploy' && values['no-start'])) {
              out(i, `${sub} of ${i.name} (${i.id}) accepted: ${i.status} (${i.statusReason}); the server's reconciler carries it out\n`);
              return kit.EXIT.ok;
            }
            const end = await waitForInstance(
              () => s.instances.get(tenant.id, i.id),
              sub === 'stop' ? 'stopped' : 'running',
              t0,
              timeoutS * 1000,
              !values['json'],
            );
            out({ id: i.id, name: i.name, status: end.instance.status, statusReason: end.instance.statusReason, seconds: end.seconds }, '');
            return end.ok ? kit.EXIT.ok : kit.EXIT.failed;
          }
          if (sub === 'backups') {
            const items = await s.backups.list(tenant.id);
            out(
              { items },
              items.length === 0
                ? 'no backups\n'
                : items.map((b) => `${b.id}\t${b.instanceName} (${b.instanceId})\t${b.reason}\t${size(b.sizeBytes)}\t${b.createdAt}`).join('\n') + '\n',
            );
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
          out(
            r,
            `restored ${r.backup.id} into instance ${r.instance.name} (${r.instance.id}); ${values['no-start'] ? 'left stopped' : 'the server starts it on its next reconcile'}\n`,
          );
          return kit.EXIT.ok;
        });
      },
    },
  };
}
