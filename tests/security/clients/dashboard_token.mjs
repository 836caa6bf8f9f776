// The dashboard page of a sidecar with --auth-token-file, in Debian's headless Chromium: it asks for a token
// (saying why), asks again after a wrong one, works with the right one, keeps it for the tab (a reload does not
// ask again), and a new tab asks afresh. Usage: node dashboard_token.mjs <dashboard url> <token>
import assert from 'node:assert/strict';
import { launch, newPage } from '../../dashboard/browser/lib.mjs';

const [url, token] = process.argv.slice(2);
const browser = await launch();
let failed = 0;
const step = async (name, fn) => {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}: ${e.message}`);
  }
};
try {
  const { page, problems } = await newPage(browser);
  await step('the page asks for a token and says what is missing', async () => {
    await page.goto(`${url}/`);
    await page.waitForSelector('#token-form');
    assert.match(await page.locator('#token-form').innerText(), /requires a token.*missing credentials/s);
  });
  await step('a wrong token is refused and the page asks again', async () => {
    await page.fill('#token-input', 'definitely-not-the-token');
    await page.click('#token-form button[type="submit"]');
    await page.waitForFunction(() => /neither an accepted static token/.test(document.querySelector('#token-form')?.innerText || ''));
  });
  await step('the right token opens the dashboard', async () => {
    await page.fill('#token-input', token);
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#hub option[value="default"]', { state: 'attached' });
    await page.waitForFunction(() => !document.querySelector('#token-form') && !/Loading/.test(document.querySelector('#view').innerText));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('moorage.token')), token);
    assert.equal(await page.evaluate(() => localStorage.getItem('moorage.token')), null);
    assert.ok(!page.url().includes(token), 'the token is not in the URL');
  });
  await step('a reload keeps the token for the tab', async () => {
    await page.reload();
    await page.waitForSelector('#hub option[value="default"]', { state: 'attached' });
    assert.equal(await page.locator('#token-form').count(), 0);
  });
  await step('a new tab (context) asks again', async () => {
    const other = await newPage(browser);
    await other.page.goto(`${url}/`);
    await other.page.waitForSelector('#token-form');
  });
  const errors = problems.filter((p) => p.startsWith('page error'));
  await step('no script errors', async () => assert.deepEqual(errors, []));
} finally {
  await browser.close();
}
console.log(`${failed} failed`);
process.exit(failed ? 1 : 0);
