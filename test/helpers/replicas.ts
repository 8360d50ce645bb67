import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll } from './after-all.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient } from './client.ts';
import { capturedLogs } from './server.ts';

const cli = path.resolve(import.meta.dirname, '../../src/cli/main.ts');

/** One `clawplane serve` as its own OS process. */
export interface Replica {
  name: string;
  url: string;
  /** The replica id it logged at start (its DBOS executor id and event-channel origin). */
  id: string;
  dataDir: string;
  child: ChildProcessByStdio<null, Readable, Readable>;
  /** Everything it logged so far. */
  output(): string;
  /** Resolves with the exit code (or null after a signal). */
  exited: Promise<number | null>;
  /** SIGTERM unless already gone, then its own data directory removed (also done after the file's tests). */
  stop(): Promise<void>;
}

/**
 * Starts a replica of the control plane as a separate process on `databaseUrl`, sharing `secretKey` with
 * its peers, with a data directory of its own (removed after the file's tests). Stopped with SIGTERM after
 * the file's tests unless already gone.
 */
export async function startReplica(opts: {
  name: string;
  databaseUrl: string;
  secretKey: string;
  env?: Record<string, string>;
  dataDir?: string;
}): Promise<Replica> {
  // A given data directory is a restart of the replica that owns it (same replica id); its owner removes it.
  const dataDir = opts.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), `clawplane-${opts.name}-`)));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CLAWPLANE_ENV: 'test',
    DATABASE_URL: opts.databaseUrl,
    CLAWPLANE_SECRET_KEY: opts.secretKey,
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_PORT: '0',
    CLAWPLANE_LOG_LEVEL: 'info',
    ...opts.env,
  };
  const child = spawn(process.execPath, [cli, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const collect = (d: Buffer) => {
    const s = d.toString();
    out += s;
    capturedLogs.push(s);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const started = await new Promise<{ url: string; id: string }>((resolve, reject) => {
    const onData = () => {
      const m =
        /"replica":"([^"]+)".*"url":"(http:\/\/127\.0\.0\.1:\d+)".*clawplane listening|"url":"(http:\/\/127\.0\.0\.1:\d+)","replica":"([^"]+)".*clawplane listening/.exec(
          out,
        );
      if (m) {
        child.stdout.off('data', onData);
        resolve(m[2] ? { url: m[2], id: m[1] ?? '' } : { url: m[3] ?? '', id: m[4] ?? '' });
      }
    };
    child.stdout.on('data', onData);
    void exited.then((code) => reject(new Error(`${opts.name} exited (${code}) before listening:\n${out.slice(-4000)}`)));
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
  };
  afterAll(stop);
  return { name: opts.name, url: started.url, id: started.id, dataDir, child, output: () => out, exited, stop };
}

/** A fresh master key for a set of replicas (they must share it to open each other's sealed secrets). */
export function sharedSecretKey(): string {
  return randomBytes(32).toString('base64');
}

/**
 * Polls `probe` until it returns true, every 20 ms, and resolves with how long that took; rejects with
 * `what` once `withinMs` has passed (the bound the property promises, e.g. "enforced within 1 s").
 */
export async function within(withinMs: number, what: string, probe: () => Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await probe()) return performance.now() - t0;
    if (performance.now() - t0 > withinMs) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The same signed-in person, talking to another replica (sessions live in the database). */
export function via(c: ApiClient, r: Replica): ApiClient {
  const other = new ApiClient(r.url, c.bearer ? { bearer: c.bearer } : {});
  other.cookies = c.cookies;
  other.csrf = c.csrf;
  return other;
}

/**
 * Onboards the platform admin through `r` (with the setup code every replica wrote) and makes it tenant
 * admin of a new tenant `slug` (with `quotas`); returns the signed-in admin and the tenant id.
 */
export async function onboardVia(r: Replica, slug: string, quotas?: Record<string, number>): Promise<{ admin: ApiClient; tenantId: string }> {
  const code = (await readFile(path.join(r.dataDir, 'setup-code'), 'utf8')).trim();
  const admin = new ApiClient(r.url);
  const res = await admin.json<{ csrfToken: string }>('POST', '/api/v1/onboarding/admin', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD, setupCode: code });
  admin.csrf = res.csrfToken;
  await admin.json('POST', '/api/v1/onboarding/oidc', { skip: true });
  await admin.json('POST', '/api/v1/onboarding/provider', { skip: true });
  await admin.json('POST', '/api/v1/onboarding/defaults', {});
  const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug, name: slug, ...(quotas ? { quotas } : {}) }, 201);
  await admin.json('POST', `/api/v1/tenants/${slug}/members`, { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
  return { admin, tenantId: t.id };
}

/** The broker URL a replica started with CLAWPLANE_BROKER_PORT logged. */
export function brokerUrl(r: Replica): string {
  const m = /"broker":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(r.output());
  if (!m?.[1]) throw new Error(`${r.name} logged no broker URL: start it with CLAWPLANE_BROKER_PORT`);
  return m[1];
}

/** Polls `probe` every 20 ms until it returns true (no time bound: the test runner's timeout is the backstop). */
export async function waitUntil(what: string, probe: () => Promise<boolean>): Promise<void> {
  void what;
  while (!(await probe())) await new Promise((r) => setTimeout(r, 20));
}
