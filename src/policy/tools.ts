import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import type { Risk, Tool } from './types.ts';

interface ToolRow {
  name: string;
  risk: Risk;
  tool_group: string;
  description: string;
  channels: string[];
  repos: string[];
  hosts: string[];
}

const toTool = (r: ToolRow): Tool => ({
  name: r.name,
  risk: r.risk,
  group: r.tool_group,
  description: r.description,
  channels: r.channels,
  repos: r.repos,
  hosts: r.hosts,
});

/**
 * The tool registry (table policy_tools): each tool's risk class, group and scopes. Platform-wide; read
 * on every decision, so it is cached in memory and reloaded when any replica changes it (`tools.changed`);
 * not cached at all while the event channel is down (fail closed).
 */
export class ToolRegistry {
  private readonly db: Db;
  private readonly events: EventChannel;
  private cache: Promise<Map<string, Tool>> | undefined;

  constructor(db: Db, events: EventChannel) {
    this.db = db;
    this.events = events;
    // Tools are entities, not policies: dropping this cache is enough for the next decision.
    events.on('tools.changed', () => (this.cache = undefined));
    events.onReset(() => (this.cache = undefined));
  }

  async all(): Promise<Map<string, Tool>> {
    if (!this.events.live) return this.load();
    const p = (this.cache ??= this.load());
    p.catch(() => {
      if (this.cache === p) this.cache = undefined;
    });
    return p;
  }

  private async load(): Promise<Map<string, Tool>> {
    const r = await this.db.query<ToolRow>('SELECT name, risk, tool_group, description, channels, repos, hosts FROM policy_tools ORDER BY name');
    return new Map(r.rows.map((row) => [row.name, toTool(row)]));
  }

  async get(name: string): Promise<Tool | undefined> {
    return (await this.all()).get(name);
  }

  async list(): Promise<Tool[]> {
    return [...(await this.all()).values()];
  }

  /** Adds or changes a tool (platform admin), audited. */
  async upsert(tool: Tool, by: { actor: string; requestId?: string }): Promise<Tool> {
    const saved = await this.db.tx(async (tx) => {
      const r = await tx.query<ToolRow>(
        `INSERT INTO policy_tools (name, risk, tool_group, description, channels, repos, hosts, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now())
         ON CONFLICT (name) DO UPDATE SET risk = EXCLUDED.risk, tool_group = EXCLUDED.tool_group, description = EXCLUDED.description,
           channels = EXCLUDED.channels, repos = EXCLUDED.repos, hosts = EXCLUDED.hosts, updated_at = now()
         RETURNING name, risk, tool_group, description, channels, repos, hosts`,
        [tool.name, tool.risk, tool.group, tool.description, tool.channels, tool.repos, tool.hosts],
      );
      await appendAudit(tx, {
        actor: by.actor,
        action: 'policy.tool.upsert',
        target: `tool:${tool.name}`,
        decision: 'success',
        detail: { risk: tool.risk, group: tool.group, channels: tool.channels, repos: tool.repos, hosts: tool.hosts },
        requestId: by.requestId ?? null,
      });
      await this.events.publish(tx, 'tools.changed', {});
      return toTool(r.rows[0] as ToolRow);
    });
    return saved;
  }
}
