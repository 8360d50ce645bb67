/**
 * A project's hosts, repositories and data sources are enforced at the broker (docs/lanes.md, "Projects reach
 * only what they list"): while a lane step runs, the tenant's sandbox reaches through the broker's HTTPS proxy
 * and its skill routes only what the project admits, on top of the tenant's egress allow-list; a refusal names
 * its rule (`project.hosts`, `project.repositories`, `project.dataSources`) and is audited. The server's object
 * store is S3 (s3rver): a run's summary.json and artifacts land in the bucket under the tenant's prefix. Real server, PostgreSQL, broker socket and a real TCP service
 * as the outside host; the step's turn is a STAND-IN executor that makes the sandbox's CONNECT itself.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import S3rver from 's3rver';
import { S3ObjectStore } from '../src/backup/s3-store.ts';
import { laneSummary } from '../src/lanes/summary.ts';
import { judgeEgress, repositoryOf } from '../src/lanes/egress.ts';
import type { Lane, Run } from '../src/lanes/types.ts';
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
  // The object store is S3 here (s3rver, an S3-compatible server from npm): lane artifacts go where backups go.
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-lanes-s3-'));
  after(() => rm(dir, { recursive: true, force: true }));
  const s3rver = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: path.join(dir, 's3'),
    configureBuckets: [{ name: 'lanes', configs: [] }],
  });
  const s3addr = (await s3rver.run()) as net.AddressInfo;
  after(() => s3rver.close());
  const s3 = {
    endpoint: `http://127.0.0.1:${s3addr.port}`,
    region: 'us-east-1',
    bucket: 'lanes',
    prefix: 'cp/',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
  };
  const server = await startTestServer({
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_TASK_QUEUE_POLL_MS: '50',
    CLAWPLANE_TASK_RETRY_BASE_MS: '50',
    CLAWPLANE_TASK_RETRY_MAX_MS: '50',
    CLAWPLANE_BACKUP_STORE: 's3',
    CLAWPLANE_BACKUP_S3_ENDPOINT: s3.endpoint,
    CLAWPLANE_BACKUP_S3_BUCKET: s3.bucket,
    CLAWPLANE_BACKUP_S3_PREFIX: s3.prefix,
    CLAWPLANE_BACKUP_S3_ACCESS_KEY_ID: s3.accessKeyId,
    CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
  });
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
    const lane = await a.client.json<{ id: string }>(
      'POST',
      api('/lanes'),
      { name, project, kind: 'analysis', readOnly: false, steps: [{ name: 'probe', capability: 'egress', input: `egress ${name}` }] },
      201,
    );
    const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    return waitFor(`run ${r.id}`, async () => {
      const x = await a.client.json<Run>('GET', api(`/lane-runs/${r.id}`));
      return x.finishedAt ? x : undefined;
    });
  };

  test('a step of a project without the host is refused by rule "project.hosts"; one whose hosts or repositories admit it gets through', async () => {
    await a.client.json(
      'POST',
      api('/projects'),
      { name: 'walled', hosts: ['*.acme.test'], repositories: ['github.com/acme/app'], laneKinds: ['analysis'] },
      201,
    );
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
    assert.match(
      refused?.text ?? '',
      /Refused by rule "project\.hosts": 127\.0\.0\.1:\d+ is not within the hosts of project "walled" \(step "probe" of lane "walled-lane" is running; allowed: \*\.acme\.test, github\.com\)/,
    );
    const audit = await server.db.query<{ target: string; detail: { rule?: string; reason: string } }>(
      "SELECT target, detail FROM audit_events WHERE tenant_id = $1 AND action = 'broker.egress_denied' ORDER BY seq DESC LIMIT 1",
      [a.id],
    );
    assert.deepEqual([audit.rows[0]?.target, audit.rows[0]?.detail.rule], [target, 'project.hosts']);

    const open = await runLane('open-lane', 'open');
    assert.equal(open.status, 'succeeded', open.reason);
    assert.deepEqual(seen.get('egress open-lane'), { status: 200, text: '', echoed: 'ping' });
    // A host a project reaches only through some of its repositories: a tunnel would hide which, so it is refused.
    const byRepo = await runLane('by-repo-lane', 'by-repo');
    assert.equal(byRepo.status, 'succeeded', byRepo.reason);
    assert.equal(seen.get('egress by-repo-lane')?.status, 403);
    assert.match(
      seen.get('egress by-repo-lane')?.text ?? '',
      /Refused by rule "project\.repositories": 127\.0\.0\.1:\d+ hosts repositories and project "by-repo" allows only some of them \(127\.0\.0\.1\/acme\/app\); a tunnel would hide/,
    );
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
    const lane = await a.client.json<{ id: string }>(
      'POST',
      api('/lanes'),
      { name: 'skill-lane', project: 'walled', kind: 'analysis', readOnly: false, steps: [{ name: 'call', capability: 'egress', input: 'skill call' }] },
      201,
    );
    const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const done = await waitFor('skill run', async () => {
      const x = await a.client.json<Run>('GET', api(`/lane-runs/${r.id}`));
      return x.finishedAt ? x : undefined;
    });
    assert.equal(done.status, 'succeeded', done.reason);
    assert.equal(results[0]?.status, 403);
    assert.match(results[0]?.text ?? '', /Refused by rule \\?"project\.hosts\\?": 127\.0\.0\.1:\d+ is not within the hosts of project \\?"walled\\?"/);
  });

  test('repositories and data sources are enforced on the paths the broker sees, each refusal naming its rule; refused calls never reach the upstream', async () => {
    // A fake git forge / data API: records what reached it.
    const hits: string[] = [];
    const forge = http.createServer((req, res) => {
      hits.push(req.url ?? '');
      res.end('ok');
    });
    await new Promise<void>((r) => forge.listen(0, '127.0.0.1', () => r()));
    after(() => new Promise<void>((r) => forge.close(() => r())));
    const forgePort = (forge.address() as net.AddressInfo).port;
    await a.client.json('PUT', api('/egress'), {
      items: [
        { host: '127.0.0.1', port },
        { host: '127.0.0.1', port: forgePort },
      ],
    });
    await a.client.json('PUT', api('/skill-endpoints/forge'), { baseUrl: `http://127.0.0.1:${forgePort}` });
    await a.client.json('POST', api('/projects'), { name: 'repos', repositories: ['127.0.0.1/acme/app', '127.0.0.1/acme/lib*'], laneKinds: ['analysis'] }, 201);
    await a.client.json('POST', api('/projects'), { name: 'data', dataSources: ['127.0.0.1/exports'], laneKinds: ['analysis'] }, 201);
    const get = (path: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request({ socketPath: sandbox.socketPath, method: 'GET', path: `/skills/forge${path}`, agent: false }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        });
        req.on('error', reject);
        req.end();
      });
    const got = new Map<string, { status: number; text: string }>();
    exec.on(/^paths /, async (turn) => {
      for (const p of JSON.parse(turn.input.slice(6)) as string[]) got.set(p, await get(p));
      const tunnel = await connect(sandbox.socketPath, `127.0.0.1:${forgePort}`);
      tunnel.socket.destroy();
      got.set(`CONNECT ${turn.input}`, { status: tunnel.status, text: tunnel.text });
      return { output: 'probed' };
    });
    const run = async (name: string, project: string, paths: string[]) => {
      const lane = await a.client.json<{ id: string }>(
        'POST',
        api('/lanes'),
        { name, project, kind: 'analysis', steps: [{ name: 'probe', capability: 'egress', input: `paths ${JSON.stringify(paths)}` }] },
        201,
      );
      const r = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
      const done = await waitFor(`run ${name}`, async () => {
        const x = await a.client.json<Run>('GET', api(`/lane-runs/${r.id}`));
        return x.finishedAt ? x : undefined;
      });
      assert.equal(done.status, 'succeeded', done.reason);
      return got.get(`CONNECT paths ${JSON.stringify(paths)}`);
    };
    const repoAdmitted = ['/acme/app.git/info/refs?service=git-upload-pack', '/repos/ACME/app/contents/README', '/api/v3/repos/acme/library/pulls'];
    const repoRefused = [
      '/acme/other.git/info/refs?service=git-upload-pack',
      '/api/v3/repos/evil/app',
      '/api/v4/projects/acme%2Fother',
      '/acme/app/../../evil/app.git/info/refs',
      '/user',
    ];
    const repoTunnel = await run('repos-lane', 'repos', [...repoAdmitted, ...repoRefused]);
    const dataAdmitted = ['/exports', '/exports/2026/a.csv?x=1'];
    const dataRefused = ['/exports2/a.csv', '/exports/%2e%2e/secrets', '/secrets'];
    const dataTunnel = await run('data-lane', 'data', [...dataAdmitted, ...dataRefused]);

    for (const p of [...repoAdmitted, ...dataAdmitted]) assert.deepEqual(got.get(p), { status: 200, text: 'ok' }, p);
    for (const p of repoRefused) {
      assert.equal(got.get(p)?.status, 403, p);
      assert.match(
        got.get(p)?.text ?? '',
        /Refused by rule \\"project\.repositories\\": .*project \\"repos\\".*step \\"probe\\" of lane \\"repos-lane\\" is running/,
        p,
      );
    }
    assert.match(
      got.get('/acme/other.git/info/refs?service=git-upload-pack')?.text ?? '',
      /repository 127\.0\.0\.1\/acme\/other is not among the repositories of project/,
    );
    assert.match(got.get('/acme/app/../../evil/app.git/info/refs')?.text ?? '', /repository 127\.0\.0\.1\/evil\/app is not among/);
    for (const p of dataRefused) {
      assert.equal(got.get(p)?.status, 403, p);
      assert.match(
        got.get(p)?.text ?? '',
        /Refused by rule \\"project\.dataSources\\": 127\.0\.0\.1\/\S+ is not within the data sources of project \\"data\\" \(127\.0\.0\.1\/exports\)/,
        p,
      );
    }
    // Tunnels hide the path: both projects refuse them, naming their rule.
    assert.equal(repoTunnel?.status, 403);
    assert.match(repoTunnel?.text ?? '', /rule "project\.repositories"/);
    assert.equal(dataTunnel?.status, 403);
    assert.match(dataTunnel?.text ?? '', /rule "project\.dataSources": 127\.0\.0\.1:\d+ is reachable only through the data sources of project "data"/);
    // Only what was admitted reached the upstream (dot segments resolved before judging).
    assert.deepEqual(hits, [
      '/acme/app.git/info/refs?service=git-upload-pack',
      '/repos/ACME/app/contents/README',
      '/api/v3/repos/acme/library/pulls',
      '/exports',
      '/exports/2026/a.csv?x=1',
    ]);
    const audit = await server.db.query<{ rule: string }>(
      "SELECT DISTINCT detail->>'rule' AS rule FROM audit_events WHERE tenant_id = $1 AND action = 'broker.egress_denied' AND target = 'skill:forge'",
      [a.id],
    );
    assert.deepEqual(audit.rows.map((r) => r.rule).sort(), ['project.dataSources', 'project.repositories']);
  });

  test("on an S3 object store, a run's summary.json and its artifacts land in the bucket under the tenant's prefix", async () => {
    const store = new S3ObjectStore(s3);
    after(() => store.close());
    const lane = await a.client.json<Lane>('PUT', api('/doctor-lane'), { enabled: true });
    const started = await a.client.json<Run>('POST', api(`/lanes/${lane.id}/runs`), undefined, 201);
    const run = await waitFor('the doctor run', async () => {
      const r = await a.client.json<Run>('GET', api(`/lane-runs/${started.id}`));
      return r.finishedAt ? r : undefined;
    });
    assert.equal(run.status, 'succeeded', run.reason);
    assert.match(run.summaryKey ?? '', new RegExp(`^artifacts/${a.id}/lanes/doctor/\\d{8}-\\d{6}-\\d{3}z/summary\\.json$`));
    const file = path.join(dir, 'got.json');
    await store.get(run.summaryKey ?? '', file);
    const summary = laneSummary.parse(JSON.parse(await readFile(file, 'utf8')));
    assert.deepEqual(
      [summary.run.id, summary.status, summary.steps.map((st) => st.check)],
      [run.id, 'succeeded', ['instance-health', 'budgets', 'credentials']],
    );
    await store.get((run.summaryKey ?? '').replace('summary.json', 'step-1-budgets.json'), file);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), run.steps[1]?.findings);
    assert.ok(run.artifactBytes > 0);
  });
});

describe('which repository a URL names, and what a project admits (no server)', () => {
  test('git web, smart HTTP, GitHub REST (and its aliases), GitLab REST', () => {
    assert.equal(repositoryOf('api.github.com', '/repos/Acme/App/pulls'), 'github.com/acme/app');
    assert.equal(repositoryOf('api.github.com', '/users/acme/repos'), null);
    assert.equal(repositoryOf('github.com', '/acme/app.git/info/refs'), 'github.com/acme/app');
    assert.equal(repositoryOf('raw.githubusercontent.com', '/acme/app/main/README.md'), 'github.com/acme/app');
    assert.equal(repositoryOf('ghe.acme.test', '/api/v3/repos/acme/app'), 'ghe.acme.test/acme/app');
    assert.equal(repositoryOf('gitlab.com', '/api/v4/projects/acme%2Fgroup%2Fapp/repository'), 'gitlab.com/acme/group/app');
    assert.equal(repositoryOf('github.com', '/settings'), null);
  });
  test('repositories restrict their host (and its aliases) whatever hosts says; tunnels only where every repository is allowed', () => {
    const p = { name: 'p', hosts: ['github.com'], repositories: ['github.com/acme/app'], dataSources: [] };
    assert.equal(judgeEgress(p, 'api.github.com', 443, '/repos/acme/app/contents/x'), null);
    assert.equal(judgeEgress(p, 'api.github.com', 443, '/repos/acme/other')?.rule, 'project.repositories');
    assert.equal(judgeEgress(p, 'github.com', 443, '/evil/app.git/info/refs')?.rule, 'project.repositories');
    assert.equal(judgeEgress(p, 'github.com', 443, '/settings'), null, 'hosts admit what names no repository');
    assert.equal(judgeEgress(p, 'github.com', 443)?.rule, 'project.repositories');
    assert.equal(judgeEgress(p, 'codeload.github.com', 443)?.rule, 'project.repositories');
    assert.equal(judgeEgress({ ...p, repositories: ['github.com/*'] }, 'github.com', 443), null);
    assert.equal(
      judgeEgress({ ...p, repositories: ['https://GitHub.com/Acme/App'] }, 'api.github.com', 443, '/repos/acme/app'),
      null,
      'a scheme is ignored, names compare in lower case',
    );
    assert.equal(judgeEgress({ ...p, hosts: [] }, 'example.com', 443)?.rule, 'project.hosts');
  });
  test('a data source is a URL prefix at a path boundary; a tunnel to a path-limited one is refused', () => {
    const p = { name: 'p', hosts: [], repositories: [], dataSources: ['https://data.acme.test/exports'] };
    assert.equal(judgeEgress(p, 'data.acme.test', 443, '/exports/2026/a.csv'), null);
    assert.equal(judgeEgress(p, 'data.acme.test', 443, '/exports2/a.csv')?.rule, 'project.dataSources');
    assert.equal(judgeEgress(p, 'data.acme.test', 443, '/exports/..%2Fsecrets')?.rule, 'project.dataSources');
    assert.equal(judgeEgress(p, 'data.acme.test', 443)?.rule, 'project.dataSources');
    assert.equal(judgeEgress({ ...p, dataSources: ['data.acme.test'] }, 'data.acme.test', 443), null);
  });
});
