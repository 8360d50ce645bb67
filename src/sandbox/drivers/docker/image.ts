/**
 * The sandbox image: Node 24 and the supervisor on a minimal root filesystem, built locally from
 * docker/sandbox/Dockerfile (there is no registry to pull from; scripts/build-sandbox-image.ts). The
 * image is labelled with the sha256 of the supervisor it carries, so a control plane refuses an image
 * built from another version of it.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import path from 'node:path';
import { SUPERVISOR_DIR } from '../../host/dirs.ts';

/** Where the image keeps the supervisor and Node. */
export const IMAGE_SUPERVISOR = '/opt/clawplane/supervisor.mjs';
export const IMAGE_NODE = '/usr/local/bin/node';

/** The supervisor as plain JavaScript (as the local driver writes it), and its sha256. */
export async function supervisorProgram(supervisorDir = SUPERVISOR_DIR): Promise<{ js: string; sha256: string }> {
  const ts = await readFile(path.join(supervisorDir, 'supervisor.ts'), 'utf8');
  const js = stripTypeScriptTypes(ts, { mode: 'strip' });
  return { js, sha256: createHash('sha256').update(js).digest('hex') };
}

/** The command that builds the image, for error messages. */
export function buildCommand(image: string): string {
  return `node scripts/build-sandbox-image.ts --image ${image}`;
}
