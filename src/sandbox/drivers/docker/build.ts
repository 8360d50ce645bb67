/**
 * Builds the sandbox image from docker/sandbox/Dockerfile through the Engine API (buildImage), with a
 * context made here: rootfs.tar (this Node 24 binary, the shared libraries it and the tools need, sh,
 * and the tools a live backup runs: env, tar, gzip, mkdir, rm), and the supervisor as plain JavaScript.
 * Nothing is pulled (FROM scratch), so it works without a registry.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, cp, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { supervisorProgram } from './image.ts';
import { IMAGE_INPUTS_LABEL, IMAGE_SUPERVISOR_LABEL } from './labels.ts';

const DOCKERFILE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'docker', 'sandbox');
const TOOLS = ['sh', 'env', 'rm', 'mkdir', 'tar', 'gzip', 'cat', 'ls', 'sleep', 'true', 'id'];

/** The executable file on the host (not a shell builtin such as `true`). */
function which(tool: string): string {
  for (const dir of ['/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    const p = path.join(dir, tool);
    const r = spawnSync('test', ['-x', p]);
    if (r.status === 0) return p;
  }
  throw new Error(`${tool} is not installed on this host (the sandbox image copies it)`);
}

/** The shared libraries an ELF binary loads (ldd), as absolute paths. */
function libsOf(bin: string): string[] {
  const r = spawnSync('ldd', [bin], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  return [...r.stdout.matchAll(/(\/\S+\.so[^\s]*)/g)].map((m) => m[1] as string);
}

/** Makes the root filesystem tar in `dir` (merged /usr: /bin, /lib, /lib64 are links into /usr). */
async function makeRootfs(dir: string, nodeBin: string): Promise<string> {
  const root = path.join(dir, 'rootfs');
  for (const d of [
    'usr/bin',
    'usr/lib',
    'usr/lib64',
    'usr/local/bin',
    'etc',
    'tmp',
    'proc',
    'dev',
    'sys',
    'conf',
    'opt/runtime',
    'opt/clawplane',
    'run/clawplane/in',
    'run/clawplane/out',
    'tenant/work',
    'tenant/log',
    'tenant/shared-rw',
    'tenant/shared-ro',
  ])
    await mkdir(path.join(root, d), { recursive: true });
  for (const [link, to] of [
    ['bin', 'usr/bin'],
    ['sbin', 'usr/bin'],
    ['lib', 'usr/lib'],
    ['lib64', 'usr/lib64'],
  ] as const)
    await symlink(to, path.join(root, link));
  const bins = [nodeBin, ...TOOLS.map(which)];
  const libs = new Set<string>();
  for (const b of bins) for (const l of libsOf(b)) libs.add(l);
  await copyFile(nodeBin, path.join(root, 'usr/local/bin/node'));
  for (const t of TOOLS) await copyFile(await realpath(which(t)), path.join(root, 'usr/bin', t));
  for (const l of libs) {
    // Under its own name (the loader asks by soname), content dereferenced, placed below /usr.
    const rel = l.replace(/^\/usr\//, '/').replace(/^\//, '');
    const dest = path.join(root, 'usr', rel);
    await mkdir(path.dirname(dest), { recursive: true });
    await cp(await realpath(l), dest, { dereference: true });
  }
  // Podman mounts a tmpfs over /tmp with `tmpcopyup`, which takes the image directory's mode (0755
  // root) over the mount's mode=1777: the tenant's gateway could not create its state locks there.
  await chmod(path.join(root, 'tmp'), 0o1777);
  await writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n');
  await writeFile(path.join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  const tar = path.join(dir, 'rootfs.tar');
  const r = spawnSync('tar', ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '-cf', tar, '.'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tar of the sandbox rootfs failed: ${r.stderr}`);
  return tar;
}

/**
 * A digest of everything the image is made of: the Dockerfile, the supervisor, this file's recipe, and
 * each binary and library copied in (path, size, mtime: an apt upgrade or another Node changes it).
 * The rootfs tar itself differs on every run (its mtimes), so the engine's layer cache never hits; this
 * digest, kept as an image label, is what makes an unchanged rebuild a no-op.
 */
async function inputsDigest(nodeBin: string, supervisorJs: string): Promise<string> {
  const h = createHash('sha256');
  h.update(await readFile(path.join(DOCKERFILE_DIR, 'Dockerfile')));
  h.update(await readFile(fileURLToPath(import.meta.url)));
  h.update(supervisorJs);
  const bins = [nodeBin, ...TOOLS.map(which)];
  const files = new Set(bins);
  for (const b of bins) for (const l of libsOf(b)) files.add(l);
  for (const f of [...files].sort()) {
    const st = await stat(f);
    h.update(`${f}\0${st.size}\0${st.mtimeMs}\n`);
  }
  return h.digest('hex');
}

/**
 * Builds `image` unless the engine already has it built from the same inputs (see inputsDigest), or
 * `force`; resolves with its id and whether it was built. `onLine` gets the build's progress lines.
 */
export async function buildSandboxImage(
  docker: Docker,
  image: string,
  o: { nodeBin?: string; force?: boolean; onLine?: (l: string) => void } = {},
): Promise<{ id: string; built: boolean }> {
  const nodeBin = o.nodeBin ?? process.execPath;
  const sup = await supervisorProgram();
  const digest = await inputsDigest(nodeBin, sup.js);
  if (!o.force) {
    const have = await docker
      .getImage(image)
      .inspect()
      .catch((err: unknown) => {
        if ((err as { statusCode?: number }).statusCode === 404) return undefined;
        throw err;
      });
    if (have?.Config.Labels?.[IMAGE_INPUTS_LABEL] === digest && have.Config.Labels[IMAGE_SUPERVISOR_LABEL] === sup.sha256) return { id: have.Id, built: false };
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-sandbox-image-'));
  try {
    await makeRootfs(dir, nodeBin);
    await writeFile(path.join(dir, 'supervisor.mjs'), sup.js);
    await copyFile(path.join(DOCKERFILE_DIR, 'Dockerfile'), path.join(dir, 'Dockerfile'));
    const stream = await docker.buildImage(
      { context: dir, src: ['Dockerfile', 'rootfs.tar', 'supervisor.mjs'] },
      { t: image, buildargs: { SUPERVISOR_SHA256: sup.sha256, INPUTS_SHA256: digest }, rm: true, forcerm: true },
    );
    // A failed step can come back as a 200 with the error only in the stream (Podman): check every event.
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(
        stream,
        (err: Error | null) => (err ? reject(err) : resolve()),
        (ev: { stream?: string; error?: string; errorDetail?: { message?: string } }) => {
          if (ev.error || ev.errorDetail) reject(new Error(`building ${image} failed: ${ev.errorDetail?.message ?? ev.error}`));
          else if (ev.stream?.trim()) o.onLine?.(ev.stream.trim());
        },
      );
    });
    const info = await docker.getImage(image).inspect();
    if (info.Config.Labels?.[IMAGE_SUPERVISOR_LABEL] !== sup.sha256) throw new Error(`the built image ${image} does not carry the supervisor label`);
    return { id: info.Id, built: true };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
