/**
 * Re-issuing a running gateway's token in place, for drivers that write its token file on this host:
 * the file is rewritten, every gateway re-reads it (`secrets.reload` over the protocol), and each is
 * checked to take the new token and refuse the old; on any failure every gateway goes back to the
 * current one, so the host's copy stays the one that works.
 */
import path from 'node:path';
import { ClawplaneError } from '../../errors.ts';
import { gatewayRpc, transportRequest } from '../gateway-rpc.ts';
import type { SupervisorConfig } from '../supervisor/protocol.ts';
import type { GatewayTransport } from '../types.ts';
import { writePrivate, type InstanceDirs } from './dirs.ts';

export async function rotateGatewayToken(o: {
  dirs: InstanceDirs;
  conf: SupervisorConfig;
  uid: number;
  transport: GatewayTransport;
  tokens: { current: string; next: string };
}): Promise<void> {
  const tokenFile = path.join(o.dirs.conf, 'gateway-token');
  await rotateGatewayTokenWith({ ...o, write: (token) => writePrivate(tokenFile, token + '\n', o.uid) });
}

/**
 * The rotation with the token file written by `write` (a host file, or a file inside a pod through
 * pods/exec): write next, reload and check every gateway; on any failure write current back and reload.
 */
export async function rotateGatewayTokenWith(o: {
  conf: SupervisorConfig;
  transport: GatewayTransport;
  tokens: { current: string; next: string };
  write: (token: string) => Promise<void>;
}): Promise<void> {
  const { transport, tokens, conf } = o;
  const answers = async (executor: string, token: string) =>
    (
      await transportRequest(transport, {
        path: '/v1/models',
        headers: { authorization: `Bearer ${token}`, 'x-clawplane-executor': executor },
        timeoutMs: 10_000,
      })
    ).status;
  await o.write(tokens.next);
  try {
    for (const e of conf.executors) {
      await gatewayRpc(transport, tokens.current, 'secrets.reload', {}, { executor: e.id });
      const [now, before] = [await answers(e.id, tokens.next), await answers(e.id, tokens.current)];
      if (now !== 200 || before !== 401)
        throw new Error(`after secrets.reload, executor ${e.id} answered ${now} to the new token and ${before} to the old one (expected 200 and 401)`);
    }
  } catch (err) {
    await o.write(tokens.current);
    for (const e of conf.executors) await gatewayRpc(transport, tokens.next, 'secrets.reload', {}, { executor: e.id }).catch(() => undefined);
    throw new ClawplaneError(
      'credential_rotation_failed',
      502,
      `The gateway did not take its new token: ${(err as Error).message}. It still uses the current one; retry, or restart the instance.`,
      { cause: err },
    );
  }
}
