// widget.js in a real browser: headless Chromium loads web/demo.html from a customer's
// origin, the script from the real service, and the browser itself decides what CORS lets
// the page read.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, before, after } = require('node:test');
const { chromium } = require('playwright-core');
const { CHROMIUM, REPO, startService, startSite, claims } = require('./harness');

const CONFIG = {
  agent: { display_name: 'Grace from Acme' },
  branding: {
    primary_color: '#0F766E', background_color: '#F8FAFC', text_color: '#0F172A',
    launcher_position: 'bottom-left',
  },
  copy: { title: 'Acme Support', greeting: 'Hello! Ask us anything about your order.' },
};

let service; let allowed; let refused; let browser;

before(async () => {
  [service, allowed, refused] = await Promise.all([startService(), startSite(), startSite()]);
  browser = await chromium.launch(CHROMIUM);
});

after(async () => {
  await browser?.close();
  await Promise.all([service?.stop(), allowed?.close(), refused?.close()]);
});

async function newKey(extra = {}) {
  return service.createKey({ name: 'Acme', origins: [allowed.origin], config: CONFIG, ...extra });
}

/**
 * A fresh browser profile on `site` showing the demo page for `key`. Records every
 * request the page makes and everything it logs, to check where tokens went.
 */
async function open(key, site = allowed, { clock = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const requests = [];
  const logs = [];
  page.on('request', (r) => requests.push({ url: r.url(), body: r.postData() || '' }));
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  if (clock) await page.clock.install();
  await visit(page, key, site);
  return { context, page, requests, logs };
}

async function visit(page, key, site = allowed) {
  const query = new URLSearchParams({ api: service.api, client_key: key.public_key });
  await page.goto(`${site.origin}/demo.html?${query}`);
  await page.waitForFunction(() => window.widgetAuth !== undefined);
}

const ready = (page) => page.evaluate(() => window.widgetAuth.ready.then(
  (r) => ({ config: r.config, visitorId: r.visitorId }),
  (e) => ({ error: e.message }),
));
const token = (page) => page.evaluate(() => window.widgetAuth.token());
const stored = (page, key) => page.evaluate(
  (k) => Object.keys(localStorage).filter((name) => name.includes(k)).map((name) => [name, localStorage.getItem(name)]),
  key.public_key,
);
const refreshes = (requests) => requests.filter((r) => r.url.endsWith('/api/v1/widget/auth/refresh'));

test('the widget fetches its config and starts a guest session on an allowed origin', async () => {
  const key = await newKey();
  const { context, page, requests, logs } = await open(key);

  const result = await ready(page);
  assert.equal(result.error, undefined);
  assert.equal(result.config.client_key, key.public_key);
  assert.equal(result.config.agent.display_name, 'Grace from Acme');
  assert.equal(result.config.branding.primary_color, '#0F766E');
  assert.equal(result.config.branding.launcher_position, 'bottom-left');
  assert.equal(result.config.copy.greeting, CONFIG.copy.greeting);
  assert.match(result.visitorId, /\S{8,}/);

  const session = await token(page);
  const c = claims(session);
  assert.equal(c.kind, 'session');
  assert.equal(c.sub, result.visitorId);
  assert.equal(c.guest, true);
  assert.equal(c.origin, allowed.origin);

  // The refresh token is kept under a key naming the client key, and is not the session.
  const entries = await stored(page, key);
  assert.equal(entries.length, 1);
  const [name, refreshToken] = entries[0];
  assert.ok(name.includes(key.public_key));
  assert.equal(claims(refreshToken).kind, 'refresh');

  // The demo page drew the widget from that config.
  await page.waitForFunction(() => document.body.dataset.state === 'ready');
  assert.equal(await page.textContent('#title'), 'Acme Support');
  assert.equal(await page.textContent('#agent'), 'Grace from Acme');
  assert.equal(await page.textContent('#visitor'), result.visitorId);
  assert.equal(await page.getAttribute('#widget', 'class'), 'widget bottom-left');
  assert.equal(
    await page.evaluate(() => getComputedStyle(document.querySelector('.launcher')).backgroundColor),
    'rgb(15, 118, 110)',
  );
  // The README shows this; UPDATE_SCREENSHOT=1 rewrites the committed one.
  const shot = process.env.UPDATE_SCREENSHOT
    ? path.join(REPO, 'docs', 'demo.png')
    : path.join(os.tmpdir(), `widget-auth-demo-${process.pid}.png`);
  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await page.screenshot({ path: shot });
  assert.equal(fs.readFileSync(shot).subarray(1, 4).toString(), 'PNG');
  if (!process.env.UPDATE_SCREENSHOT) fs.rmSync(shot);

  // No token in a URL or the console; nothing but the page and the API was asked for.
  for (const r of requests) {
    assert.ok(!r.url.includes(refreshToken) && !r.url.includes(session), `token in ${r.url}`);
    assert.ok(r.url.startsWith(allowed.origin) || r.url.startsWith(service.api), r.url);
  }
  for (const line of logs) assert.ok(!line.includes(refreshToken) && !line.includes(session), line);
  await context.close();
});

test('ready rejects with a message naming the page origin when the key does not allow it', async () => {
  const key = await newKey();
  const { context, page } = await open(key, refused);

  const result = await ready(page);
  assert.ok(result.error, 'ready rejected');
  assert.ok(result.error.includes(refused.origin), result.error);
  assert.ok(result.error.includes('not in the allowed origins'), result.error);
  await page.waitForFunction(() => document.body.dataset.state === 'error');
  assert.ok((await page.textContent('#status')).includes(refused.origin));
  assert.deepEqual(await stored(page, key), []);
  await context.close();
});

test('an unknown key and a key with guests off are reported to the page', async () => {
  const { context, page } = await open({ public_key: 'pk_live_not-a-key' }, allowed);
  // An unknown key is a 403 without CORS headers: the page cannot read the sentence.
  const unknown = await ready(page);
  assert.ok(unknown.error.includes(allowed.origin), unknown.error);
  // Guests switched off: the server's 403 is hidden from the page too, but the config says
  // so, and the script reports it in the server's words instead of trying.
  const key = await newKey({ token_policy: { guests_allowed: false } });
  await visit(page, key);
  const result = await ready(page);
  assert.equal(result.visitorId, null);
  const refusal = await page.evaluate(() => window.widgetAuth.token().then(() => null, (e) => e.message));
  assert.equal(refusal, 'widget-auth: guests are not allowed for this client_key');
  await context.close();
});

test('login exchanges a visitor token from the customer backend and switches identity', async () => {
  const key = await newKey();
  const { context, page, requests } = await open(key);
  const guest = await ready(page);
  const guestRefresh = (await stored(page, key))[0][1];

  const visitorToken = await service.userToken(key, { user_id: 'user-42', name: 'Ada Lovelace', email: 'ada@acme.test' });
  const visitorId = await page.evaluate((t) => window.widgetAuth.login(t), visitorToken);
  assert.equal(visitorId, 'user-42');
  assert.notEqual(visitorId, guest.visitorId);

  const c = claims(await token(page));
  assert.equal(c.sub, 'user-42');
  assert.equal(c.guest, false);
  assert.equal(c.name, 'Ada Lovelace');
  assert.equal(c.email, 'ada@acme.test');
  const userRefresh = (await stored(page, key))[0][1];
  assert.notEqual(userRefresh, guestRefresh);
  assert.equal(claims(userRefresh).sub, 'user-42');

  // A reload keeps the user: the stored refresh token is refreshed, with no new guest.
  await visit(page, key);
  assert.equal((await ready(page)).visitorId, 'user-42');
  assert.equal(claims(await token(page)).sub, 'user-42');

  // A visitor token is single-use: a second login with it is refused, readably or not.
  const again = await page.evaluate((t) => window.widgetAuth.login(t).then(() => null, (e) => e.message), visitorToken);
  assert.ok(again, 'a reused visitor token is refused');

  // The refresh token only ever went to /refresh (in a body), never anywhere else.
  for (const r of requests) {
    if (!r.url.endsWith('/auth/refresh')) {
      assert.ok(!r.body.includes(guestRefresh) && !r.body.includes(userRefresh), `refresh token sent to ${r.url}`);
    }
  }
  await context.close();
});

test('logout forgets the session and the next token() starts a new guest', async () => {
  const key = await newKey();
  const { context, page } = await open(key);
  await ready(page);
  const visitorToken = await service.userToken(key, { user_id: 'user-7' });
  await page.evaluate((t) => window.widgetAuth.login(t), visitorToken);

  await page.evaluate(() => window.widgetAuth.logout());
  assert.deepEqual(await stored(page, key), []);
  const c = claims(await token(page));
  assert.equal(c.guest, true);
  assert.notEqual(c.sub, 'user-7');
  assert.equal((await stored(page, key)).length, 1);

  // The demo's button does the same and shows the new guest.
  const before = await page.textContent('#visitor');
  await page.click('#logout');
  await page.waitForFunction((b) => document.getElementById('visitor').textContent !== b, before);
  assert.equal(await page.textContent('#visitor'), claims(await token(page)).sub);
  await context.close();
});

test('a 60 s session is refreshed ahead of its expiry', async () => {
  const key = await newKey();
  await service.command(key.id, {
    type: 'set_token_policy',
    policy: { session_ttl_seconds: 60, visitor_token_ttl_seconds: 60, refresh_ttl_seconds: 3600, guests_allowed: true },
  });
  const { context, page, requests } = await open(key, allowed, { clock: true });
  const { visitorId } = await ready(page);
  // From here the page's time moves only when the test moves it.
  await page.clock.pauseAt(await page.evaluate(() => Date.now()) + 1000);
  const first = await token(page);
  const firstRefresh = (await stored(page, key))[0][1];
  assert.equal(claims(first).exp - claims(first).iat, 60);

  // 40 s later: still fresh, no refresh yet.
  await page.clock.runFor(39000);
  assert.equal(await token(page), first);
  assert.equal(refreshes(requests).length, 0);

  // 46 s: inside the last quarter of the lifetime, the script's timer refreshes it.
  const refreshed = page.waitForResponse((r) => r.url().endsWith('/auth/refresh'), { timeout: 20000 });
  await page.clock.runFor(6000);
  assert.equal((await refreshed).status(), 200);
  const second = await token(page);
  assert.notEqual(second, first);
  assert.equal(claims(second).sub, visitorId);
  const secondRefresh = (await stored(page, key))[0][1];
  assert.notEqual(secondRefresh, firstRefresh);
  assert.equal(refreshes(requests).length, 1);
  assert.equal(JSON.parse(refreshes(requests)[0].body).refresh_token, firstRefresh);

  // token() itself renews a token that close to expiry, timer or not (a background tab's
  // timers are throttled): the clock jumps 50 s without running any timer.
  await page.clock.setSystemTime(await page.evaluate(() => Date.now()) + 50000);
  const third = await token(page);
  assert.notEqual(third, second);
  assert.equal(refreshes(requests).length, 2);
  assert.equal(JSON.parse(refreshes(requests)[1].body).refresh_token, secondRefresh);
  await context.close();
});

test('a lost refresh response is retried once with the same refresh token', async () => {
  const key = await newKey();
  const { context, page, requests } = await open(key);
  const { visitorId } = await ready(page);
  const spent = (await stored(page, key))[0][1];

  // The next refresh reaches the server (which rotates the token), but its answer is lost.
  let lost = 0;
  await page.route('**/api/v1/widget/auth/refresh', async (route) => {
    if (lost++ === 0) {
      await route.fetch();
      await route.abort('connectionreset');
    } else {
      await route.continue();
    }
  });
  await visit(page, key); // a reload refreshes the stored session
  const result = await ready(page);
  assert.equal(result.error, undefined);
  assert.equal(result.visitorId, visitorId, 'same session, not a new guest');
  const sent = refreshes(requests).map((r) => JSON.parse(r.body).refresh_token);
  assert.deepEqual(sent, [spent, spent]);
  const successor = (await stored(page, key))[0][1];
  assert.notEqual(successor, spent);
  assert.equal(claims(await token(page)).sub, visitorId);
  await context.close();
});

test('a revoked refresh family gives way to a new guest session', async () => {
  const key = await newKey();
  const { context, page } = await open(key);
  const { visitorId } = await ready(page);
  // revoke_sessions cuts at whole seconds: let the session's second pass first.
  await new Promise((r) => setTimeout(r, 1100));
  await service.command(key.id, { type: 'revoke_sessions' });

  await visit(page, key);
  const result = await ready(page);
  assert.equal(result.error, undefined);
  assert.notEqual(result.visitorId, visitorId);
  assert.equal(claims(await token(page)).guest, true);
  await context.close();
});

// The per-IP guest limit (`limits.guest_per_ip_per_minute` in the token policy): the
// 429 carries the allowed origin's CORS headers and exposes `Retry-After` to the page.
test('a 429 on guest reaches the page with its Retry-After', async () => {
  const key = await newKey({
    token_policy: { guests_allowed: true, limits: { guest_per_ip_per_minute: 1 } },
  });
  const first = await open(key);
  assert.ok((await ready(first.page)).visitorId);
  await first.context.close();
  // A fresh profile (no stored session) from the same IP: a second guest this minute.
  const second = await open(key);
  const error = await second.page.evaluate(() => window.widgetAuth.ready.then(
    () => null,
    (e) => ({ message: e.message, status: e.status, retryAfter: e.retryAfter }),
  ));
  assert.equal(error.status, 429);
  assert.equal(error.message, 'widget-auth: rate limit exceeded');
  assert.ok(Number.isInteger(error.retryAfter) && error.retryAfter >= 1, `retryAfter ${error.retryAfter}`);
  await second.context.close();
});
