#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFile } from 'node:fs/promises';
import { verifyAuditChain } from '../audit/verify.ts';
import { parseConfig, type Config, type Settings } from '../config/schema.ts';
import { ClawplaneError, ConfigError } from '../errors.ts';
import { migrate } from '../db/migrate.ts';
import type { Db } from '../db/pool.ts';
import { describeSchema } from '../db/schema-snapshot.ts';
import { createLogger, type Logger } from '../observability/logger.ts';
import { openDatabase, startServer } from '../server/serve.ts';
import { API_VERSION } from '../api/routes/docs.ts';
import { SNAPSHOT_FILE } from '../db/snapshot-file.ts';
import { identityCommands } from './identity-commands.ts';
import { vaultCommands } from './vault-commands.ts';
import { runtimeCommands } from '../runtime/commands.ts';
import { instanceCommands } from './instance-commands.ts';
import { doctorCommand } from './doctor-command.ts';

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, failed: 1, usage: 2, config: 3 } as const;

class UsageError extends Error {}

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<number>;
}

const commonOptions = {
  help: { type: 'boolean', short: 'h' },
  'data-dir': { type: 'string' },
} as const;

function config(values: Record<string, string | boolean | undefined>, extra: Partial<Record<keyof Settings, string>> = {}): Config {
  const flags: Partial<Record<keyof Settings, string>> = { ...extra };
  if (typeof values['data-dir'] === 'string') flags.CLAWPLANE_DATA_DIR = values['data-dir'];
  return parseConfig(process.env, flags);
}

function cliLogger(cfg: Config): Logger {
  // Commands other than serve keep stdout for their result; logs go to stderr, warnings and up.
  return createLogger(cfg.logLevel === 'info' ? 'warn' : cfg.logLevel, process.stderr as unknown as import('pino').DestinationStream);
}

async function withDatabase<T>(cfg: Config, fn: (db: Db, log: Logger) => Promise<T>): Promise<T> {
  const log = cliLogger(cfg);
  const { db, embedded } = await openDatabase(cfg, log);
  try {
    return await fn(db, log);
  } finally {
    await db.close();
    await embedded?.stop();
  }
}

const commands: Record<string, Command> = {
  serve: {
    summary: 'Run the control plane (every role in one process).',
    usage: 'clawplane serve [--host ADDR] [--port N] [--data-dir DIR]',
    options: { ...commonOptions, host: { type: 'string' }, port: { type: 'string' } },
    async run(values) {
      const extra: Partial<Record<keyof Settings, string>> = {};
      if (typeof values['host'] === 'string') extra.CLAWPLANE_HOST = values['host'];
      if (typeof values['port'] === 'string') extra.CLAWPLANE_PORT = values['port'];
      const cfg = config(values, extra);
      const log = createLogger(cfg.logLevel);
      const server = await startServer(cfg, log);
      await new Promise<void>((resolve) => {
        const onSignal = (sig: NodeJS.Signals) => {
          log.info({ signal: sig }, 'signal received');
          server.stop().then(resolve, (err: unknown) => {
            log.error({ err }, 'shutdown failed');
            resolve();
          });
        };
        process.once('SIGTERM', onSignal);
        process.once('SIGINT', onSignal);
      });
      return EXIT.ok;
    },
  },
  migrate: {
    summary: 'Apply pending database migrations; with --check, compare the live schema with the migration files.',
    usage: 'clawplane migrate [--check] [--data-dir DIR]',
    options: { ...commonOptions, check: { type: 'boolean' } },
    async run(values) {
      const cfg = config(values);
      return withDatabase(cfg, async (db, log) => {
        if (values['check']) {
          const want = await readFile(SNAPSHOT_FILE, 'utf8');
          const have = await describeSchema(db);
          if (want === have) {
            process.stdout.write('schema matches the migration files\n');
            return EXIT.ok;
          }
          process.stdout.write(`schema drift: the live schema differs from ${SNAPSHOT_FILE}\n${diffLines(want, have)}`);
          return EXIT.failed;
        }
        const applied = await migrate(db, log);
        process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
        return EXIT.ok;
      });
    },
  },
  audit: {
    summary: 'Audit log tools. Subcommand: verify (replay the hash chain; exit 1 at the first bad row).',
    usage: 'clawplane audit verify [--data-dir DIR]',
    options: { ...commonOptions },
    async run(values, positionals) {
      if (positionals[0] !== 'verify') throw new UsageError('audit: expected the subcommand "verify"');
      const cfg = config(values);
      return withDatabase(cfg, async (db) => {
        const r = await verifyAuditChain(db);
        if (r.ok) {
          process.stdout.write(`audit chain ok: ${r.checked} rows verified\n`);
          return EXIT.ok;
        }
        process.stdout.write(`audit chain BROKEN at seq ${r.firstBad?.seq}: ${r.firstBad?.reason} (${r.checked} rows verified before it)\n`);
        return EXIT.failed;
      });
    },
  },
  version: {
    summary: 'Print the Clawplane and Node versions.',
    usage: 'clawplane version',
    options: { help: commonOptions.help },
    run() {
      process.stdout.write(`clawplane ${API_VERSION} (node ${process.versions.node})\n`);
      return Promise.resolve(EXIT.ok);
    },
  },
};

const kit = { config, withDatabase, usage: (m: string) => new UsageError(m), EXIT };
Object.assign(commands, identityCommands(kit), vaultCommands(kit), runtimeCommands(kit), instanceCommands(kit), doctorCommand({ ...kit, logger: cliLogger }));

function diffLines(want: string, have: string): string {
  const w = new Set(want.split('\n'));
  const h = new Set(have.split('\n'));
  const out: string[] = [];
  for (const l of w) if (!h.has(l) && l) out.push(`- ${l}`);
  for (const l of h) if (!w.has(l) && l) out.push(`+ ${l}`);
  return out.join('\n') + '\n';
}

function help(): string {
  const width = Math.max(...Object.keys(commands).map((k) => k.length));
  return `Usage: clawplane <command> [options]\n\nCommands:\n${Object.entries(commands)
    .map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`)
    .join('\n')}\n\nRun "clawplane <command> --help" for a command's options.\nExit codes: 0 ok, 1 failed, 2 usage error, 3 configuration error.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return name ? EXIT.ok : EXIT.usage;
  }
  const cmd = commands[name];
  try {
    if (!cmd) throw new UsageError(`unknown command "${name}"`);
    const { values, positionals } = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    if (values['help']) {
      process.stdout.write(`${cmd.summary}\n\nUsage: ${cmd.usage}\n`);
      return EXIT.ok;
    }
    return await cmd.run(values as Record<string, string | boolean | undefined>, positionals);
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`clawplane: ${(err as Error).message}\n\n${cmd ? `Usage: ${cmd.usage}\n` : help()}`);
      return EXIT.usage;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`clawplane: ${err.message}\n`);
      return EXIT.config;
    }
    const message = err instanceof ClawplaneError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`clawplane: ${message}\n`);
    if (err instanceof ClawplaneError && err.status === 400) return EXIT.usage;
    return EXIT.failed;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Let pino flush, then exit even if a library left a timer behind.
  setImmediate(() => process.exit(code));
}
