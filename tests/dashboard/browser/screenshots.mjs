// Screenshots of every dashboard page for docs/ (run by `make screenshots` through tests/dashboard/screenshots.py).
import path from 'node:path';
import { launch, newPage, readArgs } from './lib.mjs';

const { url, ids, out } = readArgs();
const browser = await launch();
try {
  const { page, problems } = await newPage(browser);
  await page.goto(url);
  await page.evaluate(() => localStorage.setItem('moorage.autorefresh', 'off'));
  const shot = async (hash, file, ready, extra) => {
    await page.goto(`${url}/${hash}`);
    await page.reload();
    await page.waitForSelector(ready);
    if (extra) await extra();
    await page.waitForTimeout(300);
    await page.screenshot({ path: path.join(out, file), fullPage: false });
    console.log(`wrote ${file}`);
  };
  const e = encodeURIComponent;
  await shot('#/orchestrations', 'dashboard-orchestrations.png', '#instances tbody tr[data-instance]');
  await shot('#/orchestrations', 'dashboard-start-orchestration.png', '#instances tbody tr[data-instance]', async () => {
    await page.click('[data-action="new-orchestration"]');
    await page.fill('form.modal input[name="name"]', 'process_order');
    await page.fill('form.modal textarea[name="input"]', '{"id": "A-2001", "customer": "Linus"}');
    await page.fill('form.modal input[name="tags"]', 'team=shop, region=us');
  });
  await shot(`#/orchestrations/${e(ids.done)}`, 'dashboard-instance-timeline.png', '#timeline', async () => {
    await page.click('#timeline .lbl[data-kind="suborchestration"]');
  });
  await shot(`#/orchestrations/${e(ids.done)}?tab=history`, 'dashboard-instance-history.png', '#history', async () => {
    await page.click('#history tr[data-event="taskCompleted"]');
  });
  await shot(`#/orchestrations/${e(ids.child)}?tab=flow`, 'dashboard-instance-flow.png', '#flow');
  await shot(`#/orchestrations/${e(ids.failed)}`, 'dashboard-instance-failed.png', '#timeline');
  await shot('#/entities', 'dashboard-entities.png', '#entities tbody tr[data-entity]');
  await shot(`#/entities/${e(ids.counter)}`, 'dashboard-entity.png', '#entity-state');
  await shot('#/agents/weather', 'dashboard-agents.png', '#sessions tbody tr[data-session]');
  await shot(`#/agents/weather/${e(ids.session)}`, 'dashboard-agent-conversation.png', '#conversation');
  await shot(`#/agents/weather/${e(ids.session_err)}`, 'dashboard-agent-error.png', '#conversation');
  await shot('#/workers', 'dashboard-workers.png', '#workers tbody tr[data-worker]');
  if (problems.length) {
    console.error(problems.join('\n'));
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
