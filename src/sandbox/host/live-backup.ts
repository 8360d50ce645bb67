/**
 * A consistent archive of a RUNNING sandbox's state: `openclaw backup create --verify` for each executor
 * inside the sandbox (same uid, namespaces and limits as the gateway; the CLI reads the databases through
 * SQLite's online backup), each archive's state payload extracted there into
 * `/tenant/work/.clawplane-backup/stage/<executor>`, then packed from the host as the tenant's uid
 * (state-archive.ts). The stage lives in the tenant's own directory and is removed from inside the
 * sandbox, so the host never deletes in a tree the tenant is writing.
 */
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { ClawplaneError } from '../../errors.ts';
import type { SupervisorConfig } from '../supervisor/protocol.ts';
import type { ExecResult } from '../types.ts';
import { LIVE_STAGE, packStream } from './state-archive.ts';

/**
 * The shell script (run inside the sandbox as its gateways run) that stages a consistent copy of every
 * executor's state under `<stage>/stage/<executor>`, and the stage's path inside the sandbox.
 */
export function liveBackupScript(conf: SupervisorConfig, instanceId: string): { script: string; stage: string } {
  const [node, entry] = conf.command;
  if (!node || !entry) throw new Error(`sandbox.json of ${instanceId} names no gateway command`);
  const q = (v: string) => `'${v.replaceAll("'", `'\\''`)}'`;
  const stage = `/tenant/work/${LIVE_STAGE}`;
  const script = ['set -eu', `rm -rf ${stage}`, `mkdir -p ${stage}/raw ${stage}/stage ${stage}/tmp`];
  for (const e of conf.executors) {
    // TMPDIR on the tenant's disk: verification extracts the SQLite snapshots and wants 256 MiB spare,
    // more than the sandbox's private /tmp has (measured: "only 54 MiB is available near /tmp").
    const env = {
      ...conf.env,
      TMPDIR: `${stage}/tmp`,
      HOME: `${e.stateDir}/home`,
      OPENCLAW_HOME: `${e.stateDir}/home`,
      OPENCLAW_STATE_DIR: e.stateDir,
      OPENCLAW_CONFIG_PATH: e.configPath,
    };
    // The archive holds <root>/payload/posix<absolute source path>/…: keep what lies below the state dir.
    const strip = 3 + e.stateDir.split('/').filter(Boolean).length;
    script.push(
      `mkdir ${stage}/raw/${e.id} ${stage}/stage/${e.id}`,
      `env -i ${Object.entries(env)
        .map(([k, v]) => q(`${k}=${v}`))
        .join(' ')} ${q(node)} ${q(entry)} backup create --output ${stage}/raw/${e.id} --verify --json >${stage}/raw/${e.id}.json`,
      `tar -xzf ${stage}/raw/${e.id}/*.tar.gz -C ${stage}/stage/${e.id} --no-same-owner --wildcards --strip-components=${strip} ${q(`*/payload/posix${e.stateDir}/*`)}`,
    );
  }
  return { script: script.join('\n'), stage };
}

/** OpenClaw's backup inside the sandbox exited non-zero: what to tell the user (its stderr's tail). */
export function liveBackupError(r: ExecResult): ClawplaneError {
  return new ClawplaneError(
    'live_backup_failed',
    502,
    `OpenClaw's backup inside the sandbox failed (${r.code === null ? `signal ${r.signal ?? 'unknown'}` : `exit ${r.code}`}): ${r.stderr.trim().slice(-600) || 'no error output'}. The previous backup is still the latest.`,
  );
}

export async function exportLive(o: {
  instanceId: string;
  conf: SupervisorConfig;
  workDir: string;
  uid: number;
  exec: (argv: string[], timeoutMs: number) => Promise<ExecResult>;
  timeoutMs?: number | undefined;
  log: Logger;
}): Promise<Readable> {
  const { script, stage } = liveBackupScript(o.conf, o.instanceId);
  const cleanup = () =>
    o.exec(['/bin/sh', '-c', `rm -rf ${stage}`], 60_000).then(
      () => undefined,
      (err: unknown) => o.log.warn({ instance_id: o.instanceId, err: (err as Error).message }, 'could not remove the live-backup stage'),
    );
  let r: ExecResult;
  try {
    r = await o.exec(['/bin/sh', '-c', script], o.timeoutMs ?? 300_000);
  } catch (err) {
    await cleanup();
    throw err;
  }
  if (r.code !== 0) {
    await cleanup();
    throw liveBackupError(r);
  }
  return packStream(path.join(o.workDir, LIVE_STAGE, 'stage'), o.uid, { onEnd: cleanup });
}
