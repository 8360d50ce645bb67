import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { checkUrl, EgressFailedError, EgressRefusedError, guardedFetch, type EgressPolicy, type Resolver } from '../src/net/ssrf.ts';

// An oracle written independently of the guard: IPv4 ranges that must never be reachable by default.
const BLOCKED_V4: [number, number][] = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
].map(([ip, bits]) => [toInt(ip as string), bits as number]);

function toInt(ip: string): number {
  return ip.split('.').reduce((n, p) => n * 256 + Number(p), 0);
}
function blocked(n: number): boolean {
  return BLOCKED_V4.some(([base, bits]) => Math.floor(n / 2 ** (32 - bits)) === Math.floor(base / 2 ** (32 - bits)));
}
function octets(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

/** Ways to write one IPv4 address in a URL host that the WHATWG parser (and curl, and browsers) accept. */
function spell(n: number, style: number, partStyles: number[]): string {
  const [a = 0, b = 0, c = 0, d = 0] = octets(n);
  const part = (v: number, s: number) => (s === 0 ? String(v) : s === 1 ? `0${v.toString(8)}` : `0x${v.toString(16)}`);
  const hi = ((a << 8) | b).toString(16);
  const lo = ((c << 8) | d).toString(16);
  switch (style) {
    case 0:
      return String(n); // decimal: 2130706433
    case 1:
      return `0x${n.toString(16)}`; // 0x7f000001
    case 2:
      return `0${n.toString(8)}`; // 017700000001
    case 3:
      return [a, b, c, d].map((v, i) => part(v, partStyles[i] ?? 0)).join('.'); // 0177.0x0.0.1
    case 4:
      return `${part(a, partStyles[0] ?? 0)}.${part((b << 16) | (c << 8) | d, partStyles[1] ?? 0)}`; // 127.1
    case 5:
      return `${part(a, partStyles[0] ?? 0)}.${part(b, partStyles[1] ?? 0)}.${part((c << 8) | d, partStyles[2] ?? 0)}`;
    case 6:
      return `${a}.${b}.${c}.${d}.`; // trailing dot
    case 7:
      return `[::ffff:${a}.${b}.${c}.${d}]`;
    case 8:
      return `[::ffff:${hi}:${lo}]`;
    case 9:
      return `[0:0:0:0:0:FFFF:${hi.toUpperCase()}:${lo}]`;
    default:
      return `${part(n, partStyles[0] ?? 0)}.`;
  }
}

const anyV4 = fc.integer({ min: 0, max: 0xffffffff });
const blockedV4 = fc
  .tuple(fc.constantFrom(...BLOCKED_V4), fc.integer({ min: 0, max: 0xffffffff }))
  .map(([[base, bits], r]) => base + (bits === 32 ? 0 : r % 2 ** (32 - bits)));
const spelling = fc.tuple(fc.integer({ min: 0, max: 10 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 4, maxLength: 4 }));

async function refusal(url: string, policy: EgressPolicy = {}): Promise<EgressRefusedError | undefined> {
  try {
    await checkUrl(url, policy);
    return undefined;
  } catch (err) {
    if (err instanceof EgressRefusedError) return err;
    throw err;
  }
}

const fixedResolver =
  (map: Record<string, string[]>): Resolver =>
  (host) => {
    const addrs = map[host];
    if (!addrs) return Promise.reject(Object.assign(new Error('not found'), { code: 'ENOTFOUND' }));
    return Promise.resolve(addrs.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));
  };

describe('SSRF guard: checkUrl', () => {
  test('every spelling of a blocked IPv4 address is refused (property, 5000 runs)', async () => {
    await fc.assert(
      fc.asyncProperty(blockedV4, spelling, fc.constantFrom('https', 'http'), async (n, [style, parts], scheme) => {
        const err = await refusal(`${scheme}://${spell(n, style, parts)}/v1/models`);
        assert.ok(err, `${spell(n, style, parts)} (${octets(n).join('.')}) was allowed`);
        assert.equal(err.code, 'egress_refused');
        assert.equal(err.status, 400);
      }),
      { numRuns: 5000 },
    );
  });

  test('any spelling of an IPv4 address is judged by the address it means (property, 5000 runs)', async () => {
    await fc.assert(
      fc.asyncProperty(anyV4, spelling, async (n, [style, parts]) => {
        const err = await refusal(`https://${spell(n, style, parts)}/`);
        assert.equal(err !== undefined, blocked(n), `${spell(n, style, parts)} → ${octets(n).join('.')}: ${err?.message ?? 'allowed'}`);
      }),
      { numRuns: 5000 },
    );
  });

  test('the spellings named in the issue are refused, with a reason and what to do', async () => {
    const cases = [
      'http://2130706433/',
      'https://2130706433/',
      'https://0177.0.0.1/',
      'https://0x7f.1/',
      'https://127.1/',
      'https://0x0/',
      'https://0/',
      'https://127.0.0.1./',
      'https://[::1]/',
      'https://[::]/',
      'https://[::ffff:127.0.0.1]/',
      'https://[::ffff:7f00:1]/',
      'https://169.254.169.254/latest/meta-data/',
      'https://[fd00:ec2::254]/',
      'https://[::ffff:a9fe:a9fe]/',
      'https://localhost/',
      'https://localhost./',
      'https://LocalHost/',
      'https://api.localhost/',
      'https://[fe80::1]/',
      'https://[fc00::1]/',
      'https://100.64.0.1/',
      'https://[64:ff9b::7f00:1]/',
      'https://[2002:7f00:1::1]/',
      'https://224.0.0.1/',
      'https://255.255.255.255/',
      'file:///etc/passwd',
      'gopher://example.com/',
      'https://user:pass@example.com/',
      'not a url',
    ];
    for (const url of cases) {
      const err = await refusal(url, { resolver: fixedResolver({ 'example.com': ['93.184.216.34'] }) });
      assert.ok(err, `${url} was allowed`);
      assert.match(err.message, /\. (Use|Give|Remove|Check|Configure)/, `${url}: the message should say what to do: ${err.message}`);
    }
  });

  test('http:// to a host that is not on the admin allow-list is refused even when it is public', async () => {
    const policy = { resolver: fixedResolver({ 'api.example.com': ['93.184.216.34'] }) };
    const err = await refusal('http://api.example.com/v1', policy);
    assert.equal(err?.details?.['reason'], 'insecure_scheme');
    assert.match(err.message, /Use https:\/\/, or ask a platform admin/);
    assert.equal(await refusal('https://api.example.com/v1', policy), undefined);
  });

  test('DNS names are judged by every address they resolve to', async () => {
    const resolver = fixedResolver({
      'evil.example': ['127.0.0.1'],
      'mixed.example': ['93.184.216.34', '10.0.0.7'],
      'v6.example': ['::1'],
      'mapped.example': ['::ffff:169.254.169.254'],
      'public.example': ['93.184.216.34', '2606:4700::1111'],
    });
    assert.match((await refusal('https://evil.example/', { resolver }))?.message ?? '', /resolves to 127\.0\.0\.1, which is a loopback address/);
    assert.ok(await refusal('https://mixed.example/', { resolver }), 'one private record among public ones is enough to refuse');
    assert.ok(await refusal('https://v6.example/', { resolver }));
    assert.equal((await refusal('https://mapped.example/', { resolver }))?.details?.['reason'], 'metadata_address');
    assert.equal((await refusal('https://nxdomain.example/', { resolver }))?.details?.['reason'], 'dns');
    const ok = await checkUrl('https://public.example./v1', { resolver });
    assert.equal(ok.hostname, 'public.example');
    assert.deepEqual(
      ok.addresses.map((a) => a.address),
      ['93.184.216.34', '2606:4700::1111'],
    );
  });

  test('an admin allow-list opens http and private addresses for exactly the listed hosts, never metadata', async () => {
    const resolver = fixedResolver({ 'ollama.internal': ['10.1.2.3'], 'other.internal': ['10.1.2.4'], 'meta.internal': ['169.254.169.254'] });
    const policy: EgressPolicy = { resolver, allowedHosts: ['ollama.internal', 'meta.internal'] };
    assert.equal(await refusal('http://ollama.internal:11434/v1', policy), undefined);
    assert.ok(await refusal('http://other.internal/v1', policy));
    assert.ok(await refusal('https://other.internal/v1', policy));
    assert.equal((await refusal('http://meta.internal/', policy))?.details?.['reason'], 'metadata_address');
    // A CIDR allowance permits private addresses but still only over https.
    const cidr: EgressPolicy = { resolver, allowedCidrs: ['10.1.2.0/24'] };
    assert.equal(await refusal('https://other.internal/', cidr), undefined);
    assert.ok(await refusal('http://other.internal/', cidr));
  });
});

describe('SSRF guard: guardedFetch', () => {
  let server: http.Server;
  let port = 0;
  const seen: { path: string; host: string | undefined }[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      seen.push({ path: req.url ?? '', host: req.headers.host });
      if (req.url === '/redirect') {
        res.writeHead(302, { location: 'http://127.0.0.1:1/internal' }).end();
      } else if (req.url === '/big') {
        res.writeHead(200);
        res.end(Buffer.alloc(64 * 1024, 'x'));
      } else if (req.url === '/hang') {
        // Never answers: the client's timeout must fire.
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: [{ id: 'm1' }] }));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  test('connects to the checked address only: the name is resolved once and never again', async () => {
    let calls = 0;
    // A rebinding resolver: the first answer passes the check, later answers would point elsewhere.
    const resolver: Resolver = () => {
      calls++;
      return Promise.resolve([{ address: calls === 1 ? '127.0.0.1' : '10.255.255.1', family: 4 }]);
    };
    const policy: EgressPolicy = { resolver, allowedHosts: ['pinned.test'] };
    const res = await guardedFetch(`http://pinned.test:${port}/v1/models`, {}, policy);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { data: [{ id: 'm1' }] });
    assert.equal(calls, 1, 'the connection did not resolve the name again');
    assert.equal(seen.at(-1)?.host, `pinned.test:${port}`, 'the Host header keeps the name while the socket goes to the checked address');
  });

  test('redirects are refused, not followed', async () => {
    const before = seen.length;
    const policy: EgressPolicy = { allowedHosts: ['127.0.0.1'] };
    await assert.rejects(guardedFetch(`http://127.0.0.1:${port}/redirect`, {}, policy), (err: unknown) => {
      assert.ok(err instanceof EgressRefusedError);
      assert.equal(err.details?.['reason'], 'redirect');
      assert.match(err.message, /redirects are not followed\. Configure the final URL directly/);
      return true;
    });
    assert.equal(seen.length, before + 1, 'only the first request was made');
  });

  test('a refused URL is never contacted', async () => {
    const before = seen.length;
    await assert.rejects(guardedFetch(`http://127.0.0.1:${port}/`, {}, {}), EgressRefusedError);
    await assert.rejects(guardedFetch(`https://localhost:${port}/`, {}, {}), EgressRefusedError);
    assert.equal(seen.length, before);
  });

  test('responses over the size cap and servers that hang fail with egress_failed', async () => {
    const res = await guardedFetch(`http://127.0.0.1:${port}/big`, {}, { allowedHosts: ['127.0.0.1'], maxResponseBytes: 1024 });
    await assert.rejects(
      res.arrayBuffer(),
      (err: unknown) => err instanceof EgressFailedError || (err instanceof TypeError && err.cause instanceof EgressFailedError),
    );
    await assert.rejects(guardedFetch(`http://127.0.0.1:${port}/hang`, {}, { allowedHosts: ['127.0.0.1'], timeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof EgressFailedError);
      assert.match(err.message, /did not answer within 200 ms/);
      return true;
    });
  });

  test('an unreachable allowed host is egress_failed (502), saying what to check', async () => {
    await assert.rejects(guardedFetch('http://127.0.0.1:1/', {}, { allowedHosts: ['127.0.0.1'] }), (err: unknown) => {
      assert.ok(err instanceof EgressFailedError);
      assert.equal(err.status, 502);
      assert.match(err.message, /ECONNREFUSED\. Check the URL/);
      return true;
    });
  });
});
