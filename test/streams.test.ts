/**
 * Streams end cleanly or fail loudly. The broker's way to providers (Upstreams) re-checks a provider's
 * address on a timer; a slow stream that outlives many re-checks must still complete. A provider that
 * cuts its answer mid-stream must surface as an error at once, with nothing left waiting.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { SupervisorConfig } from '../src/sandbox/supervisor/protocol.ts';
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
    const call = () =>
      up.request(`${fake.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        timeoutMs: 10_000,
        signal: new AbortController().signal,
      });
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

  test('a provider whose address changes while slow streams run: the replaced pool is retired only when its streams have ended', async () => {
    const fake = await startFakeLlm();
    fake.dripChunks = 12;
    fake.dripMs = 100;
    const port = Number(new URL(fake.url).port);
    // The provider's second address: 127.0.0.2 on the same port, forwarding to the fake.
    let viaSecond = 0;
    const second = net.createServer((c) => {
      viaSecond++;
      const up = net.connect(port, '127.0.0.1');
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((r) => second.listen(port, '127.0.0.2', r));
    after(
      () =>
        new Promise<void>((r) => {
          second.close(() => r());
        }),
    );
    let address = '127.0.0.1';
    const up = new Upstreams({ allowedHosts: ['provider.test'], resolver: () => Promise.resolve([{ address, family: 4 }]) }, { recheckMs: 150 });
    const body = Buffer.from(JSON.stringify({ model: 'drip', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    const call = () =>
      up.request(`http://provider.test:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        timeoutMs: 10_000,
        signal: new AbortController().signal,
      });
    try {
      const streams: Promise<string>[] = [];
      // Each stream starts on a new address, so the pool of the one before is replaced while it streams.
      for (const next of ['127.0.0.1', '127.0.0.2', '127.0.0.1']) {
        address = next;
        streams.push(call().then(readStream));
        await new Promise((r) => setTimeout(r, 300));
      }
      const texts = await Promise.all(streams);
      for (const t of texts) {
        assert.match(t, /w11/, 'the last word arrived');
        assert.match(t, /\[DONE\]/);
      }
      assert.ok(viaSecond > 0, 'the second address was used');
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
      const res = await up.request(`${fake.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body('cut'),
        timeoutMs: 10_000,
        signal: new AbortController().signal,
      });
      await assert.rejects(readStream(res));
      const ok = await up.request(`${fake.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body('fake-model'),
        timeoutMs: 10_000,
        signal: new AbortController().signal,
      });
      const okText = await readStream(ok);
      assert.match(okText, /Hello/, `status ${ok.statusCode}: ${okText}`);
    } finally {
      up.close();
    }
  });
});

/** A free loopback TCP port (the supervisor's egress port is fixed in its config). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe("the in-sandbox supervisor's relay", () => {
  test("a broker answer cut mid-stream fails the gateway's model call at once instead of leaving it waiting", { timeout: 30_000 }, async () => {
    // The real supervisor script, with no gateway: the gateway's model call is made here, to its egress port,
    // and the broker is a stand-in on a Unix socket that sends a chunk and then drops the connection.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cp-relay-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.chmodSync(dir, 0o777);
    const brokerSocket = path.join(dir, 'broker.sock');
    const broker = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'Hello' } }] })}\n\n`);
      setTimeout(() => res.socket?.destroy(), 50);
    });
    await new Promise<void>((r) => broker.listen(brokerSocket, r));
    after(() => new Promise<void>((r) => broker.close(() => r())));
    fs.chmodSync(brokerSocket, 0o777);
    const file = (name: string, text: string) => {
      fs.writeFileSync(path.join(dir, name), text, { mode: 0o644 });
      return path.join(dir, name);
    };
    const egressPort = await freePort();
    const cfg: SupervisorConfig = {
      executors: [],
      command: ['true'],
      env: { TMPDIR: dir },
      gatewayTokenFile: file('gateway-token', 'gw'),
      egressPort,
      brokerSocket,
      brokerTokenFile: file('broker-token', 'broker-token'),
      ingress: { path: path.join(dir, 'ingress.sock') },
      control: { path: path.join(dir, 'control.sock') },
      logFile: path.join(dir, 'supervisor.log'),
      backoff: { initialMs: 100, maxMs: 1000, resetAfterMs: 1000 },
    };
    // Not as root: the supervisor makes its compile-cache directory under /tenant, which exists only in a sandbox.
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const sup = spawn(process.execPath, [path.resolve('src/sandbox/supervisor/supervisor.ts'), file('sandbox.json', JSON.stringify(cfg))], {
      stdio: ['ignore', 'ignore', 'pipe'],
      ...asNobody,
    });
    let stderr = '';
    sup.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    after(() => void (sup.exitCode === null && sup.kill('SIGKILL')));
    // Ready once its egress port takes connections.
    for (;;) {
      if (sup.exitCode !== null) assert.fail(`the supervisor exited: ${stderr}`);
      const ok = await new Promise<boolean>((r) => {
        const c = net.connect(egressPort, '127.0.0.1', () => r(c.end() && true)).on('error', () => r(false));
      });
      if (ok) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: egressPort, method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' } },
        resolve,
      );
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'm', stream: true, messages: [] }));
    });
    assert.equal(res.statusCode, 200);
    // Read to the end: with pipe() the relay neither ended nor failed this answer, and this waited forever.
    await assert.rejects(readStream(res), /cut after \d+ bytes|aborted|ECONNRESET/);
  });
});
