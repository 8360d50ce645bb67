/**
 * The command that starts a local sandbox: the first process joins the cgroups, then becomes
 * prlimit → setpriv (the tenant's host uid, no capabilities) → bubblewrap (new namespaces, no network,
 * read-only system mounts) → the supervisor. Flags and reasons: docs/adr/0005-local-sandbox-bubblewrap.md.
 */
import type { InstanceDirs } from '../../host/dirs.ts';
import { MOUNTS } from '../../host/dirs.ts';
import type { SandboxSpec } from '../../types.ts';
import { suspendableDirArgs } from './snapshot/restore-root.ts';

const INNER_UID = 1000;

/**
 * The first process of a suspendable sandbox (pid 1, `--as-pid-1`; bwrap's own init cannot be dumped):
 * stdio opened in here (a host fd fails the dump), fds 3 and 6 (info, seccomp) closed, the supervisor
 * started in the background with fds 4/5, which this shell then closes. As pid 1 it reaps every
 * orphan (dash's `wait` reaps any child) and forwards SIGTERM/SIGINT (pid 1 ignores signals it has no
 * handler for); it exits with the supervisor.
 */
const WARM_INIT = [
  'exec 3>&- 6>&- </dev/null >>/tenant/log/stdio.log 2>&1',
  '"$@" & p=$!',
  'exec 4>&- 5>&-',
  "trap 'kill -TERM $p 2>/dev/null' TERM INT",
  'while :; do wait $p; s=$?; kill -0 $p 2>/dev/null || exit $s; done',
].join('\n');

/** bubblewrap's arguments; fd 3 is its info pipe, 4/5 the ingress and control sockets, 6 the seccomp filter (warm). */
export function bwrapArgs(spec: SandboxSpec, p: InstanceDirs, o: { warm: boolean; tmpBytes: number }): string[] {
  const { warm } = o;
  // --jitless: no JIT code or executable memory for a proxy that is mostly idle (measured while proxying 200
  // streamed requests: 62 MB RSS / 28 MB PSS vs 73 / 34 without; no slower; --lite-mode the same, --single-threaded
  // and --v8-pool-size=1 ~1 MB). It also turns off WebAssembly, which the supervisor (node: http/net only) never uses.
  const nodeArgv = [
    `${MOUNTS.runtime}/${spec.runtime.nodeRel}`,
    '--max-semi-space-size=1',
    '--max-old-space-size=64',
    '--jitless',
    `${MOUNTS.conf}/supervisor.mjs`,
    `${MOUNTS.conf}/sandbox.json`,
  ];
  const binds: [string, string, string][] = [
    ['--ro-bind', spec.runtime.dir, MOUNTS.runtime],
    ['--ro-bind', p.conf, MOUNTS.conf],
    ['--ro-bind', p.out, MOUNTS.out],
    ['--bind', p.work, MOUNTS.work],
    ['--bind', p.sharedRw, MOUNTS.sharedRw],
    ['--ro-bind', p.sharedRo, MOUNTS.sharedRo],
    ['--bind', p.log, MOUNTS.log],
  ];
  // A suspendable sandbox (warm resume, ADR 0006) differs where CRIU needs it: no cgroup namespace;
  // uid 0 inside (still the tenant's unprivileged host uid, no capabilities); a seccomp filter (fd 6:
  // io_uring and new user namespaces refused) instead of --disable-userns; our own pid 1 (WARM_INIT);
  // the parents of the binds 0755 so the restore root can match them.
  const isolation = warm
    ? ['--unshare-user', '--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--new-session', '--as-pid-1', '--seccomp', '6']
    : ['--unshare-all', '--unshare-user', '--disable-userns', '--new-session'];
  const innerUid = String(warm ? 0 : INNER_UID);
  return [
    // No --die-with-parent: gateways must survive a control-plane restart (adopted by pid instead).
    ...isolation,
    '--cap-drop',
    'ALL',
    '--uid',
    innerUid,
    '--gid',
    innerUid,
    '--hostname',
    'sandbox',
    '--info-fd',
    '3',
    ...(warm ? suspendableDirArgs(binds.map((b) => b[2])) : []),
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
    '--symlink',
    'usr/sbin',
    '/sbin',
    ...binds.flat(),
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--size',
    String(o.tmpBytes),
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
    ...(warm ? ['/bin/sh', '-c', WARM_INIT, 'init', ...nodeArgv] : nodeArgv),
  ];
}

/** /bin/sh's argv: join the cgroups ($CLAWPLANE_CGROUP_PROCS), then exec prlimit → setpriv → bwrap (one pid throughout). */
export function launchArgv(o: { uid: number; dataBytes: number; nproc: number; nofile: number; bwrap: string; bwrapArgs: string[] }): string[] {
  const prlimit = [`--data=${o.dataBytes}`, `--nproc=${o.nproc}`, `--nofile=${o.nofile}`, '--'];
  const setpriv = [`--reuid=${o.uid}`, `--regid=${o.uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--'];
  const script = 'for f in $CLAWPLANE_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done; exec "$0" "$@"';
  return ['-c', script, 'prlimit', ...prlimit, 'setpriv', ...setpriv, o.bwrap, ...o.bwrapArgs];
}
