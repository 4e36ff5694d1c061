// Headless Chromium (Debian `chromium`, driven by npm `playwright-core`) signs in to the hub
// through the test identity provider's form and reports what the hub's home page shows.
// Usage: node browser_login.mjs HUB_URL USER PASSWORD [SCREENSHOT.png]
// Prints one JSON line: {"url", "user", "quota"}. Exits non-zero on any failure.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(20000);
  await page.goto(`${hub}/hub/home`);
  await page.waitForURL(/\/hub\/login/);
  await page.click('#oidc-login');
  await page.waitForSelector('#username');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(/\/hub\/home$/), page.click('#kc-login')]);
  const out = {
    url: page.url(),
    user: (await page.textContent('#user')).trim(),
    quota: (await page.textContent('#quota')).trim(),
  };
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
