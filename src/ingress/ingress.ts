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
import type { ConversationArchive } from '../archive/archive.ts';
import type { EventChannel } from '../events/channel.ts';
import { ClawplaneError, ConflictError, NotFoundError } from '../errors.ts';
import type { InstanceRow, InstanceService } from '../instances/instances.ts';
import type { GatewayTransport, SandboxDriver } from '../sandbox/types.ts';
import { failSpan, startSpan, withSpan } from '../observability/tracing.ts';
import type { Span } from '@opentelemetry/api';
import { assertAccess, type GatewayAccess } from './access.ts';
import type { Activity } from './activity.ts';
import { gatewayRequest, readAll } from './gateway.ts';
import {
  agentOf,
  chatText,
  gatewayChatBody,
  gatewayResponsesBody,
  responsesUserText,
  SESSION_ID,
  type ChatInput,
  type ResponsesInput,
} from './openai-input.ts';
import { Waker, type WakeProgress } from './wake.ts';

export { chatInput, type ChatInput } from './openai-input.ts';

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

/**
 * How wake progress reaches a streaming client: SSE comments (`: waking`), which every SSE parser skips,
 * unless the client opted in to named `clawplane.progress` events (the console does). Data events would
 * reach OpenAI clients as chunks, and their documented loops fail on them.
 */
export type ProgressMode = 'comments' | 'events';

/** One turn through one of the gateway's OpenAI-compatible endpoints. */
interface TurnSpec {
  path: '/v1/chat/completions' | '/v1/responses';
  agent: string;
  payload: string;
  stream: boolean;
  userText: string | undefined;
  /** The reply text of a complete (non-streaming) answer. */
  replyOf(body: unknown): string;
  /** Brings a complete answer into the shape OpenAI documents, where the gateway's differs; undefined: as is. */
  complete?(body: unknown): unknown;
  /** The reply text a streamed SSE event carries. */
  deltaOf(event: string | undefined, data: unknown): string;
  /** How an error after the stream has started is written (OpenAI's shape for the endpoint). */
  streamError(e: { message: string; type: string; code: string }): string;
}

interface TurnOptions {
  access: GatewayAccess;
  instanceRef?: string | undefined;
  sessionId?: string | undefined;
  signal: AbortSignal;
  progress?: ProgressMode | undefined;
}

const chatSpec = (input: ChatInput, agent: string): TurnSpec => ({
  path: '/v1/chat/completions',
  agent,
  payload: JSON.stringify(gatewayChatBody(input, agent)),
  stream: input.stream === true,
  userText: ((m) => (m ? chatText(m) : undefined))([...input.messages].reverse().find((m) => m.role === 'user')),
  replyOf: (b) => (b as { choices?: { message?: { content?: string } }[] }).choices?.[0]?.message?.content ?? '',
  deltaOf: (_e, d) => (d as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content ?? '',
  // The openai SDK throws an APIError for a data event carrying `error`; the AI SDK reports it as an error part.
  streamError: (e) => `data: ${JSON.stringify({ error: { ...e, param: null } })}\n\n`,
});

const responsesSpec = (input: ResponsesInput, agent: string): TurnSpec => ({
  path: '/v1/responses',
  agent,
  payload: JSON.stringify(gatewayResponsesBody(input, agent)),
  stream: input.stream === true,
  userText: responsesUserText(input.input),
  replyOf: (b) =>
    ((b as { output?: { type?: string; content?: { type?: string; text?: string }[] }[] }).output ?? [])
      .filter((o) => o.type === 'message')
      .flatMap((o) => o.content ?? [])
      .map((c) => (c.type === 'output_text' ? (c.text ?? '') : ''))
      .join(''),
  // OpenAI's output_text parts always carry `annotations` (the AI SDK's schema requires the array);
  // OpenClaw 2026.9.6 leaves it out.
  complete: (b) => {
    const out = (b as { output?: unknown }).output;
    if (!Array.isArray(out)) return undefined;
    let changed = false;
    for (const item of out as { content?: unknown }[])
      for (const part of Array.isArray(item.content) ? (item.content as Record<string, unknown>[]) : [])
        if (part['type'] === 'output_text' && part['annotations'] === undefined) {
          part['annotations'] = [];
          changed = true;
        }
    return changed ? b : undefined;
  },
  deltaOf: (e, d) => {
    const ev = d as { type?: string; delta?: unknown };
    return (e ?? ev.type) === 'response.output_text.delta' && typeof ev.delta === 'string' ? ev.delta : '';
  },
  // The Responses API's own error event, which the openai SDK and the AI SDK both surface as an error.
  streamError: (e) =>
    `event: error\ndata: ${JSON.stringify({ type: 'error', sequence_number: 0, code: e.code, message: e.message, param: null, error: { ...e, param: null } })}\n\n`,
});

const MAX_TOKENS = 10_000;

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
      if (ref) throw new NotFoundError(`Instance "${ref}"`, 'Name an instance of this tenant by its id or name (GET …/instances lists them).');
      if (all.length === 0) throw new NotFoundError('An instance of this tenant', 'Deploy one (POST …/instances), then retry.');
      throw new ConflictError(
        `This tenant has ${all.length} instances and none is named "main": pick one with the X-Clawplane-Instance header (its id or name).`,
        'instance_ambiguous',
      );
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
  async connect(
    access: GatewayAccess,
    row: InstanceRow,
    onProgress?: (p: WakeProgress) => void,
  ): Promise<{ row: InstanceRow; transport: GatewayTransport; token: string }> {
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
    if (!ready.sandbox) throw new ClawplaneError('instance_not_running', 503, `Instance "${ready.name}" has no running sandbox right now: retry shortly.`);
    return { row: ready, transport: await this.#o.driver.connect(ready.sandbox), token };
  }

  /** A Chat Completions turn with one of the tenant's agents (OpenClaw's /v1/chat/completions). */
  async chat(opts: TurnOptions & { input: ChatInput }): Promise<ChatResult> {
    return this.#turn(opts, opts.input.session, chatSpec(opts.input, agentOf(opts.input.model)));
  }

  /** A Responses turn with one of the tenant's agents (OpenClaw's /v1/responses). */
  async responses(opts: TurnOptions & { input: ResponsesInput }): Promise<ChatResult> {
    return this.#turn(opts, opts.input.session, responsesSpec(opts.input, agentOf(opts.input.model)));
  }

  /** The ingress span covers the whole turn: it ends with the activity it counts (`done`), after the stream. */
  async #turn(opts: TurnOptions, bodySession: string | undefined, spec: TurnSpec): Promise<ChatResult> {
    const span = startSpan('ingress.turn', {
      'clawplane.tenant_id': opts.access.tenantId,
      'clawplane.agent': spec.agent,
      'clawplane.api': spec.path,
      'clawplane.stream': spec.stream,
    });
    try {
      return await withSpan(span, () => this.#turnIn(opts, bodySession, spec, span));
    } catch (err) {
      failSpan(span, err);
      span.end();
      throw err;
    }
  }

  async #turnIn(opts: TurnOptions, bodySession: string | undefined, spec: TurnSpec, span: Span): Promise<ChatResult> {
    const { access } = opts;
    const { tenantId, by } = access;
    const sessionId = bodySession ?? opts.sessionId ?? randomUUID();
    if (!SESSION_ID.test(sessionId)) throw new ClawplaneError('validation_failed', 400, 'X-Clawplane-Session must be letters, digits and _.:- (at most 100).');
    const row = await this.resolveInstance(tenantId, opts.instanceRef);
    const { agent } = spec;
    span.setAttribute('clawplane.instance_id', row.id);
    const idle = this.#o.activity.begin(row.id);
    const done = () => {
      idle();
      span.end();
    };
    const archive = (reply: string) =>
      this.#o.archive
        .append(tenantId, {
          instanceId: row.id,
          sessionId,
          agent,
          actor: by.actor,
          requestId: by.requestId,
          messages: [...(spec.userText !== undefined ? [{ role: 'user' as const, content: spec.userText }] : []), { role: 'assistant', content: reply }],
        })
        .catch((err: unknown) => this.#o.log.error({ err, tenant_id: tenantId }, 'archiving a chat turn failed'));
    const headers = { 'x-clawplane-session': sessionId, 'x-clawplane-instance': row.id };
    const send = (gw: { transport: GatewayTransport; token: string }) => {
      const call = gatewayRequest({
        transport: gw.transport,
        token: gw.token,
        method: 'POST',
        path: spec.path,
        // The gateway keeps the session's history; the key is per agent, and tenants never share a gateway.
        headers: { 'content-type': 'application/json', 'x-openclaw-session-key': `agent:${agent}:cp-${sessionId}` },
        body: spec.payload,
      });
      const onAbort = () => call.abort();
      opts.signal.addEventListener('abort', onAbort, { once: true });
      return {
        abort: call.abort,
        response: call.response.catch((err: unknown) => {
          throw opts.signal.aborted
            ? err
            : new UpstreamError(`Instance "${row.name}" did not answer (${(err as NodeJS.ErrnoException).code ?? 'connection failed'})`, err);
        }),
      };
    };

    try {
      if (!spec.stream) {
        const gw = await this.connect(access, row);
        const res = await send(gw).response;
        let body = await readAll(res);
        if (res.statusCode === 200) {
          let reply = '';
          try {
            const parsed: unknown = JSON.parse(body);
            reply = spec.replyOf(parsed);
            const completed = spec.complete?.(parsed);
            if (completed !== undefined) body = JSON.stringify(completed);
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
      const sse = {
        ...headers,
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'x-accel-buffering': 'no',
        'transfer-encoding': 'chunked',
      };
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
        return { status: 200, headers: sse, body: this.#relay(res, call.abort, archive, done, spec), sessionId, instanceId: row.id };
      }
      // Waking: answer at once and tell the client what is happening while the gateway starts.
      const out = new PassThrough();
      const progress = (p: WakeProgress) => {
        if (out.destroyed) return;
        if (opts.progress === 'events') out.write(`event: clawplane.progress\ndata: ${JSON.stringify({ state: p, instance: row.id })}\n\n`);
        else out.write(`: ${p}\n\n`);
      };
      // A comment now and then while the gateway boots keeps idle-timing proxies from cutting the stream.
      const keepAlive = setInterval(() => out.destroyed || out.write(': waking\n\n'), 10_000);
      keepAlive.unref();
      void (async () => {
        try {
          const gw = await this.connect(access, row, progress);
          clearInterval(keepAlive);
          if (opts.signal.aborted || out.destroyed) return done();
          const call = send(gw);
          out.on('close', () => call.abort());
          const res = await call.response;
          if (res.statusCode !== 200) {
            const raw = await readAll(res);
            let e: { message?: unknown; type?: unknown; code?: unknown } = {};
            try {
              e = (JSON.parse(raw) as { error?: typeof e }).error ?? {};
            } catch {
              e = {};
            }
            out.end(
              spec.streamError({
                message: typeof e.message === 'string' ? e.message : `The gateway answered ${res.statusCode}.`,
                type: typeof e.type === 'string' ? e.type : (res.statusCode ?? 502) < 500 ? 'invalid_request_error' : 'server_error',
                code: typeof e.code === 'string' ? e.code : 'gateway_error',
              }),
            );
            return done();
          }
          this.#relay(res, call.abort, archive, done, spec).pipe(out);
        } catch (err) {
          clearInterval(keepAlive);
          done();
          const e =
            err instanceof ClawplaneError
              ? { code: err.code, message: err.message, type: err.status >= 500 ? 'server_error' : 'invalid_request_error' }
              : { code: 'internal', message: 'The gateway could not be reached.', type: 'server_error' };
          if (!(err instanceof ClawplaneError)) this.#o.log.error({ err, tenant_id: tenantId }, 'chat stream failed');
          if (!out.destroyed) out.end(spec.streamError(e));
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
  #relay(res: http.IncomingMessage, abort: () => void, archive: (reply: string) => Promise<void>, done: () => void, spec: TurnSpec): Readable {
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
        let event: string | undefined;
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7).trim();
          if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
          try {
            reply += spec.deltaOf(event, JSON.parse(line.slice(6)));
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
    // The gateway's answer was cut mid-stream: tell the client in the stream's own terms, at once, and end it.
    const cut = () => {
      if (finished || tap.destroyed || tap.writableEnded) return;
      tap.end(
        `event: error\ndata: ${JSON.stringify({ error: { code: 'gateway_stream_cut', message: 'The gateway stopped answering mid-stream (the instance may have restarted or its model call failed). Retry the message.' } })}\n\n`,
      );
    };
    res.on('error', cut);
    res.on('close', () => {
      if (!res.complete) cut();
    });
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
