/**
 * A local fake LLM provider, OpenAI- and Anthropic-compatible: the one stand-in the tests may use (real
 * providers cannot be reached from here). It streams real SSE, reports token usage like the real APIs,
 * and records every request it receives so tests can check keys, models and aborts.
 *
 * Behaviour is chosen by the model name: `fail-429` / `fail-500` answer with that status, `slow` waits
 * `slowMs` between its first and second chunk, `tool-exec` calls the `exec` tool with `echo hi` (an OpenAI
 * `tool_calls` entry) and, once the tool result is in the conversation, answers "Exec said: <result>" (a
 * result OpenClaw made up for a turn that was lost, it calls again);
 * `tool-<name>` likewise calls tool `<name>` with the arguments in `toolArgs[<name>]` and answers
 * "Tool said: <result>";
 * `drip` streams `dripChunks` words one every `dripMs` (a long, slow answer), `cut` sends two chunks and
 * then drops the connection mid-stream (no terminating chunk), anything else answers "Hello from <model>".
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll } from './after-all.ts';

export interface FakeRequest {
  path: string;
  authorization: string | undefined;
  apiKey: string | undefined;
  model: string;
  stream: boolean;
  body: Record<string, unknown>;
  /** Set when the client went away before the answer was complete. */
  aborted: boolean;
  finishedAt: number | undefined;
}

export interface FakeLlm {
  url: string;
  /** The base URL to configure for a provider (with the /v1 segment). */
  baseUrl: string;
  requests: FakeRequest[];
  /** Tokens reported per call (input, output). */
  usage: { input: number; output: number };
  slowMs: number;
  /** The `drip` model: how many words, and the pause before each. */
  dripChunks: number;
  dripMs: number;
  /** Ends every `slow` pause now: a test that saw the first chunk lets the provider finish. */
  releaseSlow(): void;
  /** Tool results (role "tool" message contents) the `tool-exec` model received. */
  toolResults: string[];
  /** The tool names offered in the last `tool-…` request. */
  toolNames: string[];
  /** Arguments the `tool-<name>` models call their tool with. */
  toolArgs: Record<string, Record<string, unknown>>;
  close(): Promise<void>;
}

export async function startFakeLlm(): Promise<FakeLlm> {
  const fake: FakeLlm = {
    url: '',
    baseUrl: '',
    requests: [],
    usage: { input: 40, output: 60 },
    slowMs: 400,
    dripChunks: 20,
    dripMs: 100,
    releaseSlow: () => undefined,
    toolResults: [],
    toolNames: [],
    toolArgs: { exec: { command: 'echo hi' } },
    close: async () => undefined,
  };
  fake.releaseSlow = () => {
    for (const wake of [...slowWaiters]) wake();
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0] ?? '';
      if (req.method === 'GET' && path.endsWith('/models')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            object: 'list',
            data: [
              { id: 'fake-model', object: 'model' },
              { id: 'slow', object: 'model' },
            ],
          }),
        );
        return;
      }
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      } catch {
        res.writeHead(400).end('bad json');
        return;
      }
      const r: FakeRequest = {
        path,
        authorization: req.headers.authorization,
        apiKey: typeof req.headers['x-api-key'] === 'string' ? req.headers['x-api-key'] : undefined,
        model: String(body['model'] ?? ''),
        stream: body['stream'] === true,
        body,
        aborted: false,
        finishedAt: undefined,
      };
      fake.requests.push(r);
      res.on('close', () => {
        if (!res.writableFinished) r.aborted = true;
      });
      void answer(fake, r, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  fake.url = `http://127.0.0.1:${port}`;
  fake.baseUrl = `${fake.url}/v1`;
  fake.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  afterAll(() => fake.close());
  return fake;
}

const slowWaiters = new Set<() => void>();
/** The `slow` model's pause: `slowMs`, or until `releaseSlow()`. */
const slowPause = (ms: number) =>
  new Promise<void>((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      slowWaiters.delete(wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    slowWaiters.add(wake);
  });

async function answer(fake: FakeLlm, r: FakeRequest, res: http.ServerResponse): Promise<void> {
  if (r.model === 'fail-429' || r.model === 'fail-500') {
    const status = r.model === 'fail-429' ? 429 : 500;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: `fake ${status}`, type: 'server_error' } }));
    r.finishedAt = Date.now();
    return;
  }
  const { input, output } = fake.usage;
  const toolName = r.model.startsWith('tool-') ? r.model.slice('tool-'.length) : undefined;
  const toolArgs = toolName ? fake.toolArgs[toolName] : undefined;
  if (toolName && toolArgs && !r.path.endsWith('/messages')) {
    const msgs = (r.body['messages'] ?? []) as { role?: string; content?: unknown }[];
    const results = msgs.filter((m) => m.role === 'tool');
    const tool = results.at(-1);
    fake.toolNames = ((r.body['tools'] ?? []) as { function?: { name?: string } }[]).map((t) => t.function?.name ?? '?');
    // A call whose turn was lost (OpenClaw repairs the transcript with a synthetic error result) is made again,
    // as a model does when a tool failed for no reason of its own.
    const lost = JSON.stringify(tool?.content ?? '').includes('inserted synthetic error result for transcript repair');
    if (!tool || lost) {
      const call = {
        index: 0,
        id: `call_${toolName}_${results.length + 1}`,
        type: 'function',
        function: { name: toolName, arguments: JSON.stringify(toolArgs) },
      };
      const usage = { prompt_tokens: input, completion_tokens: output, total_tokens: input + output };
      if (!r.stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            id: 'chatcmpl-1',
            object: 'chat.completion',
            model: r.model,
            choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [call] }, finish_reason: 'tool_calls' }],
            usage,
          }),
        );
      } else {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(
          `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', model: r.model, choices: [{ index: 0, delta: { role: 'assistant', tool_calls: [call] }, finish_reason: null }] })}\n\n`,
        );
        res.write(
          `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', model: r.model, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }], usage })}\n\n`,
        );
        res.end('data: [DONE]\n\n');
      }
      r.finishedAt = Date.now();
      return;
    }
    const content = typeof tool.content === 'string' ? tool.content : JSON.stringify(tool.content);
    fake.toolResults.push(content);
    return answerText(fake, r, res, `${toolName === 'exec' ? 'Exec' : 'Tool'} said: ${content.replace(/\s+/g, ' ').trim().slice(0, 200)}`);
  }
  if (r.model === 'drip' && r.stream) return drip(fake, r, res);
  if (r.model === 'cut' && r.stream) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (const w of ['Hello', ' from'])
      res.write(
        `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', model: r.model, choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })}\n\n`,
      );
    // A provider that dies mid-answer: the connection goes, with no [DONE] and no last chunk.
    await new Promise((resolve) => setTimeout(resolve, 50));
    res.socket?.destroy();
    return;
  }
  return answerText(fake, r, res, `Hello from ${r.model}`);
}

async function drip(fake: FakeLlm, r: FakeRequest, res: http.ServerResponse): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  for (let i = 0; i < fake.dripChunks && !res.destroyed; i++) {
    await new Promise((resolve) => setTimeout(resolve, fake.dripMs));
    res.write(
      `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', model: r.model, choices: [{ index: 0, delta: { content: `${i ? ' ' : ''}w${i}` }, finish_reason: null }] })}\n\n`,
    );
  }
  if (res.destroyed) return;
  res.write(
    `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', model: r.model, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: { prompt_tokens: fake.usage.input, completion_tokens: fake.usage.output, total_tokens: fake.usage.input + fake.usage.output } })}\n\n`,
  );
  res.end('data: [DONE]\n\n');
  r.finishedAt = Date.now();
}

async function answerText(fake: FakeLlm, r: FakeRequest, res: http.ServerResponse, text: string): Promise<void> {
  const { input, output } = fake.usage;
  const anthropic = r.path.endsWith('/messages');
  if (!r.stream) {
    res.writeHead(200, { 'content-type': 'application/json' });
    const json = anthropic
      ? {
          id: 'msg_1',
          type: 'message',
          role: 'assistant',
          model: r.model,
          content: [{ type: 'text', text }],
          stop_reason: 'end_turn',
          usage: { input_tokens: input, output_tokens: output },
        }
      : r.path.endsWith('/embeddings')
        ? {
            object: 'list',
            data: embedInputs(r.body['input']).map((t, index) => ({ object: 'embedding', index, embedding: fakeEmbedding(t) })),
            model: r.model,
            usage: { prompt_tokens: input, total_tokens: input },
          }
        : {
            id: 'chatcmpl-1',
            object: 'chat.completion',
            model: r.model,
            choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
            usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output },
          };
    res.end(JSON.stringify(json));
    r.finishedAt = Date.now();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const words = text.split(' ');
  const send = (event: string | undefined, data: unknown) => {
    if (res.destroyed) return;
    res.write(`${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  };
  if (anthropic) {
    send('message_start', {
      type: 'message_start',
      message: { id: 'msg_1', type: 'message', role: 'assistant', model: r.model, content: [], usage: { input_tokens: input, output_tokens: 1 } },
    });
    for (const [i, w] of words.entries()) {
      send('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: (i ? ' ' : '') + w } });
      if (i === 0 && r.model === 'slow') await slowPause(fake.slowMs);
    }
    send('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: output } });
    send('message_stop', { type: 'message_stop' });
  } else {
    for (const [i, w] of words.entries()) {
      send(undefined, {
        id: 'chatcmpl-1',
        object: 'chat.completion.chunk',
        model: r.model,
        choices: [{ index: 0, delta: { content: (i ? ' ' : '') + w }, finish_reason: null }],
      });
      if (i === 0 && r.model === 'slow') await slowPause(fake.slowMs);
    }
    send(undefined, { id: 'chatcmpl-1', object: 'chat.completion.chunk', model: r.model, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
    const so = r.body['stream_options'] as { include_usage?: boolean } | undefined;
    if (so?.include_usage)
      send(undefined, {
        id: 'chatcmpl-1',
        object: 'chat.completion.chunk',
        model: r.model,
        choices: [],
        usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output },
      });
    send(undefined, '[DONE]');
  }
  if (!res.destroyed) res.end();
  r.finishedAt = Date.now();
}

/**
 * Word groups the fake embeddings treat as one meaning: texts that use words of the same group get
 * close vectors whether or not they share a word, so a test can tell a search by meaning from one by words.
 */
export const FAKE_CONCEPTS: string[][] = [
  ['car', 'cars', 'automobile', 'automobiles', 'vehicle', 'vehicles', 'sedan', 'auto', 'truck'],
  ['repair', 'repairs', 'fix', 'fixed', 'mend', 'mechanic', 'maintenance', 'garage'],
  ['dog', 'dogs', 'puppy', 'puppies', 'canine', 'hound', 'pet', 'pets'],
  ['invoice', 'invoices', 'bill', 'billing', 'payment', 'payments', 'receipt', 'receipts'],
  ['weather', 'rain', 'forecast', 'sunny', 'storm', 'snow'],
  ['database', 'postgres', 'postgresql', 'sql', 'tables'],
  ['deploy', 'deployment', 'release', 'rollout', 'ship', 'shipped'],
  ['customer', 'customers', 'client', 'clients', 'buyer', 'buyers'],
];
const FAKE_DIMS = 64;
const STOP = new Set([
  'a',
  'an',
  'the',
  'is',
  'are',
  'of',
  'to',
  'in',
  'on',
  'my',
  'and',
  'or',
  'for',
  'with',
  'at',
  'it',
  'this',
  'that',
  'be',
  'what',
  'how',
  'do',
  'i',
  'we',
  'you',
]);

function embedInputs(input: unknown): string[] {
  if (typeof input === 'string') return [input];
  return Array.isArray(input) ? input.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))) : [];
}

/** A deterministic 64-dimension embedding: one dimension per concept group, other words hashed (weight 0.5) into the rest. */
export function fakeEmbedding(text: string): number[] {
  const v: number[] = Array.from({ length: FAKE_DIMS }, () => 0);
  for (const w of text.toLowerCase().match(/[a-z0-9]+/g) ?? []) {
    if (STOP.has(w)) continue;
    const c = FAKE_CONCEPTS.findIndex((g) => g.includes(w));
    if (c >= 0) v[c] = (v[c] ?? 0) + 1;
    else {
      let h = 2166136261;
      for (const ch of w) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
      const d = FAKE_CONCEPTS.length + (h % (FAKE_DIMS - FAKE_CONCEPTS.length));
      v[d] = (v[d] ?? 0) + 0.5;
    }
  }
  if (!v.some((x) => x !== 0)) v[FAKE_DIMS - 1] = 1;
  return v;
}
