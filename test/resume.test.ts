/**
 * Warm resume (issue 10), the parts that exist so far: the driver reports honestly whether it can
 * suspend, and the seccomp filter a suspendable sandbox needs really works inside bubblewrap (io_uring
 * refused so Node falls back to epoll, user namespaces refused in place of --disable-userns). The
 * suspend → chat → resume test is not written yet: see docs/adr/0006-warm-resume-criu.md.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local.ts';
import { Criu } from '../src/sandbox/snapshot/criu.ts';
import { suspendableSeccompFilter } from '../src/sandbox/snapshot/seccomp.ts';

const nodeBin = process.execPath;

test('the local driver says whether it can suspend, with a reason when it cannot', async () => {
  const driver = new LocalSandboxDriver({ root: '/tmp/unused', broker: undefined, log: pino({ level: 'silent' }), dataBytes: 1 << 30, nproc: 100, nofile: 100, tmpBytes: 1 << 20, cgroup: { memoryBytes: 0, pids: 0, cpus: 0 }, criuBin: '/nonexistent/criu' });
  const s = await driver.suspendSupport();
  assert.equal(s.supported, false);
  if (!s.supported) assert.match(s.reason, /scripts\/build-criu\.sh/);
  const built = new Criu('/var/tmp/clawplane-criu/bin/criu').support();
  const d2 = new LocalSandboxDriver({ root: '/tmp/unused', broker: undefined, log: pino({ level: 'silent' }), dataBytes: 1 << 30, nproc: 100, nofile: 100, tmpBytes: 1 << 20, cgroup: { memoryBytes: 0, pids: 0, cpus: 0 } });
  const s2 = await d2.suspendSupport();
  assert.equal(s2.supported, false);
  if (!s2.supported) assert.match(s2.reason, built.supported ? /host-made ingress\/control sockets/ : /CRIU/);
});

test('the suspendable seccomp filter refuses io_uring and new user namespaces inside bubblewrap', { skip: spawnSync('bwrap', ['--version']).status !== 0 ? 'bubblewrap is not installed' : false }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-seccomp-'));
  try {
    const bpf = path.join(dir, 'filter.bpf');
    await writeFile(bpf, suspendableSeccompFilter());
    const probe = path.join(dir, 'probe.mjs');
    // A Node server: with the filter libuv must not hold any io_uring fd.
    await writeFile(probe, `import http from 'node:http'; import fs from 'node:fs';
const s = http.createServer().listen(0, '127.0.0.1', async () => {
  await fs.promises.readFile('/etc/hostname').catch(() => undefined);
  const n = fs.readdirSync('/proc/self/fd').filter((f) => { try { return fs.readlinkSync('/proc/self/fd/' + f).includes('io_uring'); } catch { return false; } }).length;
  console.log('io_uring_fds=' + n); s.close();
});`);
    const nodeDir = path.dirname(path.dirname(nodeBin));
    const base = ['--unshare-all', '--unshare-user', '--new-session', '--as-pid-1', '--cap-drop', 'ALL', '--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64', '--symlink', 'usr/bin', '/bin', '--ro-bind', nodeDir, '/opt/node', '--ro-bind', dir, '/probe', '--proc', '/proc', '--dev', '/dev'];
    const run = (argv: string[], seccomp: boolean) =>
      spawnSync('/bin/sh', ['-c', seccomp ? 'exec 9<"$0"; exec bwrap --seccomp 9 "$@"' : 'exec bwrap "$@"', bpf, ...base, ...argv], { encoding: 'utf8', timeout: 30_000 });
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
