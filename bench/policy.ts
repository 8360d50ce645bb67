/**
 * Tool-policy decisions per second on one thread (issue 5): Cedar's stateless isAuthorized (re-parses
 * policies and schema on every call) against statefulIsAuthorized on a preparsed set (what
 * PolicyEngine uses), with and without request validation, and PolicyEngine.decide end to end
 * (explanation included). Policies: the shipped baseline (read from its migration) plus 10 tenant forbids.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAuthorized, statefulIsAuthorized, type EntityJson } from '@cedar-policy/cedar-wasm/nodejs';
import { compileBaseline, compileTenantPolicies } from '../src/policy/compile.ts';
import { PolicyEngine } from '../src/policy/engine.ts';
import { CEDAR_SCHEMA, type PolicySource, type Tool } from '../src/policy/types.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

async function shippedBaseline(): Promise<PolicySource[]> {
  const sql = await readFile(path.join(here, '../src/db/migrations/0005_policy.sql'), 'utf8');
  return [...sql.matchAll(/\('([a-z0-9-]+)', \d+, '((?:[^']|'')*)',\s*\$c\$([\s\S]*?)\$c\$\)/g)].map((m) => ({
    id: m[1] ?? '',
    description: (m[2] ?? '').replaceAll("''", "'"),
    cedar: m[3] ?? '',
  }));
}

function rate(label: string, n: number, fn: (i: number) => void): number {
  for (let i = 0; i < Math.min(500, n); i++) fn(i); // warm-up
  const t = performance.now();
  for (let i = 0; i < n; i++) fn(i);
  const perSec = n / ((performance.now() - t) / 1000);
  console.log(`${label.padEnd(58)} ${Math.round(perSec).toLocaleString('en-US').padStart(10)} decisions/s`);
  return perSec;
}

export async function main(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 20_000);
  const baseline = compileBaseline(await shippedBaseline());
  const tenant = compileTenantPolicies(
    Array.from({ length: 10 }, (_, i) => ({
      id: `r${i}`,
      description: '',
      cedar: `forbid (principal, action, resource) when { resource.name == "tool${i}" && context has channel && context.channel == "c${i}" };`,
    })),
  );
  const policies = [...baseline, ...tenant];
  console.log(`# ${policies.length} policies (${baseline.length} baseline, ${tenant.length} tenant), 3 entities per request, ${n} requests per row`);
  const tools: Tool[] = [
    { name: 'read', risk: 'low', group: 'fs', description: '', channels: [], repos: [], hosts: [] },
    { name: 'exec', risk: 'high', group: 'runtime', description: '', channels: [], repos: [], hosts: [] },
    { name: 'github.push', risk: 'high', group: 'skill', description: '', channels: [], repos: ['acme/app'], hosts: [] },
    { name: 'gateway', risk: 'critical', group: 'automation', description: '', channels: [], repos: [], hosts: [] },
  ];
  const tenantId = '00000000-0000-4000-8000-000000000001';
  const req = (i: number) => {
    const tool = tools[i % tools.length] as Tool;
    const entities: EntityJson[] = [
      { uid: { type: 'Tenant', id: tenantId }, attrs: { execPolicy: 'ask' }, parents: [] },
      { uid: { type: 'Agent', id: 'main' }, attrs: { tenant: { __entity: { type: 'Tenant', id: tenantId } } }, parents: [{ type: 'Tenant', id: tenantId }] },
      {
        uid: { type: 'Tool', id: tool.name },
        attrs: { name: tool.name, risk: tool.risk, group: tool.group, channels: tool.channels, repos: tool.repos, hosts: tool.hosts },
        parents: [],
      },
    ];
    return {
      tool,
      entities,
      principal: { type: 'Agent', id: 'main' },
      action: { type: 'Action', id: 'UseTool' },
      resource: { type: 'Tool', id: tool.name },
      context: { channel: 'web', repo: 'acme/app' },
    };
  };
  const staticPolicies = Object.fromEntries(policies.map((p) => [p.id, p.json]));

  const stateless = rate('isAuthorized (re-parse policies + schema each call)', Math.max(1000, n / 10), (i) => {
    const r = req(i);
    const a = isAuthorized({
      principal: r.principal,
      action: r.action,
      resource: r.resource,
      context: r.context,
      schema: CEDAR_SCHEMA,
      validateRequest: false,
      policies: { staticPolicies },
      entities: r.entities,
    });
    if (a.type !== 'success') throw new Error(JSON.stringify(a.errors));
  });
  const engine = new PolicyEngine();
  const set = engine.load('bench', policies);
  const stateful = (validateRequest: boolean) => (i: number) => {
    const r = req(i);
    const a = statefulIsAuthorized({
      principal: r.principal,
      action: r.action,
      resource: r.resource,
      context: r.context,
      preparsedSchemaName: 'clawplane-tool-use',
      validateRequest,
      preparsedPolicySetId: set.fullId,
      entities: r.entities,
    });
    if (a.type !== 'success') throw new Error(JSON.stringify(a.errors));
  };
  const fast = rate('statefulIsAuthorized, preparsed set', n, stateful(false));
  rate('statefulIsAuthorized, preparsed set, request validated (used)', n, stateful(true));
  const full = rate('PolicyEngine.decide (incl. approval re-check, explanation)', n, (i) => {
    const r = req(i);
    engine.decide(set, { tenantId, execPolicy: 'ask', agent: 'main', tool: r.tool, context: r.context });
  });
  console.log(`# stateful / stateless: ${(fast / stateless).toFixed(1)}×; engine overhead over raw stateful: ${((fast / full - 1) * 100).toFixed(0)}%`);
}
