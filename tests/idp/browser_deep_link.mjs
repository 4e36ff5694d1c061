// Headless Chromium (Debian `chromium`, driven by npm `playwright-core`) follows a notebook's
// "Launch in JupyterHub" link (`/hub/user-redirect/lab/tree/PATH`) as someone who has never
// logged in: the hub's login, the identity provider, the server-options picker, the progress
// page, and the notebook open in JupyterLab. A screenshot of the open notebook goes to ARTIFACTS.
// Usage: node browser_deep_link.mjs HUB_URL USER PASSWORD ARTIFACTS_DIR NOTEBOOK_PATH
// Prints one JSON line: {"steps", "lab_url", "notebook_tab", "title", "cell_text"}.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, artifacts, notebook] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  viewport: { width: 1100, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const steps = [];
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(90000);
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) { const u = new URL(f.url()); steps.push(u.pathname + u.search); }
  });
  await page.goto(`${hub}/hub/user-redirect/lab/tree/${notebook}`);
  await page.waitForURL(/\/hub\/login/);
  await page.click('#oidc-login');
  await page.waitForSelector('#username');
  await page.fill('#username', user);
  await page.fill('#password', password);
  // Back from the identity provider to the link, which goes on to the picker.
  await Promise.all([page.waitForURL(/\/hub\/spawn\//), page.click('#kc-login')]);
  await Promise.all([page.waitForURL(/\/hub\/spawn-pending\//), page.click('#start')]);
  await page.waitForURL(/\/user\/[^/]+\/lab\/tree\//, { timeout: 120000 });
  // The notebook's first cell shows its source in the editor.
  await page.waitForFunction(() => [...document.querySelectorAll('.jp-Notebook .jp-Cell .cm-content')]
    .some((e) => e.textContent.includes('deep link works')), null, { timeout: 120000 });
  const labUrl = page.url();
  const notebookTab = (await page.textContent('.jp-mod-current .lm-TabBar-tabLabel, .lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel, .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel').catch(() => '') || '').trim();
  const title = await page.title();
  const cellText = (await page.textContent('.jp-Notebook .jp-Cell .cm-content')).trim();
  await page.screenshot({ path: join(artifacts, 'deep-link-notebook.png') });
  console.log(JSON.stringify({ steps, lab_url: labUrl, notebook_tab: notebookTab, title, cell_text: cellText }));
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
