import { createIdentityServices, createSecretServices, type IdentityServices, type SecretServices } from '../server/services.ts';
import { EventChannel } from '../events/channel.ts';
import { resolveSecretKey } from '../config/secret-key.ts';
import type { Config, Settings } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import type { Logger } from '../observability/logger.ts';
import { TENANT_ROLES, type TenantRole } from '../identity/principal.ts';
import { NotFoundError } from '../errors.ts';

/** What the identity/tenancy CLI commands need from main.ts (kept there to avoid a cycle). */
export interface CliKit {
  config(values: Record<string, string | boolean | undefined>, extra?: Partial<Record<keyof Settings, string>>): Config;
  withDatabase<T>(cfg: Config, fn: (db: Db, log: Logger) => Promise<T>): Promise<T>;
  usage(message: string): Error;
  EXIT: { ok: number; failed: number };
}

const by = { actor: 'cli' };

/**
 * Builds what the identity and vault commands use on the configured database: the vault and the identity
 * services, nothing that starts or listens (no broker, sandboxes or workflows).
 */
export async function withServices<T>(
  kit: CliKit,
  values: Record<string, string | boolean | undefined>,
  fn: (s: IdentityServices & SecretServices) => Promise<T>,
): Promise<T> {
  const cfg = kit.config(values);
  return kit.withDatabase(cfg, async (db, log) => {
    const secretKey = await resolveSecretKey(cfg, log);
    // Publishes what it changes (a revoked token reaches every running replica); caches nothing itself.
    const events = new EventChannel({ url: db.url, log });
    const secrets = createSecretServices({ db, events, log, secretKey, egressAllowHosts: cfg.egressAllowHosts });
    const identity = createIdentityServices({
      db,
      events,
      log,
      vault: secrets.vault,
      dataDir: cfg.dataDir,
      publicOrigin: cfg.publicUrl ?? `http://${cfg.host}:${cfg.port}`,
    });
    return fn({ ...secrets, ...identity });
  });
}

function role(kit: CliKit, v: string | boolean | undefined): TenantRole {
  if (typeof v !== 'string' || !(TENANT_ROLES as readonly string[]).includes(v)) throw kit.usage(`--role must be one of ${TENANT_ROLES.join(', ')}`);
  return v as TenantRole;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

const common = { help: { type: 'boolean', short: 'h' }, 'data-dir': { type: 'string' } } as const;

export function identityCommands(kit: CliKit) {
  return {
    tenant: {
      summary: 'Tenants. Subcommands: create --slug S --name N | list | suspend SLUG | resume SLUG.',
      usage: 'clawplane tenant create --slug acme --name "Acme Inc" | tenant list | tenant suspend acme [--reason TEXT] | tenant resume acme',
      options: { ...common, slug: { type: 'string' }, name: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        const sub = pos[0];
        return withServices(kit, values, async (s) => {
          if (sub === 'create') {
            if (typeof values['slug'] !== 'string' || typeof values['name'] !== 'string') throw kit.usage('tenant create needs --slug and --name');
            if (!/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/.test(values['slug']))
              throw kit.usage('--slug: lowercase letters, digits and inner hyphens, at most 40 characters');
            const t = await s.tenants.create({ slug: values['slug'], name: values['name'] }, by);
            process.stdout.write(values['json'] ? JSON.stringify(t) + '\n' : `created tenant ${t.slug} (${t.id})\n`);
            return kit.EXIT.ok;
          }
          if (sub === 'list') {
            const all = await s.tenants.list();
            if (values['json']) process.stdout.write(JSON.stringify(all) + '\n');
            else for (const t of all) process.stdout.write(`${t.slug}\t${t.status}\t${t.id}\t${t.name}\n`);
            return kit.EXIT.ok;
          }
          if (sub === 'suspend' || sub === 'resume') {
            const t = await s.tenants.find(pos[1] ?? '');
            if (!t) throw new NotFoundError(`Tenant "${pos[1] ?? ''}"`);
            await s.tenants.setStatus(t.id, sub === 'suspend' ? 'suspended' : 'active', {
              ...by,
              reason: typeof values['reason'] === 'string' ? values['reason'] : undefined,
            });
            process.stdout.write(`tenant ${t.slug} ${sub === 'suspend' ? 'suspended' : 'resumed'}\n`);
            return kit.EXIT.ok;
          }
          throw kit.usage('tenant: expected create, list, suspend or resume');
        });
      },
    },
    token: {
      summary: 'API tokens. Subcommands: create --tenant T --name N --role R [--expires-days D] | revoke --tenant T ID.',
      usage: 'clawplane token create --tenant acme --name ci --role member [--expires-days 30] | token revoke --tenant acme TOKEN_ID',
      options: { ...common, tenant: { type: 'string' }, name: { type: 'string' }, role: { type: 'string' }, 'expires-days': { type: 'string' } },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        const sub = pos[0];
        if (sub !== 'create' && sub !== 'revoke') throw kit.usage('token: expected create or revoke');
        if (typeof values['tenant'] !== 'string') throw kit.usage('--tenant is required');
        const r = sub === 'create' ? role(kit, values['role']) : undefined;
        const days = values['expires-days'] === undefined ? undefined : Number(values['expires-days']);
        if (days !== undefined && !(Number.isInteger(days) && days > 0 && days <= 3650))
          throw kit.usage('--expires-days must be a whole number from 1 to 3650');
        return withServices(kit, values, async (s) => {
          const t = await s.tenants.find(String(values['tenant']));
          if (!t) throw new NotFoundError(`Tenant "${String(values['tenant'])}"`);
          if (sub === 'create') {
            if (typeof values['name'] !== 'string' || !r) throw kit.usage('token create needs --name and --role');
            const { token, info } = await s.tokens.create(
              t.id,
              { name: values['name'], role: r, createdBy: null, expiresAt: days ? new Date(Date.now() + days * 86_400_000) : undefined },
              by,
            );
            process.stderr.write(`created token ${info.id} (${info.role} in ${t.slug}); it is shown only once:\n`);
            process.stdout.write(token + '\n');
            return kit.EXIT.ok;
          }
          const id = pos[1];
          if (!id) throw kit.usage('token revoke needs the token id');
          await s.tokens.revoke(t.id, id, by);
          process.stdout.write(`revoked token ${id}\n`);
          return kit.EXIT.ok;
        });
      },
    },
    admin: {
      summary: 'Breakglass admin. Subcommand: reset-password (reads the new password from standard input).',
      usage: 'echo "new long password" | clawplane admin reset-password',
      options: { ...common },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        if (pos[0] !== 'reset-password') throw kit.usage('admin: expected reset-password');
        const password = await readStdin();
        return withServices(kit, values, async (s) => {
          const u = await s.users.resetBreakglassPassword(password, by);
          process.stdout.write(`password reset for ${u.email}; lockout cleared; existing sessions ended\n`);
          return kit.EXIT.ok;
        });
      },
    },
  };
}
