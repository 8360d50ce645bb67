/**
 * Builds the docker driver's sandbox image locally (no registry): docker/sandbox/Dockerfile with a
 * context of this Node 24, the supervisor and a minimal root filesystem.
 *   node scripts/build-sandbox-image.ts [--image clawplane-sandbox:latest] [--socket /var/run/docker.sock] [--force]
 */
import Docker from 'dockerode';
import { parseArgs } from 'node:util';
import { buildSandboxImage } from '../src/sandbox/drivers/docker/build.ts';

const { values } = parseArgs({ options: { image: { type: 'string' }, socket: { type: 'string' }, force: { type: 'boolean' } } });
const image = values.image ?? process.env['CLAWPLANE_SANDBOX_IMAGE'] ?? 'clawplane-sandbox:latest';
const socketPath = values.socket ?? process.env['CLAWPLANE_DOCKER_SOCKET'] ?? '/var/run/docker.sock';
const { id, built } = await buildSandboxImage(new Docker({ socketPath }), image, { force: values.force, onLine: (l) => process.stderr.write(`${l}\n`) });
process.stdout.write(`${image} ${id}${built ? '' : ' (unchanged: already built from these inputs; --force rebuilds)'}\n`);
