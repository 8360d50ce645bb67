import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
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

const toTool = (r: ToolRow): Tool => ({ name: r.name, risk: r.risk, group: r.tool_group, description: r.description, channels: r.channels, repos: r.repos, hosts: r.hosts });

/**
 * The tool registry (table policy_tools): each tool's risk class, group and scopes. Platform-wide; read
 * on every decision, so it is cached in memory and reloaded when a platform admin changes it.
 */
export class ToolRegistry {
  private readonly db: Db;
  private cache: Promise<Map<string, Tool>> | undefined;

  constructor(db: Db) {
    this.db = db;
  }

  async all(): Promise<Map<string, Tool>> {
    this.cache ??= this.db.query<ToolRow>('SELECT name, risk, tool_group, description, channels, repos, hosts FROM policy_tools ORDER BY name').then(
      (r) => new Map(r.rows.map((row) => [row.name, toTool(row)])),
      (err: unknown) => {
        this.cache = undefined;
        throw err;
      },
    );
    return this.cache;
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
      return toTool(r.rows[0] as ToolRow);
    });
    // Tools are entities, not policies: dropping this cache is enough for the next decision.
    this.cache = undefined;
    return saved;
  }
}
