/**
 * The console's Lanes tab in Debian's Chromium (playwright-core) against a real server and PostgreSQL: a tenant
 * admin creates a project and a lane whose second step needs approval, runs it now, sees the run park at that
 * step (the run list refreshes on its own), approves it in the page and sees the run succeed; a refused project
 * shows the platform rule's name; the built-in doctor lane is enabled in the page and its run's findings show in
 * the run list. The steps' turns are a STAND-IN executor (no gateway in this file).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { Lane, Run } from '../src/lanes/types.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, onboard, type ApiClient } from './helpers/client.ts';
import { CHROMIUM, openBrowser } from './helpers/browser.ts';
import { startTestServer } from './helpers/server.ts';
import { ScriptedExecutor } from './helpers/task-executors.ts';

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: apt-get install chromium`;

describe('web console: lanes', { skip, timeout: 300_000 }, async () => {
  const server = await startTestServer({ CLAWPLANE_TASK_QUEUE_POLL_MS: '50' });
  let browser: Browser | undefined;
  let page: Page;
  let admin: ApiClient;
  const problems: string[] = [];
  const slug = 'lanes-ui';
  const exec = new ScriptedExecutor();
  const order: string[] = [];
  exec.on(/^ui step /, async (turn) => {
    order.push(turn.input);
    return { output: `did ${turn.input}` };
  });

  before(async () => {
    admin = await onboard(server);
    const t = await admin.json<{ id: string }>('POST', '/api/v1/tenants', { slug, name: 'Lanes UI' }, 201);
    await admin.json('POST', `/api/v1/tenants/${slug}/members`, { email: ADMIN_EMAIL, role: 'tenant_admin' }, 201);
    server.services.taskRuntime.useExecutor(exec);
    await server.services.agents.create(t.id, { name: 'ui-worker', capabilities: ['ui'] }, { actor: 'test' });
    await admin.json('PUT', '/api/v1/platform/lane-settings', { allowedHosts: ['*.acme.test'] });
    ({ browser, page } = await openBrowser(server.url, problems));
    await page.goto('/login');
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Tenants', exact: true }).waitFor();
  });
  after(async () => {
    await browser?.close();
  });

  test('a project broader than the platform is refused with the rule; a narrower one is created', async () => {
    await page.goto(`/tenants/${slug}/lanes`);
    await page.getByRole('heading', { name: 'Projects' }).waitFor();
    await page.getByText('No projects yet.').waitFor();
    const form = page.getByRole('form', { name: 'New project' });
    await form.getByLabel('Name').fill('ops');
    await form.getByLabel('Hosts').fill('evil.test');
    await form.getByLabel('analysis').check();
    await form.getByRole('button', { name: 'Create project' }).click();
    await form.getByText(/Refused by rule "platform\.allowedHosts"/).waitFor();
    await form.getByLabel('Hosts').fill('api.acme.test, *.eu.acme.test');
    await form.getByRole('button', { name: 'Create project' }).click();
    await page.getByRole('table', { name: 'Projects' }).getByRole('cell', { name: 'api.acme.test, *.eu.acme.test' }).waitFor();
  });

  test('a lane created in the page runs now, parks at its approval step, is approved in the page and succeeds', async () => {
    const form = page.getByRole('form', { name: 'New lane' });
    await form.getByLabel('Lane name').fill('nightly-ui');
    await form.getByLabel('Kind').selectOption('analysis');
    await form.getByLabel('Schedule').fill('0 2 * * *');
    await form.getByLabel('Harmless (enabled when created)').check();
    const steps = [
      { name: 'look', capability: 'ui', input: 'ui step look' },
      { name: 'act', capability: 'ui', input: 'ui step act', requiresApproval: true },
    ];
    await form.getByLabel('Steps (JSON)').fill(JSON.stringify(steps));
    await form.getByRole('button', { name: 'Create lane' }).click();
    const lanes = page.getByRole('table', { name: 'Lanes' });
    await lanes.getByRole('cell', { name: /^nightly-ui/ }).waitFor();
    const lane = (await admin.json<{ items: Lane[] }>('GET', `/api/v1/tenants/${slug}/lanes`)).items.find((l) => l.name === 'nightly-ui');
    assert.deepEqual([lane?.enabled, lane?.schedule, lane?.steps[1]?.requiresApproval], [true, '0 2 * * *', true]);
    await lanes.getByRole('cell', { name: '0 2 * * *' }).waitFor();

    await lanes.getByRole('button', { name: 'Run now nightly-ui' }).click();
    const runs = page.getByRole('table', { name: 'Lane runs, newest first' });
    // No reload: the run list refreshes on its own until the run parks at "act".
    const approve = runs.getByRole('button', { name: 'Approve step act' });
    await approve.waitFor({ timeout: 60_000 });
    const parked = (await admin.json<{ items: Run[] }>('GET', `/api/v1/tenants/${slug}/lane-runs?laneId=${lane?.id}`)).items[0];
    assert.deepEqual(
      parked?.steps.map((s) => s.status),
      ['succeeded', 'waiting_approval'],
    );
    assert.deepEqual(order, ['ui step look'], 'the gated step has not run');
    await approve.click();
    const row = runs.getByRole('row', { name: 'Run of nightly-ui' });
    // The run's own status cell, then the approved step's line, both refreshed in place.
    await row.locator('td').nth(1).getByText('succeeded', { exact: true }).waitFor({ timeout: 60_000 });
    await row.locator('li', { hasText: 'act:' }).getByText('succeeded', { exact: true }).waitFor();
    const done = await admin.json<Run>('GET', `/api/v1/tenants/${slug}/lane-runs/${parked?.id}`);
    assert.equal(done.status, 'succeeded', done.reason);
    assert.match(done.steps[1]?.decidedBy ?? '', /^user:/);
    assert.deepEqual(order, ['ui step look', 'ui step act']);
    assert.deepEqual(problems, []);
  });

  test('the Usage tab links the daily billing export as CSV, with the signed-in session', async () => {
    await page.goto(`/tenants/${slug}/usage`);
    const link = page.getByRole('link', { name: 'Daily usage for billing (CSV)' });
    const href = (await link.getAttribute('href')) ?? '';
    assert.match(href, new RegExp(`^/api/v1/tenants/${slug}/usage/daily\\?from=\\d{4}-\\d{2}-\\d{2}&to=\\d{4}-\\d{2}-\\d{2}&format=csv$`));
    const res = await page.request.get(href);
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'] ?? '', /^text\/csv/);
    const lines = (await res.text()).trim().split('\r\n');
    assert.match(lines[0] ?? '', /^tenantId,tenantSlug,day,/);
    assert.equal(lines.length, 8, 'a header and one row per day of the last 7');
    const cols = (lines[0] ?? '').split(',');
    const tasks = lines.slice(1).reduce((n, l) => n + Number(l.split(',')[cols.indexOf('tasks')]), 0);
    assert.ok(tasks >= 2, `the run's two step tasks are counted (${tasks})`);
  });

  test('the doctor lane is enabled in the page; its run lists what each check found', async () => {
    await admin.json(
      'POST',
      `/api/v1/tenants/${slug}/credentials`,
      { name: 'deploy-key', type: 'secret', value: 'short-lived-secret-value', expiresAt: new Date(Date.now() + 2 * 86_400_000).toISOString() },
      201,
    );
    await page.goto(`/tenants/${slug}/lanes`);
    await page.getByRole('button', { name: 'Enable the doctor lane' }).click();
    const lanes = page.getByRole('table', { name: 'Lanes' });
    await lanes.getByRole('cell', { name: '0 * * * *' }).waitFor();
    await lanes.getByRole('button', { name: 'Run now doctor' }).click();
    const row = page.getByRole('table', { name: 'Lane runs, newest first' }).getByRole('row', { name: 'Run of doctor' });
    await row.locator('td').nth(1).getByText('succeeded', { exact: true }).waitFor({ timeout: 60_000 });
    const credentials = row.getByRole('list', { name: 'Findings of step credentials' });
    await credentials.getByText(/credential deploy-key: expires in \d+ h/).waitFor();
    assert.equal(await credentials.locator('.badge-warning').textContent(), 'warn');
    await row.getByRole('list', { name: 'Findings of step instance-health' }).getByText('instances: no instance is deployed: nothing to check').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Enable the doctor lane' }).count(), 0, 'offered only while the tenant has none');
    assert.deepEqual(problems, []);
  });
});
