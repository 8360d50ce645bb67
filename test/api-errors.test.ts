import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { onboard } from './helpers/client.ts';
import { startTestServer } from './helpers/server.ts';

interface ErrorBody {
  code: string;
  message: string;
  requestId: string;
  details?: { issues?: { path: string; message: string }[] };
}

describe('errors map to HTTP in one place', async () => {
  const server = await startTestServer();
  const admin = await onboard(server);
  const post = (body: string, headers: Record<string, string> = {}) =>
    fetch(`${server.url}/api/v1/tenants`, {
      method: 'POST',
      body,
      headers: {
        'content-type': 'application/json',
        cookie: [...admin.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
        'x-csrf-token': admin.csrf ?? '',
        ...headers,
      },
    });
  const expectError = async (res: Response, status: number, code: string): Promise<ErrorBody> => {
    assert.equal(res.status, status);
    const body = (await res.json()) as ErrorBody;
    assert.equal(body.code, code);
    assert.ok(body.message.length > 10, 'the message says what went wrong');
    assert.equal(body.requestId, res.headers.get('x-request-id'));
    assert.doesNotMatch(JSON.stringify(body), /at .*\.ts:\d+|node_modules/, 'no stack traces');
    return body;
  };

  test('malformed JSON is a 400 bad_json', async () => {
    await expectError(await post('{"slug": "x", '), 400, 'bad_json');
  });

  test('unknown fields and bad values are a 400 naming each field by path', async () => {
    const b = await expectError(
      await post(JSON.stringify({ slug: 'ok-slug', name: 'x', tenantId: 'evil', quotas: { maxInstances: -1 } })),
      400,
      'validation_failed',
    );
    const paths = b.details?.issues?.map((i) => i.path) ?? [];
    assert.ok(paths.includes('body'), `unknown key reported at the body: ${JSON.stringify(b.details)}`);
    assert.match(JSON.stringify(b.details), /tenantId/);
    assert.ok(paths.includes('body.quotas.maxInstances'), JSON.stringify(paths));
    const missing = await expectError(await post(JSON.stringify({ name: 'x' })), 400, 'validation_failed');
    assert.ok(missing.details?.issues?.some((i) => i.path === 'body.slug'));
    const slug = await expectError(await post(JSON.stringify({ slug: 'Not A Slug', name: 'x' })), 400, 'validation_failed');
    assert.match(slug.message, /body\.slug: lowercase letters/);
  });

  test('a JSON array, a number or null as the body is a 400, not a crash', async () => {
    for (const raw of ['[]', '42', 'null', '"str"', '{"slug": {"$gt": ""}, "name": 1}']) await expectError(await post(raw), 400, 'validation_failed');
  });

  test('an unknown route or tenant is a 404', async () => {
    await expectError(await admin.call('GET', '/api/v1/nope'), 404, 'not_found');
    await expectError(await admin.call('GET', '/api/v1/tenants/no-such-tenant'), 404, 'not_found');
    await expectError(await admin.call('GET', '/api/v1/tenants/00000000-0000-4000-8000-000000000000'), 404, 'not_found');
  });

  test('an oversized body is a 413, with or without Content-Length', async () => {
    const big = JSON.stringify({ slug: 'big', name: 'x'.repeat(server.config.bodyLimitBytes + 10) });
    await expectError(await post(big), 413, 'payload_too_large');
    const chunked = new ReadableStream({
      start(ctrl) {
        ctrl.enqueue(new TextEncoder().encode(big));
        ctrl.close();
      },
    });
    const res = await fetch(`${server.url}/api/v1/tenants`, {
      method: 'POST',
      body: chunked,
      duplex: 'half',
      headers: { 'content-type': 'application/json', cookie: [...admin.cookies].map(([k, v]) => `${k}=${v}`).join('; '), 'x-csrf-token': admin.csrf ?? '' },
    } as RequestInit);
    await expectError(res, 413, 'payload_too_large');
  });

  test('a body that is not JSON is a 415', async () => {
    await expectError(await post('slug=x&name=y', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
  });

  test('a caller-supplied request id is kept; a bad one is replaced', async () => {
    const r = await fetch(`${server.url}/api/v1/nope`, { headers: { 'x-request-id': 'trace-abc-123' } });
    assert.equal(r.headers.get('x-request-id'), 'trace-abc-123');
    const bad = await fetch(`${server.url}/api/v1/nope`, { headers: { 'x-request-id': 'evil id <script>' } });
    assert.match(bad.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
  });

  test('no request in this file produced a 500', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.doesNotMatch(text, /clawplane_http_requests_total\{[^}]*status="5\d\d"/);
  });
});
