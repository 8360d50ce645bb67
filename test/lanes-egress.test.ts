/**
 * A project's hosts are enforced at the broker (docs/lanes.md, "Projects reach only their hosts"): while a lane
 * step runs, the tenant's sandbox reaches through the broker's HTTPS proxy (and its skill routes) only hosts
 * within the project's `hosts` and its repositories' hosts, on top of the tenant's egress allow-list; a refusal
 * names the rule `project.hosts` and is audited. Real server, PostgreSQL, broker socket and a real TCP service
 * as the outside host; the step's turn is a STAND-IN executor that makes the sandbox's CONNECT itself.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import type { Run } from '../src/lanes/types.ts';
import { onboard, twoTenants } from './helpers/client.ts';
import { waitFor } from './helpers/sandbox.ts';
import { startTestServer } from './helpers/server.ts';
import { ScriptedExecutor } from './helpers/task-executors.ts';

/** CONNECT through a sandbox's broker socket: the status and what the broker said. */
function connect(socketPath: string, target: string): Promise<{ status: number; text: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'CONNECT', path: target, agent: false });
    req.on('connect', (res, socket: net.Socket, head: Buffer) => {
      const status = res.statusCode ?? 0;
      if (status === 200) return resolve({ status, text: '', socket });
      const chunks = [head];
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('close', () => resolve({ status, text: Buffer.concat(chunks).toString(), socket }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe("lane steps reach only their project's hosts", { timeout: 300_000 }, async () => {
  const server = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1', CLAWPLANE_TASK_QUEUE_POLL_MS: '50', CLAWPLANE_TASK_RETRY_BASE_MS: '50', CLAWPLANE_TASK_RETRY_MAX_MS: '50' });
  const admin = await onboard(server);
  const { a } = await twoTenants(server, admin);
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  // A TCP echo service stands in for an outside host (the platform allows 127.0.0.1 in this test).
  const echo = net.createServer((sock) => sock.pipe(sock));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  after(() => new Promise<void>((r) => echo.close(() => r())));
  const port = (echo.address() as net.AddressInfo).port;
  const target = `127.0.0.1:${port}`;
  await a.client.json('PUT', api('/egress'), { items: [{ host: '127.0.0.1', port }] });
  const sandbox = await server.services.broker.registerSandbox({ tenantId: a.id, instanceId: 'lane-egress', sandboxId: 'lane-egress' });

  /** What the sandbox got when it tried `target` during the step (and whether the tunnel carried bytes). */
  const seen = new Map<string, { status: number; text: string; echoed: string }>();
  const exec = new ScriptedExecutor();
  exec.on(/^egress /, async (turn) => {
    const r = await connect(sandbox.socketPath, target);
    let echoed = '';
    if (r.status === 200) {
      echoed = await new Promise<string>((resolve) => {
        r.socket.once('data', (d: Buffer) => resolve(d.toString()));
        r.socket.write('ping');
      });
    }
    r.socket.destroy();
    seen.set(turn.input, { status: r.status, text: r.text, echoed });
    return { output: `tried ${target}: ${r.status}` };
  });
  server.services.taskRuntime.useExecutor(exec);
  await server.services.agents.create(a.id, { name: 'prober', capabilities: ['egress'] }, { actor: 'test' });

  const runLane = async (name: string, project: string) => {
    const lane = await a.client.json<{ id: string }>('POST', api('/lanes'), { name, project, kind: 'analysis', readOnly: false, steps: [{ name: 'probe', capability: 'egress', input: `egress ${name}` }] }, 201);
    const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    return waitFor(`run ${r.id}`, async () => {
      const x = await a.client.json<Run>('GET', api(`/lane-runs/${r.id}`));
      return x.finishedAt ? x : undefined;
    });
  };

  test('a step of a project without the host is refused by rule "project.hosts"; one whose hosts or repositories admit it gets through', async () => {
    await a.client.json('POST', api('/projects'), { name: 'walled', hosts: ['*.acme.test'], repositories: ['github.com/acme/app'], laneKinds: ['analysis'] }, 201);
    await a.client.json('POST', api('/projects'), { name: 'open', hosts: ['127.0.0.1'], laneKinds: ['analysis'] }, 201);
    await a.client.json('POST', api('/projects'), { name: 'by-repo', repositories: ['127.0.0.1/acme/app'], laneKinds: ['analysis'] }, 201);
    // Outside any lane step, the tenant's allow-list alone decides.
    const before = await connect(sandbox.socketPath, target);
    assert.equal(before.status, 200);
    before.socket.destroy();

    const walled = await runLane('walled-lane', 'walled');
    assert.equal(walled.status, 'succeeded', walled.reason);
    const refused = seen.get('egress walled-lane');
    assert.equal(refused?.status, 403);
    assert.match(refused?.text ?? '', /Refused by rule "project\.hosts": 127\.0\.0\.1:\d+ is not within the hosts of project "walled" \(step "probe" of lane "walled-lane" is running; allowed: \*\.acme\.test, github\.com\)/);
    const audit = await server.db.query<{ target: string; detail: { rule?: string; reason: string } }>("SELECT target, detail FROM audit_events WHERE tenant_id = $1 AND action = 'broker.egress_denied' ORDER BY seq DESC LIMIT 1", [a.id]);
    assert.deepEqual([audit.rows[0]?.target, audit.rows[0]?.detail.rule], [target, 'project.hosts']);

    for (const name of ['open', 'by-repo']) {
      const run = await runLane(`${name}-lane`, name);
      assert.equal(run.status, 'succeeded', run.reason);
      assert.deepEqual(seen.get(`egress ${name}-lane`), { status: 200, text: '', echoed: 'ping' }, name);
    }
    // The step is over: the project no longer narrows the tenant's egress.
    const after = await connect(sandbox.socketPath, target);
    assert.equal(after.status, 200);
    after.socket.destroy();
  });

  test("a skill route is held to the running step's project too", async () => {
    await a.client.json('PUT', api('/skill-endpoints/echo'), { baseUrl: `http://${target}` });
    const skill = () =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request({ socketPath: sandbox.socketPath, method: 'GET', path: '/skills/echo/x', agent: false }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        });
        req.on('error', reject);
        req.end();
      });
    const results: { status: number; text: string }[] = [];
    exec.on(/^skill /, async () => {
      results.push(await skill());
      return { output: 'done' };
    });
    const lane = await a.client.json<{ id: string }>('POST', api('/lanes'), { name: 'skill-lane', project: 'walled', kind: 'analysis', readOnly: false, steps: [{ name: 'call', capability: 'egress', input: 'skill call' }] }, 201);
    const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const done = await waitFor('skill run', async () => {
      const x = await a.client.json<Run>('GET', api(`/lane-runs/${r.id}`));
      return x.finishedAt ? x : undefined;
    });
    assert.equal(done.status, 'succeeded', done.reason);
    assert.equal(results[0]?.status, 403);
    assert.match(results[0]?.text ?? '', /Refused by rule \\?"project\.hosts\\?": 127\.0\.0\.1:\d+ is not within the hosts of project \\?"walled\\?"/);
  });
});
