/**
 * The ingress's request to a gateway goes over a kept-alive Unix socket to the sandbox's supervisor. When
 * the supervisor closes an idle socket just as a request is written to it, the request never reached the
 * gateway; the user must not see a 502 for it. Measured once in CI: 502 `gateway_unreachable` (EPIPE).
 * Here a real HTTP server on a Unix socket drops a reused connection the moment the next request arrives,
 * which is the same failure made deterministic.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { gatewayRequest, readAll } from '../src/ingress/gateway.ts';
import { streamTurn } from '../src/tasks/gateway-executor.ts';
import { unixTransport } from '../src/sandbox/host/unix-transport.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cp-gwreq-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

async function server(name: string, onRequest: (req: http.IncomingMessage, res: http.ServerResponse, served: number) => void, opts: http.ServerOptions = {}) {
  const socketPath = path.join(dir, name);
  const seen: string[] = [];
  const srv = http.createServer(opts, (req, res) => {
    const served = ((req.socket as unknown as { served?: number }).served ?? 0) + 1;
    (req.socket as unknown as { served: number }).served = served;
    seen.push(`${req.method} ${req.url} #${served}`);
    onRequest(req, res, served);
  });
  await new Promise<void>((r) => srv.listen(socketPath, r));
  after(
    () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  );
  return { transport: unixTransport(socketPath), seen };
}

describe('requests to a gateway over a kept-alive socket', () => {
  test('a request the supervisor drops on a reused socket before answering is sent again on a fresh one', async () => {
    const gw = await server('drop-reused.sock', (req, res, served) => {
      if (served > 1) return req.socket.destroy(); // the supervisor closed this idle connection as the request came
      res.end(`answer to ${req.url}`);
    });
    const first = await gatewayRequest({ transport: gw.transport, token: 't', method: 'GET', path: '/one' }).response;
    assert.equal(await readAll(first), 'answer to /one');
    const second = gatewayRequest({ transport: gw.transport, token: 't', method: 'POST', path: '/two', body: '{"x":1}' });
    const res = await second.response;
    assert.equal(res.statusCode, 200);
    assert.equal(await readAll(res), 'answer to /two');
    assert.deepEqual(gw.seen, ['GET /one #1', 'POST /two #2', 'POST /two #1'], 'dropped once on the reused socket, answered on a fresh one');
  });

  test("an idle socket is retired by the host before the supervisor's announced keep-alive timeout, so the next request goes on a fresh one", {
    timeout: 30_000,
  }, async () => {
    // The supervisor is a Node server: it announces `Keep-Alive: timeout=5` and closes an idle connection
    // after 5 s. Here it announces 2 s but would keep the connection for a minute, so only the host side
    // can close it: the transport's agent must read the hint and retire the socket itself (about 1 s).
    const closedBy: string[] = [];
    const gw = await server(
      'hint.sock',
      (req, res, served) => {
        req.socket.once('close', () => closedBy.push(`${req.url} #${served}`));
        res.writeHead(200, { 'keep-alive': 'timeout=2' });
        res.end('ok');
      },
      { keepAliveTimeout: 60_000 },
    );
    assert.equal(await readAll(await gatewayRequest({ transport: gw.transport, token: 't', method: 'GET', path: '/first' }).response), 'ok');
    while (closedBy.length === 0) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(closedBy, ['/first #1'], 'the host closed the idle connection before the supervisor would have');
    assert.equal(await readAll(await gatewayRequest({ transport: gw.transport, token: 't', method: 'GET', path: '/second' }).response), 'ok');
    assert.deepEqual(gw.seen, ['GET /first #1', 'GET /second #1'], 'the next request opened a fresh connection');
  });

  test('a request that fails on a fresh socket is not sent twice: the caller gets the error', async () => {
    const gw = await server('drop-all.sock', (req) => req.socket.destroy());
    await assert.rejects(
      gatewayRequest({ transport: gw.transport, token: 't', method: 'POST', path: '/chat', body: '{}' }).response,
      /socket hang up|ECONNRESET/,
    );
    assert.deepEqual(gw.seen, ['POST /chat #1']);
  });

  test('an aborted request is not sent again', async () => {
    const gw = await server('slow.sock', () => {}); // never answers
    const call = gatewayRequest({ transport: gw.transport, token: 't', method: 'GET', path: '/wait' });
    while (gw.seen.length === 0) await new Promise((r) => setTimeout(r, 10));
    call.abort();
    await assert.rejects(call.response, /aborted by the client/);
    assert.deepEqual(gw.seen, ['GET /wait #1']);
  });

  test("a task's turn goes the same way: dropped on a reused socket, it is sent again and streams its answer; aborted, it ends with the reason", async () => {
    let hold: http.ServerResponse | undefined;
    const gw = await server('turn.sock', (req, res, served) => {
      if (req.url === '/warm') return res.end('ok');
      if (served > 1) return req.socket.destroy(); // closed as the turn was written to the kept-alive socket
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (req.headers['x-openclaw-session-key'] === 'held') return void (hold = res); // a turn held at an approval
      for (const w of ['Hello', ' there']) res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: w } }] })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
    await readAll(await gatewayRequest({ transport: gw.transport, token: 't', method: 'GET', path: '/warm' }).response);
    const events: string[] = [];
    const trace = async (kind: string) => void events.push(kind);
    const text = await streamTurn({
      transport: gw.transport,
      token: 't',
      headers: { 'x-openclaw-session-key': 's' },
      body: '{}',
      signal: new AbortController().signal,
      trace,
    });
    assert.equal(text, 'Hello there');
    assert.deepEqual(gw.seen, ['GET /warm #1', 'POST /v1/chat/completions #2', 'POST /v1/chat/completions #1'], 'sent again on a fresh socket');
    assert.deepEqual(events, ['stream_started', 'stream_progress', 'stream_done']);
    const ac = new AbortController();
    const held = streamTurn({ transport: gw.transport, token: 't', headers: { 'x-openclaw-session-key': 'held' }, body: '{}', signal: ac.signal, trace });
    while (!hold) await new Promise((r) => setTimeout(r, 10));
    const closed = new Promise((r) => hold?.on('close', r));
    ac.abort(new Error('cancelled by a person'));
    await assert.rejects(held, /cancelled by a person/);
    await closed; // the gateway sees the turn's connection go, and ends the run
  });
});
