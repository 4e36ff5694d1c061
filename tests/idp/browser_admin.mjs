// Headless Chromium: an admin signs in at the test identity provider, opens /hub/admin, searches
// for a user and stops that user's default server with the page's Stop button.
// Usage: node browser_admin.mjs HUB_URL ADMIN PASSWORD TARGET_USER ARTIFACTS_DIR
// Prints one JSON line: {"before", "after"} (the server's status text).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, target, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  viewport: { width: 1000, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(60000);
  await page.goto(`${hub}/hub/admin`);
  await page.waitForURL(/\/hub\/login/);
  await page.click('#oidc-login');
  await page.waitForSelector('#username');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(/\/hub\/admin/), page.click('#kc-login')]);
  await page.fill('#search', target);
  await Promise.all([page.waitForURL(/q=/), page.press('#search', 'Enter')]);
  const row = `tr[data-user="${target}"] div[data-server=""]`;
  const before = (await page.textContent(`${row} .status`)).trim();
  await page.screenshot({ path: join(artifacts, 'admin.png'), fullPage: true });
  await Promise.all([
    page.waitForResponse((r) => r.url().includes('/hub/admin/stop')),
    page.click(`${row} button`),
  ]);
  await page.waitForLoadState('load');
  let after = '';
  for (let i = 0; i < 40; i++) {
    after = (await page.textContent(`${row} .status`)).trim();
    if (after === 'stopped') break;
    await new Promise((r) => setTimeout(r, 500));
    await page.reload();
  }
  console.log(JSON.stringify({ before, after }));
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
