/**
 * A Docker Engine API for the docker driver's tests: CLAWPLANE_TEST_DOCKER_SOCKET when set; else Podman's
 * Docker-compatible service started here (`podman system service` on a Unix socket in a temp dir, with
 * the containers.conf this host needs: ulimits within root's hard limits, runc for cgroup v1 hybrid;
 * ../shared/notes/docker-api-via-podman.md); else /var/run/docker.sock. Skipped only when none exists,
 * and the skip says why. The service is stopped by its pid after the file's tests.
 */
import { existsSync } from 'node:fs';
import { after } from 'node:test';
import Docker from 'dockerode';
import { buildSandboxImage } from '../../src/sandbox/drivers/docker/build.ts';
import { podmanInstalled, startPodmanService } from '../../src/sandbox/drivers/docker/podman-service.ts';

export const TEST_SANDBOX_IMAGE = 'clawplane-sandbox:test';

/** Why the docker tests cannot run here, or false when a Docker API can be found or started. */
export function dockerSkipReason(): string | false {
  if (process.env['CLAWPLANE_TEST_DOCKER_SOCKET']) return false;
  if (process.getuid?.() !== 0) return 'the docker driver runs sandboxes as tenant uids, which needs root';
  if (podmanInstalled()) return false;
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
  if (!podmanInstalled()) return { socketPath: '/var/run/docker.sock', docker: new Docker({ socketPath: '/var/run/docker.sock' }) };
  const svc = await startPodmanService();
  after(() => svc.stop());
  return { socketPath: svc.socketPath, docker: svc.docker };
}

/** Builds the test sandbox image from the repository's files (cached layers make a rebuild quick). */
export async function buildTestImage(api: DockerApi): Promise<string> {
  return buildSandboxImage(api.docker, TEST_SANDBOX_IMAGE);
}
