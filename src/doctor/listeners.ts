import { readdir, readFile, readlink } from 'node:fs/promises';
import { fail, ok, type Finding } from './types.ts';

/** A TCP socket in LISTEN state, from /proc/net/tcp or tcp6 of this network namespace. */
export interface Listener {
  address: string;
  port: number;
  inode: number;
}

/** Parses /proc/net/tcp{,6}: addresses are hex, IPv4 as one little-endian word, IPv6 as four. */
export function parseProcNetTcp(text: string, v6: boolean): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '0A') continue;
    const [addrHex = '', portHex = '0'] = (f[1] ?? '').split(':');
    out.push({ address: v6 ? ipv6(addrHex) : ipv4(addrHex), port: parseInt(portHex, 16), inode: Number(f[9]) });
  }
  return out;
}

function ipv4(hex: string): string {
  const b = Buffer.from(hex, 'hex');
  return `${b[3]}.${b[2]}.${b[1]}.${b[0]}`;
}

function ipv6(hex: string): string {
  const words: string[] = [];
  for (let i = 0; i < 32; i += 8) {
    const w =
      hex
        .slice(i, i + 8)
        .match(/../g)
        ?.reverse()
        .join('') ?? '00000000';
    words.push(w.slice(0, 4), w.slice(4));
  }
  const full = words.map((w) => w.replace(/^0+(?=.)/, '')).join(':');
  if (full === '0:0:0:0:0:0:0:0') return '::';
  if (full === '0:0:0:0:0:0:0:1') return '::1';
  const mapped = /^0:0:0:0:0:ffff:([0-9a-f]+):([0-9a-f]+)$/.exec(full);
  if (mapped) {
    const n = (parseInt(mapped[1] ?? '0', 16) << 16) | parseInt(mapped[2] ?? '0', 16);
    return `::ffff:${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  return full;
}

export function isLoopback(address: string): boolean {
  return /^127\./.test(address) || address === '::1' || /^::ffff:127\./.test(address);
}

/** Processes of this control plane on this host: this one and any `clawplane serve`. */
export async function clawplanePids(): Promise<Set<number>> {
  const pids = new Set<number>([process.pid]);
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const argv = cmd.split('\0');
    if (argv.includes('serve') && argv.some((a) => /(src\/cli\/main\.ts|bin\/clawplane)$/.test(a))) pids.add(Number(p));
  }
  return pids;
}

/** Which of `pids` holds each socket inode. */
async function owners(pids: Set<number>): Promise<Map<number, number>> {
  const byInode = new Map<number, number>();
  for (const pid of pids) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
      if (m) byInode.set(Number(m[1]), pid);
    }
  }
  return byInode;
}

/**
 * Public-port audit: a listener of this control plane on a non-loopback address that the configuration
 * did not ask for fails (Clawplane listens on loopback unless CLAWPLANE_HOST says otherwise). Other
 * processes' public listeners are named in the detail; they are the host's business.
 */
export async function checkListeners(opts: { asked: { host: string; port: number }[]; ownPids: Set<number> }): Promise<Finding> {
  const listeners = [
    ...parseProcNetTcp(await readFile('/proc/net/tcp', 'utf8').catch(() => ''), false),
    ...parseProcNetTcp(await readFile('/proc/net/tcp6', 'utf8').catch(() => ''), true),
  ].filter((l) => !isLoopback(l.address));
  const own = await owners(opts.ownPids);
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::' || h === '';
  const askedFor = (l: Listener) =>
    opts.asked.some((a) => a.port === l.port && (a.host === l.address || wildcard(a.host) || (wildcard(l.address) && !isLoopback(a.host))));
  const show = (l: Listener) => `${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.port}`;
  const ours = listeners.filter((l) => own.has(l.inode));
  const unasked = ours.filter((l) => !askedFor(l));
  const others = listeners.filter((l) => !own.has(l.inode));
  const otherText = others.length ? `; not Clawplane's: ${others.map(show).join(', ')}` : '';
  if (unasked.length > 0) {
    return fail(
      `listening on non-loopback address(es) the configuration did not ask for: ${unasked.map((l) => `${show(l)} (pid ${own.get(l.inode)})`).join(', ')}${otherText}`,
      'bind it to 127.0.0.1 (or set CLAWPLANE_HOST to the address you mean to expose) and restart',
    );
  }
  const asked = ours.length ? `public by configuration: ${ours.map(show).join(', ')}` : 'Clawplane listens on loopback only';
  return ok(`${asked}${otherText}`);
}
