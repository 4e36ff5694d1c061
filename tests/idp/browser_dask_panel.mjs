// Headless Chromium (Debian `chromium`, npm `playwright-core`) on the Dask panel of the full
// JupyterLab: sign in, start the full Lab, open the Dask panel, "+ NEW" a cluster (a Dask Gateway
// cluster at the profile's site), scale it to WORKERS workers from the panel, open the "Workers
// Memory" dashboard pane and wait until its iframe holds a rendered bokeh document, fed over its
// WebSocket, whose data shows the workers; then shut the cluster down from the panel. Screenshots `dask-panel-*.png` go to
// ARTIFACTS. Usage:
//   node browser_dask_panel.mjs HUB_URL USER PASSWORD ARTIFACTS_DIR PROFILE_SLUG WORKERS
// After each step it prints `STEP {"step": ..., ...}` and waits for a line on stdin (the test
// checks the site's gateway meanwhile); "stop" ends the run there. Last it prints one JSON line.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, user, password, artifacts, profile, workers] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/// Tell the test where we are and wait for its go-ahead.
const step = async (name, seen) => {
  console.log(`STEP ${JSON.stringify({ step: name, ...seen })}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'go') throw new Error(`the test stopped the run after ${name}`);
};
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const sockets = [];
let page;
const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const shot = (name) => page.screenshot({ path: join(artifacts, name) });
try {
  page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(60000);
  // Every WebSocket of the page and its frames: URL, frames received, closed.
  page.on('websocket', (ws) => {
    const s = { url: ws.url().replace(/token=[^&]*/, 'token=…'), received: 0, closed: false };
    sockets.push(s);
    ws.on('framereceived', () => { s.received += 1; });
    ws.on('close', () => { s.closed = true; });
  });

  await page.goto(`${hub}/hub/login`);
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(/\/hub\/home$/), page.click('button[type=submit]')]);
  await page.goto(`${hub}/hub/spawn/${user}`);
  await page.check(`#profile-${profile}`);
  await Promise.all([page.waitForURL(/\/hub\/spawn-pending\/|\/user\//), page.click('#start')]);
  await page.waitForURL(/\/user\/[^/]+\/lab/, { timeout: 90000 });
  await page.waitForSelector('.jp-Launcher', { timeout: 90000 });

  // The Dask panel (left side bar).
  const tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="dask-dashboard-launcher"]');
  await tab.click();
  const panel = '[id="dask-dashboard-launcher"]';
  await page.waitForSelector(`${panel}:not(.lm-mod-hidden)`);
  // "+ NEW": enabled once the panel's cluster manager answered.
  const create = page.locator(`${panel} .jp-Toolbar .jp-ToolbarButtonComponent`, { hasText: 'NEW' });
  await page.waitForFunction((p) => {
    const b = [...document.querySelectorAll(`${p} .jp-Toolbar .jp-ToolbarButtonComponent`)]
      .find((e) => e.textContent.includes('NEW'));
    return b && !b.disabled;
  }, panel);
  await create.click();
  const item = page.locator(`${panel} .dask-ClusterListingItem`).first();
  await item.waitFor({ timeout: 60000 });
  const listing = async () => ({
    id: await item.getAttribute('data-cluster-id'),
    title: (await item.locator('.dask-ClusterListingItem-title').textContent()).trim(),
    scheduler_address: await item.locator('.dask-ClusterListingItem-link').first().getAttribute('title'),
    dashboard_link: await item.locator('.dask-ClusterListingItem-link a').getAttribute('href'),
    text: await item.innerText(),
    items: await page.locator(`${panel} .dask-ClusterListingItem`).count(),
  });
  const listed = await listing();
  await shot('dask-panel-new-cluster.png');
  await step('listed', listed);

  // Scale from the panel: SCALE, the workers field, the dialog's SCALE.
  await item.locator('.dask-ClusterListingItem-scale').click();
  const dialog = page.locator('.jp-Dialog');
  await dialog.locator('input.dask-ScalingInput').first().fill(workers);
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await dialog.waitFor({ state: 'detached' });
  // The panel asks its server for the cluster's workers every few seconds; refresh to not wait.
  await page.waitForFunction(([p, n]) => {
    document.querySelector(`${p} .jp-Toolbar .jp-ToolbarButtonComponent[title="Refresh Cluster List"]`)?.click();
    return document.querySelector(`${p} .dask-ClusterListingItem`)?.innerText
      .includes(`Number of Workers: ${n}`);
  }, [panel, workers], { polling: 1000, timeout: 60000 });
  const scaled = await listing();
  await shot('dask-panel-scaled.png');
  await step('scaled', scaled);

  // The cluster's dashboards: the launcher lists them once the browser reached the cluster's
  // individual-plots.json; open "Workers Memory".
  const plots = page.locator(`${panel} .dask-DashboardListing-item button`);
  await plots.first().waitFor({ timeout: 30000 });
  const dashboards = (await plots.allTextContents()).map((t) => t.trim());
  const url = await page.inputValue(`${panel} .dask-URLInput input`);
  await plots.filter({ hasText: /^Workers Memory$/ }).click();
  const frameElement = page.locator('.dask-DaskDashboard-widget iframe').first();
  await frameElement.waitFor();
  const frame = await (await frameElement.elementHandle()).contentFrame();
  // Rendered: Bokeh's document has its roots, views of them are in the page, and its data
  // sources hold the workers (their addresses, tls:// at a Dask Gateway cluster).
  const workersIn = () => {
    const found = new Set();
    for (const m of window.Bokeh.documents[0].all_models) {
      if (m.type !== 'ColumnDataSource') continue;
      const data = m.data instanceof Map ? [...m.data.values()] : Object.values(m.data);
      for (const column of data) {
        for (const v of Array.from(column)) {
          if (typeof v === 'string' && /^(tls|tcp):\/\//.test(v)) found.add(v);
        }
      }
    }
    return [...found];
  };
  await frame.waitForFunction(`window.Bokeh && window.Bokeh.documents.length > 0
    && window.Bokeh.documents[0].roots().length > 0
    && document.querySelector('[data-root-id]') !== null
    && (${workersIn})().length > 0`, null, { timeout: 30000 });
  const src = await frameElement.getAttribute('src');
  const frameUrl = frame.url();
  const bokehDocument = await frame.evaluate(`({
    title: document.title,
    roots: window.Bokeh.documents[0].roots().map((r) => r.type),
    bokeh: window.Bokeh.version,
    workers: (${workersIn})(),
  })`);
  // The document's WebSocket is open and the scheduler's updates arrive on it.
  const deadline = Date.now() + 20000;
  const plotSocket = () => sockets.find((s) => s.url.includes('/individual-workers-memory/ws'));
  while (!(plotSocket() && plotSocket().received > 1) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
  }
  await shot('dask-panel-dashboard.png');
  await step('dashboard', { dashboards, url, src, frame_url: frameUrl, document: bokehDocument, socket: plotSocket() || null });

  // Shut it down from the panel.
  await item.locator('.dask-ClusterListingItem-stop').click();
  await page.waitForFunction((p) => !document.querySelector(`${p} .dask-ClusterListingItem`), panel,
    { timeout: 60000 });
  await shot('dask-panel-shut-down.png');
  console.log(JSON.stringify({ shut_down: true, sockets }));
} catch (e) {
  if (page) {
    await shot('dask-panel-failed.png').catch(() => {});
    const text = await page.locator('[id="dask-dashboard-launcher"]').innerText().catch(() => '');
    console.error(JSON.stringify({ url: page.url(), panel: text, sockets }));
  }
  throw e;
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
  lines.return?.();
  process.stdin.destroy();
}
