// Headless Chromium (Debian `chromium`, driven by npm `playwright-core`) through the server-options
// picker: sign in at the test identity provider, read the profiles offered, pick one, watch the
// progress bar reach ready, land in JupyterLab's launcher, then create a named server with another
// profile from the home page. Screenshots of the picker and the progress page go to ARTIFACTS.
// Usage: node browser_picker.mjs HUB_URL USER PASSWORD ARTIFACTS_DIR PROFILE_SLUG NAMED_SLUG
// Prints one JSON line: {"profiles", "progress_max", "lab_url", "launcher", "named_url"}.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, artifacts, profile, namedProfile] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  viewport: { width: 900, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(90000);
  await page.goto(`${hub}/hub/home`);
  await page.waitForURL(/\/hub\/login/);
  await page.click('#oidc-login');
  await page.waitForSelector('#username');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(/\/hub\/home$/), page.click('#kc-login')]);

  // The picker: what is offered, a screenshot, then keyboard: focus the profile, Start.
  await page.click('#start-default');
  await page.waitForURL(/\/hub\/spawn\//);
  const profiles = await page.$$eval('.profile h3', (hs) => hs.map((h) => h.textContent.trim()));
  await page.screenshot({ path: join(artifacts, 'picker.png'), fullPage: true });
  await page.focus(`#profile-${profile}`);
  await page.keyboard.press('Space');
  // Hold the progress stream for a moment so the progress page can be photographed.
  await page.route(/\/progress\?/, async (route) => { await sleep(1200); await route.continue(); });
  await Promise.all([page.waitForURL(/\/hub\/spawn-pending\//), page.click('#start')]);
  await page.screenshot({ path: join(artifacts, 'progress.png'), fullPage: true });
  await page.waitForFunction(() => document.getElementById('bar').getAttribute('aria-valuenow') === '100');
  const progressMax = Number(await page.getAttribute('#bar', 'aria-valuenow'));
  await page.screenshot({ path: join(artifacts, 'progress-ready.png'), fullPage: true });
  await page.unroute(/\/progress\?/);
  await page.waitForURL(/\/user\/[^/]+\/lab/);
  await page.waitForSelector('.jp-Launcher', { timeout: 120000 });
  const launcher = await page.isVisible('.jp-Launcher');
  const labUrl = page.url();
  await page.screenshot({ path: join(artifacts, 'lab.png') });

  // A named server with another profile, from the home page.
  await page.goto(`${hub}/hub/home`);
  await page.fill('#new_server', 'light1');
  await page.fill('#new_display_name', 'Light one');
  await Promise.all([page.waitForURL(/\/hub\/spawn\/[^/]+\/light1/), page.click('#create')]);
  await page.check(`#profile-${namedProfile}`);
  await Promise.all([page.waitForURL(/\/hub\/spawn-pending\//), page.click('#start')]);
  await page.waitForURL(/\/user\/[^/]+\/light1\//, { timeout: 120000 });
  const namedUrl = page.url();
  await page.goto(`${hub}/hub/home`);
  const namedRow = (await page.textContent('#named')).replace(/\s+/g, ' ').trim();
  await page.screenshot({ path: join(artifacts, 'home.png'), fullPage: true });
  console.log(JSON.stringify({ profiles, progress_max: progressMax, lab_url: labUrl, launcher, named_url: namedUrl, named_row: namedRow }));
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
