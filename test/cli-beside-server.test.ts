import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ADMIN_EMAIL, ApiClient, onboard } from './helpers/client.ts';
import type { TestServer } from './helpers/server.ts';

const cli = path.resolve(import.meta.dirname, '../src/cli/main.ts');

/**
 * The README's set-up as a user runs it: `clawplane serve` on the embedded database, and CLI commands
 * on the same host (same data directory) while it runs. Each command opens the server's database; none
 * may take it away (it used to stop PostgreSQL on exit: /readyz 503, the API 500 ECONNREFUSED).
 */
describe('database CLI commands beside a running server', async () => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-cli-'));
  const env: NodeJS.ProcessEnv = { ...process.env, CLAWPLANE_DATA_DIR: dataDir, CLAWPLANE_PORT: '0' };
  for (const k of ['DATABASE_URL', 'CLAWPLANE_SECRET_KEY']) delete env[k];
  const child = spawn(process.execPath, [cli, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*clawplane listening/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((code) => reject(new Error(`serve exited ${code}: ${out}`)));
  });
  after(async () => {
    child.kill('SIGTERM');
    await exited;
    await rm(dataDir, { recursive: true, force: true });
  });
  let admin = await onboard({ url, config: { dataDir } } as unknown as TestServer);

  const run = (args: string[], input?: string) => {
    const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8', ...(input === undefined ? {} : { input }) });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  // A new connection per check: a CLI command takes longer than the server's keep-alive, and a reused
  // socket the server just closed would fail the check for a reason that is not the one tested.
  const get = (p: string, cookie?: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.get(url + p, { agent: false, headers: cookie ? { cookie } : {} }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
    });
  const serverStillWorks = async (after: string) => {
    const ready = await get('/readyz');
    assert.equal(ready.status, 200, `/readyz after "${after}": ${ready.body}`);
    const tenants = await get('/api/v1/tenants', [...admin.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    assert.equal(tenants.status, 200, `tenant list after "${after}": ${tenants.body}`);
    return JSON.parse(tenants.body) as { items: { slug: string }[] };
  };

  test('every database command, one after another, leaves the server serving', async () => {
    const steps: { args: string[]; input?: string; expect?: number }[] = [
      { args: ['migrate'] },
      { args: ['migrate', '--check'] },
      { args: ['audit', 'verify'] },
      { args: ['tenant', 'create', '--slug', 'acme', '--name', 'Acme'] },
      { args: ['tenant', 'list'] },
      { args: ['tenant', 'suspend', 'acme'] },
      { args: ['tenant', 'resume', 'acme'] },
      { args: ['token', 'create', '--tenant', 'acme', '--name', 'ci', '--role', 'member'] },
      { args: ['vault', 'status'] },
      { args: ['vault', 'rotate'] },
      { args: ['vault', 'rewrap'] },
      { args: ['instance', 'backups', '--tenant', 'acme'] },
      { args: ['runtime', 'rm', '2020.1.1'], expect: -1 },
    ];
    for (const s of steps) {
      const r = run(s.args, s.input);
      if (s.expect !== -1) assert.equal(r.status, s.expect ?? 0, `${s.args.join(' ')}: ${r.stderr}${r.stdout}`);
      await serverStillWorks(s.args.join(' '));
      assert.doesNotMatch(r.stderr, /adopting it/, 'a command does not claim the server it shares');
    }
    const tokenId = /created token (\S+)/.exec(run(['token', 'create', '--tenant', 'acme', '--name', 'ci2', '--role', 'member']).stderr)?.[1];
    assert.ok(tokenId, 'token create prints the id');
    assert.equal(run(['token', 'revoke', '--tenant', 'acme', tokenId]).status, 0);
    await serverStillWorks('token revoke');
    // Last, since it ends every session: sign in again with the new password.
    const reset = run(['admin', 'reset-password'], 'another long passphrase here\n');
    assert.equal(reset.status, 0, reset.stderr);
    admin = new ApiClient(url);
    const login = await admin.json<{ csrfToken: string }>('POST', '/api/v1/auth/login', { email: ADMIN_EMAIL, password: 'another long passphrase here' });
    admin.csrf = login.csrfToken;
    const list = await serverStillWorks('admin reset-password');
    assert.ok(
      list.items.some((t) => t.slug === 'acme'),
      'the tenant the CLI created is served by the server',
    );
  });
});
