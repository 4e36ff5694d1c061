// Headless Chromium (Debian `chromium`, npm `playwright-core`) as a user of Remote Compute Kernels:
// sign in with the development login, pick a remote-kernels profile on the options page, land in
// JupyterLab, open a notebook from the launcher (its kernel starts at the site's gateway), run a
// cell there, save the notebook (the Lab's contents live in S3), and record the kernel WebSockets
// the page opened. Usage:
//   node browser_remote_lab.mjs HUB_URL USER PASSWORD ARTIFACTS_DIR PROFILE_SLUG CODE MARKER [MORE]
// CODE is typed into the first cell; the script waits until an output contains MARKER.
// MORE (optional): a JSON list of further notebooks, each {"card", "kernel", "code", "marker",
// "shot"}: opened from a new launcher's card whose label is `card` (its session's kernel is
// `kernel`), CODE run there until an output contains MARKER, a screenshot saved as `shot`.
// Prints one JSON line: {"lab_url", "launcher", "output", "more", "channels", "binary_frames",
// "saved", "label_after", "listing"} (`launcher`: the notebook cards' labels; `more`: the outputs
// of MORE's notebooks).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, artifacts, profile, code, marker, moreArg] = process.argv.slice(2);
const more = JSON.parse(moreArg || '[]');
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
let page;
const channels = [];
let binaryFrames = 0;
// Opening a new notebook, JupyterLab may start two sessions at once and shut one down; a cell
// run while its kernel is being swapped is dropped. Wait until `count` sessions are left, the
// new notebook's (the one with kernel `kernel`, or the only one) has the last kernel WebSocket
// opened (for a second in a row), and its notebook is idle.
async function settle(prefix, count, kernel) {
  const deadline = Date.now() + 120000;
  let sessions = [];
  for (let stable = 0; stable < 4;) {
    sessions = await page.evaluate(async (p) => {
      // As the Lab does: the _xsrf cookie's value in X-XSRFToken (the server checks it).
      const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
      const r = await fetch(`${p}/api/sessions`,
        { credentials: 'same-origin', headers: { 'X-XSRFToken': decodeURIComponent(xsrf) } });
      return r.ok ? r.json() : [{ error: r.status }];
    }, prefix);
    const last = channels[channels.length - 1] || '';
    const mine = kernel ? sessions.find((x) => x.kernel && x.kernel.name === kernel) : sessions[0];
    const settled = sessions.length === count && mine && last.includes(`/api/kernels/${mine.kernel.id}/`);
    stable = settled ? stable + 1 : 0;
    if (Date.now() > deadline) {
      throw new Error(`the notebook's session did not settle: ${JSON.stringify(sessions)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const panel = await currentPanel();
  await page.waitForSelector(`${panel} .jp-Notebook-ExecutionIndicator[data-status="idle"]`,
    { timeout: 120000 });
}

const tab = '#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current';

// The selector of the notebook panel of the current main-area tab (Lumino tabs carry their
// widget's id as data-id).
async function currentPanel() {
  const id = await page.getAttribute(tab, 'data-id');
  if (!id) throw new Error('the current tab names no widget (no data-id)');
  return `[id="${id}"]`;
}

// Type `code` into the visible notebook's first cell, run it, and wait for an output holding
// `marker`; its text.
async function runCell(code, marker) {
  const panel = await currentPanel();
  const editor = page.locator(`${panel} .jp-Cell`).first().locator('.cm-content');
  await editor.fill(code);
  // Run only once the notebook's model has the text (the tab turns dirty): running a cell whose
  // model is still empty sends nothing to the kernel.
  await page.waitForSelector(`${tab}.jp-mod-dirty`);
  await page.keyboard.press('Shift+Enter');
  const out = page.locator(`${panel} .jp-OutputArea-output`, { hasText: marker }).first();
  await out.waitFor({ timeout: 120000 });
  return (await out.textContent()).trim();
}

const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  viewport: { width: 1200, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(90000);
  page.on('websocket', (ws) => {
    if (!ws.url().includes('/channels')) return;
    channels.push(ws.url().replace(/token=[^&]*/, 'token=…'));
    // JupyterLab 4 speaks the binary v1 kernel protocol when the server side accepts it.
    ws.on('framereceived', (f) => { if (typeof f.payload !== 'string') binaryFrames += 1; });
  });

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

  // What the launcher offers: the site's kernelspecs, named with the site.
  const launcher = await page.$$eval('.jp-Launcher .jp-LauncherCard[data-category="Notebook"]',
    (cs) => cs.map((c) => c.innerText.trim()));
  await page.screenshot({ path: join(artifacts, 'remote-launcher.png') });

  // The launcher's first notebook card: a kernelspec served by the site's gateway.
  await page.click('.jp-LauncherCard[data-category="Notebook"]');
  const prefix = new URL(page.url()).pathname.replace(/\/lab.*$/, '');
  await settle(prefix, 1, null);
  const output = await runCell(code, marker);
  // Save; the Lab clears the tab's dirty mark once the contents manager (S3) has the file.
  await page.click('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]');
  // JupyterLab asks for a name on an untitled notebook's first save.
  await page.fill('.jp-Dialog input[type=text]', 'at-lumi.ipynb');
  await page.click('.jp-Dialog-button.jp-mod-accept');
  await page.waitForFunction((sel) => {
    const t = document.querySelector(sel);
    return t && !t.classList.contains('jp-mod-dirty');
  }, tab);
  // The name the tab showed once the rename was done. (The label has been seen to read
  // "Untitled.ipynb" again a moment later while the server had renamed the file: the test checks
  // the server's copy, and reports the later label and the Lab's listing for diagnosis.)
  const saved = await (await page.waitForFunction((sel) => {
    const t = document.querySelector(sel)?.textContent.trim();
    return t === 'at-lumi.ipynb' ? t : null;
  }, `${tab} .lm-TabBar-tabLabel`)).jsonValue();
  const label_after = (await page.textContent(`${tab} .lm-TabBar-tabLabel`)).trim();
  const listing = await page.evaluate(async (p) => {
    const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
    const r = await fetch(`${p}/api/contents/?content=1`,
      { credentials: 'same-origin', headers: { 'X-XSRFToken': decodeURIComponent(xsrf) } });
    return r.ok ? (await r.json()).content.map((f) => f.name) : [`HTTP ${r.status}`];
  }, prefix);
  await page.screenshot({ path: join(artifacts, 'remote-lab.png') });
  // Further notebooks, each from a new launcher's card (the notebooks before stay open).
  const moreOut = [];
  for (const [i, m] of more.entries()) {
    await page.click('.jp-FileBrowser [data-command="launcher:create"]');
    await page.locator('.jp-Launcher:visible .jp-LauncherCard[data-category="Notebook"]',
      { hasText: m.card }).first().click();
    await settle(prefix, i + 2, m.kernel);
    moreOut.push(await runCell(m.code, m.marker));
    await page.screenshot({ path: join(artifacts, m.shot) });
  }
  console.log(JSON.stringify({
    lab_url: labUrl, launcher, output, more: moreOut, channels, binary_frames: binaryFrames, saved,
    label_after, listing,
  }));
} catch (e) {
  // What the page showed when it went wrong: a screenshot and the notebook's cells.
  if (page) {
    await page.screenshot({ path: join(artifacts, 'remote-lab-failed.png') }).catch(() => {});
    const cells = await page.$$eval('.jp-NotebookPanel .jp-Cell', (cs) => cs.map((c) => c.innerText))
      .catch(() => []);
    const tabs = await page.$$eval('#jp-main-dock-panel .lm-TabBar-tab', (ts) => ts.map((t) => `${t.className}: ${t.innerText}`))
      .catch(() => []);
    console.error(JSON.stringify({ url: page.url(), channels, binary_frames: binaryFrames, cells, tabs }));
  }
  throw e;
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
