import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { requireSandboxHost } from './helpers/sandbox.ts';

const root = path.resolve(import.meta.dirname, '..');
const script = path.join(root, 'scripts', 'setup-system.sh');

/** A PATH with every program of /usr/bin and /bin except the hidden ones, as on a host without them. */
async function pathWithout(hidden: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-path-'));
  await chmod(dir, 0o755); // the unprivileged user of the npm install test must use it too
  after(() => rm(dir, { recursive: true, force: true }));
  for (const from of ['/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    for (const name of readdirSync(from)) {
      if (hidden.includes(name)) continue;
      await symlink(path.join(from, name), path.join(dir, name)).catch(() => undefined); // first one wins
    }
  }
  return dir;
}

describe('system set-up (scripts/setup-system.sh)', async () => {
  const noBwrap = await pathWithout(['bwrap']);

  test('on a host with everything it needs, it says nothing and succeeds', () => {
    const r = spawnSync('bash', [script, 'serve', '--check'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, '');
  });

  test('without bubblewrap it names the package, why, and the exact command', () => {
    const r = spawnSync('bash', [script, 'serve', '--check'], { encoding: 'utf8', env: { ...process.env, PATH: noBwrap } });
    assert.equal(r.status, 1);
    assert.match(r.stdout, /missing bubblewrap: the local sandbox driver runs every OpenClaw gateway under bubblewrap/);
    assert.match(r.stdout, /run: (sudo )?apt-get update && (sudo )?apt-get install -y --no-install-recommends bubblewrap$/m);
  });

  test("npm install's own step never fails without root: it prints the command with sudo and installs nothing", {
    skip: process.getuid?.() !== 0 ? 'needs root to become another user' : false,
  }, () => {
    const postinstall = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts['postinstall'];
    assert.ok(postinstall, 'package.json runs the set-up on npm install');
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', '-c', postinstall], {
      cwd: root,
      encoding: 'utf8',
      env: { PATH: noBwrap, HOME: '/tmp' },
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /installing/);
    assert.match(r.stdout, /run: sudo apt-get update && sudo apt-get install -y --no-install-recommends bubblewrap/);
  });

  test('a real-gateway test file stops at once with that message, instead of waiting for an instance to start', () => {
    const saved = process.env['PATH'];
    process.env['PATH'] = noBwrap;
    try {
      assert.throws(
        () => requireSandboxHost(),
        /this host cannot run sandboxes:[^]*missing bubblewrap[^]*apt-get install -y --no-install-recommends bubblewrap/,
      );
    } finally {
      process.env['PATH'] = saved;
    }
    assert.doesNotThrow(() => requireSandboxHost());
  });

  const asRootWithApt = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get']).status === 0;
  test('a CRIU build that failed is not retried on every install for a day, and says how to retry', {
    skip: asRootWithApt ? false : 'the CRIU build runs only as root with apt',
  }, async () => {
    const criuDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-criu-'));
    after(() => rm(criuDir, { recursive: true, force: true }));
    writeFileSync(path.join(criuDir, 'build-failed'), '2026-12-05T01:00:00Z\n');
    const r = spawnSync('bash', [script, 'serve'], { encoding: 'utf8', env: { ...process.env, CLAWPLANE_CRIU_DIR: criuDir } });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /building CRIU failed at 2026-12-05T01:00:00Z .*not retried for a day: delete .*build-failed to retry now/);
    assert.doesNotMatch(r.stdout, /building CRIU from Debian's source/);
  });
});
