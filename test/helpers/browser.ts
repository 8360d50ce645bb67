import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

/** Debian's Chromium (`.ci/run` installs the package); tests never download a browser. */
export const CHROMIUM = '/usr/bin/chromium';
export const SHOTS = path.resolve(import.meta.dirname, '..', '..', 'test-artifacts', 'screenshots');

/**
 * Launches headless Chromium with the flags this machine needs (no sandbox as root, no background
 * networking: the network is closed) and opens one page on `baseURL`. Console errors, uncaught page
 * errors and CSP violations are pushed to `problems`; failed API calls (4xx) are expected and are not.
 */
export async function openBrowser(baseURL: string, problems: string[], opts: { clipboard?: boolean } = {}): Promise<{ browser: Browser; page: Page }> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `chromium is missing (${CHROMIUM}): run "apt-get install -y --no-install-recommends chromium", or "bash scripts/setup-system.sh test" as root`,
    );
  await mkdir(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
  });
  const context = await browser.newContext({ baseURL, viewport: { width: 1280, height: 900 } });
  if (opts.clipboard) await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: baseURL });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  // The DOM event too, in case a violation is not logged to the console.
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  return { browser, page };
}
