/**
 * Input PostgreSQL cannot store, over every route of the OpenAPI document (which the routes' zod
 * schemas generate): fast-check builds a body from each route's schema, then puts NUL or a lone
 * surrogate into one string, or an extreme into one number or date; paths and queries get NUL,
 * malformed percent-encoding, garbage ids and cursors. Nothing may answer 500, and every validation
 * refusal names its field (for NUL and surrogates: exactly the field that carried it).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { onboard, twoTenants, type ApiClient, type TenantFixture } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';
import { RUNTIME_CACHE } from './helpers/sandbox.ts';

type Schema = Record<string, unknown>;
interface Param {
  name: string;
  in: string;
  required?: boolean;
  schema?: Schema;
}
interface Op {
  key: string;
  method: string;
  path: string;
  params: Param[];
  body: Schema | undefined;
}
interface ErrorBody {
  code: string;
  message: string;
  details?: { issues?: { path: string; message: string }[] };
}

/** A real resource of the fuzzing tenant per path parameter; unknown ones get an id that names nothing. */
const REAL: Record<string, (t: TenantFixture) => string> = {
  tenant: (t) => t.slug,
  userId: (t) => t.ownerId,
  tokenId: (t) => t.tokenId,
  credentialId: (t) => t.credentialId,
  providerId: (t) => t.providerId,
  jti: (t) => t.grantJti,
  instanceId: (t) => t.instanceId,
  sessionId: (t) => t.sessionId,
  backupId: (t) => t.backupId,
  agentId: (t) => t.agentId,
  taskId: (t) => t.taskId,
  skill: () => 'slack',
  tool: () => 'read',
  name: () => 'github',
  model: () => 'gpt-4o',
  projectId: (t) => t.projectId,
  laneId: (t) => t.laneId,
  runId: (t) => t.runId,
  step: () => '0',
};

/** Calls that would take the fuzzer's own access away (its token, its tenant) rather than test input. */
const SELF_DESTRUCTIVE =
  /^(DELETE \/api\/v1\/tenants\/\{tenant\}(\/tokens\/\{tokenId\})?|POST \/api\/v1\/tenants\/\{tenant\}\/(suspend)|POST \/api\/v1\/auth\/logout)$/;

const BAD_TEXT = ['\u0000', 'a\u0000b', '\ud800', 'x\udfffy', '\udc00\ud800'];
const BAD_NUMBERS = [-8.64e15, 8.64e15, 1e308, -1e308, 2 ** 31, -(2 ** 31) - 1, 2 ** 63, Number.MAX_SAFE_INTEGER + 2, 0.5, -1, 1e-320];
const BAD_DATES = ['0000-01-01T00:00:00Z', '-271821-04-20T00:00:00.000Z', '+275760-09-13T00:00:00.000Z', '9999-12-31T23:59:60Z', '2026-02-30T00:00:00Z'];
/** Never the nextCursor of any list (numeric, time|id or encoded): a list must refuse them, not start over. */
const NOT_A_CURSOR = ['garbage', '-1', '1e400', 'x|y', '2026-01-01T00:00:00Z|not-a-uuid'];
const GARBAGE = ['garbage', '-1', '1e400', '9'.repeat(40), '00000000-0000-0000-0000-000000000000', 'x|y', '2026-01-01T00:00:00Z|not-a-uuid', ...BAD_DATES];

function deref(doc: { components?: { schemas?: Record<string, Schema> } }, s: Schema | undefined): Schema {
  let cur = s ?? {};
  for (let i = 0; i < 10 && typeof cur['$ref'] === 'string'; i++) cur = doc.components?.schemas?.[cur['$ref'].split('/').pop() ?? ''] ?? {};
  return cur;
}

/** An arbitrary for values matching `s` as far as the fuzz needs (types, enums, formats, bounds). */
function arb(doc: Parameters<typeof deref>[0], raw: Schema | undefined, depth = 0): fc.Arbitrary<unknown> {
  const s = deref(doc, raw);
  if (depth > 6) return fc.constant(null);
  const alts = (s['anyOf'] ?? s['oneOf']) as Schema[] | undefined;
  if (alts) return fc.oneof(...alts.map((a) => arb(doc, a, depth + 1)));
  if ('const' in s) return fc.constant(s['const']);
  if (Array.isArray(s['enum'])) return fc.constantFrom(...(s['enum'] as unknown[]));
  const type = Array.isArray(s['type']) ? (s['type'] as string[]).find((t) => t !== 'null') : (s['type'] as string | undefined);
  switch (type) {
    case 'object': {
      const props = (s['properties'] ?? {}) as Record<string, Schema>;
      const required = new Set((s['required'] ?? []) as string[]);
      const entries = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, arb(doc, v, depth + 1)]));
      const shape = fc.record(entries, { requiredKeys: Object.keys(props).filter((k) => required.has(k)) });
      if (Object.keys(props).length === 0 && s['additionalProperties'])
        return fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), arb(doc, s['additionalProperties'] as Schema, depth + 1), { maxKeys: 3 });
      return shape;
    }
    case 'array':
      return fc.array(arb(doc, s['items'] as Schema, depth + 1), {
        minLength: Number(s['minItems'] ?? 0),
        maxLength: Math.max(Number(s['minItems'] ?? 0), Math.min(Number(s['maxItems'] ?? 3), 3)),
      });
    case 'integer':
    case 'number': {
      const min = typeof s['minimum'] === 'number' ? s['minimum'] : -1000;
      const max = typeof s['maximum'] === 'number' ? s['maximum'] : 1000;
      return type === 'integer'
        ? fc.integer({ min: Math.max(min, -1e9), max: Math.min(max, 1e9) })
        : fc.double({ min: Math.max(min, -1e9), max: Math.min(max, 1e9), noNaN: true });
    }
    case 'boolean':
      return fc.boolean();
    case 'string': {
      const fmt = s['format'];
      if (fmt === 'uuid') return fc.uuid();
      if (fmt === 'email') return fc.constant('fuzz@example.test');
      if (fmt === 'date-time') return fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString());
      if (fmt === 'uri') return fc.constant('https://hooks.example.test/fuzz');
      if (typeof s['pattern'] === 'string') {
        try {
          return fc
            .stringMatching(new RegExp(s['pattern']))
            .filter((x) => x.length <= Number(s['maxLength'] ?? 200) && x.length >= Number(s['minLength'] ?? 0));
        } catch {
          return fc.constant('fuzz');
        }
      }
      return fc.string({
        minLength: Number(s['minLength'] ?? 0),
        maxLength: Math.max(Number(s['minLength'] ?? 0), Math.min(Number(s['maxLength'] ?? 12), 12)),
      });
    }
    default:
      return fc.jsonValue({ maxDepth: 1 });
  }
}

/** Where a value holds strings and numbers (`path` as the API names it: body.a.0.b). */
function leaves(v: unknown, keys: string[] = []): { path: string; keys: string[]; kind: 'string' | 'number' }[] {
  if (typeof v === 'string') return [{ path: ['body', ...keys].join('.'), keys, kind: 'string' }];
  if (typeof v === 'number') return [{ path: ['body', ...keys].join('.'), keys, kind: 'number' }];
  if (Array.isArray(v)) return v.flatMap((x, i) => leaves(x, [...keys, String(i)]));
  if (typeof v === 'object' && v !== null) return Object.entries(v).flatMap(([k, x]) => leaves(x, [...keys, k]));
  return [];
}

function setAt(v: unknown, keys: string[], value: unknown): unknown {
  if (keys.length === 0) return value;
  const copy = structuredClone(v) as Record<string, unknown>;
  let cur: Record<string, unknown> = copy;
  for (const k of keys.slice(0, -1)) cur = cur[k] as Record<string, unknown>;
  cur[keys.at(-1) ?? ''] = value;
  return copy;
}

describe('input that PostgreSQL cannot store, over every route', async () => {
  // The shared runtime cache: a wake then finds the runtime instead of pulling it (which took longer than
  // the wake timeout on a loaded machine).
  const server = await startTestServer({ CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE });
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  const doc = (await (await fetch(`${server.url}/api/v1/openapi.json`)).json()) as {
    paths: Record<string, Record<string, { parameters?: Param[]; requestBody?: { content?: Record<string, { schema?: Schema }> } }>>;
    components?: { schemas?: Record<string, Schema> };
  };
  const ops: Op[] = Object.entries(doc.paths).flatMap(([p, methods]) =>
    Object.entries(methods).map(([m, op]) => ({
      key: `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, '{$1}')}`,
      method: m.toUpperCase(),
      path: p,
      params: op.parameters ?? [],
      body: op.requestBody?.content?.['application/json']?.schema,
    })),
  );
  const fuzzable = ops.filter((o) => !SELF_DESTRUCTIVE.test(o.key));
  const who = (op: Op): ApiClient => (op.path.startsWith('/api/v1/tenants/{tenant}') ? a.client : admin);
  const url = (op: Op, override: Record<string, string> = {}) =>
    op.path.replace(/\{(\w+)\}/g, (_, n: string) => override[n] ?? encodeURIComponent(REAL[n]?.(a) ?? 'fuzz-unknown'));
  const problems: string[] = [];

  /** Checks one answer; returns the parsed error when it was one. */
  const check = async (what: string, res: Response): Promise<ErrorBody | undefined> => {
    const text = await res.text();
    // A wake that reaches the reconciler fails on this server by design (its data directory is 0700, so no
    // sandbox can start): that 503, or a 504 wake timeout when the host is slow, is the host's answer, not
    // a fault in handling the input.
    const wakeFailed = (res.status === 503 && text.includes('could not be started')) || (res.status === 504 && text.includes('instance_wake_timeout'));
    if (res.status >= 500 && !wakeFailed) problems.push(`${what} answered ${res.status}: ${text.slice(0, 300)}`);
    if (res.status < 400) return undefined;
    let body: ErrorBody;
    try {
      // The OpenAI-compatible routes answer OpenAI's shape, with Clawplane's code and details inside.
      const raw = JSON.parse(text) as ErrorBody & { error?: { code: string; message: string; details?: ErrorBody['details'] } };
      body =
        raw.error && raw.code === undefined
          ? { code: raw.error.code, message: raw.error.message, ...(raw.error.details ? { details: raw.error.details } : {}) }
          : raw;
    } catch {
      problems.push(`${what} answered ${res.status} without a JSON error: ${text.slice(0, 200)}`);
      return undefined;
    }
    if (body.code === 'validation_failed' && !(body.details?.issues?.length && body.details.issues.every((i) => i.path.length > 0)))
      problems.push(`${what}: a validation refusal that names no field: ${text.slice(0, 300)}`);
    return body;
  };
  const names = (e: ErrorBody | undefined, path: string) => e?.code === 'validation_failed' && (e.details?.issues ?? []).some((i) => i.path === path);

  test('backing up an instance that was never started is a 409 saying so, with no host path', async () => {
    const res = await a.client.call('POST', `/api/v1/tenants/${a.slug}/instances/${a.instanceId}/backups`);
    const e = (await res.json()) as ErrorBody;
    assert.equal(res.status, 409, JSON.stringify(e));
    assert.equal(e.code, 'nothing_to_back_up');
    assert.match(e.message, /never been started/);
    assert.doesNotMatch(JSON.stringify(e), /\/(tmp|var|proc|home|work)\//);
  });

  test('the document has routes to fuzz', () => {
    assert.ok(fuzzable.length > 50, `${fuzzable.length} routes`);
    assert.ok(
      fuzzable.some((o) => o.body),
      'some take a body',
    );
  });

  test('NUL and lone surrogates in any string of any body: 400 naming that field', async () => {
    const bodyOps = fuzzable.filter((o) => o.body);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...bodyOps).chain((op) => fc.tuple(fc.constant(op), arb(doc, op.body))),
        fc.nat(),
        fc.constantFrom(...BAD_TEXT),
        async ([op, base], pick, bad) => {
          const strings = leaves(base).filter((l) => l.kind === 'string');
          // No string field in this draw: put one where a string key would go (a field name is text too).
          const target = strings[pick % Math.max(strings.length, 1)];
          const body = target
            ? setAt(base, target.keys, `${bad}`)
            : typeof base === 'object' && base !== null && !Array.isArray(base)
              ? { ...base, [`k${bad}`]: 1 }
              : base;
          const path = target?.path ?? `body.k${bad.toWellFormed().replaceAll('\u0000', '\\u0000')}`;
          if (!target && (typeof base !== 'object' || base === null || Array.isArray(base))) return true;
          const e = await check(`${op.key} with ${JSON.stringify(bad)} at ${path}`, await who(op).call(op.method, url(op), body));
          if (!names(e, path)) problems.push(`${op.key}: ${JSON.stringify(bad)} at ${path} was not refused naming the field: ${JSON.stringify(e)}`);
          return true;
        },
      ),
      { numRuns: 400 },
    );
    assert.deepEqual(problems.splice(0), []);
  });

  test('extremes in every number and date of any body: never a 500, and refusals name a field', async () => {
    const bodyOps = fuzzable.filter((o) => o.body);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...bodyOps).chain((op) => fc.tuple(fc.constant(op), arb(doc, op.body))),
        fc.nat(),
        fc.oneof(fc.constantFrom<unknown>(...BAD_NUMBERS), fc.constantFrom<unknown>(...BAD_DATES), fc.constantFrom<unknown>(...GARBAGE)),
        async ([op, base], pick, bad) => {
          const all = leaves(base);
          const target = all[pick % Math.max(all.length, 1)];
          await check(
            `${op.key} with ${JSON.stringify(bad)} at ${target?.path ?? 'body'}`,
            await who(op).call(op.method, url(op), target ? setAt(base, target.keys, bad) : base),
          );
          return true;
        },
      ),
      { numRuns: 500 },
    );
    assert.deepEqual(problems.splice(0), []);
  });

  test('NUL, malformed encoding and garbage ids in every path parameter: never a 500; NUL is refused naming the parameter', async () => {
    for (const op of fuzzable) {
      for (const m of op.path.matchAll(/\{(\w+)\}/g)) {
        const name = m[1] ?? '';
        for (const bad of ['%00', 'a%00b', '%ED%A0%80', '%E0%A4%A', '%C0%80']) {
          const e = await check(`${op.key} with ${name}=${bad}`, await who(op).call(op.method, url(op, { [name]: bad }), op.body ? {} : undefined));
          if (!names(e, `path.${name}`)) problems.push(`${op.key}: ${name}=${bad} was not refused naming path.${name}: ${JSON.stringify(e)}`);
        }
        for (const bad of GARBAGE)
          await check(`${op.key} with ${name}=${bad}`, await who(op).call(op.method, url(op, { [name]: encodeURIComponent(bad) }), op.body ? {} : undefined));
      }
    }
    assert.deepEqual(problems.splice(0), []);
  });

  test('NUL, extremes, garbage cursors and dates in every query parameter: never a 500; NUL and bad cursors are refused naming the parameter', async () => {
    for (const op of fuzzable) {
      for (const p of op.params.filter((x) => x.in === 'query')) {
        for (const bad of ['\u0000', 'a\u0000', ...GARBAGE, ...BAD_NUMBERS.map(String)]) {
          const q = `?${new URLSearchParams({ [p.name]: bad }).toString()}`;
          const e = await check(`${op.key}${q}`, await who(op).call(op.method, url(op) + q, op.body ? {} : undefined));
          if ((bad.includes('\u0000') || (p.name === 'cursor' && NOT_A_CURSOR.includes(bad))) && !names(e, `query.${p.name}`))
            problems.push(`${op.key}${q} was not refused naming query.${p.name}: ${JSON.stringify(e)}`);
        }
      }
    }
    assert.deepEqual(problems.splice(0), []);
  });

  test('a garbage cursor on the task list is refused, a real one pages', async () => {
    const bad = await a.client.call('GET', `/api/v1/tenants/${a.slug}/tasks?cursor=garbage`);
    assert.equal(bad.status, 400);
    assert.deepEqual(
      ((await bad.json()) as ErrorBody).details?.issues?.map((i) => i.path),
      ['query.cursor'],
    );
    await server.services.tasks.create(a.id, { capability: 'fixture-nobody-has', input: 'second' }, { actor: 'test' });
    const page = await a.client.json<{ items: unknown[]; nextCursor: string | null }>('GET', `/api/v1/tenants/${a.slug}/tasks?limit=1`);
    assert.ok(page.nextCursor);
    const next = await a.client.json<{ items: unknown[] }>('GET', `/api/v1/tenants/${a.slug}/tasks?limit=1&cursor=${encodeURIComponent(page.nextCursor)}`);
    assert.equal(next.items.length, 1);
  });

  test('the issue report: NUL in a task input, names and a policy; expiresAt -8.64e15; %00 as the tenant', async () => {
    const cases: [string, string, unknown, string][] = [
      ['POST', `/api/v1/tenants/${a.slug}/tasks`, { capability: 'x', input: 'a\u0000b' }, 'body.input'],
      ['POST', `/api/v1/tenants/${a.slug}/tokens`, { name: 'n\u0000', role: 'viewer' }, 'body.name'],
      ['POST', `/api/v1/tenants/${a.slug}/credentials`, { name: 'k', type: 'api_key', value: 'sk-0123456789abcdef', expiresAt: -8.64e15 }, 'body.expiresAt'],
      [
        'POST',
        `/api/v1/tenants/${a.slug}/credentials`,
        { name: 'k', type: 'api_key', value: 'sk-0123456789abcdef', expiresAt: '0000-01-01T00:00:00Z' },
        'body.expiresAt',
      ],
      [
        'PUT',
        `/api/v1/tenants/${a.slug}/policy`,
        { execPolicy: 'deny', policies: [{ id: 'p', cedar: 'forbid (principal, action, resource);\u0000' }] },
        'body.policies.0.cedar',
      ],
      ['GET', '/api/v1/tenants/%00/agents', undefined, 'path.tenant'],
    ];
    for (const [method, p, body, field] of cases) {
      const res = await a.client.call(method, p, body);
      const e = (await res.json()) as ErrorBody;
      assert.equal(res.status, 400, `${method} ${p}: ${JSON.stringify(e)}`);
      assert.ok(
        e.details?.issues?.some((i) => i.path === field),
        `${method} ${p}: ${JSON.stringify(e)} does not name ${field}`,
      );
    }
    const patch = await admin.call('PATCH', `/api/v1/tenants/${a.slug}`, { name: 'A\u0000' });
    assert.equal(patch.status, 400);
  });

  test('a data error that reaches PostgreSQL anyway is a 400, not a 500', async () => {
    const { toClawplaneError } = await import('../src/api/errors.ts');
    const err = await server.db.query("SELECT 'x'::timestamptz").catch((e: unknown) => e);
    const mapped = toClawplaneError(err, 1);
    assert.equal(mapped?.status, 400);
    assert.equal(mapped?.code, 'validation_failed');
    const range = await server.db.query('SELECT $1::int', [2 ** 40]).catch((e: unknown) => e);
    assert.equal(toClawplaneError(range, 1)?.status, 400);
  });

  test('host details are taken out of status reasons and error bodies (CRIU and tar output, uids)', async () => {
    const { scrubHostDetails } = await import('../src/observability/host-details.ts');
    const raw = `tar exited with 2: tar: ${server.config.dataDir}/sandboxes/x/work: Cannot open: No such file or directory; criu: (00.01) Error (criu/cr-restore.c:1234): can't open /proc/4242/ns/net as uid 231000; see /var/tmp/clawplane-criu/log`;
    const clean = scrubHostDetails(raw);
    assert.doesNotMatch(clean, /\/tmp\/|\/var\/|\/proc\/|231000/);
    assert.match(clean, /Cannot open: No such file or directory/, 'the rest stays readable');
    const api = 'see /api/v1/docs and https://api.example.com/v1';
    assert.equal(scrubHostDetails(api), api, 'API paths and URLs are not host paths');
  });

  test('no 500 was counted by the server during the fuzz', async () => {
    const m = await (await fetch(`${server.url}/metrics`)).text();
    assert.doesNotMatch(m, /clawplane_http_requests_total\{[^}]*status="(500|501|502|504|505)"/);
  });
});
