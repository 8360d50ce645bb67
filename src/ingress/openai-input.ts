/**
 * Request bodies of the tenant's OpenAI-compatible routes. Every field OpenAI documents for Chat
 * Completions is accepted, because clients and frameworks send them routinely (the openai SDK, the AI
 * SDK and LangChain each add some); the fields OpenClaw's gateway uses are passed on, the rest are
 * accepted and dropped (the table in docs/openai-compatible.md). Fields outside OpenAI's documented set
 * are still refused with a 400, so a typo is not silently ignored.
 */
import { z } from 'zod';

export const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/;
const AGENT_MODEL = /^(agent|openclaw)\/([a-z0-9][a-z0-9_-]{0,63})$/;

const Text = z.string().max(1_000_000);
const Short = z.string().max(200);
const JsonObject = z.record(z.string(), z.unknown());

const TextPart = z.strictObject({ type: z.literal('text'), text: Text });
const ImagePart = z.strictObject({
  type: z.literal('image_url'),
  image_url: z.strictObject({ url: z.string().max(20_000_000), detail: z.enum(['auto', 'low', 'high']).optional() }),
});
const AudioPart = z.strictObject({
  type: z.literal('input_audio'),
  input_audio: z.strictObject({ data: z.string().max(20_000_000), format: z.string().max(20) }),
});
const FilePart = z.strictObject({
  type: z.literal('file'),
  file: z.strictObject({ file_data: z.string().max(20_000_000).optional(), file_id: Short.optional(), filename: z.string().max(500).optional() }),
});
const RefusalPart = z.strictObject({ type: z.literal('refusal'), refusal: Text });
const ToolCall = z.union([
  z.strictObject({ id: Short, type: z.literal('function'), function: z.strictObject({ name: Short, arguments: Text }) }),
  z.strictObject({ id: Short, type: z.literal('custom'), custom: z.strictObject({ name: Short, input: Text }) }),
]);

const Message = z.discriminatedUnion('role', [
  z.strictObject({ role: z.enum(['system', 'developer']), content: z.union([Text, z.array(TextPart).max(100)]), name: z.string().max(64).optional() }),
  z.strictObject({
    role: z.literal('user'),
    content: z.union([Text, z.array(z.discriminatedUnion('type', [TextPart, ImagePart, AudioPart, FilePart])).max(100)]),
    name: z.string().max(64).optional(),
  }),
  z.strictObject({
    role: z.literal('assistant'),
    content: z.union([Text, z.array(z.discriminatedUnion('type', [TextPart, RefusalPart])).max(100)]).nullish(),
    name: z.string().max(64).optional(),
    refusal: Text.nullish(),
    tool_calls: z.array(ToolCall).max(128).optional(),
    function_call: z.strictObject({ name: Short, arguments: Text }).nullish(),
    audio: z.strictObject({ id: Short }).nullish(),
  }),
  z.strictObject({ role: z.literal('tool'), content: z.union([Text, z.array(TextPart).max(100)]), tool_call_id: Short }),
  z.strictObject({ role: z.literal('function'), name: z.string().max(64), content: Text.nullable() }),
]);
export type ChatMessage = z.infer<typeof Message>;

const FunctionDef = z.strictObject({
  name: z.string().max(64),
  description: z.string().max(100_000).optional(),
  parameters: JsonObject.optional(),
  strict: z.boolean().nullish(),
});
const Tool = z.union([
  z.strictObject({ type: z.literal('function'), function: FunctionDef }),
  z.strictObject({
    type: z.literal('custom'),
    custom: z.strictObject({ name: z.string().max(64), description: z.string().max(100_000).optional(), format: JsonObject.optional() }),
  }),
]);
const ToolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: z.string().max(64) }) }),
  z.strictObject({ type: z.literal('custom'), custom: z.strictObject({ name: z.string().max(64) }) }),
  z.strictObject({
    type: z.literal('allowed_tools'),
    allowed_tools: z.strictObject({ mode: z.enum(['auto', 'required']), tools: z.array(JsonObject).max(128) }),
  }),
]);
const ResponseFormat = z.union([
  z.strictObject({ type: z.literal('text') }),
  z.strictObject({ type: z.literal('json_object') }),
  z.strictObject({
    type: z.literal('json_schema'),
    json_schema: z.strictObject({
      name: z.string().max(64),
      description: z.string().max(100_000).optional(),
      schema: JsonObject.optional(),
      strict: z.boolean().nullish(),
    }),
  }),
]);

const model = z
  .string()
  .regex(AGENT_MODEL, 'must be "agent/<name>" (or "openclaw/<name>"), e.g. "agent/main"; GET …/models lists them')
  .describe('The agent to talk to: "agent/<name>" (GET …/models lists them)');

/** OpenAI's Chat Completions request (every documented field), plus Clawplane's `session`. */
export const chatInput = z.strictObject({
  model,
  messages: z.array(Message).min(1).max(1000),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional(), include_obfuscation: z.boolean().optional() }).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  max_tokens: z.number().int().min(1).max(1_000_000).nullish(),
  max_completion_tokens: z.number().int().min(1).max(1_000_000).nullish(),
  stop: z.union([z.string().max(200), z.array(z.string().max(200)).max(4)]).nullish(),
  tools: z.array(Tool).max(128).optional(),
  tool_choice: ToolChoice.optional(),
  // Accepted and ignored (docs/openai-compatible.md says why for each).
  n: z.number().int().min(1).max(128).nullish(),
  user: z.string().max(256).optional(),
  seed: z.number().int().nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: z.record(z.string().max(20), z.number().min(-100).max(100)).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  response_format: ResponseFormat.optional(),
  parallel_tool_calls: z.boolean().optional(),
  store: z.boolean().nullish(),
  metadata: z.record(z.string().max(64), z.string().max(512)).nullish(),
  modalities: z
    .array(z.enum(['text', 'audio']))
    .max(2)
    .nullish(),
  audio: z.strictObject({ voice: z.union([Short, JsonObject]), format: Short }).nullish(),
  prediction: z.strictObject({ type: z.literal('content'), content: z.union([Text, z.array(TextPart).max(100)]) }).nullish(),
  reasoning_effort: z.enum(['none', 'minimal', 'low', 'medium', 'high', 'xhigh']).nullish(),
  verbosity: z.enum(['low', 'medium', 'high']).nullish(),
  service_tier: z.enum(['auto', 'default', 'flex', 'scale', 'priority']).nullish(),
  web_search_options: JsonObject.optional(),
  prompt_cache_key: z.string().max(1024).optional(),
  prompt_cache_retention: z.enum(['in-memory', '24h']).nullish(),
  safety_identifier: z.string().max(256).optional(),
  functions: z.array(FunctionDef).max(128).optional(),
  function_call: z.union([z.enum(['none', 'auto']), z.strictObject({ name: z.string().max(64) })]).optional(),
  session: z
    .string()
    .regex(SESSION_ID, 'letters, digits and _.:- (at most 100), e.g. "support-42"')
    .optional()
    .describe('Clawplane: the conversation to continue (also the X-Clawplane-Session header); a new one when absent'),
});
export type ChatInput = z.infer<typeof chatInput>;

/**
 * The fields passed on to OpenClaw's /v1/chat/completions: the ones its "Supported request fields"
 * table names (docs/gateway/openai-http-api.md in openclaw 2026.9.6); every other field is accepted and
 * dropped. `user` is dropped too: OpenClaw would derive a session from it, and Clawplane's session
 * (X-Clawplane-Session or `session`) decides which conversation a turn continues.
 */
export const CHAT_FORWARDED = [
  'messages',
  'stream',
  'stream_options',
  'temperature',
  'top_p',
  'max_tokens',
  'max_completion_tokens',
  'stop',
  'frequency_penalty',
  'presence_penalty',
  'seed',
  'tools',
  'tool_choice',
] as const;

/** The agent a model names ("agent/main" and "openclaw/main" both name "main"). */
export function agentOf(model: string): string {
  return AGENT_MODEL.exec(model)?.[2] ?? 'main';
}

/**
 * What the gateway receives: the forwarded fields, `developer` turns as `system` ones, null fields left
 * out. OpenClaw takes function tools only (it answers 400 to custom tools and to `allowed_tools`/`custom`
 * tool choices), so those are dropped as accepted-and-ignored, like the deprecated `function` turns.
 */
export function gatewayChatBody(input: ChatInput, agent: string): Record<string, unknown> {
  const out: Record<string, unknown> = { model: `openclaw/${agent}` };
  for (const k of CHAT_FORWARDED) {
    const v = input[k];
    if (v !== undefined && v !== null) out[k] = v;
  }
  out['stream'] = input.stream === true;
  // OpenClaw reads only include_usage.
  if (input.stream_options)
    out['stream_options'] = input.stream_options.include_usage === undefined ? {} : { include_usage: input.stream_options.include_usage };
  const tools = input.tools?.filter((t) => t.type === 'function');
  if (tools !== undefined) {
    if (tools.length > 0) out['tools'] = tools;
    else delete out['tools'];
  }
  const choice = input.tool_choice;
  if (choice !== undefined && typeof choice !== 'string' && choice.type !== 'function') delete out['tool_choice'];
  if (out['tools'] === undefined && choice !== undefined && typeof choice !== 'string') delete out['tool_choice'];
  // OpenAI's newer name for system instructions; the gateway builds its system prompt from system turns.
  out['messages'] = input.messages.filter((m) => m.role !== 'function').map((m) => (m.role === 'developer' ? { ...m, role: 'system' } : m));
  return out;
}

const InputItem = JsonObject;

/**
 * OpenAI's Responses request (every documented field). OpenClaw's /v1/responses validates the items
 * itself (its answer passes on as is); this schema refuses undocumented top-level fields.
 */
export const responsesInput = z.strictObject({
  model,
  input: z.union([Text, z.array(InputItem).min(1).max(1000)]),
  instructions: Text.nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_obfuscation: z.boolean().optional() }).nullish(),
  max_output_tokens: z.number().int().min(1).max(1_000_000).nullish(),
  tools: z.array(JsonObject).max(128).optional(),
  tool_choice: z.union([z.enum(['none', 'auto', 'required']), JsonObject]).optional(),
  user: z.string().max(256).optional(),
  // Accepted and ignored.
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  max_tool_calls: z.number().int().min(1).nullish(),
  previous_response_id: Short.nullish(),
  conversation: z.union([Short, JsonObject]).nullish(),
  reasoning: JsonObject.nullish(),
  text: JsonObject.nullish(),
  include: z.array(Short).max(20).nullish(),
  metadata: z.record(z.string().max(64), z.string().max(512)).nullish(),
  store: z.boolean().nullish(),
  background: z.boolean().nullish(),
  truncation: z.enum(['auto', 'disabled']).nullish(),
  service_tier: z.enum(['auto', 'default', 'flex', 'scale', 'priority']).nullish(),
  prompt: JsonObject.nullish(),
  prompt_cache_key: z.string().max(1024).optional(),
  prompt_cache_retention: z.enum(['in-memory', '24h']).nullish(),
  prompt_cache_options: JsonObject.nullish(),
  safety_identifier: z.string().max(256).optional(),
  session: chatInput.shape.session,
});
export type ResponsesInput = z.infer<typeof responsesInput>;

/**
 * The fields passed on to OpenClaw's /v1/responses (the ones its request-shape table says it uses,
 * docs/gateway/openresponses-http-api.md in openclaw 2026.9.6); `user` is dropped as for chat.
 */
export const RESPONSES_FORWARDED = [
  'input',
  'instructions',
  'stream',
  'max_output_tokens',
  'temperature',
  'top_p',
  'tools',
  'tool_choice',
  'previous_response_id',
] as const;

/** `data:<type>;base64,<data>` as OpenClaw's base64 source; anything else as a URL source (which it refuses). */
function source(url: string, filename?: unknown): Record<string, unknown> {
  const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  if (!m) return { type: 'url', url };
  return { type: 'base64', media_type: m[1], data: m[2], ...(typeof filename === 'string' ? { filename } : {}) };
}

/**
 * One content part of a message item in OpenClaw's strict form: OpenAI's `input_image.image_url` and
 * `input_file.file_data`/`file_url` become its `source`, and keys it does not know (`detail`, the AI
 * SDK's `prompt_cache_breakpoint`) are left out.
 */
function contentPart(p: unknown): unknown {
  if (typeof p !== 'object' || p === null) return p;
  const part = p as Record<string, unknown>;
  switch (part['type']) {
    case 'input_text':
    case 'output_text':
      return { type: part['type'], text: part['text'] };
    case 'input_image':
      if (part['source'] !== undefined) return { type: 'input_image', source: part['source'] };
      return typeof part['image_url'] === 'string' ? { type: 'input_image', source: source(part['image_url']) } : part;
    case 'input_file':
      if (part['source'] !== undefined) return { type: 'input_file', source: part['source'] };
      if (typeof part['file_data'] === 'string')
        return {
          type: 'input_file',
          source: source(
            part['file_data'].startsWith('data:') ? part['file_data'] : `data:application/octet-stream;base64,${part['file_data']}`,
            part['filename'],
          ),
        };
      return typeof part['file_url'] === 'string' ? { type: 'input_file', source: source(part['file_url']) } : part;
    default:
      return part;
  }
}

/**
 * An input item in OpenClaw's strict form: OpenAI lets a message item leave out `type: "message"` (the
 * AI SDK does), OpenClaw's schema requires it.
 */
function inputItem(item: Record<string, unknown>): Record<string, unknown> {
  if (item['role'] === undefined || (item['type'] !== undefined && item['type'] !== 'message')) return item;
  const content = item['content'];
  return { ...item, type: 'message', content: Array.isArray(content) ? content.map(contentPart) : content };
}

/**
 * What the gateway receives. OpenClaw takes function tools only: other tool types (web search, file
 * search, ...) are accepted and dropped, like a tool choice that names one of them.
 */
export function gatewayResponsesBody(input: ResponsesInput, agent: string): Record<string, unknown> {
  const out: Record<string, unknown> = { model: `openclaw/${agent}` };
  for (const k of RESPONSES_FORWARDED) {
    const v = input[k];
    if (v !== undefined && v !== null) out[k] = v;
  }
  out['stream'] = input.stream === true;
  if (Array.isArray(input.input)) out['input'] = input.input.map(inputItem);
  const tools = input.tools?.filter((t) => t['type'] === 'function');
  if (tools !== undefined) {
    if (tools.length > 0) out['tools'] = tools;
    else delete out['tools'];
  }
  const choice = input.tool_choice;
  if (choice !== undefined && typeof choice !== 'string' && (choice['type'] !== 'function' || out['tools'] === undefined)) delete out['tool_choice'];
  return out;
}

/** Plain text of a chat message's content (text parts only), for the archive. */
export function chatText(m: ChatMessage): string {
  const c = m.content;
  if (c === null || c === undefined) return '';
  return typeof c === 'string' ? c : c.map((p) => ('text' in p ? p.text : '')).join('\n');
}

/** The last user text of a Responses input, for the archive. */
export function responsesUserText(input: ResponsesInput['input']): string | undefined {
  if (typeof input === 'string') return input;
  for (let i = input.length - 1; i >= 0; i--) {
    const item = input[i] as { role?: unknown; type?: unknown; content?: unknown };
    if (item.role !== 'user') continue;
    if (typeof item.content === 'string') return item.content;
    if (Array.isArray(item.content))
      return (item.content as { type?: unknown; text?: unknown }[])
        .filter((p) => typeof p.text === 'string')
        .map((p) => p.text as string)
        .join('\n');
  }
  return undefined;
}
