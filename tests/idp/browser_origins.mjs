// Headless Chromium (Debian `chromium`, driven by npm `playwright-core`) as alice, the visitor of
// a hostile page: alice signs in to the hub (development login), opens a file of her own server
// (which sets her server's OAuth cookie), then follows a link to a page mallory's server serves.
// The page's script tries, with alice's cookies, to read alice's file (fetch and frame), to read
// the hub's home page (its `_xsrf` token), to ask the hub who is calling, and to mint a token
// for alice. Host names resolve with --host-resolver-rules (*.hub.test and hub.test → 127.0.0.1).
// Usage: node browser_origins.mjs HUB_URL ALICE_SERVER_URL MALLORY_PAGE_URL USER PASSWORD ARTIFACTS LABEL
// (the screenshot of the page is ARTIFACTS/origins-LABEL.png)
// Prints one JSON line: {"own", "cookies", "page_url", "attack"}.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [hub, aliceServer, malloryPage, user, password, artifacts, label] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'stackhub-chromium-'));
const browser = await chromium.launchPersistentContext(dir, {
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
    '--host-resolver-rules=MAP *.hub.test 127.0.0.1, MAP hub.test 127.0.0.1'],
});
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(60000);
  await page.goto(`${hub}/hub/login`);
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(/\/hub\/home$/), page.click('button[type=submit]')]);

  // Alice reads her own file on her own server: the OAuth round trip sets her server's cookie.
  await page.goto(`${aliceServer}files/secret.txt`);
  await page.waitForURL((u) => u.href.startsWith(`${aliceServer}files/secret.txt`));
  const own = (await page.textContent('body')).trim();
  const cookies = (await browser.cookies()).map((c) => ({
    name: c.name, domain: c.domain, path: c.path, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite,
  }));

  // Then she follows mallory's link.
  const link = `${malloryPage}?alice=${encodeURIComponent(aliceServer)}&hub=${encodeURIComponent(hub)}`;
  await page.goto(link);
  await page.waitForFunction(() => window.__done === true, null, { timeout: 60000 });
  const attack = await page.evaluate(() => window.__result);
  await page.screenshot({ path: join(artifacts, `origins-${label}.png`), fullPage: true });
  console.log(JSON.stringify({ own, cookies, page_url: page.url(), attack }));
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
