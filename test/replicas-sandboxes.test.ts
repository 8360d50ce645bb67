/**
 * No instance ever has two sandboxes (docs/adr/0009-replica-coordination.md): three `clawplane serve`
 * processes on one PostgreSQL and one host, all with the reconciler role and the local driver on one
 * sandbox root, drive one real OpenClaw gateway under bubblewrap. While they reconcile every 300 ms there
 * is one sandbox; when the replica that started it is killed with -9, the sandbox (a separate process
 * tree) keeps running and a live replica on the same host adopts it instead of starting a second; chat
 * through another replica reaches the same gateway with its history. The model provider is the fake the
 * tests start (the one allowed stand-in).
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { after, describe, test } from 'node:test';
import { startFakeLlm } from './helpers/fake-llm.ts';
import { testDatabase } from './helpers/db.ts';
import { uidBase } from './helpers/gateway.ts';
import { onboardVia, sharedSecretKey, startReplica, via, waitUntil, type Replica } from './helpers/replicas.ts';
import { RUNTIME_CACHE, sandboxRoot } from './helpers/sandbox.ts';

/**
 * The sandboxes of an instance on this host: bubblewrap processes whose command line names the instance's
 * directory, counting each tree once (bwrap forks itself into the new pid namespace; the child has the
 * same command line and a bwrap parent).
 */
async function sandboxesOf(root: string, instanceId: string): Promise<number[]> {
  const bwraps = new Map<number, number>();
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const argv = cmd.split('\0');
    if (!/(^|\/)bwrap$/.test(argv[0] ?? '') || !argv.some((a) => a.startsWith(`${root}/${instanceId}`))) continue;
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    bwraps.set(Number(p), ppid);
  }
  return [...bwraps]
    .filter(([, ppid]) => !bwraps.has(ppid))
    .map(([pid]) => pid)
    .sort((a, b) => a - b);
}

describe('three replicas on one host drive one real gateway: never two sandboxes', { timeout: 900_000 }, async () => {
  const database = await testDatabase({ autoDrop: false });
  after(() => database.drop());
  const fake = await startFakeLlm();
  after(() => fake.close());
  const root = await sandboxRoot();
  const secretKey = sharedSecretKey();
  const env = {
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_SANDBOX_UID_BASE: String(uidBase(import.meta.url)),
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_WARM_RESUME: 'false',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '300',
    CLAWPLANE_REPLICA_HEARTBEAT_MS: '200',
    CLAWPLANE_REPLICA_EXPIRE_MS: '1500',
  };
  const replicas: Replica[] = [];
  for (const name of ['s1', 's2', 's3']) replicas.push(await startReplica({ name, databaseUrl: database.url, secretKey, env }));
  const [r1, r2, r3] = replicas as [Replica, Replica, Replica];
  const slug = 'one-sandbox';
  const { admin } = await onboardVia(r1, slug);
  const api = (r: Replica) => via(admin, r);
  const key = await api(r1).json<{ id: string }>(
    'POST',
    `/api/v1/tenants/${slug}/credentials`,
    { name: 'fake-key', type: 'api_key', value: 'sk-fake-replicas-0123456789' },
    201,
  );
  const provider = await api(r2).json<{ id: string }>(
    'POST',
    `/api/v1/tenants/${slug}/providers`,
    { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id },
    201,
  );
  await api(r3).json('PUT', `/api/v1/tenants/${slug}/model-routes`, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] });
  const status = async (id: string) =>
    (await database.db.query<{ status: string; sandbox: { sandboxId?: string } | null }>('SELECT status, sandbox FROM instances WHERE id = $1', [id])).rows[0];
  const chat = (r: Replica, content: string) =>
    api(r).call('POST', `/api/v1/tenants/${slug}/chat/completions`, { model: 'agent/main', messages: [{ role: 'user', content }], session: 'replicas' });
  let inst = '';

  test('deployed through one replica while three reconcile: one sandbox, through every pass', async () => {
    inst = (await api(r2).json<{ id: string }>('POST', `/api/v1/tenants/${slug}/instances`, { name: 'main' }, 202)).id;
    await waitUntil('running', async () => (await status(inst))?.status === 'running');
    // Watch a number of reconcile passes of all three replicas (each every 300 ms).
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const pids = await sandboxesOf(root, inst);
      assert.equal(pids.length, 1, `one sandbox for the instance, saw ${pids.length} (${pids.join(', ')})`);
      seen.add(String(pids[0]));
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(seen.size, 1, 'the same sandbox throughout (never replaced)');
    const r = await chat(r3, 'Remember the word OSPREY.');
    assert.equal(r.status, 200, await r.text());
  });

  test('the replica that started it is killed with -9: another adopts the same sandbox, none is started twice', async () => {
    const before = await sandboxesOf(root, inst);
    const sandboxId = (await status(inst))?.sandbox?.sandboxId;
    // The replica holding the instance's lease now (the one most likely to be mid-pass), else the first.
    const lease = await database.db.query<{ owner: string }>(`SELECT owner FROM work_claims WHERE item = $1 LIMIT 1`, [inst]);
    const victim = replicas.find((x) => lease.rows[0]?.owner.startsWith(x.id)) ?? r1;
    victim.child.kill('SIGKILL');
    await victim.exited;
    const live = replicas.filter((x) => x !== victim);
    // The dead replica expires and its leases lapse; live replicas keep reconciling meanwhile.
    await waitUntil('the dead replica is seen as dead', async () => {
      const r = await database.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM replicas WHERE id = $1 AND heartbeat_at < now() - interval '1.5 seconds'`,
        [victim.id],
      );
      return (r.rows[0]?.n ?? 0) > 0;
    });
    for (let i = 0; i < 30; i++) {
      const pids = await sandboxesOf(root, inst);
      assert.deepEqual(pids, before, 'the same single sandbox: adopted, not started again');
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal((await status(inst))?.sandbox?.sandboxId, sandboxId);
    assert.equal((await status(inst))?.status, 'running');
    const n = fake.requests.length;
    const r = await chat(live[live.length - 1] as Replica, 'What word did I ask you to remember?');
    assert.equal(r.status, 200, await r.text());
    assert.match(JSON.stringify(fake.requests.slice(n).at(-1)?.body), /OSPREY/, 'the same gateway, history intact');
  });
});
