/**
 * The one real-gateway fixture: a fake LLM (the one allowed stand-in), a real server on its own
 * database with its own sandbox root, the pinned OpenClaw runtime, an onboarded admin, two tenants,
 * and tenant A routed to the fake provider through a credential holding a canary key. Sandboxes are
 * stopped before the server (they outlive it by design). Each test file gets its own block of sandbox
 * uids (UID_BASES), so files never share a tenant uid under --test-concurrency=2.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from './after-all.ts';
import type { Instance } from '../../src/instances/instances.ts';
import { onboard, twoTenants, type ApiClient, type TenantFixture } from './client.ts';
import { startFakeLlm, type FakeLlm } from './fake-llm.ts';
import { OPENCLAW_VERSION, RUNTIME_CACHE, sandboxRoot, waitFor } from './sandbox.ts';
import { startTestServer, type TestServer } from './server.ts';

/**
 * Sandbox uid bases, one block of 1000 per test file that starts gateways. A file missing here fails
 * at once: add it with the next free block.
 */
export const UID_BASES: Record<string, number> = {
  'instances.test.ts': 210_000,
  'tasks-gateway.test.ts': 230_000,
  'tasks-exec-approval.test.ts': 231_000,
  'resume-service.test.ts': 232_000,
  'ingress.test.ts': 233_000,
  'web-e2e.test.ts': 234_000,
  'sandbox-lifecycle.test.ts': 235_000,
  'sandbox-docker.test.ts': 236_000,
  'bench-docker': 237_000,
  'tracing.test.ts': 238_000,
  'replicas-sandboxes.test.ts': 241_000,
  'governance-gateway.test.ts': 240_000,
  'lanes-gateway.test.ts': 244_000,
  'pools-gateway.test.ts': 242_000,
  'bench-pools': 246_000,
  'bench-replicas': 247_000,
  'bench-boot': 248_000,
  'openai-sdks.test.ts': 249_000,
  'doctor.test.ts': 250_000,
  'bench-ingress': 251_000,
};

/** The uid base of the calling test file (pass import.meta.url); `suffix` splits a file's block (e.g. per driver). */
export function uidBase(fileUrl: string, suffix = 0): number {
  const name = path.basename(fileURLToPath(fileUrl));
  const base = UID_BASES[name];
  if (base === undefined) throw new Error(`${name} has no sandbox uid block in test/helpers/gateway.ts UID_BASES: add one`);
  if (suffix < 0 || suffix >= 10) throw new Error('a uid block has ten parts of 100');
  return base + suffix * 100;
}

export interface GatewayFixture {
  server: TestServer;
  fake: FakeLlm;
  root: string;
  admin: ApiClient;
  a: TenantFixture;
  b: TenantFixture;
  /** The provider key tenant A's gateways reach through the broker: it must appear nowhere in a sandbox. */
  canary: string;
  /** Tenant A's provider at the fake LLM (routes to other fake models use it). */
  providerId: string;
  by: { actor: string; userId: string };
  /** GET of an instance through the API. */
  get(t: TenantFixture, id: string): Promise<Instance>;
  /** Waits for an instance's status (and reason). */
  waitStatus(t: TenantFixture, id: string, status: string, reason?: RegExp, timeoutMs?: number): Promise<Instance>;
}

/**
 * Starts the fixture. `pull: false` leaves the runtime cache as it is (a file that tests the first pull
 * passes an empty one in `env`).
 */
export async function startGatewayFixture(o: {
  file: string;
  uidSuffix?: number;
  env?: Record<string, string>;
  canary?: string;
  pull?: boolean;
}): Promise<GatewayFixture> {
  const fake = await startFakeLlm();
  const root = await sandboxRoot();
  const server = await startTestServer({
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(o.file, o.uidSuffix ?? 0)),
    ...o.env,
  });
  // node:test runs a suite's after hooks in registration order, so this runs after startTestServer's
  // (which stops the sandboxes it lists, then the server): it stops what a server restarted by the
  // test file left running.
  afterAll(async () => {
    for (const h of await server.services.sandboxes.list().catch(() => [])) await server.services.sandboxes.stop(h).catch(() => undefined);
  });
  // The first run on a fresh machine pulls from the npm registry; later runs reuse the cache.
  if (o.pull !== false) await server.services.runtimes.pull(OPENCLAW_VERSION);
  const admin = await onboard(server);
  const { a, b } = await twoTenants(server, admin);
  const canary = o.canary ?? `sk-canary-${randomBytes(12).toString('hex')}`;
  const by = { actor: 'test', userId: a.ownerId };
  const key = await server.services.credentials.create(a.id, { name: 'fake-llm-key', type: 'api_key', value: canary }, by);
  const provider = await server.services.providers.create(a.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
  await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] }, by);
  const get = (t: TenantFixture, id: string) => t.client.json<Instance>('GET', `/api/v1/tenants/${t.slug}/instances/${id}`);
  const waitStatus = (t: TenantFixture, id: string, status: string, reason?: RegExp, timeoutMs = 180_000) =>
    waitFor(
      `${t.slug}/${id} ${status}${reason ? ` (${reason.source})` : ''}`,
      async () => {
        const i = await get(t, id);
        return i.status === status && (!reason || reason.test(i.statusReason)) ? i : undefined;
      },
      timeoutMs,
    );
  return { server, fake, root, admin, a, b, canary, providerId: provider.id, by, get, waitStatus };
}
