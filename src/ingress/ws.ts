/**
 * WebSocket pass-through to the gateway's protocol v4 (issue 7), for the console. The client speaks
 * the gateway protocol; Clawplane sits in the middle and
 * - answers for the client in `connect`: our gateway token, the operator role with read/write scopes
 *   only, as the trusted local backend (the client never sees or sends the token);
 * - forwards only the methods the caller's tenant role allows: chat and session methods for members,
 *   read-only ones for viewers; nothing that changes the gateway's config, resolves exec approvals
 *   (that is the platform's job) or reads secrets (config.patch, exec.approval.*, secrets.* …);
 * - counts every frame as activity, wakes a stopped instance first (sending `clawplane.progress`
 *   events meanwhile), and pauses a side whose peer is not reading (back-pressure);
 * - checks the caller's access again before every request frame it forwards and every RECHECK_MS while
 *   the socket is open, and closes it (1008, with the reason) once the tenant is suspended or deleted,
 *   the credential revoked, or the caller's membership or role changed: admission at the upgrade alone
 *   would let an open socket keep chatting after any of those;
 * - admits request frames at a bounded rate per socket (FRAME_BURST, FRAME_RATE), answering the excess
 *   RATE_LIMITED, so a flood costs neither unbounded queued work nor an access check per frame.
 */
import WebSocket from 'ws';
import type { Logger } from 'pino';
import { ClawplaneError } from '../errors.ts';
import type { TenantRole } from '../identity/principal.ts';
import { scrubHostDetails } from '../observability/host-details.ts';
import type { InstanceRow } from '../instances/instances.ts';
import type { GatewayAccess } from './access.ts';
import type { IngressService } from './ingress.ts';

const READ_METHODS = ['chat.history', 'sessions.list', 'sessions.usage', 'health', 'status'];
const CHAT_METHODS = ['chat.send', 'chat.abort', 'sessions.create', 'sessions.send', 'sessions.abort', 'sessions.delete', 'agent', 'agent.wait'];

/** Methods forwarded per tenant role (`connect` is handled by Clawplane itself). */
export const WS_ALLOWED: Record<TenantRole, ReadonlySet<string>> = {
  viewer: new Set(READ_METHODS),
  member: new Set([...READ_METHODS, ...CHAT_METHODS]),
  tenant_admin: new Set([...READ_METHODS, ...CHAT_METHODS]),
};

const HIGH_WATER = 4 << 20;
/** How often an open socket's access is checked again while no request frame comes (streaming output). */
export const RECHECK_MS = 5000;
/**
 * Request frames a socket may send: a burst of FRAME_BURST, then FRAME_RATE a second. Each forwarded frame
 * costs an access check against the database, so a client flooding frames is answered RATE_LIMITED for
 * the excess (not forwarded, not checked) instead of queueing unbounded work; the console sends a few.
 */
export const FRAME_BURST = 60;
export const FRAME_RATE = 20;

interface Frame {
  type?: unknown;
  id?: unknown;
  method?: unknown;
  params?: unknown;
}

/** Bridges one accepted client socket to the instance's gateway. */
export function bridgeGatewaySocket(
  client: WebSocket,
  opts: {
    ingress: IngressService;
    access: GatewayAccess;
    row: InstanceRow;
    role: TenantRole;
    log: Logger;
    recheck: () => Promise<string | undefined>;
    recheckMs?: number;
    frameBurst?: number;
    frameRate?: number;
  },
): void {
  const { ingress, row, role, log } = opts;
  const allowed = WS_ALLOWED[role];
  const queue: string[] = [];
  let upstream: WebSocket | undefined;
  let token = '';
  let connectId: unknown;
  let closed = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const send = (ws: WebSocket | undefined, data: string) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(data);
  };
  const reply = (id: unknown, code: string, message: string) => send(client, JSON.stringify({ type: 'res', id, ok: false, error: { code, message } }));
  const closeBoth = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    if (client.readyState === WebSocket.OPEN) client.close(code, reason.slice(0, 120));
    upstream?.terminate();
  };

  /** Client → gateway: only allowed methods; `connect` is rewritten to carry our credentials. */
  const forward = (raw: string) => {
    ingress.activity.touch(row.id);
    let f: Frame;
    try {
      f = JSON.parse(raw) as Frame;
    } catch {
      return closeBoth(1007, 'frames must be JSON');
    }
    if (f.type !== 'req' || typeof f.method !== 'string') return reply(f.id, 'INVALID_REQUEST', 'Only {type:"req", id, method, params} frames are accepted.');
    if (f.method === 'connect') {
      const p = (typeof f.params === 'object' && f.params !== null ? f.params : {}) as Record<string, unknown>;
      connectId = f.id;
      const params = {
        minProtocol: typeof p['minProtocol'] === 'number' ? p['minProtocol'] : 4,
        maxProtocol: typeof p['maxProtocol'] === 'number' ? p['maxProtocol'] : 4,
        client: { id: 'gateway-client', version: 'clawplane', platform: 'linux', mode: 'backend' },
        role: 'operator',
        scopes: ['operator.read', 'operator.write'],
        auth: { token },
      };
      return send(upstream, JSON.stringify({ type: 'req', id: f.id, method: 'connect', params }));
    }
    if (!allowed.has(f.method)) {
      log.info({ tenant_id: row.tenantId, instance_id: row.id, method: f.method, role }, 'gateway method refused at the ingress');
      return reply(
        f.id,
        'FORBIDDEN',
        `"${f.method}" is not available through Clawplane for the ${role} role. Allowed: ${[...allowed].join(', ')}. Configuration, approvals and secrets are managed through the Clawplane API.`,
      );
    }
    send(upstream, raw);
    if (upstream && upstream.bufferedAmount > HIGH_WATER) pauseUntilDrained(client, upstream);
  };

  /** Closes the socket when the caller may no longer use it; true while it may. */
  const stillAllowed = async (): Promise<boolean> => {
    let reason: string | undefined;
    try {
      reason = await opts.recheck();
    } catch (err) {
      // Fail closed: a check that cannot run (database away) ends the socket; the client reconnects.
      log.warn({ tenant_id: row.tenantId, instance_id: row.id, err: (err as Error).message }, 'gateway socket: access re-check failed; closing');
      reason = 'access could not be checked (the control plane cannot reach its database): reconnect shortly';
    }
    if (reason === undefined) return true;
    if (!closed) log.info({ tenant_id: row.tenantId, instance_id: row.id, reason }, 'gateway socket closed: access withdrawn');
    send(client, JSON.stringify({ type: 'event', event: 'clawplane.error', payload: { message: `Access withdrawn: ${reason}.` } }));
    closeBoth(1008, reason);
    return false;
  };
  // A token bucket per socket bounds the frames (and access checks) a client can queue.
  const burst = opts.frameBurst ?? FRAME_BURST;
  const rate = opts.frameRate ?? FRAME_RATE;
  let tokens = burst;
  let filledAt = Date.now();
  let limitedLogged = false;
  const admitFrame = (raw: string): boolean => {
    const now = Date.now();
    tokens = Math.min(burst, tokens + ((now - filledAt) / 1000) * rate);
    filledAt = now;
    if (tokens >= 1) {
      tokens -= 1;
      return true;
    }
    let id: unknown;
    try {
      id = (JSON.parse(raw) as Frame).id;
    } catch {
      // No id to answer to: the refusal still goes out, unmatched.
    }
    if (!limitedLogged) log.info({ tenant_id: row.tenantId, instance_id: row.id, burst, rate }, 'gateway socket: frames over the rate limit refused');
    limitedLogged = true;
    reply(
      id,
      'RATE_LIMITED',
      `More than ${rate} frames a second (bursts of ${burst}) on this socket: this frame was not forwarded; slow down and send it again.`,
    );
    return false;
  };
  // Frames are handled one at a time, in order, each after its access check.
  let inbox: Promise<void> = Promise.resolve();
  client.on('message', (data: WebSocket.RawData) => {
    const raw = (Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer)).toString('utf8');
    if (closed || !admitFrame(raw)) return;
    inbox = inbox
      .then(async () => {
        if (closed || !(await stillAllowed())) return;
        if (upstream?.readyState === WebSocket.OPEN) forward(raw);
        else queue.push(raw);
      })
      // A frame that fails ends this socket, never the chain (later frames) or the process.
      .catch((err: unknown) => {
        log.warn({ tenant_id: row.tenantId, instance_id: row.id, err: (err as Error).message }, 'gateway socket: a frame failed; closing');
        closeBoth(1011, 'the frame could not be handled: reconnect');
      });
  });
  timer = setInterval(() => void stillAllowed(), opts.recheckMs ?? RECHECK_MS);
  timer.unref();
  client.on('close', () => {
    clearInterval(timer);
    closeBoth(1000, 'client closed');
  });
  client.on('error', () => closeBoth(1011, 'client error'));

  const progress = (state: string) => send(client, JSON.stringify({ type: 'event', event: 'clawplane.progress', payload: { state, instance: row.id } }));
  void (async () => {
    try {
      const gw = await ingress.connect(opts.access, row, progress);
      if (closed) return;
      token = gw.token;
      const up = gw.transport.websocket();
      upstream = up;
      up.on('open', () => {
        for (const raw of queue.splice(0)) forward(raw);
      });
      up.on('message', (data: WebSocket.RawData) => {
        ingress.activity.touch(row.id);
        let out = (Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer)).toString('utf8');
        try {
          const f = JSON.parse(out) as Frame & { payload?: Record<string, unknown> };
          // hello-ok may carry a device token issued to "us": it is an owner credential, keep it here.
          if (f.type === 'res' && f.id === connectId && f.payload && typeof f.payload === 'object' && 'auth' in f.payload) {
            delete f.payload['auth'];
            out = JSON.stringify(f);
          }
        } catch {
          // Not JSON: forwarded as is.
        }
        send(client, out);
        if (client.bufferedAmount > HIGH_WATER) pauseUntilDrained(up, client);
      });
      up.on('close', () => closeBoth(1012, 'the gateway closed the connection (instance stopped or restarted): reconnect'));
      up.on('error', (err) => {
        log.warn({ tenant_id: row.tenantId, instance_id: row.id, err: err.message }, 'gateway websocket failed');
        closeBoth(1011, 'the gateway could not be reached: retry shortly');
      });
    } catch (err) {
      // A known error's words (written for people); anything else stays in the log.
      if (!(err instanceof ClawplaneError)) log.error({ err, tenant_id: row.tenantId, instance_id: row.id }, 'gateway socket: waking the instance failed');
      send(
        client,
        JSON.stringify({
          type: 'event',
          event: 'clawplane.error',
          payload: { message: err instanceof ClawplaneError ? scrubHostDetails(err.message) : 'The instance could not be started; retry shortly.' },
        }),
      );
      closeBoth(1011, 'the instance could not be started');
    }
  })();
}

/** Stops reading from `from` until `to` has sent what it holds (ws has no drain event: poll). */
function pauseUntilDrained(from: WebSocket, to: WebSocket): void {
  if (from.isPaused) return;
  from.pause();
  const t = setInterval(() => {
    if (to.readyState !== WebSocket.OPEN || to.bufferedAmount < HIGH_WATER / 4) {
      clearInterval(t);
      from.resume();
    }
  }, 20);
}
