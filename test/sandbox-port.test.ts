/**
 * The sandbox port without a gateway: refs stored by earlier releases still read; the driver is chosen
 * in one place; state archives stream both ways as the tenant's uid; per-file sandbox uid blocks never
 * overlap; and nothing outside the sandbox drivers builds socket paths or `ws+unix://` URLs.
 */
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import { DockerSandboxDriver } from '../src/sandbox/drivers/docker/driver.ts';
import { createSandboxDriver, type SandboxDriverSettings } from '../src/sandbox/drivers/factory.ts';
import { LocalSandboxDriver } from '../src/sandbox/drivers/local/driver.ts';
import { packStream, unpackState } from '../src/sandbox/host/state-archive.ts';
import { storedSandboxRef, storedSnapshotRef, type SandboxDriver } from '../src/sandbox/types.ts';
import { UID_BASES } from './helpers/gateway.ts';

test('a local handle stored by an earlier release reads as a ref with an owner and a native part', () => {
  const legacy = {
    driver: 'local',
    sandboxId: 's',
    instanceId: 'i',
    tenantId: 't',
    runtimeVersion: '1',
    pid: 42,
    pidStartTime: 7,
    startedAt: 'x',
    clusterId: 'c',
  };
  assert.deepEqual(storedSandboxRef(legacy), {
    driver: 'local',
    sandboxId: 's',
    instanceId: 'i',
    tenantId: 't',
    runtimeVersion: '1',
    startedAt: 'x',
    owner: { clusterId: 'c', nodeId: '' },
    native: { pid: 42, pidStartTime: 7 },
  });
  const current = {
    driver: 'docker',
    sandboxId: 's',
    instanceId: 'i',
    tenantId: 't',
    runtimeVersion: '1',
    startedAt: 'x',
    owner: { clusterId: 'c', nodeId: 'n' },
    native: { containerId: 'abc' },
  };
  assert.deepEqual(storedSandboxRef(current), current);
  assert.equal(storedSandboxRef(null), null);
  assert.deepEqual(storedSnapshotRef({ dir: '/s', runtimeVersion: '1', suspendedAt: 'x', dumpMs: 1, imageBytes: 2, stateBytes: 3 }, 'i'), {
    driver: 'local',
    instanceId: 'i',
    runtimeVersion: '1',
    suspendedAt: 'x',
    dumpMs: 1,
    imageBytes: 2,
    stateBytes: 3,
    native: { dir: '/s' },
  });
});

test('CLAWPLANE_SANDBOX_DRIVER picks the driver in one factory; only the local one offers snapshots', () => {
  const s: SandboxDriverSettings = {
    sandboxDriver: 'local',
    sandboxRoot: '/tmp/x',
    dockerSocket: '/nonexistent.sock',
    sandboxImage: 'i:1',
    sandboxMemoryBytes: 1 << 30,
    sandboxPids: 64,
    sandboxCpus: 0,
    sandboxDataBytes: 1 << 30,
    sandboxNproc: 64,
    sandboxNofile: 64,
    sandboxTmpBytes: 1 << 20,
    warmResume: false,
    criuBin: '/x',
  };
  const deps = { broker: undefined, log: pino({ level: 'silent' }) };
  const local = createSandboxDriver(s, deps);
  assert.ok(local instanceof LocalSandboxDriver);
  assert.ok(local.snapshots);
  const docker: SandboxDriver = createSandboxDriver({ ...s, sandboxDriver: 'docker' }, deps);
  assert.ok(docker instanceof DockerSandboxDriver);
  assert.equal((docker as SandboxDriver).snapshots, undefined, 'warm resume is not offered by the docker driver');
  assert.deepEqual([local.layout.executorPort(1), local.layout.stateDir('e0')], [docker.layout.executorPort(1), docker.layout.stateDir('e0')]);
});

test('state archives stream out and back in as the tenant uid; a corrupt archive is refused', {
  skip: process.getuid?.() !== 0 ? 'needs root (tar runs as the tenant uid)' : false,
}, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-archive-'));
  try {
    await chmod(dir, 0o755);
    const uid = 61_234;
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    await mkdir(path.join(src, 'e0', 'tmp'), { recursive: true });
    await mkdir(dst);
    await writeFile(path.join(src, 'e0', 'state.txt'), 'PELICAN');
    await writeFile(path.join(src, 'e0', 'tmp', 'lock'), 'regenerable');
    // The tenant's own directories, as the drivers make them.
    for (const p of [src, path.join(src, 'e0'), path.join(src, 'e0', 'tmp'), path.join(src, 'e0', 'state.txt'), path.join(src, 'e0', 'tmp', 'lock'), dst])
      await chown(p, uid, uid);
    const chunks: Buffer[] = [];
    for await (const c of packStream(src, uid)) chunks.push(c as Buffer);
    await unpackState(Readable.from([Buffer.concat(chunks)]), dst, uid);
    assert.equal(await readFile(path.join(dst, 'e0', 'state.txt'), 'utf8'), 'PELICAN');
    assert.deepEqual(await readdir(path.join(dst, 'e0')), ['state.txt'], 'regenerable dirs are not archived');
    await assert.rejects(unpackState(Readable.from([Buffer.from('not a tar.gz')]), dst, uid), /tar exited/);
    // A directory the uid cannot read fails the export as a stream error, not a short archive.
    await chown(src, 0, 0);
    await chmod(src, 0o700);
    await assert.rejects(async () => {
      for await (const _ of packStream(src, uid)) void _;
    }, /tar exited/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('per-file sandbox uid blocks do not overlap', () => {
  const bases = Object.values(UID_BASES).sort((a, b) => a - b);
  for (let i = 1; i < bases.length; i++) assert.ok((bases[i] ?? 0) - (bases[i - 1] ?? 0) >= 1000, `blocks ${bases[i - 1]} and ${bases[i]} overlap`);
});

test('no module outside the sandbox drivers builds socket paths or ws+unix URLs to reach a gateway', async () => {
  const offenders: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (p.endsWith('.ts')) {
        const text = await readFile(p, 'utf8');
        if (/ws\+unix:|socketPath|drivers\/(local|docker)\//.test(text)) offenders.push(path.relative(process.cwd(), p));
      }
    }
  };
  for (const d of ['ingress', 'tasks', 'instances', 'backup', 'api']) await walk(path.join('src', d));
  assert.deepEqual(offenders, []);
});
