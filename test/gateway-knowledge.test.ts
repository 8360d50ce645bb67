/**
 * The knowledge tools inside a real OpenClaw gateway (docs/adr/0007): the tenant's gateway loads the
 * clawplane-knowledge plugin and offers its tools; when the model (the fake provider, the one allowed
 * stand-in) calls `memory_store` during a chat, the memory reaches the broker through the sandbox's
 * egress with the sandbox's own identity and lands under that tenant and the gateway's agent; a later
 * task of that agent starts with it in its prompt; another tenant's sandbox identity cannot read it.
 * One gateway for the file.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import type { Memory } from '../src/knowledge/memories.ts';
import type { Task } from '../src/tasks/types.ts';
import { startGatewayFixture } from './helpers/gateway.ts';
import { waitFor } from './helpers/sandbox.ts';

function brokerCall(socketPath: string, method: string, path: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('knowledge tools in a real gateway', { timeout: 900_000 }, async () => {
  const { server, fake, a, b, by, providerId } = await startGatewayFixture({ file: import.meta.url, env: { CLAWPLANE_TASK_QUEUE_POLL_MS: '200' } });
  const api = (p: string) => `/api/v1/tenants/${a.slug}${p}`;
  const fact = 'The customer Zorblax wants every invoice sent by email';

  test("the agent stores a memory from a chat; it is the tenant's, under the gateway's agent; a later task recalls it; another tenant's sandbox cannot read it", async () => {
    // The gateway's agent is the platform default "main"; a Clawplane agent of that name owns its memories.
    await a.client.json('POST', api('/agents'), { name: 'main', capabilities: ['billing'] }, 201);
    fake.toolArgs['memory_store'] = { content: fact, importance: 0.9 };
    await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model: 'tool-memory_store' }] }, by);
    const r = await a.client.call('POST', api('/chat/completions'), {
      model: 'agent/main',
      messages: [{ role: 'user', content: 'Please remember how Zorblax wants its invoices' }],
      session: 'knowledge-1',
    });
    const text = await r.text();
    assert.equal(r.status, 200, text);
    for (const t of ['memory_store', 'memory_recall', 'finding_record', 'finding_search'])
      assert.ok(fake.toolNames.includes(t), `${t} offered to the model: ${fake.toolNames.join(', ')}`);
    assert.match(text, /Tool said: Remembered \(memory \d+\)/, 'the tool result the model got says it was stored');

    const mine = (await a.client.json<{ items: Memory[] }>('GET', api('/memories'))).items.filter((m) => m.content === fact);
    assert.equal(mine.length, 1, 'one memory, visible through the API');
    assert.equal(mine[0]?.agent, 'main', "under the gateway's agent");
    assert.match(mine[0]?.createdBy ?? '', /^sandbox:/, "written with the sandbox's identity");
    const theirs = await b.client.json<{ items: Memory[] }>('GET', `/api/v1/tenants/${b.slug}/memories`);
    assert.ok(!JSON.stringify(theirs).includes('Zorblax'), "not in the other tenant's memories");

    // A later task of that agent: the workflow's recall puts the memory into the prompt the model sees.
    await server.services.providers.setRoute(a.id, { scope: 'tenant', targets: [{ providerId, model: 'fake-model' }] }, by);
    const before = fake.requests.length;
    const t = await a.client.json<Task>('POST', api('/tasks'), { agent: 'main', input: 'Send Zorblax the invoice for November' }, 201);
    const done = await waitFor(
      'task finished',
      async () => {
        const x = await a.client.json<Task>('GET', api(`/tasks/${t.id}`));
        return ['completed', 'failed', 'expired'].includes(x.status) ? x : undefined;
      },
      300_000,
    );
    assert.equal(done.status, 'completed', done.statusReason);
    const prompts = fake.requests.slice(before).map((q) => JSON.stringify(q.body['messages'] ?? []));
    assert.ok(
      prompts.some((p) => p.includes(fact)),
      'the recalled memory is in the prompt the provider received',
    );

    // Another tenant's sandbox identity: its broker token finds nothing of A's, by words or listing.
    const regB = await server.services.broker.registerSandbox({ tenantId: b.id, instanceId: b.instanceId, sandboxId: 'sbx-knowledge-gw-b' });
    try {
      for (const path of ['/knowledge/memories?q=Zorblax', '/knowledge/memories', '/knowledge/memories?q=invoice%20email&mode=words']) {
        const o = await brokerCall(regB.socketPath, 'GET', path, regB.token);
        assert.equal(o.status, 200, o.body);
        assert.ok(!o.body.includes('Zorblax'), `${path} from B's sandbox: ${o.body}`);
      }
    } finally {
      await regB.close();
    }
  });
});
