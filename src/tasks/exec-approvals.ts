/**
 * OpenClaw's own exec approvals for durable tasks (issue 8, item 4). With exec mode `ask` the gateway
 * holds an agent run at an `exec` tool call and broadcasts `exec.approval.requested` (protocol v4) to
 * operator clients that can deliver approvals; it runs or refuses the command when one of them calls
 * `exec.approval.resolve {id, decision: "allow-once" | "deny"}` (docs/gateway/protocol/operator-methods.md,
 * docs/tools/exec-approvals.md). The gateway's own timeout is 30 minutes, after which it denies.
 *
 * This watcher is such a client: a WebSocket to the gateway through the ingress socket, connected like
 * src/ingress/ws.ts does it (the gateway token, trusted local backend) but with the `operator.approvals`
 * and `operator.admin` scopes and the `approvals` capability: without them the gateway finds no approval
 * surface for the run and denies at once ("Headless runs cannot wait for interactive exec approval"). It reports the requests of one session.
 */
import WebSocket from 'ws';
import { backendConnectParams, parseGatewayFrame } from '../sandbox/gateway-rpc.ts';
import type { GatewayTransport } from '../sandbox/types.ts';

export interface ExecApprovalRequest {
  /** The gateway's approval id (what `exec.approval.resolve` takes). */
  id: string;
  command: string;
  sessionKey: string | null;
  expiresAtMs: number | null;
}

export class GatewayApprovalWatch {
  readonly #ws: WebSocket;
  readonly #calls = new Map<string, { resolve: (p: unknown) => void; reject: (e: Error) => void }>();
  #seq = 0;
  #closed = false;
  /** Set by closeWhenSettled: runs when the last call in flight gets its answer. */
  #onIdle: (() => void) | undefined;
  onRequest: (r: ExecApprovalRequest) => void = () => undefined;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
  }

  /** Connects and completes the handshake; rejects when the gateway refuses or does not answer in time. */
  static async connect(
    transport: GatewayTransport,
    token: string,
    matches: (sessionKey: string | null) => boolean,
    timeoutMs = 15_000,
    gateway?: string,
  ): Promise<GatewayApprovalWatch> {
    // A pool executor's turn runs on one gateway process of the sandbox: watch that one.
    const ws = gateway ? transport.websocket({ headers: { 'x-clawplane-executor': gateway } }) : transport.websocket();
    const w = new GatewayApprovalWatch(ws);
    const ready = Promise.withResolvers<void>();
    const timer = setTimeout(() => ready.reject(new Error(`the gateway did not complete the approvals handshake within ${timeoutMs} ms`)), timeoutMs);
    ws.on('message', (data: WebSocket.RawData) => {
      const f = parseGatewayFrame(data);
      if (!f) return;
      if (f.type === 'event' && f.event === 'connect.challenge') {
        // operator.admin: without it the gateway shows an approval only to the client that raised it (the
        // agent's own run), so it would find no approval route and deny at once.
        w.#request('connect', backendConnectParams(token, ['operator.read', 'operator.approvals', 'operator.admin'], ['approvals', 'exec-approvals'])).then(
          () => ready.resolve(),
          (err: Error) => ready.reject(err),
        );
        return;
      }
      if (f.type === 'res' && typeof f.id === 'string') {
        const c = w.#calls.get(f.id);
        if (!c) return;
        w.#calls.delete(f.id);
        if (f.ok) c.resolve(f.payload);
        else c.reject(new Error(`${f.error?.code ?? 'ERROR'}: ${f.error?.message ?? 'the gateway refused the request'}`));
        if (w.#calls.size === 0) w.#onIdle?.();
        return;
      }
      if (f.type === 'event' && f.event === 'exec.approval.requested' && f.payload) {
        const p = f.payload as { id?: unknown; request?: { command?: unknown; sessionKey?: unknown }; expiresAtMs?: unknown };
        const sessionKey = typeof p.request?.sessionKey === 'string' ? p.request.sessionKey : null;
        if (typeof p.id !== 'string' || !matches(sessionKey)) return;
        w.onRequest({
          id: p.id,
          command: typeof p.request?.command === 'string' ? p.request.command : '(unknown command)',
          sessionKey,
          expiresAtMs: typeof p.expiresAtMs === 'number' ? p.expiresAtMs : null,
        });
      }
    });
    ws.on('error', (err) => ready.reject(err));
    ws.on('close', () => {
      w.#closed = true;
      ready.reject(new Error('the gateway closed the approvals connection'));
      for (const c of w.#calls.values()) c.reject(new Error('the gateway closed the approvals connection'));
      w.#calls.clear();
    });
    try {
      await ready.promise;
    } catch (err) {
      w.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return w;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #request(method: string, params: unknown): Promise<unknown> {
    const id = `cp-${++this.#seq}`;
    const p = new Promise<unknown>((resolve, reject) => this.#calls.set(id, { resolve, reject }));
    if (this.#ws.readyState !== WebSocket.OPEN) {
      this.#calls.delete(id);
      return Promise.reject(new Error('the approvals connection is not open'));
    }
    this.#ws.send(JSON.stringify({ type: 'req', id, method, params }));
    return p;
  }

  /** Runs (allow-once) or refuses (deny) the command on the gateway. */
  resolve(id: string, decision: 'allow-once' | 'deny'): Promise<unknown> {
    return this.#request('exec.approval.resolve', { id, decision });
  }

  /**
   * Closes once every call in flight has its answer (or after `graceMs`). The gateway may answer an
   * `exec.approval.resolve` only after the turn it released has ended (measured: a fast turn ends first),
   * so closing at the end of the turn must not cut that answer off.
   */
  closeWhenSettled(graceMs = 10_000): void {
    if (this.#calls.size === 0) return this.close();
    const t = setTimeout(() => this.close(), graceMs);
    t.unref();
    this.#onIdle = () => {
      clearTimeout(t);
      this.close();
    };
  }

  close(): void {
    this.#closed = true;
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) this.#ws.terminate();
  }
}
