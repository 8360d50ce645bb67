/**
 * A Docker Engine API for the docker driver's tests: CLAWPLANE_TEST_DOCKER_SOCKET when set; else Podman's
 * Docker-compatible service started here (`podman system service` on a Unix socket in a temp dir, with
 * the containers.conf this host needs: ulimits within root's hard limits, runc for cgroup v1 hybrid;
 * ../shared/notes/docker-api-via-podman.md); else /var/run/docker.sock. Skipped only when none exists,
 * and the skip says why. The service is stopped by its pid after the file's tests.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import Docker from 'dockerode';
import { buildSandboxImage } from '../../src/sandbox/drivers/docker/build.ts';

export const TEST_SANDBOX_IMAGE = 'clawplane-sandbox:test';

function has(cmd: string): boolean {
  return spawnSync('/bin/sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Why the docker tests cannot run here, or false when a Docker API can be found or started. */
export function dockerSkipReason(): string | false {
  if (process.env['CLAWPLANE_TEST_DOCKER_SOCKET']) return false;
  if (process.getuid?.() !== 0) return 'the docker driver runs sandboxes as tenant uids, which needs root';
  if (has('podman')) return false;
  if (existsSync('/var/run/docker.sock')) return false;
  return 'no Docker Engine API: podman is not installed (apt-get install podman runc; .ci/run does) and /var/run/docker.sock does not exist';
}

export interface DockerApi {
  socketPath: string;
  docker: Docker;
}

/** Finds or starts the Docker API (see the file comment); stopped after the file. */
export async function dockerApi(): Promise<DockerApi> {
  const given = process.env['CLAWPLANE_TEST_DOCKER_SOCKET'];
  if (given) return { socketPath: given, docker: new Docker({ socketPath: given }) };
  if (!has('podman')) return { socketPath: '/var/run/docker.sock', docker: new Docker({ socketPath: '/var/run/docker.sock' }) };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-podman-'));
  const socketPath = path.join(dir, 'docker.sock');
  const conf = path.join(dir, 'containers.conf');
  // Root here has a hard nofile limit of 20000 and no CAP_SYS_RESOURCE; crun cannot run on cgroup v1 hybrid.
  await writeFile(conf, `[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n${has('runc') ? '[engine]\nruntime = "runc"\n' : ''}`);
  const child = spawn('podman', ['system', 'service', '--time=0', `unix://${socketPath}`], { env: { ...process.env, CONTAINERS_CONF: conf }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  after(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  });
  const docker = new Docker({ socketPath });
  for (let i = 0; ; i++) {
    try {
      await docker.ping();
      break;
    } catch (err) {
      if (child.exitCode !== null || i > 200) throw new Error(`podman system service did not answer: ${stderr || (err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { socketPath, docker };
}

/** Builds the test sandbox image from the repository's files (cached layers make a rebuild quick). */
export async function buildTestImage(api: DockerApi): Promise<string> {
  return buildSandboxImage(api.docker, TEST_SANDBOX_IMAGE);
}
