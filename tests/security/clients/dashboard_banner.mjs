// The dashboard of a sidecar started with --allow-unauthenticated on a non-loopback address shows a red banner
// saying so, without asking for a token. Usage: node dashboard_banner.mjs <dashboard url>
import assert from 'node:assert/strict';
import { launch, newPage } from '../../dashboard/browser/lib.mjs';

const [url] = process.argv.slice(2);
const browser = await launch();
try {
  const { page } = await newPage(browser);
  await page.goto(`${url}/`);
  await page.waitForSelector('#unauthenticated-banner');
  assert.match(await page.locator('#unauthenticated-banner').innerText(), /without authentication.*--allow-unauthenticated/);
  assert.equal(await page.locator('#token-form').count(), 0);
  console.log('ok - banner shown');
} finally {
  await browser.close();
}
