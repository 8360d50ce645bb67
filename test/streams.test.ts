/**
 * Streams end cleanly or fail loudly. The broker's way to providers (Upstreams) re-checks a provider's
 * address on a timer; a slow stream that outlives many re-checks must still complete. A provider that
 * cuts its answer mid-stream must surface as an error at once, with nothing left waiting.
 */
import assert from 'node:assert/strict';
import type http from 'node:http';
import { describe, test } from 'node:test';
import { Upstreams } from '../src/broker/upstream.ts';
import { startFakeLlm } from './helpers/fake-llm.ts';

const policy = { allowedHosts: ['127.0.0.1'] };

/** Reads a streamed answer to its end; rejects if it is cut (an error or an early close). */
function readStream(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => (text += c));
    res.on('end', () => resolve(text));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('aborted')));
    res.on('close', () => {
      if (!res.complete) reject(new Error(`cut after ${text.length} bytes`));
    });
  });
}

describe('streams through the broker to providers', () => {
  test('a provider streaming a chunk every 100 ms for longer than the address re-check interval: every stream completes', async () => {
    const fake = await startFakeLlm();
    fake.dripChunks = 12;
    fake.dripMs = 100;
    // Re-checked every 150 ms: each 1.2 s stream spans about eight re-checks.
    const up = new Upstreams(policy, { recheckMs: 150 });
    const body = Buffer.from(JSON.stringify({ model: 'drip', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    const call = () => up.request(`${fake.baseUrl}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, timeoutMs: 10_000, signal: new AbortController().signal });
    try {
      const streams: Promise<string>[] = [];
      // Three streams started 300 ms apart, so re-checks happen while each is in flight.
      for (let i = 0; i < 3; i++) {
        streams.push(call().then(readStream));
        await new Promise((r) => setTimeout(r, 300));
      }
      const texts = await Promise.all(streams);
      for (const t of texts) {
        assert.match(t, /w11/, 'the last word arrived');
        assert.match(t, /\[DONE\]/);
      }
      assert.equal(fake.requests.filter((r) => r.aborted).length, 0);
    } finally {
      up.close();
    }
  });

  test('a provider that cuts its stream: the reader gets an error at once, and the pool keeps serving', async () => {
    const fake = await startFakeLlm();
    const up = new Upstreams(policy, { recheckMs: 60_000 });
    const body = (model: string) => Buffer.from(JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    try {
      const res = await up.request(`${fake.baseUrl}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body('cut'), timeoutMs: 10_000, signal: new AbortController().signal });
      await assert.rejects(readStream(res));
      const ok = await up.request(`${fake.baseUrl}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body('fake-model'), timeoutMs: 10_000, signal: new AbortController().signal });
      const okText = await readStream(ok);
      assert.match(okText, /Hello/, `status ${ok.statusCode}: ${okText}`);
    } finally {
      up.close();
    }
  });
});
