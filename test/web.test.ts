/**
 * The web console in a real browser (issue 9): Debian's Chromium driven by playwright-core against a
 * real server. One journey a platform admin takes on a fresh install, asserting what a person sees.
 * Screenshots of each page land in test-artifacts/screenshots/ (git-ignored).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Browser, Page } from 'playwright-core';
import type { AppEnv } from '../src/api/env.ts';
import { registerWeb, WEB_DIST } from '../src/api/routes/web.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, setupCode } from './helpers/client.ts';
import { CHROMIUM, openBrowser, SHOTS } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// One server per file: the durable engine (DBOS) is one per process.
describe('web console', async () => {
  const server: TestServer = await startTestServer({ CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1' });
  let browser: Browser | undefined;
  let page: Page;
  let llm: http.Server | undefined;
  const problems: string[] = [];
  const llmKey = `sk-web-canary-${randomBytes(10).toString('hex')}`;
  const slackToken = `xoxb-${randomBytes(12).toString('hex')}-web`;

  test('index.html is served with a strict CSP and no-cache; hashed assets are cached; unknown app paths fall back to the app', async () => {
    assert.ok(existsSync(path.join(WEB_DIST, 'index.html')), 'web/dist is built (scripts/test.ts builds it)');
    const index = await server.call('GET', '/');
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    const csp = index.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const html = await index.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, 'index.html loads a hashed bundle');
    const js = await server.call('GET', asset);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.match(js.headers.get('cache-control') ?? '', /max-age=31536000, immutable/);

    const deep = await server.call('GET', '/tenants/acme/tokens');
    assert.equal(deep.status, 200);
    assert.equal(await deep.text(), html);
    assert.equal((await server.call('GET', '/assets/gone-1234.js')).status, 404, 'a missing asset is not the app');
    // (Under /api/v1/onboarding/: the onboarding gate answers 409 elsewhere before anything routes.)
    const api = await server.call('GET', '/api/v1/onboarding/nope');
    assert.equal(api.status, 404);
    assert.equal(((await api.json()) as { code: string }).code, 'not_found', '/api/ paths never fall back to the app');
    assert.equal((await server.call('GET', '/%2e%2e/package.json')).status, 404);
  });

  test('without a build, / explains how to build the console', async () => {
    const app = new OpenAPIHono<AppEnv>();
    registerWeb(app, { distDir: path.join(import.meta.dirname, 'no-such-dist') });
    const res = await app.request('/');
    assert.equal(res.status, 503);
    assert.match(await res.text(), /npm run build:web/);
  });

  before(async () => {
    if (!existsSync(CHROMIUM)) return;
    // Stand-in for an OpenAI-compatible provider (external APIs are the one thing tests may fake).
    const fake = http.createServer((req, res) => {
      const ok = req.headers.authorization === `Bearer ${llmKey}`;
      res
        .writeHead(ok ? 200 : 401, { 'content-type': 'application/json' })
        .end(JSON.stringify(ok ? { data: [{ id: 'llama3' }, { id: 'qwen2' }] } : { error: { message: 'bad key' } }));
    });
    llm = fake;
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    ({ browser, page } = await openBrowser(server.url, problems, { clipboard: true }));
  });
  after(async () => {
    await browser?.close();
    llm?.closeAllConnections();
    llm?.close();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const alert = () => page.getByRole('alert');

  test('onboarding → sign out → sign in → tenants, members, a token shown once, credentials, a provider with a connection test', {
    skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: apt-get install chromium`,
  }, async () => {
    assert.ok(llm);
    // First boot: every path leads to the wizard.
    await page.goto('/');
    await page.waitForURL('**/onboarding');
    await page.getByRole('heading', { name: 'Create the breakglass admin' }).waitFor();
    assert.match(await page.getByText(/data directory/).innerText(), /setup-code/, 'the setup code field says where to find it');

    await page.getByLabel('Setup code').fill('not-the-code');
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
    await page.getByLabel('Repeat the password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Create admin and continue' }).click();
    await alert().getByText('The setup code is wrong').waitFor();
    await shot('01-onboarding-admin-error');

    await page.getByLabel('Setup code').fill(await setupCode(server));
    await page.getByRole('button', { name: 'Create admin and continue' }).click();
    await page.getByRole('heading', { name: 'Single sign-on (optional)' }).waitFor();
    await shot('02-onboarding-oidc');
    await page.getByRole('button', { name: 'Skip for now' }).click();
    await page.getByRole('heading', { name: 'LLM provider' }).waitFor();
    // The platform's default provider: a wrong key is refused by the connection test, nothing is saved.
    await page.getByLabel('Provider', { exact: true }).selectOption('openai_compatible');
    await page.getByLabel('Base URL').fill(`http://127.0.0.1:${(llm.address() as AddressInfo).port}/v1`);
    await page.getByLabel('API key').fill('sk-wrong-key-0000000000');
    await page.getByLabel('Default model').fill('llama3');
    await page.getByRole('button', { name: 'Test and save' }).click();
    await page.getByText(/connection test failed, so nothing was saved/).waitFor();
    await page.getByLabel('API key').fill(llmKey);
    await shot('03-onboarding-provider');
    await page.getByRole('button', { name: 'Test and save' }).click();
    await page.getByRole('heading', { name: 'Default agent settings' }).waitFor();
    await page.getByLabel('Idle timeout (minutes)').fill('45');
    await page.getByRole('button', { name: 'Finish setup' }).click();
    await page.getByRole('heading', { name: 'Clawplane is ready' }).waitFor();
    assert.match(await page.getByRole('list', { name: 'Onboarding steps' }).innerText(), /Single sign-on\s*\(skipped\)/);
    await shot('04-onboarding-done');
    await page.getByRole('button', { name: 'Go to tenants' }).click();
    await page.getByText('No tenants yet.').waitFor();

    // Sign out, then a wrong password shows the API's message, the right one gets in.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Clawplane' }).waitFor();
    assert.equal(await page.getByRole('link', { name: /Sign in with/ }).count(), 0, 'no single sign-on button when OIDC is not configured');
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password').fill('wrong password entirely');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await alert().getByText('The email or password is wrong.').waitFor();
    await shot('05-login-error');
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL('**/tenants');
    await page.getByRole('heading', { name: 'Tenants', exact: true }).waitFor();

    // Two tenants; a duplicate slug shows the API's conflict message.
    for (const [name, slug] of [
      ['Acme Corp', 'acme'],
      ['Globex', 'globex'],
    ]) {
      await page.getByLabel('Name', { exact: true }).fill(name ?? '');
      await page.getByLabel('Slug').fill(slug ?? '');
      await page.getByRole('button', { name: 'Create tenant' }).click();
      await page.getByRole('status').getByText(`Created tenant ${name}.`).waitFor();
    }
    const rows = page.getByRole('table').getByRole('row');
    await rows.filter({ hasText: 'Globex' }).waitFor();
    assert.equal(await rows.count(), 3, 'header + two tenants');
    assert.match(
      await rows.filter({ hasText: 'Acme Corp' }).innerText(),
      /acme\s+active\s+0 running \/ 0\s+0 tokens · \$0\.00/,
      'no instances, no usage today yet',
    );
    await page.getByLabel('Name', { exact: true }).fill('Acme again');
    await page.getByLabel('Slug').fill('acme');
    await page.getByRole('button', { name: 'Create tenant' }).click();
    await alert().getByText('A tenant with slug "acme" already exists: choose another slug.').waitFor();
    await shot('06-tenants');

    // Suspend and resume Globex; edit its quotas.
    await page.getByRole('link', { name: 'Globex' }).click();
    await page.getByRole('heading', { name: /Globex/ }).waitFor();
    await page.getByLabel('Reason (optional, kept in the audit log)').fill('billing');
    await page.getByRole('button', { name: 'Suspend tenant' }).click();
    await page.getByRole('button', { name: 'Resume tenant' }).waitFor();
    assert.match(await page.getByRole('heading', { level: 1 }).innerText(), /suspended/);
    await page.getByLabel('Max instances').fill('7');
    // The tenant's own idle timeout (issue 7): empty means the platform's default.
    assert.equal(await page.getByLabel('Idle timeout (minutes)').inputValue(), '');
    await page.getByLabel('Idle timeout (minutes)').fill('45');
    await page.getByRole('button', { name: 'Save quotas' }).click();
    await page.getByText('Quotas saved.').waitFor();
    assert.equal((await server.services.tenants.get('globex')).quotas.idleTimeoutMinutes, 45);
    await shot('07-tenant-overview');
    await page.getByRole('button', { name: 'Resume tenant' }).click();
    await page.getByRole('button', { name: 'Suspend tenant' }).waitFor();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tenants' }).click();
    await page.getByRole('row').filter({ hasText: 'Globex' }).getByRole('cell', { name: '7', exact: true }).waitFor();

    // Members of Acme: a platform admin sees no tokens until they are a member.
    await page.goto('/tenants/acme/tokens');
    await page.getByText(/Platform admins manage tenants but cannot see a tenant's API tokens/).waitFor();
    await page.getByRole('navigation', { name: 'Tenant sections' }).getByRole('link', { name: 'Members' }).click();
    await page.getByText('No members yet.').waitFor();
    await page.getByLabel('Email').fill('alice@acme.test');
    await page.getByLabel('Display name (optional)').fill('Alice');
    await page.getByRole('button', { name: 'Add member' }).click();
    await page.getByRole('status').getByText('Added alice@acme.test.').waitFor();
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Role', { exact: true }).selectOption('tenant_admin');
    await page.getByRole('button', { name: 'Add member' }).click();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Acme Corp' }).waitFor();
    await page.getByLabel('Role of alice@acme.test').selectOption('viewer');
    await page.getByLabel('Email').fill('alice@acme.test');
    await page.getByRole('button', { name: 'Add member' }).click();
    await alert().getByText('alice@acme.test is already a member of this tenant').waitFor();
    await page.reload();
    assert.equal(await page.getByLabel('Role of alice@acme.test').inputValue(), 'viewer', 'the role change was saved');
    await shot('08-members');

    // A token is shown once, with a copy button, and never again.
    await page.getByRole('navigation', { name: 'Tenant sections' }).getByRole('link', { name: 'API tokens' }).click();
    await page.getByText('No API tokens yet.').waitFor();
    await page.getByLabel('Token name').fill('ci');
    await page.getByRole('button', { name: 'Create token' }).click();
    const shown = page.getByTestId('new-token');
    await shown.waitFor();
    const token = (await shown.innerText()).trim();
    assert.match(token, /^cpt_\S{20,}$/);
    await page.getByText('it is shown only this once').waitFor();
    await page.getByRole('button', { name: 'Copy' }).click();
    await page.getByRole('button', { name: 'Copied', exact: true }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);
    const tokenRow = page.getByRole('row').filter({ hasText: 'ci' });
    await tokenRow.waitFor();
    assert.ok(!(await tokenRow.innerText()).includes(token), 'the list shows only a prefix');
    assert.match(await tokenRow.innerText(), /cpt_\S{6}•+/);
    await shot('09-token-created');
    const api = await fetch(`${server.url}/api/v1/tenants/acme`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(api.status, 200, 'the token shown works');
    await page.reload();
    await page.getByRole('row').filter({ hasText: 'ci' }).waitFor();
    assert.ok(!(await page.content()).includes(token), 'not shown again after a reload');
    // By keyboard: Enter on Revoke asks, focus moves to the confirmation, Enter again revokes.
    await tokenRow.getByRole('button', { name: 'Revoke' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Revoke "ci"' }).waitFor();
    await page.keyboard.press('Enter');
    await tokenRow.getByText('revoked').waitFor();
    assert.equal((await fetch(`${server.url}/api/v1/tenants/acme`, { headers: { authorization: `Bearer ${token}` } })).status, 401);

    // Credentials: a skill form from the registry; values write-only, last 4 shown; expiry warning.
    await page.getByRole('navigation', { name: 'Tenant sections' }).getByRole('link', { name: 'Credentials' }).click();
    await page.getByText('No credentials yet.').waitFor();
    const skillForm = page.getByRole('form', { name: 'Connect a skill' });
    await skillForm.getByLabel('Skill').selectOption('slack');
    await skillForm.getByLabel('Bot token').fill('not-a-slack-token');
    await skillForm.getByRole('button', { name: 'Connect Slack' }).click();
    await skillForm.getByRole('alert').getByText(/xoxb-/).waitFor();
    await skillForm.getByLabel('Bot token').fill(slackToken);
    await skillForm.getByRole('button', { name: 'Connect Slack' }).click();
    await skillForm.getByText('Stored slack.bot_token. Values are not shown again.').waitFor();
    const addForm = page.getByRole('form', { name: 'Add a credential' });
    const soon = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10);
    await addForm.getByLabel('Credential name').fill('old-key');
    await addForm.getByLabel('Value').fill(`sk-old-${randomBytes(8).toString('hex')}`);
    await addForm.getByLabel('Expires on (optional)').fill(soon);
    await addForm.getByRole('button', { name: 'Add credential' }).click();
    const slackRow = page.getByRole('row').filter({ hasText: 'slack.bot_token' });
    await slackRow.waitFor();
    assert.match(await slackRow.innerText(), new RegExp(`••••${slackToken.slice(-4)}`));
    await page.getByRole('row').filter({ hasText: 'old-key' }).getByText('expires soon').waitFor();
    assert.ok(!(await page.content()).includes(slackToken), 'the value is never rendered');
    await shot('10-credentials');
    const oldRow = page.getByRole('row').filter({ hasText: 'old-key' });
    await oldRow.getByRole('button', { name: 'Revoke' }).click();
    await page.getByRole('button', { name: 'Revoke old-key' }).click();
    await oldRow.waitFor({ state: 'detached' });
    await page.getByLabel('Show revoked').check();
    await page.getByRole('row').filter({ hasText: 'old-key' }).getByText('revoked').waitFor();

    // A provider with a new key, then the connection test against the local stand-in.
    await page.getByRole('navigation', { name: 'Tenant sections' }).getByRole('link', { name: 'Providers' }).click();
    await page.getByText('No LLM provider yet.').waitFor();
    const providerForm = page.getByRole('form', { name: 'Add an LLM provider' });
    await providerForm.getByLabel('Kind').selectOption('openai_compatible');
    await providerForm.getByLabel('Provider name').fill('local');
    await providerForm.getByLabel('Base URL').fill(`http://127.0.0.1:${(llm.address() as AddressInfo).port}/v1`);
    await providerForm.getByLabel('New API key').fill(llmKey);
    await providerForm.getByLabel('Default model (optional)').fill('llama3');
    await providerForm.getByRole('button', { name: 'Add provider' }).click();
    const card = page.getByRole('listitem', { name: 'Provider local' });
    await card.waitFor();
    assert.match(await card.innerText(), new RegExp(`local-api-key\\s+••••${llmKey.slice(-4)}`));
    await card.getByRole('button', { name: 'Test connection' }).click();
    await card.getByText(/Connection works/).waitFor();
    assert.match(await card.innerText(), /2 models available, e\.g\. llama3, qwen2/);
    assert.ok(!(await page.content()).includes(llmKey), 'the API key is never rendered');
    await shot('11-providers');

    // Settings keep what onboarding saved.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('heading', { name: 'Platform settings' }).waitFor();
    assert.equal(await page.getByLabel('Idle timeout (minutes)').inputValue(), '45');
    await shot('12-settings');

    // An unknown page, then signed out: a deep link asks to sign in and returns there.
    await page.goto('/no/such/page');
    await page.getByRole('heading', { name: 'Page not found' }).waitFor();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.goto('/tenants/acme/members');
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByLabel('Role of alice@acme.test').waitFor();
    assert.ok(page.url().endsWith('/tenants/acme/members'));

    assert.deepEqual(problems, [], 'no console errors (CSP violations, uncaught exceptions)');
  });
});
