import type { CliKit } from '../cli/identity-commands.ts';
import { instanceSettings } from '../instances/setup.ts';
import { fmtBytes, parseRuntimeSpec, RuntimeStore, type PullProgress } from './store.ts';

const common = { help: { type: 'boolean', short: 'h' }, 'data-dir': { type: 'string' }, json: { type: 'boolean' } } as const;

/** One line that rewrites itself on a terminal, and plain lines (one per phase) in a log. */
function progressPrinter(): PullProgress & { end(): void } {
  const tty = process.stderr.isTTY;
  let lastPhase = '';
  const fn = ((e) => {
    if (tty) process.stderr.write(`\r\x1b[K${e.message}`);
    else if (e.phase !== lastPhase || e.phase === 'done' || e.phase === 'script') process.stderr.write(`${e.message}\n`);
    lastPhase = e.phase;
  }) as PullProgress & { end(): void };
  fn.end = () => {
    if (tty) process.stderr.write('\n');
  };
  return fn;
}

/**
 * `clawplane runtime pull openclaw@<version> | list | rm <version> | verify <version>` (issue 6).
 * Versions live in CLAWPLANE_RUNTIME_CACHE; instances pin one each; rm refuses a pinned version.
 */
export function runtimeCommands(kit: CliKit) {
  return {
    runtime: {
      summary: 'OpenClaw versions. Subcommands: pull openclaw@VERSION | list | rm VERSION | verify VERSION.',
      usage: 'clawplane runtime pull openclaw@2026.9.6 | runtime list [--json] | runtime rm 2026.9.6 | runtime verify 2026.9.6 [--data-dir DIR]',
      options: { ...common },
      run: async (values: Record<string, string | boolean | undefined>, pos: string[]): Promise<number> => {
        const [sub, arg] = pos;
        const cfg = kit.config(values);
        const settings = instanceSettings(cfg);
        const store = new RuntimeStore({ dir: settings.runtimeCache, nodePackageVersion: settings.runtimeNodeVersion });
        if (sub === 'list') {
          const items = await store.list();
          if (values['json']) process.stdout.write(JSON.stringify({ default: settings.runtimeDefaultVersion, items }) + '\n');
          else if (items.length === 0)
            process.stdout.write(`no OpenClaw version installed in ${store.dir}; run "clawplane runtime pull openclaw@${settings.runtimeDefaultVersion}"\n`);
          else
            for (const r of items)
              process.stdout.write(
                `openclaw@${r.version}${r.version === settings.runtimeDefaultVersion ? ' (default)' : ''}\tnode ${r.nodeVersion}\t${fmtBytes(r.bytes)}\t${r.files} files\tinstalled ${r.installedAt}\n`,
              );
          return kit.EXIT.ok;
        }
        if (!arg) throw kit.usage(`runtime ${sub ?? ''}: name a version, e.g. openclaw@${settings.runtimeDefaultVersion}`);
        const version = parseRuntimeSpec(arg);
        if (sub === 'pull') {
          const p = progressPrinter();
          const r = await store.pull(version, p).finally(() => p.end());
          process.stdout.write(
            values['json'] ? JSON.stringify(r) + '\n' : `openclaw@${r.version} ready (${fmtBytes(r.bytes)}, digest ${r.digest.slice(0, 16)}…)\n`,
          );
          return kit.EXIT.ok;
        }
        if (sub === 'verify') {
          const p = progressPrinter();
          const r = await store.verify(version, p).finally(() => p.end());
          process.stdout.write(
            r.ok ? `openclaw@${version}: intact\n` : `openclaw@${version}: ${r.problems.length} problem(s)\n  ${r.problems.slice(0, 50).join('\n  ')}\n`,
          );
          return r.ok ? kit.EXIT.ok : kit.EXIT.failed;
        }
        if (sub === 'rm') {
          const pinned = await kit.withDatabase(cfg, async (db) => {
            const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM instances WHERE runtime_version = $1 OR previous_runtime_version = $1', [
              version,
            ]);
            return r.rows[0]?.n ?? 0;
          });
          if (pinned > 0) {
            process.stderr.write(`clawplane: openclaw@${version} is pinned by ${pinned} instance(s): upgrade or destroy them first.\n`);
            return kit.EXIT.failed;
          }
          await store.rm(version);
          process.stdout.write(`removed openclaw@${version}\n`);
          return kit.EXIT.ok;
        }
        throw kit.usage('runtime: expected pull, list, rm or verify');
      },
    },
  };
}
