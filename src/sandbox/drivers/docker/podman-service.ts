/**
 * Podman's Docker-compatible service on a private Unix socket, for the docker driver's tests, CI and
 * benches on hosts without a Docker engine (../shared/notes/docker-api-via-podman.md). Its own
 * containers.conf keeps ulimits within root's hard limits here (nofile 20000) and uses runc where it is
 * installed (crun cannot run on a cgroup v1 hybrid host). Stop it with stop(): the service, by its pid.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Docker from 'dockerode';

const has = (cmd: string): boolean => spawnSync('/bin/sh', ['-c', `command -v ${cmd}`]).status === 0;

export function podmanInstalled(): boolean {
  return has('podman');
}

export async function startPodmanService(): Promise<{ socketPath: string; docker: Docker; stop(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-podman-'));
  const socketPath = path.join(dir, 'docker.sock');
  const conf = path.join(dir, 'containers.conf');
  await writeFile(conf, `[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n${has('runc') ? '[engine]\nruntime = "runc"\n' : ''}`);
  const child = spawn('podman', ['system', 'service', '--time=0', `unix://${socketPath}`], {
    cwd: dir,
    env: { ...process.env, CONTAINERS_CONF: conf },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // cwd: conmon writes an empty `oom` file into its working directory (containers/conmon#504), not the checkout.
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  };
  const docker = new Docker({ socketPath });
  for (let i = 0; ; i++) {
    try {
      await docker.ping();
      return { socketPath, docker, stop };
    } catch (err) {
      if (child.exitCode !== null || i > 300) {
        await stop();
        throw new Error(`podman system service did not answer: ${stderr.trim() || (err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
