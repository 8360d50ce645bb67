/**
 * Prints the README's configuration table from the one settings schema (src/config/schema.ts), so the
 * docs cannot drift from the code: test/docs.test.ts checks that the README holds exactly this table.
 * `node scripts/config-table.ts` prints it.
 */
import { settingsSchema } from '../src/config/schema.ts';

export function configTable(): string {
  const rows = ['| variable | default | meaning |', '|---|---|---|'];
  for (const [name, schema] of Object.entries(settingsSchema.shape)) {
    const parsed = schema.safeParse(undefined);
    const def = parsed.success && parsed.data !== undefined ? `\`${String(parsed.data)}\`` : '—';
    rows.push(`| \`${name}\` | ${def} | ${(schema.description ?? '').replace(/\|/g, '\\|')} |`);
  }
  return rows.join('\n') + '\n';
}

if (import.meta.main) process.stdout.write(configTable());
