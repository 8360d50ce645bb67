/**
 * Warm resume (issue 10), the driver-level parts: the driver reports honestly whether it can
 * suspend; the seccomp filter a suspendable sandbox needs really works inside bubblewrap (io_uring
 * refused so Node falls back to epoll, user namespaces refused in place of --disable-userns); and, when
 * the patched CRIU is built (scripts/build-criu.sh), a bubblewrap-sandboxed Node server is dumped and
 * restored and answers again over a socket the host made and passed in (the construction and every
 * flag: docs/adr/0006-warm-resume-criu.md, scripts/criu-lab.sh). Driver suspend/resume on a real gateway:
 * test/resume-gateway.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local/driver.ts';
import { listenHostSocket } from '../src/sandbox/drivers/local/host-socket.ts';
import { SandboxResumeError } from '../src/sandbox/types.ts';
import type { SandboxSpec } from '../src/sandbox/types.ts';
import { Criu } from '../src/sandbox/drivers/local/snapshot/criu.ts';
import { prepareRestoreRoot, rootLayout, suspendableDirArgs } from '../src/sandbox/drivers/local/snapshot/restore-root.ts';
import { suspendableSeccompFilter } from '../src/sandbox/drivers/local/snapshot/seccomp.ts';
import { socketRequest } from '../src/sandbox/host/socket-http.ts';

const nodeBin = process.execPath;

test('the local driver says whether it can suspend, with a reason when it cannot', async () => {
  const driver = new LocalSandboxDriver({
    root: '/tmp/unused',
    broker: undefined,
    log: pino({ level: 'silent' }),
    dataBytes: 1 << 30,
    nproc: 100,
    nofile: 100,
    tmpBytes: 1 << 20,
    cgroup: { memoryBytes: 0, pids: 0, cpus: 0 },
    criuBin: '/nonexistent/criu',
    warmResume: true,
  });
  const s = await driver.snapshots.support();
  assert.equal(s.supported, false);
  if (!s.supported) assert.match(s.reason, /scripts\/build-criu\.sh/);
  // Warm resume off (the default) says so first, whatever CRIU there is.
  const d2 = new LocalSandboxDriver({
    root: '/tmp/unused',
    broker: undefined,
    log: pino({ level: 'silent' }),
    dataBytes: 1 << 30,
    nproc: 100,
    nofile: 100,
    tmpBytes: 1 << 20,
    cgroup: { memoryBytes: 0, pids: 0, cpus: 0 },
  });
  const s2 = await d2.snapshots.support();
  assert.equal(s2.supported, false);
  if (!s2.supported) assert.match(s2.reason, /warm resume is off/);
  // auto (the server's default): on only where CRIU works here; without it, the reason and plain sandboxes.
  const d3 = new LocalSandboxDriver({
    root: '/tmp/unused',
    broker: undefined,
    log: pino({ level: 'silent' }),
    dataBytes: 1 << 30,
    nproc: 100,
    nofile: 100,
    tmpBytes: 1 << 20,
    cgroup: { memoryBytes: 0, pids: 0, cpus: 0 },
    criuBin: '/nonexistent/criu',
    warmResume: 'auto',
  });
  const s3 = await d3.snapshots.support();
  assert.equal(s3.supported, false);
  if (!s3.supported) assert.match(s3.reason, /unavailable on this host \(CLAWPLANE_WARM_RESUME=auto\): CRIU is not installed at \/nonexistent\/criu/);
  assert.equal(await d3.snapshots.startsSuspendable(), false);
});

test('the suspendable seccomp filter refuses io_uring and new user namespaces inside bubblewrap', {
  skip: spawnSync('bwrap', ['--version']).status !== 0 ? 'bubblewrap is not installed' : false,
}, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-seccomp-'));
  try {
    const bpf = path.join(dir, 'filter.bpf');
    await writeFile(bpf, suspendableSeccompFilter());
    const probe = path.join(dir, 'probe.mjs');
    // A Node server: with the filter libuv must not hold any io_uring fd.
    await writeFile(
      probe,
      `import http from 'node:http'; import fs from 'node:fs';
const s = http.createServer().listen(0, '127.0.0.1', async () => {
  await fs.promises.readFile('/etc/hostname').catch(() => undefined);
  const n = fs.readdirSync('/proc/self/fd').filter((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f).includes('io_uring'); } catch { return false; } }).length;
  console.log('io_uring_fds=' + n); s.close();
});`,
    );
    const nodeDir = path.dirname(path.dirname(nodeBin));
    const base = [
      '--unshare-all',
      '--unshare-user',
      '--new-session',
      '--as-pid-1',
      '--cap-drop',
      'ALL',
      '--ro-bind',
      '/usr',
      '/usr',
      '--symlink',
      'usr/lib',
      '/lib',
      '--symlink',
      'usr/lib64',
      '/lib64',
      '--symlink',
      'usr/bin',
      '/bin',
      '--ro-bind',
      nodeDir,
      '/opt/node',
      '--ro-bind',
      dir,
      '/probe',
      '--proc',
      '/proc',
      '--dev',
      '/dev',
    ];
    const run = (argv: string[], seccomp: boolean) =>
      spawnSync('/bin/sh', ['-c', seccomp ? 'exec 9<"$0"; exec bwrap --seccomp 9 "$@"' : 'exec bwrap "$@"', bpf, ...base, ...argv], {
        encoding: 'utf8',
        timeout: 30_000,
      });
    const without = run(['/opt/node/bin/node', '/probe/probe.mjs'], false);
    assert.match(without.stdout, /io_uring_fds=[1-9]/, `without the filter Node opens io_uring rings (else this test proves nothing): ${without.stderr}`);
    const withF = run(['/opt/node/bin/node', '/probe/probe.mjs'], true);
    assert.match(withF.stdout, /io_uring_fds=0/, withF.stderr);
    const userns = run(['/usr/bin/unshare', '--user', '/bin/true'], true);
    assert.notEqual(userns.status, 0);
    assert.match(userns.stderr, /Operation not permitted/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('restore root: the mount points and symlinks bubblewrap makes, every directory root-owned 0755', async () => {
  const args = [
    '--unshare-user',
    '--uid',
    '0',
    '--info-fd',
    '3',
    '--seccomp',
    '9',
    ...suspendableDirArgs(['/opt/node', '/tenant/work', '/run/clawplane/out']),
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/lib',
    '/lib',
    '--bind',
    '/x',
    '/tenant/work',
    '--ro-bind',
    '/y',
    '/run/clawplane/out',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--size',
    '1024',
    '--tmpfs',
    '/tmp',
    '--setenv',
    'A',
    'B',
    '--chdir',
    '/tenant',
    '--remount-ro',
    '/',
    '/bin/sh',
    '-c',
    'true',
  ];
  assert.deepEqual(suspendableDirArgs(['/opt/node', '/tenant/work', '/run/clawplane/out']), [
    '--perms',
    '0755',
    '--dir',
    '/opt',
    '--perms',
    '0755',
    '--dir',
    '/run',
    '--perms',
    '0755',
    '--dir',
    '/tenant',
    '--perms',
    '0755',
    '--dir',
    '/run/clawplane',
  ]);
  const layout = rootLayout(args);
  assert.deepEqual(layout.dirs.sort(), ['/dev', '/opt', '/proc', '/run', '/run/clawplane', '/run/clawplane/out', '/tenant', '/tenant/work', '/tmp', '/usr']);
  assert.deepEqual(layout.symlinks, [{ target: 'usr/lib', link: '/lib' }]);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-rroot-'));
  try {
    await prepareRestoreRoot(path.join(dir, 'root'), args);
    const st = await stat(path.join(dir, 'root', 'run', 'clawplane', 'out'));
    assert.equal(st.mode & 0o7777, 0o755);
    assert.equal(st.uid, process.getuid?.() ?? st.uid);
    assert.deepEqual((await readdir(path.join(dir, 'root'))).sort(), ['dev', 'lib', 'opt', 'proc', 'run', 'tenant', 'tmp', 'usr']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

const CRIU_BIN = process.env['CLAWPLANE_CRIU_BIN'] ?? '/var/tmp/clawplane-criu/bin/criu';
/** The tenant's host uid in this test (no passwd entry needed). */
const TENANT_UID = 61990;

async function criuSkip(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (CRIU, and the uid drop before bubblewrap)';
  if (spawnSync('bwrap', ['--version']).status !== 0) return 'bubblewrap is not installed';
  const s = await new Criu(CRIU_BIN).support();
  if (!s.supported) return `${s.reason} (CI does not build CRIU)`;
  let stamp = '';
  try {
    stamp = readFileSync(path.join(path.dirname(CRIU_BIN), 'criu.version'), 'utf8').trim();
  } catch {
    /* no stamp: not built by build-criu.sh */
  }
  const level = Number(/\+p(\d+)$/.exec(stamp)?.[1] ?? 0);
  if (level < 4)
    return `CRIU at ${CRIU_BIN} (${stamp || 'no criu.version'}) lacks patch p4 (host-made unix sockets as --external): re-run scripts/build-criu.sh`;
  return false;
}

const status = (pid: number) =>
  Object.fromEntries(
    readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(/:\s+/) as [string, string]),
  );

test('CRIU dumps a bubblewrap-sandboxed Node server and restores it: same process state, host-made socket, isolation kept', {
  skip: await criuSkip(),
  timeout: 120_000,
}, async () => {
  const dir = await mkdtemp('/var/tmp/clawplane-resume-');
  await chmod(dir, 0o711);
  const pids: number[] = [];
  const servers: { close(): void }[] = [];
  try {
    const app = path.join(dir, 'app');
    const host = path.join(dir, 'host');
    const img = path.join(dir, 'img');
    await mkdir(app, { mode: 0o755 });
    await mkdir(host, { mode: 0o700 });
    await mkdir(img, { mode: 0o700 });
    for (const d of ['work', 'log']) {
      await mkdir(path.join(dir, d), { mode: 0o700 });
      await chown(path.join(dir, d), TENANT_UID, TENANT_UID);
    }
    await writeFile(path.join(app, 'filter.bpf'), suspendableSeccompFilter());
    // State only memory holds (a counter, a random boot id, 8 MB of heap) and a Worker after restore.
    await writeFile(
      path.join(app, 'server.mjs'),
      `import http from 'node:http'; import { Worker } from 'node:worker_threads';
const boot = Math.random().toString(36).slice(2); let n = 0; const heap = Buffer.alloc(8 << 20, 7);
http.createServer((req, res) => {
  n++;
  if (req.url === '/worker') {
    const w = new Worker('require("node:worker_threads").parentPort.postMessage(42)', { eval: true });
    w.once('message', (m) => { res.end(JSON.stringify({ n, boot, worker: m })); void w.terminate(); });
    return;
  }
  res.end(JSON.stringify({ n, boot, pid: process.pid, heap: heap[123] }));
}).listen({ fd: 4 });`,
    );
    await chmod(path.join(app, 'server.mjs'), 0o644);
    await chmod(path.join(app, 'filter.bpf'), 0o644);

    const nodeDir = path.dirname(path.dirname(process.execPath));
    const binds: [string, string, string][] = [
      ['--ro-bind', nodeDir, '/opt/node'],
      ['--ro-bind', app, '/opt/app'],
      ['--bind', path.join(dir, 'work'), '/tenant/work'],
      ['--bind', path.join(dir, 'log'), '/tenant/log'],
    ];
    // The local driver's sandbox with the changes a suspendable one needs (ADR 0006): no cgroup
    // namespace, uid 0 inside (still the tenant's unprivileged host uid, no capabilities), the
    // supervisor (here: the server) as pid 1, the seccomp filter instead of --disable-userns, stdio
    // inside the sandbox, parent directories 0755.
    const bwrapArgs = [
      '--unshare-user',
      '--unshare-ipc',
      '--unshare-pid',
      '--unshare-net',
      '--unshare-uts',
      '--new-session',
      '--as-pid-1',
      '--cap-drop',
      'ALL',
      '--uid',
      '0',
      '--gid',
      '0',
      '--hostname',
      'sandbox',
      '--info-fd',
      '3',
      '--seccomp',
      '5',
      ...suspendableDirArgs(binds.map((b) => b[2])),
      '--ro-bind',
      '/usr',
      '/usr',
      '--symlink',
      'usr/lib',
      '/lib',
      '--symlink',
      'usr/lib64',
      '/lib64',
      '--symlink',
      'usr/bin',
      '/bin',
      ...binds.flat(),
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      '--size',
      String(16 << 20),
      '--tmpfs',
      '/tmp',
      '--clearenv',
      '--setenv',
      'PATH',
      '/usr/bin:/bin',
      '--chdir',
      '/tenant',
      '--remount-ro',
      '/',
      '/bin/sh',
      '-c',
      'exec /opt/node/bin/node /opt/app/server.mjs </dev/null >>/tenant/log/server.log 2>&1',
    ];
    const ingressPath = path.join(host, 'ingress.sock');
    const ingress = await listenHostSocket(ingressPath);
    servers.push(ingress);
    const seccompFd = openSync(path.join(app, 'filter.bpf'), 'r');
    const setpriv = [`--reuid=${TENANT_UID}`, `--regid=${TENANT_UID}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--'];
    const child = spawn('setpriv', [...setpriv, 'bwrap', ...bwrapArgs], { detached: true, stdio: ['ignore', 'ignore', 'pipe', 'pipe', ingress.fd, seccompFd] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const pid = await new Promise<number>((resolve, reject) => {
      let text = '';
      (child.stdio[3] as net.Socket).on('data', (d: Buffer) => {
        text += d.toString();
        const m = /"child-pid":\s*(\d+)/.exec(text);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (code) => reject(new Error(`bwrap exited (${code}): ${stderr}`)));
    });
    pids.push(pid);
    closeSync(seccompFd);
    await ingress.release();
    child.unref();
    (child.stdio[3] as net.Socket).unref();

    // `connection: close`: an open connection is an accepted socket in the host's netns that CRIU cannot dump.
    const get = (p = '/') => socketRequest(ingressPath, { path: p, headers: { connection: 'close' }, timeoutMs: 10_000 });
    let first: { n: number; boot: string; pid: number } | undefined;
    for (let i = 0; i < 100 && !first; i++) {
      first = await get()
        .then((r) => JSON.parse(r.body) as { n: number; boot: string; pid: number })
        .catch(() => undefined);
      if (!first) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(first, `the sandboxed server never answered: ${stderr}`);
    assert.equal(first.n, 1);
    assert.equal(first.pid, 1);

    const criu = new Criu(CRIU_BIN);
    const dumped = await criu.dump(pid, img, { externalUnix: [ingress.ino] });
    // Killed by the dump; the process may linger as a zombie until its parent reaps it (asynchronously).
    const dead = async () => {
      const st = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
      return st === undefined || /^\d+ \(.*\) Z /.test(st);
    };
    for (let i = 0; i < 50 && !(await dead()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(await dead(), 'dump kills the tree');
    const imageBytes = (await readdir(img)).reduce((sum, f) => sum + (f.endsWith('.img') ? statSync(path.join(img, f)).size : 0), 0);

    // Resume: a fresh host socket at the same path, given back in place of the dumped one.
    const root = path.join(dir, 'rootfs');
    await prepareRestoreRoot(root, bwrapArgs);
    await rm(ingressPath, { force: true });
    const again = await listenHostSocket(ingressPath);
    servers.push(again);
    const restored = await criu.restore(img, { root, uid: TENANT_UID, inherit: [{ fd: again.fd, key: `socket:[${ingress.ino}]` }] });
    pids.push(restored.pid);
    await again.release();
    const t0 = performance.now();
    const second = JSON.parse((await get()).body) as { n: number; boot: string; pid: number };
    const firstAnswerMs = performance.now() - t0;
    assert.equal(second.n, 2, 'the counter in memory continued');
    assert.equal(second.boot, first.boot, 'the same process state, not a new start');
    const worker = JSON.parse((await get('/worker')).body) as { worker: number };
    assert.equal(worker.worker, 42, 'a new Worker starts after restore');

    // The isolation the restored tree keeps.
    const st = status(restored.pid);
    assert.match(st['Uid'] ?? '', new RegExp(`^${TENANT_UID}\\s+${TENANT_UID}`));
    assert.equal(st['CapEff'], '0000000000000000');
    assert.equal(st['CapBnd'], '0000000000000000');
    assert.equal(st['NoNewPrivs'], '1');
    assert.equal(st['Seccomp'], '2');
    const mounts = await readFile(`/proc/${restored.pid}/mountinfo`, 'utf8');
    assert.match(mounts.split('\n')[0] ?? '', / \/ ro,nosuid,nodev/, 'the root is read-only');
    assert.match(mounts, / \/usr ro,/);
    assert.match(mounts, / \/tenant\/work rw,/);
    const netdev = await readFile(`/proc/${restored.pid}/net/dev`, 'utf8');
    assert.deepEqual(
      netdev
        .split('\n')
        .slice(2)
        .filter(Boolean)
        .map((l) => l.trim().split(':')[0]),
      ['lo'],
      'no network but lo',
    );
    for (const ns of ['user', 'mnt', 'pid', 'net', 'ipc', 'uts']) {
      assert.notEqual(await readlinkNs(restored.pid, ns), await readlinkNs(process.pid, ns), `own ${ns} namespace`);
    }
    assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(root), 'nothing stays mounted on the host');
    console.log(
      `criu: dump ${Math.round(dumped.ms)} ms, image ${(imageBytes / 2 ** 20).toFixed(1)} MiB, restore ${Math.round(restored.ms)} ms, first answer ${Math.round(firstAnswerMs)} ms`,
    );
  } finally {
    for (const s of servers) s.close();
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // CLAWPLANE_TEST_KEEP=1 keeps the directory (images, CRIU logs) for a look after a failure.
    if (!process.env['CLAWPLANE_TEST_KEEP']) await rm(dir, { recursive: true, force: true });
  }
});

async function readlinkNs(pid: number, ns: string): Promise<string> {
  return readlink(`/proc/${pid}/ns/${ns}`);
}

test('resume refuses what it cannot use, before touching anything: no snapshot, a used one, another instance', { skip: await criuSkip() }, async () => {
  const dir = await mkdtemp('/var/tmp/clawplane-resume-refuse-');
  try {
    const driver = new LocalSandboxDriver({
      root: path.join(dir, 'sb'),
      broker: undefined,
      log: pino({ level: 'silent' }),
      dataBytes: 1 << 30,
      nproc: 100,
      nofile: 100,
      tmpBytes: 1 << 20,
      cgroup: { memoryBytes: 0, pids: 0, cpus: 0 },
      criuBin: CRIU_BIN,
      warmResume: true,
    });
    const instanceId = '00000000-0000-4000-8000-0000000010e1';
    const spec = {
      tenantId: instanceId,
      instanceId,
      runtime: { version: 'x', dir: '/nonexistent', nodeRel: 'node', entryRel: 'openclaw.mjs' },
      configs: {},
      gatewayToken: 't',
      hooksToken: 'h',
      tenantUid: TENANT_UID,
      clusterId: 'test',
    } as unknown as SandboxSpec;
    const snap = path.join(dir, 'snap');
    await mkdir(snap, { mode: 0o700 });
    await assert.rejects(driver.snapshots.resumeFrom(spec, snap), (e: unknown) => e instanceof SandboxResumeError && /No usable snapshot/.test(e.message));
    await writeFile(
      path.join(snap, 'snapshot.json'),
      JSON.stringify({ instanceId: '00000000-0000-4000-8000-0000000010e2', tenantUid: TENANT_UID, clusterId: 'test' }),
    );
    await assert.rejects(driver.snapshots.resumeFrom(spec, snap), (e: unknown) => e instanceof SandboxResumeError && /another instance/.test(e.message));
    await writeFile(path.join(snap, 'snapshot.json'), JSON.stringify({ instanceId, tenantUid: TENANT_UID, clusterId: 'test' }));
    await writeFile(path.join(snap, 'used'), 'x');
    await assert.rejects(driver.snapshots.resumeFrom(spec, snap), (e: unknown) => e instanceof SandboxResumeError && /already used/.test(e.message));
    assert.deepEqual((await readdir(snap)).sort(), ['snapshot.json', 'used'], 'nothing else made');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
