// What the browser tests run against: the real built binary on a temp SQLite data dir and
// loopback ports, the admin API to make keys, two static servers of web/ on two origins
// (one a key allows, one it does not), and Debian's Chromium driven by playwright-core.
'use strict';

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');
const WEB = path.join(REPO, 'web');
const BINARY = process.env.WIDGET_AUTH_BIN || path.join(REPO, 'target', 'debug', 'widget-auth');

// Never a browser download: the system's Chromium, flags for a quiet CI sandbox.
const CHROMIUM = {
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
};

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(url, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      const response = await fetch(url);
      if (response.ok) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The service as an operator runs it: the binary, its own data dir, an admin token. */
async function startService() {
  if (!fs.existsSync(BINARY)) {
    throw new Error(`${BINARY} is missing: run \`cargo build\` (or cargo test) first`);
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'widget-auth-browser-'));
  const [publicPort, internalPort] = [await freePort(), await freePort()];
  const adminToken = crypto.randomBytes(24).toString('hex'); // 48 characters
  const child = spawn(BINARY, [], {
    env: {
      PATH: process.env.PATH,
      WIDGET_AUTH_DATA_DIR: dataDir,
      WIDGET_AUTH_PUBLIC_ADDR: `127.0.0.1:${publicPort}`,
      WIDGET_AUTH_INTERNAL_ADDR: `127.0.0.1:${internalPort}`,
      WIDGET_AUTH_ADMIN_TOKEN: adminToken,
      RUST_LOG: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const service = {
    api: `http://127.0.0.1:${publicPort}`,
    internal: `http://127.0.0.1:${internalPort}`,
    /** For the console, which takes it as an operator gives it (form or URL fragment). */
    adminToken,
    /** Its SQLite store, for tests that tamper with the history as an attacker would. */
    database: path.join(dataDir, 'widget-auth.sqlite3'),
    log: () => log,
    async admin(method, pathname, body) {
      const response = await fetch(service.internal + pathname, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`${method} ${pathname}: ${response.status} ${text}`);
      return JSON.parse(text);
    },
    createKey(body) { return service.admin('POST', '/internal/v1/client-keys', body); },
    command(id, body) { return service.admin('POST', `/internal/v1/client-keys/${id}/commands`, body); },
    /** What a customer's backend does: a visitor token for its logged-in user. */
    async userToken(key, user) {
      const response = await fetch(`${service.api}/api/v1/widget/auth/user-token`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.secret_key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_key: key.public_key, ...user }),
      });
      if (response.status !== 200) throw new Error(`user-token: ${response.status} ${await response.text()}`);
      return (await response.json()).visitor_token;
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  await Promise.race([
    waitFor(`${service.internal}/readyz`, 30000),
    exited.then((code) => { throw new Error(`widget-auth exited (${code}):\n${log}`); }),
  ]);
  // The binary serves the widget.js it was built with: testing an older build would test
  // an older script.
  const served = await (await fetch(`${service.api}/widget/v1/widget.js`)).text();
  if (served !== fs.readFileSync(path.join(WEB, 'widget.js'), 'utf8')) {
    await service.stop();
    throw new Error(`${BINARY} serves another widget.js than web/widget.js: rebuild it (cargo build)`);
  }
  return service;
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.png': 'image/png' };

/** A customer's site: web/ served on a loopback origin of its own. */
function startSite() {
  const server = http.createServer((request, response) => {
    const pathname = decodeURIComponent(new URL(request.url, 'http://x').pathname);
    const file = path.join(WEB, path.normalize(pathname).replace(/^(\.\.[/\\])+/, ''));
    if (!file.startsWith(WEB + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      response.writeHead(404).end('not found');
      return;
    }
    response.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(response);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({ origin: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

/** The claims of a JWT, decoded without verification (the server's tests verify). */
function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

module.exports = { CHROMIUM, REPO, WEB, startService, startSite, claims };
