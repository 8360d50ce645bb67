import type { RotationReport, VaultStatus } from '../vault/vault.ts';
import { withServices, type CliKit } from './identity-commands.ts';

const common = { help: { type: 'boolean', short: 'h' }, 'data-dir': { type: 'string' }, json: { type: 'boolean' } } as const;

function rotationText(verb: string, r: RotationReport): string {
  const lines = [
    `${verb}: master key ${r.keyId} is at version ${r.version}; re-wrapped ${r.tenantKeys} tenant data key(s) and ${r.platformSecrets} platform secret(s)`,
  ];
  // Ids only: a tenant id or a platform secret's name, never key material.
  if (r.failed.length > 0)
    lines.push(
      `FAILED to re-wrap ${r.failed.length}: ${r.failed.join(', ')} (left under their old version; check CLAWPLANE_SECRET_KEY, then run "clawplane vault rewrap")`,
    );
  return lines.join('\n') + '\n';
}

function statusText(s: VaultStatus): string {
  const rows = s.versions.map((v) => `  v${v.version}${v.current ? ' (current)' : ''}\t${v.tenantKeys} tenant key(s)\t${v.platformSecrets} platform secret(s)`);
  return `master key ${s.keyId}, current version ${s.currentVersion}\n${rows.join('\n')}\n`;
}

/**
 * `clawplane vault rotate | rewrap | status` (issue 4). Rotation runs online against the live database:
 * servers keep opening keys under the old version until each row is re-wrapped, so no downtime.
 * Exit 1 when any key could not be re-wrapped, or when status finds keys still under an old version.
 */
export function vaultCommands(kit: CliKit) {
  return {
    vault: {
      summary:
        'Credential vault. Subcommands: rotate (new master key version, re-wrap every data key) | rewrap (finish an interrupted rotation) | status (exit 1 while keys remain under an old version).',
      usage: 'clawplane vault rotate | vault rewrap | vault status [--json] [--data-dir DIR]',
      options: { ...common },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        const sub = pos[0];
        if (sub !== 'rotate' && sub !== 'rewrap' && sub !== 'status') throw kit.usage('vault: expected rotate, rewrap or status');
        return withServices(kit, values, async (s) => {
          if (sub === 'status') {
            const st = await s.vault.status();
            process.stdout.write(values['json'] ? JSON.stringify(st) + '\n' : statusText(st));
            const stale = st.versions.some((v) => !v.current && v.tenantKeys + v.platformSecrets > 0);
            return stale ? kit.EXIT.failed : kit.EXIT.ok;
          }
          const r = sub === 'rotate' ? await s.vault.rotate({ actor: 'cli' }) : await s.vault.rewrap();
          process.stdout.write(values['json'] ? JSON.stringify(r) + '\n' : rotationText(sub === 'rotate' ? 'rotated' : 're-wrapped', r));
          return r.failed.length > 0 ? kit.EXIT.failed : kit.EXIT.ok;
        });
      },
    },
  };
}
