import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress, LookupOptions } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';
import { ClawplaneError } from '../errors.ts';

/**
 * The SSRF guard for every user-supplied URL: provider base URLs, webhooks (issue 4; OWASP SSRF
 * cheat sheet). A URL passes only if it is https (or its host was allowed by a platform admin) and every
 * address its host resolves to is public (or explicitly allowed). The connection is then pinned to the
 * address that was checked, so DNS cannot answer differently the second time (rebinding), and
 * redirects are never followed because the target of a redirect was never checked.
 */

/** A URL or its resolved address is not allowed. A 400: the user supplied it and can change it. */
export class EgressRefusedError extends ClawplaneError {
  constructor(message: string, reason: string) {
    super('egress_refused', 400, message, { details: { reason } });
  }
}

/** The target was allowed but could not be reached, timed out or sent too much. */
export class EgressFailedError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('egress_failed', 502, message, { cause });
  }
}

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Host name → addresses. Injected in tests; the default asks the system resolver for all of them. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export interface EgressPolicy {
  /**
   * Host names (or IP literals) a platform admin allowed: they may use http:// and may resolve to
   * private or loopback addresses (a self-hosted Ollama or vLLM). Cloud metadata stays refused.
   * An entry `host:port` (IPv6: `[addr]:port`) allows that port only.
   */
  allowedHosts?: readonly string[];
  /** CIDR ranges a platform admin allowed even though they are not public, e.g. "10.20.0.0/16". */
  allowedCidrs?: readonly string[];
  resolver?: Resolver;
  /** Connect + idle timeout for guardedFetch, in milliseconds (default 15 s). */
  timeoutMs?: number;
  /** Largest response body guardedFetch reads (default 10 MiB). */
  maxResponseBytes?: number;
}

export interface CheckedUrl {
  url: URL;
  /** Lower-case, without brackets or a trailing dot. */
  hostname: string;
  /** The checked addresses; guardedFetch connects only to these. */
  addresses: ResolvedAddress[];
  allowListed: boolean;
}

// Named ranges, so a refusal says which rule matched (RFC 6890 special-purpose registries).
const RANGES: [string, 'ipv4' | 'ipv6', string, number][] = [
  ['an unspecified address', 'ipv4', '0.0.0.0', 8],
  ['a private address', 'ipv4', '10.0.0.0', 8],
  ['a carrier-grade NAT address', 'ipv4', '100.64.0.0', 10],
  ['a loopback address', 'ipv4', '127.0.0.0', 8],
  ['a link-local address', 'ipv4', '169.254.0.0', 16],
  ['a private address', 'ipv4', '172.16.0.0', 12],
  ['a reserved address', 'ipv4', '192.0.0.0', 24],
  ['a documentation address', 'ipv4', '192.0.2.0', 24],
  ['a reserved address', 'ipv4', '192.88.99.0', 24],
  ['a private address', 'ipv4', '192.168.0.0', 16],
  ['a benchmarking address', 'ipv4', '198.18.0.0', 15],
  ['a documentation address', 'ipv4', '198.51.100.0', 24],
  ['a documentation address', 'ipv4', '203.0.113.0', 24],
  ['a multicast address', 'ipv4', '224.0.0.0', 4],
  ['a reserved address', 'ipv4', '240.0.0.0', 4],
  ['an unspecified address', 'ipv6', '::', 128],
  ['a loopback address', 'ipv6', '::1', 128],
  ['an IPv4-compatible address', 'ipv6', '::', 96],
  ['a local NAT64 address', 'ipv6', '64:ff9b:1::', 48],
  ['a discard-only address', 'ipv6', '100::', 64],
  ['a reserved address', 'ipv6', '2001::', 23],
  ['a documentation address', 'ipv6', '2001:db8::', 32],
  ['a documentation address', 'ipv6', '3fff::', 20],
  ['a unique-local (private) address', 'ipv6', 'fc00::', 7],
  ['a link-local address', 'ipv6', 'fe80::', 10],
  ['a site-local address', 'ipv6', 'fec0::', 10],
  ['a multicast address', 'ipv6', 'ff00::', 8],
];
const NAMED = RANGES.map(([name, type, net, prefix]) => {
  const list = new BlockList();
  list.addSubnet(net, prefix, type);
  return { name, list };
});
// Instance metadata services answer credentials to anyone who asks: refused even for allowed hosts.
const METADATA = new Set(['169.254.169.254', 'fd00:ec2::254', '100.100.100.200', '169.254.170.2']);

/** 16 bytes of an IPv6 literal (zone id ignored), or undefined if it is not one. */
function ipv6Bytes(input: string): Buffer | undefined {
  let text = input.split('%')[0] ?? '';
  if (isIP(text) !== 6) return undefined;
  const tail: number[] = [];
  // A dotted IPv4 tail (::ffff:127.0.0.1) is the last two 16-bit words.
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [, prefix = '', a, b, c, d] = v4;
    tail.push((Number(a) << 8) | Number(b), (Number(c) << 8) | Number(d));
    text = prefix.endsWith('::') ? prefix : prefix.slice(0, -1);
  }
  const words = (p: string) => (p === '' ? [] : p.split(':').map((w) => parseInt(w, 16)));
  const halves = text.split('::');
  let all: number[];
  if (halves.length === 1) {
    all = [...words(halves[0] ?? ''), ...tail];
  } else {
    const head = words(halves[0] ?? '');
    const rest = [...words(halves[1] ?? ''), ...tail];
    all = [...head, ...new Array<number>(Math.max(0, 8 - head.length - rest.length)).fill(0), ...rest];
  }
  if (all.length !== 8 || all.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffff)) return undefined;
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function v4At(b: Buffer, offset: number): string {
  return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
}

/**
 * Why an address is not public ("a loopback address", "a cloud metadata address"…), or undefined when
 * it is an ordinary public address. IPv6 forms that embed an IPv4 address are judged by that address.
 */
export function classifyAddress(address: string): string | undefined {
  const family = isIP(address);
  if (family === 4) {
    if (METADATA.has(address)) return 'a cloud metadata address';
    return NAMED.find((r) => r.list.check(address, 'ipv4'))?.name;
  }
  if (family !== 6) return 'not an IP address';
  const b = ipv6Bytes(address);
  if (!b) return 'not an IP address';
  const zero = (from: number, to: number) => b.subarray(from, to).every((x) => x === 0);
  // ::ffff:a.b.c.d (IPv4-mapped) and 64:ff9b::a.b.c.d (NAT64) reach the embedded IPv4 address.
  const mapped = zero(0, 10) && b[10] === 0xff && b[11] === 0xff;
  const nat64 = b.readUInt32BE(0) === 0x0064ff9b && zero(4, 12);
  if (mapped || nat64) {
    const inner = classifyAddress(v4At(b, 12));
    return inner === undefined ? undefined : `${inner} (IPv4 inside IPv6)`;
  }
  // 6to4 (2002:a.b.c.d::/48) routes to the embedded IPv4 address too.
  if (b.readUInt16BE(0) === 0x2002) {
    const inner = classifyAddress(v4At(b, 2));
    return inner === undefined ? undefined : `${inner} (6to4)`;
  }
  const canonical = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':');
  if ([...METADATA].some((m) => isIP(m) === 6 && ipv6Bytes(m)?.equals(b))) return 'a cloud metadata address';
  return NAMED.find((r) => r.list.check(canonical, 'ipv6'))?.name;
}

function normaliseHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  while (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

/** `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal, as a normalised host and optional port. */
function allowEntry(entry: string): { host: string; port: string | undefined } {
  const t = entry.trim();
  if (isIP(t) === 6) return { host: normaliseHost(t), port: undefined };
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(t);
  return m ? { host: normaliseHost(m[1] ?? ''), port: String(Number(m[2])) } : { host: normaliseHost(t), port: undefined };
}

function allowedNetworks(policy: EgressPolicy): BlockList {
  const list = new BlockList();
  for (const cidr of policy.allowedCidrs ?? []) {
    const [net = '', bits] = cidr.split('/');
    const family = isIP(net);
    const prefix = Number(bits);
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
      throw new ClawplaneError(
        'egress_policy_invalid',
        500,
        `The egress allow-list entry "${cidr}" is not a CIDR range like 10.0.0.0/8 or fd00::/8. Fix the platform egress settings.`,
      );
    }
    list.addSubnet(net, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

const defaultResolver: Resolver = async (hostname) => {
  const found = await dnsLookup(hostname, { all: true, verbatim: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/**
 * Everything that can be checked without DNS: scheme, embedded credentials, the allow-list, and the
 * host when it is an IP literal or a localhost name. Use it to validate a URL when it is saved.
 */
export function checkUrlShape(raw: string, policy: EgressPolicy): { url: URL; hostname: string; allowListed: boolean } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new EgressRefusedError('The URL is not valid. Give an absolute URL such as https://api.example.com/v1.', 'invalid_url');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new EgressRefusedError(`URLs with scheme "${url.protocol}" are not allowed. Use an https:// URL.`, 'scheme');
  }
  if (url.username || url.password) {
    throw new EgressRefusedError('The URL contains a user name or password. Remove it and store the secret as a credential instead.', 'userinfo');
  }
  // The WHATWG parser already turned 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 into 127.0.0.1.
  const hostname = normaliseHost(url.hostname);
  if (!hostname) throw new EgressRefusedError('The URL has no host. Give an absolute URL such as https://api.example.com/v1.', 'invalid_url');
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const allowListed = (policy.allowedHosts ?? []).some((entry) => {
    const e = allowEntry(entry);
    return e.host === hostname && (e.port === undefined || e.port === port);
  });
  if (url.protocol === 'http:' && !allowListed) {
    throw new EgressRefusedError(`Plain http:// is not allowed for ${hostname}. Use https://, or ask a platform admin to allow this host.`, 'insecure_scheme');
  }
  if (!allowListed && (hostname === 'localhost' || hostname.endsWith('.localhost'))) {
    throw new EgressRefusedError(
      `${hostname} is this machine, which user-supplied URLs may not reach. Use a public host, or ask a platform admin to allow it.`,
      'blocked_address',
    );
  }
  if (isIP(hostname) !== 0) refuseAddress(hostname, hostname, allowListed, allowedNetworks(policy));
  return { url, hostname, allowListed };
}

/**
 * The same rules for a bare host (an egress allow-list entry, `*.example.com` allowed) when it is
 * saved: a localhost name or an IP literal that is metadata, loopback or private is refused unless the
 * platform allows it. Names are resolved, and checked again, when a connection is made.
 */
export function checkHostShape(host: string, port: number, policy: EgressPolicy): void {
  const bare = host.replace(/^\*\./, '');
  checkUrlShape(`https://${isIP(bare) === 6 ? `[${bare}]` : bare}${port > 0 ? `:${port}` : ''}/`, policy);
}

function refuseAddress(hostname: string, address: string, allowListed: boolean, networks: BlockList): void {
  const why = classifyAddress(address);
  if (why === undefined) return;
  const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
  const subject = hostname === address ? `${hostname} is` : `${hostname} resolves to ${address}, which is`;
  if (why.startsWith('a cloud metadata address')) {
    throw new EgressRefusedError(`${subject} ${why}, never reachable from Clawplane. Use a different URL.`, 'metadata_address');
  }
  if (allowListed || (isIP(address) !== 0 && networks.check(address, family))) return;
  throw new EgressRefusedError(
    `${subject} ${why}; user-supplied URLs may only reach public addresses. Use a public host, or ask a platform admin to allow this host or network.`,
    'blocked_address',
  );
}

/** Checks a URL and resolves its host; every resolved address must be allowed. */
export async function checkUrl(raw: string, policy: EgressPolicy): Promise<CheckedUrl> {
  const { url, hostname, allowListed } = checkUrlShape(raw, policy);
  const networks = allowedNetworks(policy);
  let addresses: ResolvedAddress[];
  const literal = isIP(hostname);
  if (literal !== 0) {
    addresses = [{ address: hostname, family: literal === 6 ? 6 : 4 }];
  } else {
    try {
      addresses = await (policy.resolver ?? defaultResolver)(hostname);
    } catch (err) {
      throw new EgressRefusedError(
        `The host ${hostname} could not be resolved (${(err as NodeJS.ErrnoException).code ?? 'DNS error'}). Check the spelling of the URL.`,
        'dns',
      );
    }
    if (addresses.length === 0) throw new EgressRefusedError(`The host ${hostname} has no addresses. Check the spelling of the URL.`, 'dns');
  }
  // Every address, not just the first: a name with one public and one private record is refused.
  for (const a of addresses) refuseAddress(hostname, a.address, allowListed, networks);
  return { url, hostname, addresses, allowListed };
}

export interface GuardedRequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  signal?: AbortSignal;
}

const NULL_BODY = new Set([101, 204, 205, 304]);

/**
 * fetch() for user-supplied URLs: checks the URL, connects only to the checked address, refuses
 * redirects, and caps the response size. Returns a standard Response whose body streams.
 */
export async function guardedFetch(raw: string, init: GuardedRequestInit, policy: EgressPolicy): Promise<Response> {
  const checked = await checkUrl(raw, policy);
  const pinned = checked.addresses[0];
  if (!pinned) throw new EgressRefusedError(`The host ${checked.hostname} has no addresses.`, 'dns');
  const timeoutMs = policy.timeoutMs ?? 15_000;
  const maxBytes = policy.maxResponseBytes ?? 10 * 1024 * 1024;
  const mod = checked.url.protocol === 'https:' ? https : http;

  // Answer every lookup with the checked address: the socket cannot go anywhere else.
  const lookup = (
    _host: string,
    opts: LookupOptions,
    cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    if (opts.all) cb(null, [{ address: pinned.address, family: pinned.family }]);
    else cb(null, pinned.address, pinned.family);
  };

  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = mod.request(checked.url, {
      method: init.method ?? 'GET',
      headers: init.headers,
      // No shared agent: a pooled keep-alive socket was opened for some other check.
      agent: false,
      lookup,
      signal: init.signal,
    });
    req.setTimeout(timeoutMs, () =>
      req.destroy(new EgressFailedError(`${checked.hostname} did not answer within ${timeoutMs} ms. Check that the service is up, then try again.`)),
    );
    req.on('error', (err) => {
      if (err instanceof ClawplaneError || err.name === 'AbortError') reject(err);
      else
        reject(
          new EgressFailedError(
            `Could not reach ${checked.hostname}: ${(err as NodeJS.ErrnoException).code ?? err.message}. Check the URL and that the service is running.`,
            err,
          ),
        );
    });
    req.on('response', resolve);
    req.end(init.body);
  });

  const status = res.statusCode ?? 0;
  if (status >= 300 && status < 400) {
    res.destroy();
    const location = res.headers.location;
    throw new EgressRefusedError(
      `${checked.hostname} answered with a redirect (${status}${location ? ` to ${location}` : ''}); redirects are not followed. Configure the final URL directly.`,
      'redirect',
    );
  }
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i] ?? '', res.rawHeaders[i + 1] ?? '');
  if (NULL_BODY.has(status)) {
    res.resume();
    return new Response(null, { status, statusText: res.statusMessage, headers });
  }
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let total = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await chunks.next();
      if (next.done) return controller.close();
      total += next.value.length;
      if (total > maxBytes) {
        res.destroy();
        throw new EgressFailedError(`${checked.hostname} sent more than ${maxBytes} bytes; the response was cut off.`);
      }
      controller.enqueue(new Uint8Array(next.value));
    },
    cancel() {
      res.destroy();
    },
  });
  return new Response(body, { status, statusText: res.statusMessage, headers });
}
