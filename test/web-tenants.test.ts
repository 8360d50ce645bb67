/**
 * The console's tenant list at 10,000 tenants in Debian's Chromium (playwright-core) against a real
 * server: it shows one page (not ten thousand rows), pages forward and back by cursor, searches by slug
 * or name, and filters by status.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { ADMIN_EMAIL, ADMIN_PASSWORD, onboard } from './helpers/client.ts';
import { CHROMIUM, openBrowser } from './helpers/browser.ts';
import { startTestServer } from './helpers/server.ts';

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: apt-get install chromium`;
const N = 10_000;

describe('web console: 10,000 tenants', { skip }, async () => {
  const server = await startTestServer();
  let browser: Browser | undefined;
  let page: Page;
  const problems: string[] = [];

  before(async () => {
    await onboard(server);
    await server.db.query(
      `INSERT INTO tenants (slug, name, created_at) SELECT 'org-' || lpad(g::text, 5, '0'), 'Organisation ' || g, now() - make_interval(secs => $1::int - g) FROM generate_series(1, $1::int) g`,
      [N],
    );
    await server.db.query(`UPDATE tenants SET status = 'suspended' WHERE slug IN ('org-00007', 'org-09001')`);
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

  const slugs = async () => page.getByRole('table', { name: 'Tenants' }).locator('tbody tr td:nth-child(2)').allTextContents();

  test('one page of 50 is shown; Next and Previous page by cursor', async () => {
    await page.goto('/tenants');
    await page.getByRole('cell', { name: 'org-00001', exact: true }).waitFor();
    const first = await slugs();
    assert.equal(first.length, 50, 'one page, not ten thousand rows');
    assert.equal(first[0], 'org-00001');
    const pager = page.getByRole('navigation', { name: 'Tenants pages' });
    await pager.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('cell', { name: 'org-00051', exact: true }).waitFor();
    await pager.getByText('Page 2').waitFor();
    const second = await slugs();
    assert.equal(second.length, 50);
    assert.equal(second[0], 'org-00051');
    assert.ok(!second.some((s) => first.includes(s)), 'no tenant on both pages');
    await pager.getByRole('button', { name: 'Previous' }).click();
    await page.getByRole('cell', { name: 'org-00001', exact: true }).waitFor();
    assert.deepEqual(await slugs(), first);
    assert.equal(await pager.getByRole('button', { name: 'Previous' }).isDisabled(), true);
  });

  test('search by slug or name, filter by status, sort newest first', async () => {
    await page.getByLabel('Find tenants').fill('org-0999');
    await page.getByRole('cell', { name: 'org-09990', exact: true }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('table tbody tr').length === 10);
    assert.deepEqual(
      await slugs(),
      Array.from({ length: 10 }, (_, i) => `org-0999${i}`),
    );
    assert.equal(await page.getByRole('navigation', { name: 'Tenants pages' }).count(), 0, 'one page: no pager');

    await page.getByLabel('Find tenants').fill('Organisation 9001');
    await page.getByRole('cell', { name: 'org-09001', exact: true }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('table tbody tr').length === 1);

    await page.getByLabel('Find tenants').fill('');
    await page.getByLabel('Status').selectOption('suspended');
    await page.getByRole('cell', { name: 'org-00007', exact: true }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('table tbody tr').length === 2);
    assert.deepEqual(await slugs(), ['org-00007', 'org-09001']);

    await page.getByLabel('Find tenants').fill('no such tenant');
    await page.getByText('No tenant matches.').waitFor();

    await page.getByLabel('Find tenants').fill('');
    await page.getByLabel('Status').selectOption('');
    await page.getByLabel('Sort by').selectOption('-createdAt');
    await page.getByRole('cell', { name: 'org-10000', exact: true }).waitFor();
    assert.equal((await slugs()).length, 50);
    assert.deepEqual(problems, []);
  });
});
