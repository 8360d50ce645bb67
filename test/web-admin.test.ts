/**
 * The console's pages for the APIs that came after the first console (issue 9): instances, governance
 * (tool policy, explain, caps, egress), usage charts, audit (tenant tab and the platform page with the
 * chain status), chat's empty state and error, and the platform settings for the default provider and
 * prices. Debian's Chromium via playwright-core against a real server; one server for the file.
 * Usage data: llm_usage rows inserted into this file's database (what the broker's meter writes).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { ADMIN_EMAIL, ADMIN_PASSWORD, onboard } from './helpers/client.ts';
import { CHROMIUM, openBrowser, SHOTS } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: apt-get install chromium`;

describe('web console: instances, governance, usage, audit, chat, platform settings', async () => {
  const server: TestServer = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1' });
  let browser: Browser | undefined;
  let page: Page;
  let llm: http.Server | undefined;
  const problems: string[] = [];
  const llmKey = `sk-admin-canary-${randomBytes(10).toString('hex')}`;
  let tenantId = '';

  before(async () => {
    if (skip) return;
    const admin = await onboard(server);
    const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug: 'acme', name: 'Acme Corp' }, 201);
    tenantId = t.id;
    await admin.json('POST', '/api/v1/tenants/acme/members', { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
    // Usage the broker would have metered: two agents, two models, over three days (today, -1, -3).
    const rows: [number, string, string, number, number, number, number][] = [
      [0, 'main', 'gpt-4o', 4, 12_000, 3_000, 0.09],
      [0, 'helper', 'gpt-4o-mini', 10, 20_000, 5_000, 0.006],
      [1, 'main', 'gpt-4o', 2, 6_000, 1_000, 0.04],
      [3, 'helper', 'gpt-4o-mini', 6, 9_000, 1_800, 0.003],
    ];
    for (const [ago, agent, model, calls, inTok, outTok, cost] of rows) {
      for (let i = 0; i < calls; i++) {
        await server.db.query(
          `INSERT INTO llm_usage (tenant_id, agent, model, api, input_tokens, output_tokens, cost_usd, latency_ms, status, outcome, created_at)
           VALUES ($1, $2, $3, 'openai.chat', $4, $5, $6, 120, 200, 'ok', now() - make_interval(days => $7))`,
          [tenantId, agent, model, Math.round(inTok / calls), Math.round(outTok / calls), cost / calls, ago],
        );
      }
    }
    const fake = http.createServer((req, res) => {
      const ok = req.headers.authorization === `Bearer ${llmKey}`;
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' }).end(JSON.stringify(ok ? { data: [{ id: 'llama3' }] } : { error: { message: 'bad key' } }));
    });
    llm = fake;
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    ({ browser, page } = await openBrowser(server.url, problems));
  });
  after(async () => {
    await browser?.close();
    llm?.closeAllConnections();
    llm?.close();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const tab = (name: string) => page.getByRole('navigation', { name: 'Tenant sections' }).getByRole('link', { name, exact: true }).click();

  test('sign in; instances: empty state, validation error, a stopped instance, destroy by typing its name', { skip }, async () => {
    await page.goto('/login');
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Tenants', exact: true }).waitFor();

    await page.goto('/tenants/acme/instances');
    await page.getByText('No instances yet.').waitFor();
    const deploy = page.getByRole('form', { name: 'Deploy an instance' });
    await deploy.getByLabel('Instance name').fill('Bad_Name');
    await deploy.getByRole('button', { name: 'Deploy' }).click();
    await deploy.getByRole('alert').getByText(/lowercase letters, digits and inner hyphens/).waitFor();
    await shot('20-instances-validation');

    // Recorded stopped: nothing starts, no gateway needed.
    await deploy.getByLabel('Instance name').fill('side');
    await deploy.getByLabel('Start it now').uncheck();
    await deploy.getByRole('button', { name: 'Deploy' }).click();
    const row = page.getByRole('row').filter({ hasText: 'side' });
    await row.getByText('stopped', { exact: true }).waitFor();
    const detail = page.getByRole('region', { name: 'Instance side' });
    await detail.waitFor();
    await detail.getByRole('list', { name: 'History of side' }).waitFor();
    const destroy = detail.getByRole('form', { name: 'Destroy side' });
    const button = destroy.getByRole('button', { name: 'Destroy side' });
    assert.equal(await button.isDisabled(), true, 'destroy waits for the typed name');
    await destroy.getByLabel('Type "side" to destroy this instance').fill('sid');
    assert.equal(await button.isDisabled(), true);
    await destroy.getByLabel('Type "side" to destroy this instance').fill('side');
    await shot('21-instance-detail');
    await button.click();
    await page.getByText('No instances yet.').waitFor({ timeout: 30_000 });
  });

  test('governance: a permit is refused with the API message, a forbid is saved, explain names it; caps and egress survive a reload', { skip }, async () => {
    await tab('Governance');
    await page.getByRole('heading', { name: 'Platform baseline' }).waitFor();
    await page.getByText('No restrictions: the baseline applies as is.').waitFor();
    const explain = page.getByRole('form', { name: 'Explain a decision' });
    await explain.getByLabel('Tool').fill('web_search');
    await explain.getByRole('button', { name: 'Explain' }).click();
    const decision = page.getByRole('status', { name: 'Decision' });
    await decision.getByText('allow', { exact: true }).waitFor();

    const add = page.getByRole('form', { name: 'Add a restriction' });
    await add.getByLabel('Policy id').fill('let-all');
    await add.getByLabel('Cedar policy').fill('permit (principal, action, resource);');
    await add.getByRole('button', { name: 'Save restriction' }).click();
    await add.getByRole('alert').getByText(/Tenant restrictions may only forbid/).waitFor();
    await shot('22-governance-permit-refused');

    await add.getByLabel('Policy id').fill('no-web');
    await add.getByLabel('Description (optional)').fill('No web access for anyone');
    await add.getByLabel('Cedar policy').fill('forbid (principal, action, resource) when { resource.group == "web" };');
    await add.getByRole('button', { name: 'Save restriction' }).click();
    await page.getByRole('list', { name: 'Tenant restrictions' }).getByText('tenant/no-web').waitFor();
    await explain.getByRole('button', { name: 'Explain' }).click();
    await decision.getByText('deny', { exact: true }).waitFor();
    await decision.getByText('tenant/no-web', { exact: true }).waitFor();
    // The effective tools follow the new restriction: web tools move to "Denied".
    const effective = page.locator('dl.tool-lists');
    await effective.getByRole('definition').nth(2).getByText('web_search').waitFor();
    assert.doesNotMatch(await effective.getByRole('definition').nth(0).innerText(), /web_search|web_fetch/);
    await shot('23-governance-explain');

    const caps = page.getByRole('form', { name: 'Model-call caps' });
    await caps.getByLabel('Tokens per day, whole tenant').fill('250000');
    await caps.getByLabel('Cost per day (USD), whole tenant').fill('12.5');
    await caps.getByRole('button', { name: 'Add an agent' }).click();
    await caps.getByLabel('Agent of cap row 2').fill('helper');
    await caps.getByLabel('Requests per minute, helper').fill('30');
    await caps.getByRole('button', { name: 'Save caps' }).click();
    await page.getByText('Caps saved.').waitFor();

    const egress = page.getByRole('form', { name: 'Allow a host' });
    await egress.getByLabel('Host').fill('api.github.com');
    await egress.getByRole('button', { name: 'Allow host' }).click();
    await page.getByRole('list', { name: 'Allowed hosts' }).getByText('api.github.com:443').waitFor();
    await egress.getByLabel('Host').fill('not a host');
    await egress.getByRole('button', { name: 'Allow host' }).click();
    await page.getByRole('region', { name: 'Egress allow-list' }).getByRole('alert').getByText(/a host name such as api\.github\.com/).waitFor();

    await page.reload();
    const capsAgain = page.getByRole('form', { name: 'Model-call caps' });
    assert.equal(await capsAgain.getByLabel('Tokens per day, whole tenant').inputValue(), '250000');
    assert.equal(await capsAgain.getByLabel('Cost per day (USD), whole tenant').inputValue(), '12.5');
    assert.equal(await capsAgain.getByLabel('Requests per minute, helper').inputValue(), '30');
    await page.getByRole('list', { name: 'Allowed hosts' }).getByText('api.github.com:443').waitFor();
    await page.getByRole('list', { name: 'Tenant restrictions' }).getByText('tenant/no-web').waitFor();
    await shot('24-governance-after-reload');
  });

  test('usage: totals, three charts drawn under the CSP, per-agent table', { skip }, async () => {
    await tab('Usage');
    const totals = page.getByRole('definition');
    await page.getByRole('list', { name: 'Totals' }).or(page.locator('dl.stats')).first().waitFor();
    // 12k+3k + 20k+5k + 6k+1k + 9k+1.8k tokens; 22 calls; $0.139.
    assert.equal(await totals.nth(0).innerText(), '57,800');
    assert.equal(await totals.nth(1).innerText(), '$0.14');
    assert.equal(await totals.nth(2).innerText(), '22');
    assert.equal(await page.locator('.chart canvas').count(), 3, 'three uPlot canvases');
    await page.getByRole('img', { name: /Tokens per day: 57,800 over 7 days, by helper, main/ }).waitFor();
    const perAgent = page.getByRole('table', { name: 'Per agent' });
    assert.match(await perAgent.getByRole('row').filter({ hasText: 'helper' }).innerText(), /helper\s+16\s+29,000 \/ 6,800/);
    await shot('25-usage');
    await page.getByLabel('Period').selectOption('30');
    await page.getByRole('img', { name: /over 30 days/ }).first().waitFor();
  });

  test('audit: the tenant tab lists and filters events; the platform page shows the chain ok', { skip }, async () => {
    await tab('Audit');
    const table = page.getByRole('table', { name: 'Audit events, newest first' });
    await table.getByText('broker.limits', { exact: false }).first().waitFor();
    await page.getByLabel('Action starts with').fill('policy.');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await table.getByRole('row').nth(1).waitFor();
    const actions = await table.locator('tbody td code').allInnerTexts();
    assert.ok(actions.length > 0 && actions.every((a) => a.startsWith('policy.')), `only policy.* events: ${actions.join(', ')}`);
    await shot('26-audit-tenant');

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit log', level: 1 }).waitFor();
    await page.getByRole('status', { name: 'Chain status' }).getByText('Chain ok:').waitFor();
    await page.getByRole('table', { name: 'Audit events, newest first' }).getByText('tenant.create').first().waitFor();
    await page.getByLabel('Tenant').selectOption({ label: 'Acme Corp (acme)' });
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.getByRole('table', { name: 'Audit events, newest first' }).getByRole('cell', { name: 'acme', exact: true }).first().waitFor();
    await shot('27-audit-platform');
  });

  test('chat: no conversations yet; sending without an instance shows the API message', { skip }, async () => {
    await page.goto('/tenants/acme/chat');
    await page.getByText('No conversations yet.').waitFor();
    await page.getByRole('textbox', { name: 'Message' }).fill('hello');
    await page.keyboard.press('Enter');
    await page.getByRole('alert').getByText(/An instance for this tenant .* was not found/).waitFor();
    await shot('28-chat-no-instance');
  });

  test('tasks: empty inbox and list; a task no agent can take fails, with its live trace', { skip }, async () => {
    await page.goto('/tenants/acme/tasks');
    await page.getByText('Nothing waits for a person.').waitFor();
    await page.getByText('No tasks yet.').waitFor();
    const create = page.getByRole('form', { name: 'Create a task' });
    await create.getByLabel('What should be done').fill('Summarise the quarterly report');
    await create.getByRole('button', { name: 'Create task' }).click();
    await create.getByRole('alert').getByText(/name an agent or a capability/).waitFor();
    await create.getByLabel('Capability').fill('nobody-has-this');
    await create.getByRole('button', { name: 'Create task' }).click();
    const detail = page.getByRole('region', { name: 'Task detail' });
    await detail.getByRole('list', { name: 'Trace' }).waitFor({ timeout: 30_000 });
    await detail.getByText('failed', { exact: true }).waitFor({ timeout: 30_000 });
    await page.getByRole('form', { name: 'Filter tasks' }).getByLabel('Status').selectOption('failed');
    await page.getByRole('row').filter({ hasText: 'Summarise the quarterly report' }).waitFor();
    await shot('30-tasks');
  });

  test('settings: the default provider is refused on a bad key and saved on a good one (key never shown); prices', { skip }, async () => {
    assert.ok(llm);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('heading', { name: 'Default LLM provider' }).waitFor();
    await page.getByText('No default provider').waitFor();
    const form = page.getByRole('form', { name: 'Default LLM provider' });
    await form.getByLabel('Provider').selectOption('openai_compatible');
    await form.getByLabel('Base URL').fill(`http://127.0.0.1:${(llm.address() as AddressInfo).port}/v1`);
    await form.getByLabel('API key').fill('sk-wrong-0000000000');
    await form.getByLabel('Default model').fill('llama3');
    await form.getByRole('button', { name: 'Test and save provider' }).click();
    await form.getByRole('alert').getByText(/connection test failed, so nothing was saved/).waitFor();
    await form.getByLabel('API key').fill(llmKey);
    await form.getByRole('button', { name: 'Test and save provider' }).click();
    await form.getByText(/Saved\. Connection works/).waitFor();
    await page.getByText(/key stored \(never shown\)/).waitFor();
    assert.ok(!(await page.content()).includes(llmKey), 'the key is never rendered');

    await page.getByText('No prices: model calls are metered at $0.').waitFor();
    const prices = page.getByRole('form', { name: 'Set a model price' });
    await prices.getByLabel('Model').fill('bad model!');
    await prices.getByLabel('Input (USD / M tokens)').fill('1');
    await prices.getByLabel('Output (USD / M tokens)').fill('2');
    await prices.getByRole('button', { name: 'Save price' }).click();
    await prices.getByRole('alert').waitFor();
    await prices.getByLabel('Model').fill('gpt-4o*');
    await prices.getByLabel('Input (USD / M tokens)').fill('2.5');
    await prices.getByLabel('Output (USD / M tokens)').fill('10');
    await prices.getByRole('button', { name: 'Save price' }).click();
    await page.getByRole('row').filter({ hasText: 'gpt-4o*' }).getByText('$10').waitFor();
    await page.reload();
    await page.getByRole('row').filter({ hasText: 'gpt-4o*' }).getByText('$2.5').waitFor();
    await shot('29-settings-provider-prices');

    assert.deepEqual(problems, [], 'no console errors (CSP violations, uncaught exceptions)');
  });
});
