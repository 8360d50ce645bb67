/**
 * The ingress (issue 7): the only way in to a tenant's gateway. It picks the tenant's instance, wakes
 * it when stopped, attaches the gateway token (never shown to a client), streams answers unbuffered,
 * aborts the upstream run when the client goes away, counts activity for the idle reaper and writes
 * what was said to the conversation archive.
 */
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ConversationArchive } from '../archive/archive.ts';
import type { EventChannel } from '../events/channel.ts';
import { ClawplaneError, ConflictError, NotFoundError } from '../errors.ts';
import type { InstanceRow, InstanceService } from '../instances/instances.ts';
import type { SandboxDriver } from '../sandbox/types.ts';
import { assertAccess, type GatewayAccess } from './access.ts';
import type { Activity } from './activity.ts';
import { gatewayRequest, readAll } from './gateway.ts';
import { Waker, type WakeProgress } from './wake.ts';

const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/;

const TextPart = z.strictObject({ type: z.literal('text'), text: z.string().max(1_000_000) });
const Message = z.strictObject({
  role: z.enum(['system', 'user', 'assistant']),
  content: z.union([z.string().max(1_000_000), z.array(TextPart).max(100)]),
  name: z.string().max(64).optional(),
});

/** The OpenAI chat-completions request, as far as a gateway agent uses it; unknown fields are refused. */
export const chatInput = z.strictObject({
  model: z.string().regex(/^agent\/[a-z0-9][a-z0-9_-]{0,63}$/, 'must be "agent/<name>", e.g. "agent/main"'),
  messages: z.array(Message).min(1).max(1000),
  stream: z.boolean().default(false),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().min(0).max(1).optional(),
  max_tokens: z.number().int().min(1).max(1_000_000).optional(),
  max_completion_tokens: z.number().int().min(1).max(1_000_000).optional(),
  stop: z.union([z.string().max(200), z.array(z.string().max(200)).max(4)]).optional(),
  session: z.string().regex(SESSION_ID, 'letters, digits and _.:- (at most 100), e.g. "support-42"').optional().describe('Clawplane: the conversation to continue (also the X-Clawplane-Session header); a new one when absent'),
});
export type ChatInput = z.infer<typeof chatInput>;

export interface ChatResult {
  status: number;
  headers: Record<string, string>;
  /** A stream for SSE (already flowing), or a complete body. */
  body: Readable | string;
  sessionId: string;
  instanceId: string;
}

export interface IngressOptions {
  instances: InstanceService;
  driver: SandboxDriver;
  archive: ConversationArchive;
  activity: Activity;
  waker: Waker;
  log: Logger;
  /** Drops cached gateway tokens when any replica rotates one; nothing is cached while it is down. */
  events: EventChannel;
}

export class UpstreamError extends ClawplaneError {
  constructor(message: string, cause?: unknown) {
    super('gateway_unreachable', 502, `${message}. The instance may be restarting: retry in a few seconds, or check its health.`, { cause });
  }
}

const MAX_TOKENS = 10_000;

const text = (c: z.infer<typeof Message>['content']) => (typeof c === 'string' ? c : c.map((p) => p.text).join('\n'));

export class IngressService {
  readonly #o: IngressOptions;
  // Gateway tokens per instance: fixed until rotated (`gateway_token.changed`, from any replica), and opening the
  // sealed secret costs a database round trip and a decryption on every request otherwise (bench: TTFB). Bounded:
  // cleared when it reaches MAX_TOKENS entries.
  readonly #tokens = new Map<string, string>();
  // Which instance a tenant's requests named (tenant + ref or "main" → instance id): ids never change and
  // names are unique per tenant, so a hit needs one lookup by id instead of listing the tenant's
  // instances first. The row itself is always read fresh; a destroyed, renamed or missing one falls back.
  readonly #picks = new Map<string, string>();

  constructor(opts: IngressOptions) {
    this.#o = opts;
    opts.events.on('gateway_token.changed', ({ instanceId }) => this.forgetGatewayToken(instanceId));
    opts.events.onReset(() => this.#tokens.clear());
  }

  /** Drops the cached gateway token of an instance (after its credentials were rotated). */
  forgetGatewayToken(instanceId: string): void {
    this.#tokens.delete(instanceId);
  }

  get activity(): Activity {
    return this.#o.activity;
  }

  /**
   * Which instance serves the tenant: the one named (id or name) by the caller; else the instance
   * named "main"; else the tenant's only instance. Several and none named: a 409 saying how to pick.
   */
  async resolveInstance(tenantId: string, ref?: string): Promise<InstanceRow> {
    const key = `${tenantId}\n${ref ?? ''}`;
    const cached = this.#picks.get(key);
    if (cached !== undefined) {
      const row = await this.#o.instances.get(tenantId, cached).catch((err: unknown) => {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      });
      if (row && row.desiredState !== 'destroyed' && (ref ? row.id === ref || row.name === ref : row.name === 'main')) return row;
      this.#picks.delete(key);
    }
    const all = (await this.#o.instances.list(tenantId)).filter((i) => i.desiredState !== 'destroyed');
    const pick = ref ? all.find((i) => i.id === ref || i.name === ref) : (all.find((i) => i.name === 'main') ?? (all.length === 1 ? all[0] : undefined));
    if (!pick) {
      if (ref || all.length === 0) throw new NotFoundError(ref ? 'Instance' : 'An instance for this tenant (deploy one: POST …/instances)');
      throw new ConflictError(`This tenant has ${all.length} instances and none is named "main": pick one with the X-Clawplane-Instance header (its id or name).`, 'instance_ambiguous');
    }
    // Not "the only instance": that stops being true when a second one is deployed.
    if (ref || pick.name === 'main') {
      if (this.#picks.size >= 10_000) this.#picks.clear();
      this.#picks.set(key, pick.id);
    }
    return this.#o.instances.get(tenantId, pick.id);
  }

  /**
   * Wakes the instance when needed; resolves with where and how to reach its gateway. Only with the
   * gate's decision for the row's tenant (ingress/access.ts): there is no other way to a gateway.
   */
  async connect(access: GatewayAccess, row: InstanceRow, onProgress?: (p: WakeProgress) => void): Promise<{ row: InstanceRow; socketPath: string; token: string }> {
    assertAccess(access, row.tenantId);
    const ready = await this.#o.waker.ensureReady(access, row, onProgress);
    this.#o.activity.touch(ready.id);
    const { events } = this.#o;
    const live = events.live;
    let token = live ? this.#tokens.get(ready.id) : undefined;
    if (token === undefined) {
      const epoch = events.epoch;
      token = await this.#o.instances.gatewayToken(ready.id);
      if (live && epoch === events.epoch && events.live) {
        if (this.#tokens.size >= MAX_TOKENS) this.#tokens.clear();
        this.#tokens.set(ready.id, token);
      }
    }
    return { row: ready, socketPath: this.#o.driver.endpoint(ready.id).socketPath, token };
  }

  async chat(opts: { access: GatewayAccess; instanceRef?: string | undefined; sessionId?: string | undefined; input: ChatInput; signal: AbortSignal }): Promise<ChatResult> {
    const { input, access } = opts;
    const { tenantId, by } = access;
    const sessionId = input.session ?? opts.sessionId ?? randomUUID();
    if (!SESSION_ID.test(sessionId)) throw new ClawplaneError('validation_failed', 400, 'X-Clawplane-Session must be letters, digits and _.:- (at most 100).');
    const row = await this.resolveInstance(tenantId, opts.instanceRef);
    const agent = input.model.slice('agent/'.length);
    const { session: _s, ...rest } = input;
    const payload = JSON.stringify({ ...rest, model: `openclaw/${agent}` });
    const lastUser = [...input.messages].reverse().find((m) => m.role === 'user');
    const done = this.#o.activity.begin(row.id);
    const archive = (reply: string) =>
      this.#o.archive
        .append(tenantId, { instanceId: row.id, sessionId, agent, actor: by.actor, requestId: by.requestId, messages: [...(lastUser ? [{ role: 'user' as const, content: text(lastUser.content) }] : []), { role: 'assistant', content: reply }] })
        .catch((err: unknown) => this.#o.log.error({ err, tenant_id: tenantId }, 'archiving a chat turn failed'));
    const headers = { 'x-clawplane-session': sessionId, 'x-clawplane-instance': row.id };
    const send = (gw: { socketPath: string; token: string }) => {
      const call = gatewayRequest({
        socketPath: gw.socketPath,
        token: gw.token,
        method: 'POST',
        path: '/v1/chat/completions',
        // The gateway keeps the session's history; the key is per agent, and tenants never share a gateway.
        headers: { 'content-type': 'application/json', 'x-openclaw-session-key': `agent:${agent}:cp-${sessionId}` },
        body: payload,
      });
      const onAbort = () => call.abort();
      opts.signal.addEventListener('abort', onAbort, { once: true });
      return {
        abort: call.abort,
        response: call.response.catch((err: unknown) => {
          throw opts.signal.aborted ? err : new UpstreamError(`Instance "${row.name}" did not answer (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, err);
        }),
      };
    };

    try {
      if (!input.stream) {
        const gw = await this.connect(access, row);
        const res = await send(gw).response;
        const body = await readAll(res);
        if (res.statusCode === 200) {
          let reply = '';
          try {
            reply = (JSON.parse(body) as { choices?: { message?: { content?: string } }[] }).choices?.[0]?.message?.content ?? '';
          } catch {
            reply = '';
          }
          // Not awaited: reads of the archive wait for it (ConversationArchive.append).
          void archive(reply);
        }
        done();
        return { status: res.statusCode ?? 502, headers: { ...headers, 'content-type': 'application/json' }, body, sessionId, instanceId: row.id };
      }

      // transfer-encoding: @hono/node-server otherwise reads ahead (up to three chunks, with a timer in
      // between) before it sends anything, to compute a content-length; a stream must not wait for that.
      const sse = { ...headers, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no', 'transfer-encoding': 'chunked' };
      if (Waker.ready(row)) {
        // Ready now: wait for the gateway's head so its status (e.g. 400) reaches the client as is.
        const gw = await this.connect(access, row);
        const call = send(gw);
        const res = await call.response;
        if (res.statusCode !== 200) {
          const body = await readAll(res);
          done();
          return { status: res.statusCode ?? 502, headers: { ...headers, 'content-type': 'application/json' }, body, sessionId, instanceId: row.id };
        }
        return { status: 200, headers: sse, body: this.#relay(res, call.abort, archive, done), sessionId, instanceId: row.id };
      }
      // Waking: answer at once and tell the client what is happening while the gateway starts.
      const out = new PassThrough();
      const event = (name: string, data: unknown) => out.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
      void (async () => {
        try {
          const gw = await this.connect(access, row, (p) => event('clawplane.progress', { state: p, instance: row.id }));
          if (opts.signal.aborted || out.destroyed) return done();
          const call = send(gw);
          out.on('close', () => call.abort());
          const res = await call.response;
          if (res.statusCode !== 200) {
            out.end(`data: ${JSON.stringify({ error: { status: res.statusCode, message: await readAll(res) } })}\n\n`);
            return done();
          }
          this.#relay(res, call.abort, archive, done).pipe(out);
        } catch (err) {
          done();
          const e = err instanceof ClawplaneError ? { code: err.code, message: err.message } : { code: 'internal', message: 'The gateway could not be reached.' };
          if (!(err instanceof ClawplaneError)) this.#o.log.error({ err, tenant_id: tenantId }, 'chat stream failed');
          if (!out.destroyed) out.end(`event: error\ndata: ${JSON.stringify({ error: e })}\n\n`);
        }
      })();
      return { status: 200, headers: sse, body: out, sessionId, instanceId: row.id };
    } catch (err) {
      done();
      throw err;
    }
  }

  /**
   * Passes SSE chunks through as they arrive (one Transform, no buffering; pipe handles back-pressure),
   * collecting the reply text for the archive. The turn is archived after the stream ends, off the
   * client's path; the archive's reads wait for it.
   */
  #relay(res: http.IncomingMessage, abort: () => void, archive: (reply: string) => Promise<void>, done: () => void): Readable {
    const decoder = new StringDecoder('utf8');
    let pending = '';
    let reply = '';
    let finished = false;
    const collect = (chunk: string) => {
      pending += chunk;
      let i: number;
      while ((i = pending.indexOf('\n\n')) >= 0) {
        const block = pending.slice(0, i);
        pending = pending.slice(i + 2);
        for (const line of block.split('\n')) {
          if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
          try {
            reply += (JSON.parse(line.slice(6)) as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content ?? '';
          } catch {
            // Not JSON: nothing to archive from it; the client still gets it.
          }
        }
      }
    };
    const tap = new Transform({
      transform(chunk: Buffer, _e, cb) {
        // A multi-byte character may straddle two chunks: the decoder holds its first bytes back.
        collect(decoder.write(chunk));
        cb(null, chunk);
      },
      flush(cb) {
        finished = true;
        collect(decoder.end());
        cb();
        // Started before the client can ask for its history: ConversationArchive's reads wait for it.
        void archive(reply).finally(done);
      },
    });
    res.on('error', (err) => tap.destroy(err));
    // The client went away (or we failed): abort the gateway request, which ends the run upstream,
    // and keep what was said so far.
    tap.on('close', () => {
      if (finished) return;
      abort();
      void archive(reply).finally(done);
    });
    return res.pipe(tap);
  }
}
