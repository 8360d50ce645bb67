/**
 * A Docker Engine API for the docker driver's tests: CLAWPLANE_TEST_DOCKER_SOCKET when set; else Podman's
 * Docker-compatible service started here (`podman system service` on a Unix socket in a temp dir, with
 * the containers.conf this host needs: ulimits within root's hard limits, runc for cgroup v1 hybrid;
 * ../shared/notes/docker-api-via-podman.md); else /var/run/docker.sock. Skipped only when none exists,
 * and the skip says why. The caller stops the service (by its pid) with `stop()`, from an `after` hook
 * registered after the fixtures that still use it (node:test runs a suite's `after` hooks in the order
 * they were registered).
 */
import { existsSync } from 'node:fs';
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
  /** Stops what dockerApi() started (nothing when the API was given). */
  stop(): Promise<void>;
}

/** Finds or starts the Docker API (see the file comment). */
export async function dockerApi(): Promise<DockerApi> {
  const given = process.env['CLAWPLANE_TEST_DOCKER_SOCKET'] ?? (podmanInstalled() ? undefined : '/var/run/docker.sock');
  if (given) return { socketPath: given, docker: new Docker({ socketPath: given }), stop: () => Promise.resolve() };
  return startPodmanService();
}

/**
 * Builds the test sandbox image from the repository's files, as `scripts/build-sandbox-image.ts` does;
 * skipped when the engine already has it from the same inputs (the image label), so only a fresh machine
 * or a changed supervisor, Dockerfile or Node pays for the build.
 */
export async function buildTestImage(api: DockerApi): Promise<{ id: string; built: boolean; ms: number }> {
  const t0 = performance.now();
  const r = await buildSandboxImage(api.docker, TEST_SANDBOX_IMAGE);
  return { ...r, ms: Math.round(performance.now() - t0) };
}
