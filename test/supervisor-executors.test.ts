/**
 * The in-sandbox supervisor running only the executors it is asked to (docs/adr/0014-executor-pools.md,
 * Scaling): the real supervisor script, with a stand-in gateway program (a few lines of HTTP that answer
 * /readyz and say which executor they are) in place of OpenClaw, so no gateway starts. Real-gateway scaling is
 * in test/pools-gateway.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { socketRequest } from '../src/sandbox/host/socket-http.ts';
import type { SupervisorConfig, SupervisorHealth } from '../src/sandbox/supervisor/protocol.ts';
import { waitFor } from './helpers/sandbox.ts';

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A stand-in gateway: answers every request with its own port, /readyz included. */
const GATEWAY = `import http from 'node:http';
const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
http.createServer((req, res) => res.end(JSON.stringify({ port, path: req.url }))).listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

describe('the supervisor runs the executors it is asked to', () => {
  test('started with some of its executors, it starts and stops others on request while the first keeps running', { timeout: 60_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cp-run-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.chmodSync(dir, 0o777);
    const file = (name: string, text: string) => {
      fs.writeFileSync(path.join(dir, name), text, { mode: 0o644 });
      return path.join(dir, name);
    };
    const ports = [await freePort(), await freePort(), await freePort()];
    const executors = ports.map((port, i) => ({
      id: `e${i}`,
      port,
      stateDir: path.join(dir, `e${i}`),
      configPath: path.join(dir, `e${i}.json`),
      logFile: path.join(dir, `e${i}.log`),
    }));
    const cfg: SupervisorConfig = {
      executors,
      run: ['e0'],
      command: [process.execPath, file('gateway.mjs', GATEWAY)],
      env: { TMPDIR: dir },
      gatewayTokenFile: file('gateway-token', 'gw'),
      egressPort: await freePort(),
      brokerSocket: path.join(dir, 'broker.sock'),
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
    after(() => void (sup.exitCode === null && sup.kill('SIGTERM')));
    const control = path.join(dir, 'control.sock');
    const health = async () => {
      if (sup.exitCode !== null) assert.fail('the supervisor exited');
      const r = await socketRequest(control, { path: '/health', timeoutMs: 5000 }).catch(() => undefined);
      return r?.status === 200 ? (JSON.parse(r.body) as SupervisorHealth) : undefined;
    };
    const states = (h: SupervisorHealth) => Object.fromEntries(h.executors.map((e) => [e.id, e.state]));
    const run = (ids: string[]) =>
      socketRequest(control, { method: 'PUT', path: '/executors', body: JSON.stringify({ run: ids }), headers: { 'content-type': 'application/json' } });
    const ask = (executor: string) => socketRequest(path.join(dir, 'ingress.sock'), { path: '/whoami', headers: { 'x-clawplane-executor': executor } });

    // At start: only e0 runs, and the sandbox counts as ready with it alone.
    const first = await waitFor('e0 ready', async () => {
      const h = await health();
      return h?.ready ? h : undefined;
    });
    assert.deepEqual(states(first), { e0: 'ready', e1: 'stopped', e2: 'stopped' });
    const e0pid = first.executors[0]?.pid;
    assert.equal((await ask('e2')).status, 503, 'a stopped executor is not served');

    // Add e2 beside it.
    assert.equal((await run(['e0', 'e2'])).status, 200);
    const added = await waitFor('e2 ready', async () => {
      const h = await health();
      return h && states(h)['e2'] === 'ready' ? h : undefined;
    });
    assert.deepEqual(states(added), { e0: 'ready', e1: 'stopped', e2: 'ready' });
    assert.equal(added.executors[0]?.pid, e0pid, 'e0 was not restarted');
    assert.deepEqual(JSON.parse((await ask('e2')).body), { port: ports[2], path: '/whoami' });

    // And stop it again: it is not restarted (as a crashed executor would be).
    assert.equal((await run(['e0'])).status, 200);
    const stopped = await waitFor('e2 stopped', async () => {
      const h = await health();
      return h && states(h)['e2'] === 'stopped' ? h : undefined;
    });
    await new Promise((r) => setTimeout(r, 300));
    const later = await health();
    assert.ok(later);
    assert.deepEqual(states(later), { e0: 'ready', e1: 'stopped', e2: 'stopped' });
    assert.equal(later.executors[2]?.restarts, stopped.executors[2]?.restarts, 'a stop on request is not a crash');
    assert.equal(later.executors[0]?.pid, e0pid);

    // Unknown executors and bad bodies are refused, naming what is wrong.
    const bad = await run(['e0', 'e9']);
    assert.deepEqual([bad.status, (JSON.parse(bad.body) as { error: string }).error], [400, 'no such executor: e9']);
    assert.equal((await socketRequest(control, { method: 'PUT', path: '/executors', body: '{"run": "e0"}' })).status, 400);
  });
});
