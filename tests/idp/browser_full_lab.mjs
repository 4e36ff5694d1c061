// Headless Chromium (Debian `chromium`, npm `playwright-core`) in the full JupyterLab: sign in,
// pick the full-Lab profile, open the Lab on a git repository in the home, and look at what the
// Data Lake's users expect there: the Git panel on that repository, the S3 browser on the user's
// own space (no form), the Dask panel, the "Python DEDL" kernel in the launcher, and a notebook
// cell in that kernel that imports the Data Lake's libraries and lists the space with boto3.
// Screenshots of each go to ARTIFACTS. Usage:
//   node browser_full_lab.mjs HUB_URL USER PASSWORD ARTIFACTS_DIR PROFILE_SLUG REPO COMMIT_MESSAGE OBJECT CODE MARKER
// REPO is a directory of the home holding a git repository whose history has COMMIT_MESSAGE;
// OBJECT is the name of an object in the user's S3 space; CODE is run in a Python DEDL notebook
// and the script waits for an output containing MARKER.
// Prints one JSON line: {"lab_url", "launcher", "settings", "toasts", "git_repository", "git_history", "s3_title",
// "s3_listing", "dask_panel", "output"}.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, artifacts, profile, repo, commitMessage, object, code, marker] =
  process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const channels = [];
let page;
const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const shot = (name) => page.screenshot({ path: join(artifacts, name) });
/// Open the left side panel whose tab matches SELECTOR and return its widget's selector.
const openPanel = async (selector) => {
  const tab = page.locator(`.jp-SideBar .lm-TabBar-tab${selector}`).first();
  const id = await tab.getAttribute('data-id');
  if (!(await tab.getAttribute('class')).includes('lm-mod-current')) await tab.click();
  const panel = `[id="${id}"]`;
  await page.waitForSelector(`${panel}:not(.lm-mod-hidden)`);
  return panel;
};
try {
  page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(90000);
  page.on('websocket', (ws) => { if (ws.url().includes('/channels')) channels.push(ws.url().replace(/token=[^&]*/, 'token=…')); });

  await page.goto(`${hub}/hub/login`);
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(/\/hub\/home$/), page.click('button[type=submit]')]);
  await page.goto(`${hub}/hub/spawn/${user}`);
  await page.check(`#profile-${profile}`);
  await Promise.all([page.waitForURL(/\/hub\/spawn-pending\/|\/user\//), page.click('#start')]);
  await page.waitForURL(/\/user\/[^/]+\/lab/, { timeout: 120000 });
  await page.waitForSelector('.jp-Launcher', { timeout: 120000 });
  const labUrl = page.url();
  const prefix = new URL(labUrl).pathname.replace(/\/lab.*$/, '');

  // The Lab opened on the repository's folder (the file browser there), as a user gets after
  // double-clicking it.
  await page.goto(`${hub}${prefix}/lab/tree/${repo}`);
  await page.waitForSelector('.jp-Launcher', { timeout: 120000 });
  const launcher = await page.$$eval('.jp-LauncherCard', (cs) => cs.map((c) => `${c.dataset.category}: ${c.title}`));
  // The hub's settings: the defaults the Lab's settings API gives (the schemas with the hub's
  // overrides applied), and no news toast.
  const settings = await page.evaluate(async (p) => {
    const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
    const defaults = async (id) => {
      const r = await fetch(`${p}/lab/api/settings/${id}`,
        { credentials: 'same-origin', headers: { 'X-XSRFToken': decodeURIComponent(xsrf) } });
      if (!r.ok) return { error: r.status };
      const props = (await r.json()).schema.properties;
      return Object.fromEntries(Object.entries(props).map(([k, v]) => [k, v.default]));
    };
    return {
      notification: await defaults('@jupyterlab/apputils-extension:notification'),
      git: await defaults('@jupyterlab/git:plugin'),
    };
  }, prefix);
  const toasts = await page.$$eval('.Toastify__toast', (ts) => ts.map((t) => t.innerText));

  // The Git panel: the repository and its history.
  const git = await openPanel('[data-id="jp-git-sessions"]');
  await page.waitForFunction(([p, r]) => document.querySelector(`${p} .jp-git-toolbarRepository`)
    ?.textContent.includes(r), [git, repo]);
  const gitRepository = (await page.textContent(`${git} .jp-git-toolbarRepository`)).trim();
  await page.waitForFunction(([p, m]) => document.querySelector(p)?.innerText.includes(m),
    [git, commitMessage]);
  const gitHistory = await page.innerText(git);
  await shot('full-lab-git.png');

  // The Dask panel.
  const dask = await openPanel('[data-id="dask-dashboard-launcher"]');
  const daskPanel = await page.innerText(dask);
  await shot('full-lab-dask.png');

  // The S3 browser: the user's space, listed with no form to fill.
  const s3 = await openPanel('[title^="S3 Object Storage"]');
  const s3Title = await page.locator('.jp-SideBar .lm-TabBar-tab[title^="S3 Object Storage"]').first()
    .getAttribute('title');
  await page.waitForFunction(([p, o]) => document.querySelector(p)?.innerText.includes(o), [s3, object]);
  const s3Listing = await page.innerText(s3);
  await shot('full-lab-s3-browser.png');

  // A notebook in the Python DEDL kernel.
  await page.click('.jp-LauncherCard[data-category="Notebook"][title="Python DEDL"]');
  // Opening a new notebook, JupyterLab may start two sessions at once and shut one down; a cell
  // run while its kernel is being swapped is dropped. Wait until one session is left, its
  // kernel's WebSocket is the last one opened (for a second in a row), and it is idle.
  const deadline = Date.now() + 120000;
  for (let stable = 0; stable < 4;) {
    const sessions = await page.evaluate(async (p) => {
      const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
      const r = await fetch(`${p}/api/sessions`,
        { credentials: 'same-origin', headers: { 'X-XSRFToken': decodeURIComponent(xsrf) } });
      return r.ok ? r.json() : [{ error: r.status }];
    }, prefix);
    const last = channels[channels.length - 1] || '';
    const settled = sessions.length === 1 && last.includes(`/api/kernels/${sessions[0].kernel.id}/`);
    stable = settled ? stable + 1 : 0;
    if (Date.now() > deadline) {
      throw new Error(`the notebook's session did not settle: ${JSON.stringify(sessions)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  await page.waitForSelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]',
    { timeout: 120000 });
  const editor = page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.cm-content');
  await editor.fill(code);
  await page.waitForSelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current.jp-mod-dirty');
  await page.keyboard.press('Shift+Enter');
  const out = page.locator('.jp-NotebookPanel .jp-OutputArea-output', { hasText: marker }).first();
  await out.waitFor({ timeout: 180000 });
  const output = (await out.textContent()).trim();
  await shot('full-lab-notebook.png');
  console.log(JSON.stringify({
    lab_url: labUrl, launcher, settings, toasts, git_repository: gitRepository, git_history: gitHistory,
    s3_title: s3Title, s3_listing: s3Listing, dask_panel: daskPanel, output,
  }));
} catch (e) {
  if (page) {
    await shot('full-lab-failed.png').catch(() => {});
    const outputs = await page.$$eval('.jp-OutputArea-output', (os) => os.map((o) => o.innerText))
      .catch(() => []);
    console.error(JSON.stringify({ url: page.url(), outputs }));
  }
  throw e;
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
