/**
 * The seccomp filter of a suspendable sandbox (issue 10), as a classic BPF program for
 * `bwrap --seccomp FD` (inherited by every process inside):
 * - `io_uring_setup/enter/register` fail with ENOSYS. CRIU cannot dump io_uring ("Unknown shit 600
 *   (anon_inode:[io_uring])"); Node 24's libuv then falls back to epoll. `UV_USE_IO_URING=0` is not
 *   enough: libuv still opens rings (measured: 3 io_uring fds with and without it).
 * - New user namespaces are refused (EPERM) for clone/unshare with CLONE_NEWUSER, and clone3 returns
 *   ENOSYS so glibc falls back to clone (whose flags a filter can read), as Flatpak does. This replaces
 *   bwrap's `--disable-userns`, whose nested user namespace CRIU cannot dump ("Can't setns 8/net:
 *   Operation not permitted": the net namespace belongs to the outer user namespace).
 */
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JSET_K = 0x45;
const RET_K = 0x06;
const AUDIT_ARCH_X86_64 = 0xc000003e;
const ALLOW = 0x7fff0000;
const ERRNO = 0x00050000;
const ENOSYS = 38;
const EPERM = 1;
const CLONE_NEWUSER = 0x10000000;
const NR = { clone: 56, unshare: 272, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427, clone3: 435 } as const;

function ins(code: number, jt: number, jf: number, k: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(code, 0);
  b.writeUInt8(jt, 2);
  b.writeUInt8(jf, 3);
  b.writeUInt32LE(k >>> 0, 4);
  return b;
}

/** The filter for x86-64 (other architectures pass through unfiltered: the local driver runs on x86-64 only). */
export function suspendableSeccompFilter(): Buffer {
  const prog = [
    /* 0 */ ins(LD_W_ABS, 0, 0, 4), // arch
    /* 1 */ ins(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
    /* 2 */ ins(RET_K, 0, 0, ALLOW),
    /* 3 */ ins(LD_W_ABS, 0, 0, 0), // syscall number
    /* 4 */ ins(JEQ_K, 8, 0, NR.io_uring_setup), // → 13 ENOSYS
    /* 5 */ ins(JEQ_K, 7, 0, NR.io_uring_enter),
    /* 6 */ ins(JEQ_K, 6, 0, NR.io_uring_register),
    /* 7 */ ins(JEQ_K, 5, 0, NR.clone3),
    /* 8 */ ins(JEQ_K, 1, 0, NR.clone), // → 10 check flags
    /* 9 */ ins(JEQ_K, 0, 2, NR.unshare), // → 10, else → 12 allow
    /* 10 */ ins(LD_W_ABS, 0, 0, 16), // args[0], low 32 bits (flags)
    /* 11 */ ins(JSET_K, 2, 0, CLONE_NEWUSER), // → 14 EPERM
    /* 12 */ ins(RET_K, 0, 0, ALLOW),
    /* 13 */ ins(RET_K, 0, 0, ERRNO | ENOSYS),
    /* 14 */ ins(RET_K, 0, 0, ERRNO | EPERM),
  ];
  return Buffer.concat(prog);
}
