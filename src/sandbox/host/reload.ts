/**
 * Hot apply of a new openclaw.json to a running sandbox, for drivers that write its config files on this host
 * (docs/adr/0013-gateway-config-versions.md, "Apply"). OpenClaw watches its config file and reloads what it can
 * in place (2026.9.6: src/gateway/config-reload.ts, `gateway.reload.mode` "hybrid"); its `config.get` answers
 * with `configRevisionHash` (the file on disk, null when the file does not validate) and `appliedConfigHash`
 * (what the running gateway applied, the same projection), so the host knows when, and whether, a gateway took
 * the new file. The files sit in the read-only /conf mount: only the host writes them.
 */
import path from 'node:path';
import { ClawplaneError } from '../../errors.ts';
import { gatewayRpc } from '../gateway-rpc.ts';
import type { SupervisorConfig } from '../supervisor/protocol.ts';
import type { GatewayTransport } from '../types.ts';
import { writeOwned, type InstanceDirs } from './dirs.ts';

/** How often a gateway is asked whether it applied the new file. */
const POLL_MS = 250;

interface ConfigGet {
  valid?: boolean;
  issues?: { path?: string; message?: string }[];
  configRevisionHash?: string | null;
  appliedConfigHash?: string | null;
}

/**
 * The gateway refused the new file (it does not validate): it keeps running what it ran. `issues` are
 * OpenClaw's own validation messages.
 */
export class GatewayConfigRefusedError extends ClawplaneError {
  constructor(executor: string, issues: string) {
    super('gateway_config_refused', 422, `gateway ${executor} refused the configuration as invalid (${issues}) and kept the one it ran`);
  }
}

export async function applyGatewayConfigs(o: {
  dirs: InstanceDirs;
  conf: SupervisorConfig;
  uid: number;
  transport: GatewayTransport;
  token: string;
  configs: Record<string, string>;
  timeoutMs: number;
}): Promise<void> {
  const { conf, transport, token } = o;
  const get = async (executor: string) => (await gatewayRpc(transport, token, 'config.get', {}, { executor, timeoutMs: 10_000 })) as ConfigGet;
  for (const e of conf.executors) if (o.configs[e.id] === undefined) throw new Error(`no configuration rendered for executor ${e.id}`);
  for (const e of conf.executors) await writeOwned(path.join(o.dirs.conf, e.id, 'openclaw.json'), o.configs[e.id] ?? '', o.uid);
  const t0 = Date.now();
  for (const e of conf.executors) {
    for (;;) {
      const c = await get(e.id);
      if (c.valid === false || (c.configRevisionHash === null && c.valid !== true)) {
        const issues = (c.issues ?? []).map((i) => `${i.path ?? ''}: ${i.message ?? ''}`).join('; ') || 'no reason given';
        throw new GatewayConfigRefusedError(e.id, issues.slice(0, 500));
      }
      const file = c.configRevisionHash ?? null;
      // config.get reads the file on every call, so `file` is the new one at once; `applied` follows the reload.
      if (file !== null && c.appliedConfigHash === file) break;
      if (Date.now() - t0 > o.timeoutMs)
        throw new Error(
          `gateway ${e.id} did not apply the new configuration within ${Math.round(o.timeoutMs / 1000)} s (it runs ${c.appliedConfigHash ?? 'none'}, the file is ${file ?? 'unreadable'})`,
        );
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}
