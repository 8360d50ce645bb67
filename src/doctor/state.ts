import { createConnection } from 'node:net';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Config, WarmResume } from '../config/schema.ts';
import type { InstanceRow } from '../instances/instances.ts';
import type { RuntimeStore } from '../runtime/store.ts';
import type { SandboxDriver } from '../sandbox/types.ts';
import { fail, ok, skip, type Finding } from './types.ts';

/** The master secret: present, long enough, and (when generated into the data dir) private to root. */
export async function checkSecretKey(config: Config): Promise<Finding> {
  if (!config.secretKey) {
    return config.databaseUrl === undefined
      ? ok('none yet: the first start generates one into the data directory (0600)')
      : fail('CLAWPLANE_SECRET_KEY is not set although DATABASE_URL is', 'set CLAWPLANE_SECRET_KEY (the same in every process; openssl rand -base64 32)');
  }
  if (config.secretKey.length < 32) return fail(`${config.secretKey.length} bytes`, 'use at least 32 random bytes: openssl rand -base64 32');
  if (!process.env['CLAWPLANE_SECRET_KEY']) {
    const file = path.join(config.dataDir, 'secret.key');
    const s = await stat(file).catch(() => undefined);
    if (s && (s.mode & 0o077) !== 0)
      return fail(`${file} has mode ${(s.mode & 0o777).toString(8)}: other users can read the key to every credential`, `chmod 600 ${file}`);
    return ok(`${config.secretKey.length} bytes, from ${file} (0600)`);
  }
  return ok(`${config.secretKey.length} bytes, from CLAWPLANE_SECRET_KEY`);
}

/** Installed runtimes: every manifest present and, with `full`, every file re-hashed against it. */
export async function checkRuntimes(store: RuntimeStore, defaultVersion: string, full: boolean): Promise<Finding> {
  const items = await store.list();
  if (items.length === 0) return ok(`none installed in ${store.dir}; the first deploy pulls openclaw@${defaultVersion}`);
  const problems: string[] = [];
  for (const r of items) {
    try {
      if (full) {
        const v = await store.verify(r.version);
        if (!v.ok) problems.push(`openclaw@${r.version}: ${v.problems.slice(0, 3).join('; ')}${v.problems.length > 3 ? ` (+${v.problems.length - 3})` : ''}`);
      } else {
        await store.resolve(r.version);
      }
    } catch (err) {
      problems.push(`openclaw@${r.version}: ${(err as Error).message}`);
    }
  }
  const names = items.map((r) => `openclaw@${r.version}`).join(', ');
  if (problems.length > 0)
    return fail(`${problems.join('; ')}`, 'clawplane runtime rm VERSION && clawplane runtime pull openclaw@VERSION (a changed runtime is not trusted)');
  return ok(`${names}${full ? ': every file matches its manifest' : ' (manifests present; --full re-hashes every file)'}`);
}

/** Sandboxes no instance wants (orphans), and instances that should be running whose sandbox is gone. */
export async function checkSandboxes(driver: SandboxDriver, rows: InstanceRow[]): Promise<Finding> {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const handles = await driver.list();
  const orphans = handles.filter((h) => {
    const row = byId.get(h.instanceId);
    return !row || row.desiredState !== 'running' || (row.sandbox !== null && row.sandbox.sandboxId !== h.sandboxId);
  });
  const live = new Set(handles.map((h) => h.sandboxId));
  const gone = rows.filter((r) => r.status === 'running' && r.sandbox !== null && !live.has(r.sandbox.sandboxId));
  const problems = [
    ...orphans.map((h) => {
      const pid = (h.native as { pid?: unknown } | null)?.pid;
      return `orphan sandbox ${h.sandboxId} (instance ${h.instanceId}${typeof pid === 'number' ? `, pid ${pid}` : ''}) that no instance wants`;
    }),
    ...gone.map((r) => `instance ${r.name} (${r.id}) is recorded running but its sandbox ${r.sandbox?.sandboxId ?? ''} is gone`),
  ];
  if (problems.length > 0) {
    return fail(
      problems.join('; '),
      'restart clawplane serve: the reconciler stops orphans and restarts instances whose sandbox is gone at start (or stop an orphan by hand)',
    );
  }
  return ok(`${handles.length} sandbox(es) running, each wanted by its instance`);
}

/** Warm resume: unless it is off, whether CRIU can do it here ('auto' without it is not a failure). */
export async function checkCriu(driver: SandboxDriver, enabled: WarmResume): Promise<Finding> {
  if (enabled === false) return skip('warm resume is off (CLAWPLANE_WARM_RESUME=false): idle instances are stopped, not suspended');
  if (enabled === 'auto') {
    if (!driver.snapshots) return skip(`warm resume is unavailable: the ${driver.name} driver has no snapshots; idle instances are stopped, not suspended`);
    const s = await driver.snapshots.support();
    return s.supported
      ? ok('warm resume on (auto): CRIU can suspend and resume sandboxes here')
      : skip(`${s.reason}; idle instances are stopped, not suspended`);
  }
  if (!driver.snapshots)
    return fail(`warm resume is on but the ${driver.name} driver has no snapshots`, 'use the local driver for warm resume, or set CLAWPLANE_WARM_RESUME=false');
  const s = await driver.snapshots.support();
  if (!s.supported)
    return fail(
      `warm resume is on but cannot work: ${s.reason}`,
      'as root: bash scripts/build-criu.sh (CLAWPLANE_CRIU_BIN), or set CLAWPLANE_WARM_RESUME=false',
    );
  return ok('CRIU can suspend and resume sandboxes here');
}

/** Every broker socket of a running sandbox answers (an unauthenticated call gets the broker's 401). */
export async function checkBroker(runDir: string): Promise<Finding> {
  const socks = (await readdir(runDir).catch(() => [] as string[])).filter((n) => n.endsWith('.sock'));
  if (socks.length === 0) return ok('no sandbox registered with the broker');
  const dead: string[] = [];
  for (const s of socks) {
    const answer = await new Promise<string>((resolve) => {
      const c = createConnection(path.join(runDir, s));
      let data = '';
      const t = setTimeout(() => (c.destroy(), resolve('no answer within 5 s')), 5000);
      c.on('connect', () => c.write('GET /v1/models HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n'));
      c.on('data', (d: Buffer) => (data += d.toString()));
      c.on('end', () => (clearTimeout(t), resolve(/^HTTP\/1\.1 (401|403)/.test(data) ? '' : `answered ${data.split('\r\n')[0] ?? '(nothing)'}`)));
      c.on('error', (err) => (clearTimeout(t), resolve(err.message)));
    });
    if (answer) dead.push(`${s}: ${answer}`);
  }
  if (dead.length > 0)
    return fail(
      `broker socket(s) not serving: ${dead.join('; ')}`,
      'restart clawplane serve: sandboxes are re-registered with the broker when their instance restarts',
    );
  return ok(`${socks.length} sandbox socket(s) answer`);
}
