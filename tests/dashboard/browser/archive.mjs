// The agent conversation view pages through a session's archive ("Older (archived) entries"), in headless Chromium.
// Launched by tests/dashboard/test_dashboard_archive.py with the dashboard URL and {agent, session, pages, first}:
// the pager opens on the newest archived page, walks to the oldest, and each page shows the turns the API serves.
import assert from 'node:assert/strict';
import { launch, newPage, readArgs } from './lib.mjs';

const { url, ids } = readArgs();
const browser = await launch();
const { page, problems } = await newPage(browser);
const firstRequest = async () =>
  (await page.locator('#archive-conversation [data-turn="1"] .turn-body').first().innerText()).trim();
try {
  await page.goto(`${url}/#/agents/${encodeURIComponent(ids.agent)}/${encodeURIComponent(ids.session)}`);
  await page.waitForSelector('#archive [data-archive="open"]');
  assert.match(await page.locator('#archive').innerText(), new RegExp(`in ${ids.pages} page`));
  await page.click('#archive [data-archive="open"]');
  await page.waitForSelector(`#archive[data-page="${ids.pages - 1}"] #archive-conversation`);
  assert.ok(await page.locator('#archive [data-archive="newer"]').isDisabled());
  assert.ok(await page.locator('#conversation').count() === 1, 'the current conversation stays below the archive');
  for (let n = ids.pages - 2; n >= 0; n--) {
    await page.click('#archive [data-archive="older"]');
    await page.waitForSelector(`#archive[data-page="${n}"] #archive-conversation`);
  }
  assert.ok(await page.locator('#archive [data-archive="older"]').isDisabled());
  const oldest = await firstRequest();
  assert.ok(oldest.includes(ids.first), `the oldest page starts with the first turn: ${oldest.slice(0, 200)}`);
  await page.click('#archive [data-archive="hide"]');
  await page.waitForSelector('#archive [data-archive="open"]');
  assert.deepEqual(problems, []);
  console.log('archive pager: ok');
} finally {
  await browser.close();
}
