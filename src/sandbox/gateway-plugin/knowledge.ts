/**
 * The OpenClaw plugin that gives a tenant's agents their knowledge tools (docs/adr/0007): store and
 * recall memories, record and search findings. It runs inside the gateway, in the sandbox, so it holds
 * no identity of its own: every call goes to the supervisor's egress port (127.0.0.1, the only way out),
 * which attaches the sandbox's broker token; the broker scopes each call to that token's tenant. No
 * parameter names a tenant, and the agent a memory belongs to is the gateway's agent that is running
 * (OpenClaw's tool context), not something the model chooses.
 *
 * Written into each sandbox's read-only /conf as plain JavaScript (type stripping, like the supervisor)
 * and loaded through `plugins.load.paths` (the runtime's docs/tools/plugin.md): it imports nothing but
 * node:http, because a plugin loaded from a path resolves no packages of the runtime. The plugin entry
 * is the object `definePluginEntry` would return (id, name, description, configSchema, register).
 */
import http from 'node:http';

/** The plugin id (openclaw.plugin.json, `plugins.allow`, `plugins.entries`). */
export const KNOWLEDGE_PLUGIN_ID = 'clawplane-knowledge';
/** The tools it registers; the policy registry (policy_tools) lists them under the group "knowledge". */
export const KNOWLEDGE_TOOLS = ['memory_store', 'memory_recall', 'finding_record', 'finding_search'] as const;

interface PluginConfig {
  /** The supervisor's egress, e.g. http://127.0.0.1:18080. */
  brokerUrl: string;
}

interface ToolContext {
  agentId?: string;
}

interface ToolResult {
  content: { type: 'text'; text: string }[];
  details: unknown;
}

interface AgentTool {
  name: string;
  label: string;
  description: string;
  parameters: Record<string, unknown>;
  execute(toolCallId: string, params: Record<string, unknown>, signal?: AbortSignal): Promise<ToolResult>;
}

interface PluginApi {
  pluginConfig?: Record<string, unknown>;
  registerTool(factory: (ctx: ToolContext) => AgentTool[], opts: { names: string[] }): void;
}

const CONFIG_JSON_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['brokerUrl'],
  properties: { brokerUrl: { type: 'string', pattern: '^http://127\\.0\\.0\\.1:[0-9]{1,5}$' } },
};

function parseConfig(value: unknown): { success: true; data: PluginConfig } | { success: false; error: { issues: { path: string[]; message: string }[] } } {
  const v = value as Partial<PluginConfig> | undefined;
  if (v && typeof v === 'object' && typeof v.brokerUrl === 'string' && /^http:\/\/127\.0\.0\.1:[0-9]{1,5}$/.test(v.brokerUrl) && Object.keys(v).length === 1)
    return { success: true, data: { brokerUrl: v.brokerUrl } };
  return { success: false, error: { issues: [{ path: ['brokerUrl'], message: 'brokerUrl must be http://127.0.0.1:<port> (the sandbox egress)' }] } };
}

/** The manifest OpenClaw reads before loading the code (docs/plugins/manifest.md). */
export function knowledgePluginManifest(): Record<string, unknown> {
  return {
    id: KNOWLEDGE_PLUGIN_ID,
    name: 'Clawplane knowledge',
    description: "The tenant's memories and findings, through the Clawplane broker",
    version: '1.0.0',
    activation: { onStartup: true },
    contracts: { tools: [...KNOWLEDGE_TOOLS] },
    configSchema: CONFIG_JSON_SCHEMA,
  };
}

/** package.json of the plugin folder: the entry OpenClaw loads. */
export function knowledgePluginPackage(): Record<string, unknown> {
  return { name: '@clawplane/openclaw-knowledge', version: '1.0.0', private: true, type: 'module', openclaw: { extensions: ['./index.js'] } };
}

const MAX_ANSWER = 64 * 1024;

/** One call to the broker through the egress port; the supervisor adds the token. */
function call(
  base: string,
  method: string,
  path: string,
  body: unknown,
  agent: string | undefined,
  signal: AbortSignal | undefined,
): Promise<{ status: number; json: unknown }> {
  const url = new URL(path, base);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    if (agent) headers['x-openclaw-agent'] = agent;
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, agent: false, timeout: 30_000, ...(signal ? { signal } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= MAX_ANSWER) chunks.push(c);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown = text;
          try {
            json = text ? JSON.parse(text) : null;
          } catch {
            // A non-JSON answer (a proxy error page) is passed on as text.
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('the broker did not answer within 30 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

function result(text: string, details: unknown): ToolResult {
  return { content: [{ type: 'text', text }], details };
}

/** A broker refusal as the model sees it: the broker's message, never a stack. */
function refusal(what: string, r: { status: number; json: unknown }): ToolResult {
  const j = r.json as { message?: unknown; error?: { message?: unknown } } | null;
  const msg = typeof j?.message === 'string' ? j.message : typeof j?.error?.message === 'string' ? j.error.message : `status ${r.status}`;
  return result(`${what} failed: ${msg}`, { ok: false, status: r.status, message: msg });
}

function str(p: Record<string, unknown>, k: string): string | undefined {
  const v = p[k];
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

function num(p: Record<string, unknown>, k: string): number | undefined {
  const v = p[k];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function tools(cfg: PluginConfig, ctx: ToolContext): AgentTool[] {
  const agent = typeof ctx.agentId === 'string' && ctx.agentId ? ctx.agentId : undefined;
  const go = (method: string, path: string, body: unknown, signal: AbortSignal | undefined) => call(cfg.brokerUrl, method, path, body, agent, signal);
  return [
    {
      name: 'memory_store',
      label: 'Remember',
      description:
        'Store something worth remembering in later conversations and tasks (a fact, a preference, a decision). With a key, it replaces what was stored under that key.',
      parameters: {
        type: 'object',
        additionalProperties: false,
        required: ['content'],
        properties: {
          content: { type: 'string', description: 'What to remember, in one or two sentences.' },
          key: { type: 'string', description: 'Optional name to store it under (e.g. "preferred-language"); storing under the same key again replaces it.' },
          importance: { type: 'number', minimum: 0, maximum: 1, description: 'How much it matters, 0 to 1 (default 0.5).' },
        },
      },
      async execute(_id, params, signal) {
        const key = str(params, 'key');
        const importance = num(params, 'importance');
        const r = await go(
          'POST',
          '/knowledge/memories',
          { content: str(params, 'content') ?? '', kind: key ? 'kv' : 'note', ...(key ? { key } : {}), ...(importance !== undefined ? { importance } : {}) },
          signal,
        );
        if (r.status !== 200 && r.status !== 201) return refusal('Storing the memory', r);
        const m = r.json as { id: number };
        return result(`Remembered (memory ${m.id}).`, { ok: true, id: m.id });
      },
    },
    {
      name: 'memory_recall',
      label: 'Recall',
      description: 'Search what was remembered earlier (by you or the other agents of this workspace), by words and by meaning.',
      parameters: {
        type: 'object',
        additionalProperties: false,
        required: ['query'],
        properties: {
          query: { type: 'string', description: 'What to look for.' },
          limit: { type: 'integer', minimum: 1, maximum: 20, description: 'At most this many (default 5).' },
        },
      },
      async execute(_id, params, signal) {
        const q = new URLSearchParams({ q: str(params, 'query') ?? '', limit: String(Math.min(20, Math.max(1, Math.trunc(num(params, 'limit') ?? 5)))) });
        const r = await go('GET', `/knowledge/memories?${q}`, undefined, signal);
        if (r.status !== 200) return refusal('Recalling memories', r);
        const items = ((r.json as { items?: { id: number; key: string | null; content: string }[] }).items ?? []).map((m) => ({
          id: m.id,
          key: m.key,
          content: m.content,
        }));
        return result(items.length ? items.map((m) => `- ${m.key ? `${m.key}: ` : ''}${m.content}`).join('\n') : 'Nothing remembered matches.', {
          ok: true,
          items,
        });
      },
    },
    {
      name: 'finding_record',
      label: 'Record a finding',
      description: 'Record a finding: something found out, with where it came from and how sure it is, for people and later tasks to search.',
      parameters: {
        type: 'object',
        additionalProperties: false,
        required: ['title'],
        properties: {
          title: { type: 'string', description: 'The finding in one line.' },
          body: { type: 'string', description: 'Details.' },
          sources: { type: 'array', items: { type: 'string' }, description: 'URLs or document names it is based on.' },
          tags: { type: 'array', items: { type: 'string' }, description: 'One-word tags.' },
          confidence: { type: 'number', minimum: 0, maximum: 1, description: 'How sure, 0 to 1 (default 0.5).' },
        },
      },
      async execute(_id, params, signal) {
        const list = (k: string) => (Array.isArray(params[k]) ? (params[k] as unknown[]).filter((x): x is string => typeof x === 'string') : undefined);
        const body = {
          title: str(params, 'title') ?? '',
          ...(str(params, 'body') ? { body: str(params, 'body') } : {}),
          ...(list('sources') ? { sources: list('sources') } : {}),
          ...(list('tags') ? { tags: list('tags') } : {}),
          ...(num(params, 'confidence') !== undefined ? { confidence: num(params, 'confidence') } : {}),
        };
        const r = await go('POST', '/knowledge/findings', body, signal);
        if (r.status !== 201) return refusal('Recording the finding', r);
        const f = r.json as { id: string };
        return result(`Recorded (finding ${f.id}).`, { ok: true, id: f.id });
      },
    },
    {
      name: 'finding_search',
      label: 'Search findings',
      description: 'Search the findings recorded in this workspace, by words and by meaning.',
      parameters: {
        type: 'object',
        additionalProperties: false,
        required: ['query'],
        properties: {
          query: { type: 'string', description: 'What to look for.' },
          limit: { type: 'integer', minimum: 1, maximum: 20, description: 'At most this many (default 5).' },
        },
      },
      async execute(_id, params, signal) {
        const q = new URLSearchParams({ q: str(params, 'query') ?? '', limit: String(Math.min(20, Math.max(1, Math.trunc(num(params, 'limit') ?? 5)))) });
        const r = await go('GET', `/knowledge/findings?${q}`, undefined, signal);
        if (r.status !== 200) return refusal('Searching findings', r);
        const items = ((r.json as { items?: { id: string; title: string; body: string; confidence: number; sources: string[] }[] }).items ?? []).map((f) => ({
          id: f.id,
          title: f.title,
          body: f.body.slice(0, 500),
          confidence: f.confidence,
          sources: f.sources,
        }));
        return result(
          items.length ? items.map((f) => `- ${f.title} (confidence ${f.confidence})${f.body ? `: ${f.body}` : ''}`).join('\n') : 'No finding matches.',
          { ok: true, items },
        );
      },
    },
  ];
}

/** The plugin entry (what `definePluginEntry` returns). */
export default {
  id: KNOWLEDGE_PLUGIN_ID,
  name: 'Clawplane knowledge',
  description: "The tenant's memories and findings, through the Clawplane broker",
  configSchema: { safeParse: parseConfig, jsonSchema: CONFIG_JSON_SCHEMA },
  register(api: PluginApi): void {
    const parsed = parseConfig(api.pluginConfig);
    if (!parsed.success) throw new Error(`${KNOWLEDGE_PLUGIN_ID}: ${parsed.error.issues[0]?.message ?? 'bad config'}`);
    const cfg = parsed.data;
    api.registerTool((ctx) => tools(cfg, ctx), { names: [...KNOWLEDGE_TOOLS] });
  },
};
