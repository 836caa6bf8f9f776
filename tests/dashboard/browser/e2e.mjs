// End-to-end test of the dashboard in Debian's headless Chromium (playwright-core, executablePath).
// Launched by tests/dashboard/test_dashboard_browser.py with the dashboard URL and the scenario's ids; it clicks
// through the orchestration list, the instance timeline and the agent conversation view, asserting what is shown,
// and performs one action (raises the 'approve' event that completes a waiting orchestration).
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, newPage, readArgs } from './lib.mjs';

const { url, ids, out } = readArgs();
const steps = [];
const step = async (name, fn) => {
  const t = Date.now();
  await fn();
  steps.push(`${name} (${Date.now() - t} ms)`);
  console.log(`ok - ${name}`);
};

const browser = await launch();
const { page, problems } = await newPage(browser);
const text = async (sel) => (await page.locator(sel).first().textContent()).trim();
const rows = (sel) => page.locator(sel);
// a page never shows a stray "null" / "undefined" / "NaN" of a missing field
const clean = async () => assert.doesNotMatch(await page.locator('#view').innerText(), /\bnull\b|\bundefined\b|\bNaN\b/);

try {
  await step('orchestration list shows the instances, newest first, with status badges', async () => {
    await page.goto(`${url}/#/orchestrations?size=200`);
    await page.waitForSelector(`#instances tr[data-instance="${ids.order}"]`);
    const created = await page.$$eval('#instances tbody tr[data-instance] td:nth-child(4)', (tds) => tds.map((td) => td.title));
    assert.ok(created.length >= 5 && created.every((c, i) => i === 0 || created[i - 1] >= c), `newest first: ${created}`);
    assert.equal(await text(`#instances tr[data-instance="${ids.done}"] .badge`), 'completed');
    assert.equal(await text(`#instances tr[data-instance="${ids.order}"] .badge`), 'running');
    assert.equal(await text(`#instances tr[data-instance="${ids.order}"] td:nth-child(2)`), 'process_order');
    assert.match(await text(`#instances tr[data-instance="${ids.order}"] td:last-child`), /team=shop/);
    assert.equal(await page.locator('.mode').textContent(), 'actions enabled');
    await clean();
  });

  await step('status chip filters the list to failed instances', async () => {
    await page.click('#status-chips [data-chip="FAILED"]');
    await page.waitForFunction(() => location.hash.includes('status=FAILED'));
    await page.waitForSelector(`#instances tr[data-instance="${ids.failed}"]`);
    const statuses = await page.$$eval('#instances tbody tr[data-instance] .badge', (b) => b.map((x) => x.dataset.status));
    assert.ok(statuses.length >= 1 && statuses.every((s) => s === 'FAILED'), `only failed: ${statuses}`);
  });

  await step('id search and tag filter narrow the list to one instance', async () => {
    await page.click('#filters button[type="button"]'); // Reset
    await page.waitForFunction(() => location.hash === '#/orchestrations');
    await page.fill('#filters input[name="q"]', ids.order);
    await page.fill('#filters input[name="tags"]', 'region=eu');
    await page.click('#filters button[type="submit"]');
    await page.waitForFunction((id) => {
      const trs = document.querySelectorAll('#instances tbody tr[data-instance]');
      return trs.length === 1 && trs[0].dataset.instance === id;
    }, ids.order);
  });

  await step('auto-refresh brings in new instances and keeps what is being typed', async () => {
    await page.click('#filters button[type="button"]'); // Reset
    await page.waitForFunction(() => location.hash === '#/orchestrations');
    await page.waitForSelector('#instances tr[data-instance]');
    await page.fill('#filters input[name="name"]', 'half-typed');
    const id = `e2e-refresh-${Date.now()}`;
    const status = await page.evaluate(async (iid) => (await fetch('/api/orchestrations?hub=default', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'wait_for_go', instanceId: iid }),
    })).status, id);
    assert.equal(status, 201);
    await page.waitForSelector(`#instances tr[data-instance="${id}"]`, { timeout: 12000 });
    assert.equal(await page.inputValue('#filters input[name="name"]'), 'half-typed');
  });

  await step('start-new form starts an orchestration with input and tags', async () => {
    const id = `e2e-start-${Date.now()}`;
    await page.click('[data-action="new-orchestration"]');
    await page.fill('form.modal input[name="name"]', 'wait_for_go');
    await page.fill('form.modal input[name="instanceId"]', id);
    await page.fill('form.modal textarea[name="input"]', '{not json');
    await page.click('form.modal [data-submit]');
    assert.match(await text('form.modal .formerr'), /not valid JSON/);
    await page.fill('form.modal textarea[name="input"]', '{"from": "the form"}');
    await page.fill('form.modal input[name="tags"]', 'via=dashboard');
    await page.click('form.modal [data-submit]');
    await page.waitForFunction((iid) => document.querySelector('#instance-id')?.textContent === iid, id);
    await page.click('[data-tab="io"]');
    assert.match(await text('.grid.cols-2 .panel:first-child pre'), /the form/);
    assert.match(await text('#summary'), /via=dashboard/);
    await page.goBack();
    await page.waitForSelector('#instances');
  });

  await step('instance timeline shows activities, timer and sub-orchestration with durations', async () => {
    await page.evaluate((id) => { location.hash = `#/orchestrations?q=${encodeURIComponent(id)}`; }, ids.order);
    await page.click(`#instances tr[data-instance="${ids.order}"] a`);
    await page.waitForSelector('#timeline');
    assert.equal(await text('#instance-id'), ids.order);
    const kinds = await page.$$eval('#timeline .lbl', (ls) => ls.map((l) => `${l.dataset.kind}:${l.dataset.name}`));
    assert.deepEqual(kinds, ['activity:greet', 'activity:greet', 'timer:timer', 'suborchestration:ship_order']);
    const durations = await page.$$eval('#timeline .dur', (ds) => ds.map((d) => Number(d.dataset.durationMs)));
    assert.ok(durations[2] >= 250, `timer lasted ${durations[2]} ms`);
    assert.ok(durations.every((d) => d >= 0));
    await clean();
    await page.click('#timeline .lbl[data-kind="suborchestration"]');
    await page.waitForSelector('#timeline .detail');
    assert.match(await text('#timeline .detail'), /Parcelo/);
  });

  await step('action: raise the approve event completes the orchestration', async () => {
    await page.click('[data-action="raise-event"]');
    await page.fill('form.modal input[name="name"]', 'approve');
    await page.fill('form.modal textarea[name="input"]', '{"by": "browser-test"}');
    await page.click('form.modal [data-submit]');
    await page.waitForSelector('#modal-root:empty', { state: 'attached' });
    await page.waitForFunction(() => document.querySelector('.page-head .badge')?.dataset.status === 'COMPLETED', null, { timeout: 20000 });
    await page.waitForSelector('#timeline .lbl[data-kind="event"][data-name="approve"]');
    await page.click('[data-tab="io"]');
    assert.match(await text('.grid.cols-2 .panel:nth-child(2) pre'), /browser-test/);
  });

  await step('history lists every event with its payload', async () => {
    await page.click('[data-tab="history"]');
    await page.waitForSelector('#history');
    const types = await page.$$eval('#history tbody tr[data-event]', (trs) => trs.map((t) => t.dataset.event));
    assert.equal(types[1], 'executionStarted');
    assert.equal(types.at(-1), 'executionCompleted');
    assert.ok(types.includes('timerFired') && types.includes('subOrchestrationInstanceCompleted') && types.includes('eventRaised'));
    await page.click('#history tbody tr[data-event="taskCompleted"]');
    assert.match(await text('#history pre.json'), /Hello, Ada!/);
  });

  await step('flow view links parent and child', async () => {
    await page.click('[data-tab="flow"]');
    const nodes = await page.$$eval('#flow [data-flow]', (ns) => ns.map((n) => n.dataset.flow));
    assert.equal(nodes.length, 2);
    assert.equal(nodes[0], ids.order);
    await page.click(`#flow [data-flow="${nodes[1]}"]`);
    await page.waitForFunction((id) => document.querySelector('#instance-id')?.textContent === id, nodes[1]);
    assert.match(await text('.crumbs'), /ship_order/);
  });

  await step('agents: sessions of the Weather agent', async () => {
    await page.click('#nav [data-nav="agents"]');
    await page.click('#agents [data-agent="weather"]');
    await page.waitForSelector(`#sessions tr[data-session="${ids.session}"]`);
    const row = `#sessions tr[data-session="${ids.session}"]`;
    assert.equal(await text(`${row} td:nth-child(3)`), '2'); // turns
    assert.equal(await text(`${row} td:nth-child(5)`), '2'); // tool calls
    assert.equal(await text(`${row} td:nth-child(6)`), '296'); // tokens
    assert.equal(await text(`#sessions tr[data-session="${ids.session_err}"] .badge`), 'error');
    await clean();
  });

  await step('conversation view: messages, tool calls with arguments and results, usage per turn', async () => {
    await page.click(`#sessions tr[data-session="${ids.session}"] a`);
    await page.waitForSelector('#conversation');
    assert.equal(await text('#session-id'), ids.session);
    assert.equal(await rows('#conversation [data-turn]').count(), 2);
    const t1 = '#conversation [data-turn="1"]';
    assert.equal(await text(`${t1} [data-role="user"] .bubble`), 'What is the weather in Paris?');
    assert.equal(await text(`${t1} [data-tool] .tname`), 'get_weather');
    assert.match(await text(`${t1} [data-tool] pre`), /"city": "Paris"/);
    assert.match(await text(`${t1} [data-tool] [data-result]`), /"forecast": "sunny"/);
    const assistant = await page.$$eval(`${t1} [data-role="assistant"] .bubble`, (bs) => bs.map((b) => b.textContent));
    assert.deepEqual(assistant, ['It is sunny in Paris, 21 °C.']);
    assert.equal(await page.getAttribute(`${t1} [data-usage]`, 'data-usage'), '148');
    assert.match(await text(`${t1} .turn-head`), /in 122\s*out 26\s*total 148 tokens/);
    assert.match(await text('#session-totals'), /296/);
    await clean();
    await page.click(`${t1} [data-turn-link]`);
    await page.waitForSelector('#timeline');
    assert.match(await text('.crumbs'), /moorage\.agent_turn:Weather/);
    await page.goBack();
    await page.waitForSelector('#conversation');
  });

  await step('conversation view shows a failed turn as an error', async () => {
    await page.goto(`${url}/#/agents/weather/${encodeURIComponent(ids.session_err)}`);
    await page.waitForSelector('#conversation [data-turn="1"][data-status="error"]');
    assert.match(await text('#conversation [data-error]'), /503 Service Unavailable/);
  });

  await step('entities and workers pages', async () => {
    await page.click('#nav [data-nav="entities"]');
    await page.waitForSelector('#entities tr[data-entity="@counter@cart-42"]');
    assert.equal(await text('#entities tr[data-entity="@counter@cart-42"] td:last-child'), '8');
    await page.click('#entities tr[data-entity="@counter@cart-42"] a');
    assert.equal(await text('#entity-state'), '8');
    await clean();
    await page.click('#nav [data-nav="workers"]');
    await page.waitForSelector('#workers tbody tr[data-worker]');
    assert.match(await text('#metric-cards'), /1\s*connected workers/);
    await clean();
    assert.ok(Number((await text('#work-items tr[data-kind="activity"] td:nth-child(5)')).replace(/,/g, '')) > 0);
  });

  await step('hub selector switches to the other task hub', async () => {
    await page.click('#nav [data-nav="orchestrations"]');
    await page.selectOption('#hub', 'other');
    await page.waitForSelector(`#instances tr[data-instance="${ids.other}"]`);
    assert.equal(await rows('#instances tbody tr[data-instance]').count(), 1);
    assert.equal(await text(`#instances tr[data-instance="${ids.other}"] .badge`), 'pending');
    await page.selectOption('#hub', 'default');
    await page.waitForSelector(`#instances tr[data-instance="${ids.done}"]`);
  });

  assert.deepEqual(problems, [], `the page reported errors:\n${problems.join('\n')}`);
  console.log(`${steps.length} passed, 0 failed`);
} catch (e) {
  if (out) await page.screenshot({ path: path.join(out, 'e2e-failure.png'), fullPage: true }).catch(() => {});
  console.error(`FAILED after: ${steps.join(', ') || 'nothing'}`);
  console.error(e && e.stack ? e.stack : e);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
