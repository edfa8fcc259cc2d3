// The operator and auditor console (`/console` on the internal listener) in a real
// browser: the token from the URL fragment, finding a key, running commands, the
// history timeline with its diffs, the state at an earlier event, the audit checks, and
// that the page talks to nothing but the internal listener.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { test, before, after } = require('node:test');
const { chromium } = require('playwright-core');
const { CHROMIUM, REPO, startService } = require('./harness');

let service; let browser;

before(async () => {
  service = await startService();
  browser = await chromium.launch(CHROMIUM);
});

after(async () => {
  await browser?.close();
  await service?.stop();
});

/**
 * A fresh browser profile on the console at `fragment`. Records every request and
 * everything the page logs or throws.
 */
async function open(fragment) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const requests = [];
  const logs = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  await page.goto(`${service.internal}/console${fragment}`);
  return { context, page, requests, logs };
}

/** The console's own files and the internal API only; nothing from elsewhere. */
function assertOnlyInternal(requests) {
  assert.ok(requests.length > 5, `too few requests recorded: ${requests}`);
  for (const url of requests) {
    assert.ok(url.startsWith(`${service.internal}/`), `a request left the internal listener: ${url}`);
  }
}

/** README screenshots: written only with UPDATE_SCREENSHOT=1. */
async function screenshot(page, name) {
  if (!process.env.UPDATE_SCREENSHOT) return;
  const file = path.join(REPO, 'docs', name);
  await page.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
    for (const side of document.querySelectorAll('.side')) side.scrollTop = 0;
  });
  await page.screenshot({ path: file, fullPage: false });
  assert.equal(fs.readFileSync(file).subarray(1, 4).toString(), 'PNG');
}

test('the binary serves the console files committed in assets/console', async () => {
  const dir = path.join(REPO, 'assets', 'console');
  for (const file of fs.readdirSync(dir)) {
    const url = file === 'index.html' ? '/console' : `/console/${file}`;
    const response = await fetch(service.internal + url);
    assert.equal(response.status, 200, url);
    assert.equal(await response.text(), fs.readFileSync(path.join(dir, file), 'utf8'),
      `${url} differs from assets/console/${file}: rebuild (cargo build)`);
  }
});

test('an operator signs in with the fragment, finds a key, changes it, and an auditor replays it', async () => {
  // Neighbours, so the search has something to tell apart.
  await service.createKey({ name: 'Globex Support', origins: ['https://globex.test'] });
  await service.createKey({
    name: 'Initech Help Desk',
    origins: ['https://initech.test'],
    config: { branding: { primary_color: '#B45309' }, copy: { title: 'Initech Help' } },
  });
  const key = await service.createKey({
    name: 'Acme Storefront',
    origins: ['https://acme.test'],
    config: {
      agent: { display_name: 'Grace from Acme' },
      branding: { primary_color: '#0F766E', launcher_position: 'bottom-left' },
      copy: { title: 'Acme Support', greeting: 'Hello! Ask us anything about your order.' },
    },
  });

  const { context, page, requests, logs } = await open(`#token=${service.adminToken}`);

  // The fragment is gone from the address (replaced, not pushed); the token is only in the tab.
  await page.getByRole('heading', { name: 'Client keys' }).waitFor();
  assert.equal(page.url(), `${service.internal}/console`);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('widgetAuthConsole:token')), service.adminToken);

  // Search by name, then by public key: only that key is listed.
  const rows = page.locator('table.keys tbody tr');
  await rows.nth(2).waitFor();
  assert.equal(await rows.count(), 3);
  await page.getByLabel('Search by name, id or public key').fill('acme');
  await page.waitForFunction(() => document.querySelectorAll('table.keys tbody tr').length === 1);
  await page.getByLabel('Search by name, id or public key').fill(key.public_key);
  await page.waitForFunction(() => document.querySelectorAll('table.keys tbody tr').length === 1);
  assert.match(await rows.first().innerText(), /Acme Storefront/);
  assert.match(await page.getByRole('status').filter({ hasText: 'of 3 keys' }).innerText(), /^1 of 3 keys$/);
  await page.getByLabel('Search by name, id or public key').fill('');
  await screenshot(page, 'console-keys.png');
  await page.getByLabel('Search by name, id or public key').fill('acme');
  await page.getByRole('link', { name: 'Acme Storefront' }).click();

  // One key: its state and a preview drawn from its config.
  await page.getByRole('heading', { name: /Acme Storefront/ }).waitFor();
  const widget = page.locator('.side [data-preview="widget"]');
  assert.equal(await widget.getAttribute('data-primary'), '#0F766E');
  assert.equal(await page.locator('.side [data-preview="title"]').innerText(), 'Acme Support');
  assert.equal(await page.locator('.side [data-preview="agent"]').innerText(), 'Grace from Acme');
  assert.match(await widget.getAttribute('class'), /bottom-left/);

  // Change origins with a reason.
  const origins = page.getByRole('form', { name: 'Allowed origins' });
  await origins.getByLabel('Origins').fill('https://acme.test\nhttps://shop.acme.test');
  await origins.getByLabel(/Reason/).fill('the shop moved to its own subdomain');
  await origins.getByRole('button', { name: 'Change origins' }).click();
  await page.getByText('Origins changed: now version 2.').waitFor();
  assert.deepEqual(await page.locator('[data-field="origins"] li').allInnerTexts(),
    ['https://acme.test', 'https://shop.acme.test']);

  // The preview follows the config form before anything is saved.
  const config = page.getByRole('form', { name: 'Widget config' });
  await config.getByLabel('Primary colour').fill('#7C3AED');
  await config.getByLabel('Title').fill('Acme Help Centre');
  await config.getByLabel('Launcher position').selectOption('bottom-right');
  assert.equal(await widget.getAttribute('data-primary'), '#7C3AED');
  assert.equal(await page.locator('.side [data-preview="title"]').innerText(), 'Acme Help Centre');
  assert.match(await widget.getAttribute('class'), /bottom-right/);
  assert.equal(
    await widget.locator('.wp-launcher').evaluate((e) => getComputedStyle(e).backgroundColor),
    'rgb(124, 58, 237)',
  );
  assert.match(await page.getByText(/Unsaved changes/).innerText(), /Unsaved/);
  assert.equal((await service.admin('GET', `/internal/v1/client-keys/${key.id}`)).config.copy.title, 'Acme Support');
  await screenshot(page, 'console-key.png');
  // An invalid origin: the service's sentence, shown as it is; nothing changes.
  await origins.getByLabel('Origins').fill('https://*.co.uk');
  await origins.getByRole('button', { name: 'Change origins' }).click();
  const refusal = origins.getByRole('alert');
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /\*\.co\.uk.*HTTP 400/s);
  assert.equal((await service.admin('GET', `/internal/v1/client-keys/${key.id}`)).version, 2);

  await config.getByLabel(/Reason/).fill('spring rebrand');
  await config.getByRole('button', { name: 'Save config' }).click();
  await page.getByText('Widget config updated: now version 3.').waitFor();

  // Rotate the secret key: asked first, then the new key shown once, and it works.
  const rotate = page.getByRole('form', { name: 'Rotate the secret key' });
  await rotate.getByLabel(/Grace period/).fill('600');
  await rotate.getByLabel(/Reason/).fill('laptop lost');
  await rotate.getByRole('button', { name: 'Rotate secret key' }).click();
  const ask = page.getByRole('dialog', { name: 'Rotate the secret key?' });
  await ask.waitFor();
  assert.match(await ask.innerText(), /10 min/);
  await ask.getByRole('button', { name: 'Rotate' }).click();
  const shown = page.getByRole('dialog', { name: 'The new secret key' });
  await shown.waitFor();
  assert.match(await shown.innerText(), /Shown once/);
  const secret = await shown.locator('[data-secret]').innerText();
  assert.match(secret, /^sk_live_[0-9A-Za-z]{38}$/);
  await shown.getByRole('button', { name: 'I have stored it' }).click();
  await page.getByText('Secret key rotated: now version 4.').waitFor();
  assert.ok(!(await page.content()).includes(secret), 'the secret key is still on the page');
  assert.ok(await service.userToken({ public_key: key.public_key, secret_key: secret }, { user_id: 'u-1' }));

  // A destructive command cancelled sends nothing.
  const status = page.getByRole('form', { name: 'Disable the key' });
  await status.getByRole('button', { name: 'Disable key' }).click();
  await page.getByRole('dialog', { name: 'Disable this key?' }).getByRole('button', { name: 'Cancel' }).click();
  await status.getByText('Cancelled: nothing was sent.').waitFor();
  assert.equal((await service.admin('GET', `/internal/v1/client-keys/${key.id}`)).version, 4);

  // The timeline: who, when, why, and what changed.
  await page.getByRole('link', { name: 'History' }).click();
  const events = page.locator('.timeline > li');
  await events.nth(3).waitFor();
  assert.equal(await events.count(), 4);
  const changed = await events.nth(1).innerText();
  assert.match(changed, /#2/);
  assert.match(changed, /Origins changed/);
  assert.match(changed, /admin:[0-9a-f]+/);
  assert.match(changed, /the shop moved to its own subdomain/);
  assert.deepEqual(await events.nth(1).locator('.diff .added').allInnerTexts(), ['+https://shop.acme.test']);
  const rebrand = await events.nth(2).innerText();
  assert.match(rebrand, /spring rebrand/);
  assert.match(rebrand, /branding\.primary_color\s+#0F766E\s+→\s+#7C3AED/);
  assert.match(rebrand, /copy\.title\s+Acme Support\s+→\s+Acme Help Centre/);
  assert.match(rebrand, /branding\.launcher_position\s+bottom-left\s+→\s+bottom-right/);
  const rotation = await events.nth(3).innerText();
  assert.match(rotation, /Secret key rotated/);
  assert.match(rotation, /laptop lost/);
  assert.match(rotation, new RegExp(`…${secret.slice(-4)}`));

  // The state after event 2: the old colour, title and launcher; both origins.
  await events.nth(1).getByRole('button', { name: 'State after #2' }).click();
  const then = page.locator('section[aria-labelledby="then-title"]');
  await then.getByRole('heading', { name: 'State after event #2' }).waitFor();
  await then.locator('[data-field="then"]').waitFor();
  assert.match(await then.locator('[data-field="then"]').innerText(), /version 2/);
  assert.equal(await then.locator('[data-preview="widget"]').getAttribute('data-primary'), '#0F766E');
  assert.equal(await then.locator('[data-preview="title"]').innerText(), 'Acme Support');
  assert.match(await then.locator('[data-preview="widget"]').getAttribute('class'), /bottom-left/);
  assert.deepEqual(await then.locator('[data-field="origins"] li').allInnerTexts(),
    ['https://acme.test', 'https://shop.acme.test']);
  await screenshot(page, 'console-history.png');
  // And after event 1, before the origin was added.
  await events.nth(0).getByRole('button', { name: 'State after #1' }).click();
  await then.getByRole('heading', { name: 'State after event #1' }).waitFor();
  await then.locator('[data-field="then"]').waitFor();
  assert.deepEqual(await then.locator('[data-field="origins"] li').allInnerTexts(), ['https://acme.test']);

  // A moment before the key existed: the service's sentence.
  await page.getByLabel('Moment (UTC)').fill('2020-01-01T00:00:00');
  await page.getByRole('button', { name: 'Show state then' }).click();
  await then.getByText(/did not exist at that point/).waitFor();
  await events.nth(1).getByRole('button', { name: 'State after #2' }).click();
  await then.locator('[data-field="then"]').waitFor();

  // The chain check, then a checkpoint taken now checked against the store.
  await page.getByRole('button', { name: 'Check the chain' }).click();
  await page.getByText(/Intact\. All 6 events match their chain links/).waitFor();
  const checkpoint = await service.admin('GET', '/internal/v1/audit/checkpoint');
  const form = page.getByRole('form', { name: 'Checkpoint check' });
  await form.getByLabel('Checkpoint JSON').fill(JSON.stringify(checkpoint));
  await form.getByRole('button', { name: 'Check against the checkpoint' }).click();
  await form.getByText(/Intact\. The store still extends it\..*3 keys, 6 events; signature valid/).waitFor();
  // An edited checkpoint: not intact, the problem listed.
  const edited = { ...checkpoint, events: checkpoint.events + 1 };
  await form.getByLabel('Checkpoint JSON').fill(JSON.stringify(edited));
  await form.getByRole('button', { name: 'Check against the checkpoint' }).click();
  const verdict = form.getByRole('alert');
  await verdict.waitFor();
  assert.match(await verdict.innerText(), /Not intact\./);
  assert.ok(await verdict.locator('.problems li').count() >= 1);
  // Not a checkpoint at all: the service's 400 sentence.
  await form.getByLabel('Checkpoint JSON').fill('{"x": 1}');
  await form.getByRole('button', { name: 'Check against the checkpoint' }).click();
  await form.getByText(/unknown field `x`.*HTTP 400/).waitFor();

  // The token never went into a URL or a log line; every request stayed on the listener.
  for (const url of requests) assert.ok(!url.includes(service.adminToken), `token in ${url}`);
  for (const line of logs) {
    assert.ok(!line.includes(service.adminToken) && !line.includes(secret), `leaked in the console log: ${line}`);
  }
  assertOnlyInternal(requests);
  await context.close();
});

test('a wrong token is refused with a clear message and the form takes another', async () => {
  const { context, page, requests } = await open('#token=not-the-admin-token-at-all');
  const refusal = page.getByRole('alert');
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /refused the admin token: missing or invalid admin token/);
  assert.equal(page.url(), `${service.internal}/console`);
  // The refused token is not kept.
  assert.equal(await page.evaluate(() => sessionStorage.getItem('widgetAuthConsole:token')), null);
  // The form signs in with the right one.
  await page.getByLabel('Admin token').fill(service.adminToken);
  await page.getByRole('button', { name: 'Open the console' }).click();
  await page.getByRole('heading', { name: 'Client keys' }).waitFor();
  await page.locator('table.keys tbody tr').first().waitFor();
  for (const url of requests) assert.ok(!url.includes(service.adminToken), `token in ${url}`);
  assertOnlyInternal(requests);
  await context.close();
});

test('creating a key shows its secret key once and opens the new key', async () => {
  const { context, page, requests } = await open(`#token=${service.adminToken}`);
  await page.getByRole('button', { name: 'New key' }).click();
  const form = page.getByRole('form', { name: 'Create a client key' });
  await form.getByLabel('Name').fill('Umbrella Corp');
  await form.getByLabel('Allowed origins').fill('https://umbrella.test\nhttps://*.umbrella.test');
  await form.getByRole('button', { name: 'Create key' }).click();
  const shown = page.getByRole('dialog', { name: 'The new key’s secret key' });
  await shown.waitFor();
  const secret = await shown.locator('[data-secret]').innerText();
  assert.match(secret, /^sk_live_/);
  await shown.getByRole('button', { name: 'I have stored it' }).click();
  await page.getByRole('heading', { name: /Umbrella Corp/ }).waitFor();
  assert.ok(!(await page.content()).includes(secret));
  assert.deepEqual(await page.locator('[data-field="origins"] li').allInnerTexts(),
    ['https://umbrella.test', 'https://*.umbrella.test']);
  // Without a config, the agent's name is the key's name, in the preview too.
  assert.equal(await page.locator('.side [data-preview="agent"]').innerText(), 'Umbrella Corp');

  // Someone else changes the key meanwhile: the page's command is refused (409), not
  // applied over their change, and says so.
  const id = (await page.locator('.facts code').first().innerText()).trim();
  await service.command(id, { type: 'change_origins', origins: ['https://umbrella.test'], reason: 'from the CLI' });
  const origins = page.getByRole('form', { name: 'Allowed origins' });
  await origins.getByLabel('Origins').fill('https://umbrella.test\nhttps://shop.umbrella.test');
  await origins.getByRole('button', { name: 'Change origins' }).click();
  const conflict = origins.getByRole('alert');
  await conflict.waitFor();
  assert.match(await conflict.innerText(), /HTTP 409, version_conflict/);
  assert.deepEqual((await service.admin('GET', `/internal/v1/client-keys/${id}`)).origins, ['https://umbrella.test']);
  assertOnlyInternal(requests);
  await context.close();
});

test('an event edited in the database shows the chain as broken, naming the key and event', async () => {
  const key = await service.createKey({ name: 'Hooli', origins: ['https://hooli.test'] });
  await service.command(key.id, { type: 'change_origins', origins: ['https://hooli.test', 'https://www.hooli.test'] });
  // Someone with write access to the store widens the allowlist behind the service's back.
  execFileSync('python3', ['-c', `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE events SET payload = json_set(payload, '$.OriginsChanged.origins', json('[\\"https://evil.test\\"]')) WHERE aggregate_id = ? AND sequence = 2", (sys.argv[2],))
db.commit()
`, service.database, key.id]);
  const { context, page, requests } = await open(`#token=${service.adminToken}`);
  await page.getByRole('link', { name: 'Audit' }).click();
  await page.getByRole('button', { name: 'Check the chain' }).click();
  const verdict = page.getByRole('alert');
  await verdict.waitFor();
  const text = await verdict.innerText();
  assert.match(text, /^Broken\./);
  assert.ok(text.includes(`key ${key.id}, event 2 (edited)`), text);
  assertOnlyInternal(requests);
  await context.close();
});
