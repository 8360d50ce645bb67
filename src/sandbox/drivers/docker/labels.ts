/** Labels that mark a container as a Clawplane sandbox and say whose it is (list, adoption, orphan removal). */
export const LABEL = {
  cluster: 'io.clawplane.cluster',
  instance: 'io.clawplane.instance',
  tenant: 'io.clawplane.tenant',
  sandbox: 'io.clawplane.sandbox',
  runtime: 'io.clawplane.runtime',
  started: 'io.clawplane.started',
} as const;

/** Image label: the sha256 of the supervisor program the image carries (a stale image is refused). */
export const IMAGE_SUPERVISOR_LABEL = 'io.clawplane.supervisor-sha256';

/** Image label: the digest of everything the image was built from (an unchanged rebuild is skipped). */
export const IMAGE_INPUTS_LABEL = 'io.clawplane.inputs-sha256';

/** The container name of an instance's sandbox (one at a time per instance). */
export function containerName(instanceId: string): string {
  return `clawplane-${instanceId}`;
}
