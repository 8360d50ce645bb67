/** The one place the sandbox driver is chosen (CLAWPLANE_SANDBOX_DRIVER) and built from the parsed settings. */
import type { Logger } from 'pino';
import type { SandboxBroker } from '../../broker/types.ts';
import type { KubernetesSettings, WarmResume } from '../../config/schema.ts';
import { ConfigError } from '../../errors.ts';
import type { SandboxDriver, SandboxDriverName } from '../types.ts';
import { DockerSandboxDriver } from './docker/driver.ts';
import { KubernetesSandboxDriver } from './kubernetes/driver.ts';
import { LocalSandboxDriver } from './local/driver.ts';

export interface SandboxDriverSettings {
  sandboxDriver: SandboxDriverName;
  sandboxRoot: string;
  dockerSocket: string;
  sandboxImage: string;
  sandboxMemoryBytes: number;
  sandboxPids: number;
  sandboxCpus: number;
  sandboxDataBytes: number;
  sandboxNproc: number;
  sandboxNofile: number;
  sandboxTmpBytes: number;
  warmResume: WarmResume;
  criuBin: string;
  /** With sandboxDriver kubernetes. */
  kubernetes?: KubernetesSettings;
}

export function createSandboxDriver(
  s: SandboxDriverSettings,
  deps: { broker: SandboxBroker | undefined; log: Logger; tierOf?: (tenantId: string) => Promise<string | null> },
): SandboxDriver {
  switch (s.sandboxDriver) {
    case 'local':
      return new LocalSandboxDriver({
        root: s.sandboxRoot,
        broker: deps.broker,
        log: deps.log,
        dataBytes: s.sandboxDataBytes,
        nproc: s.sandboxNproc,
        nofile: s.sandboxNofile,
        tmpBytes: s.sandboxTmpBytes,
        cgroup: { memoryBytes: s.sandboxMemoryBytes, pids: s.sandboxPids, cpus: s.sandboxCpus },
        warmResume: s.warmResume,
        criuBin: s.criuBin,
        // Root-only, beside the sandboxes (the driver lists only instance ids there).
        snapshotDir: `${s.sandboxRoot}/.snapshots`,
      });
    case 'docker':
      return new DockerSandboxDriver({
        root: s.sandboxRoot,
        socketPath: s.dockerSocket,
        image: s.sandboxImage,
        broker: deps.broker,
        log: deps.log,
        memoryBytes: s.sandboxMemoryBytes,
        pids: s.sandboxPids,
        cpus: s.sandboxCpus,
        tmpBytes: s.sandboxTmpBytes,
        nofile: s.sandboxNofile,
        nproc: s.sandboxNproc,
      });
    case 'kubernetes':
      if (!s.kubernetes) throw new ConfigError('CLAWPLANE_SANDBOX_DRIVER=kubernetes needs the CLAWPLANE_KUBE_* settings.');
      return new KubernetesSandboxDriver({
        settings: s.kubernetes,
        image: s.sandboxImage,
        broker: deps.broker,
        log: deps.log,
        memoryBytes: s.sandboxMemoryBytes,
        cpus: s.sandboxCpus,
        dataBytes: s.sandboxDataBytes,
        tmpBytes: s.sandboxTmpBytes,
        ...(deps.tierOf ? { tierOf: deps.tierOf } : {}),
      });
  }
}
