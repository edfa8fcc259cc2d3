// web/widget.js as committed is what the service serves: it must parse as it is and stay
// small enough to include on every page.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { test } = require('node:test');

const FILE = path.resolve(__dirname, '..', '..', 'web', 'widget.js');

test('widget.js parses as plain JavaScript with no build step', () => {
  execFileSync(process.execPath, ['--check', FILE]);
  const source = fs.readFileSync(FILE, 'utf8');
  assert.doesNotMatch(source, /\b(import|require)\s*\(|^\s*import\s/m, 'no module loading');
  assert.doesNotMatch(source, /console\./, 'never logs');
});

test('widget.js is under 4 KB gzipped', () => {
  const gzipped = zlib.gzipSync(fs.readFileSync(FILE), { level: 9 }).length;
  assert.ok(gzipped < 4096, `${gzipped} bytes gzipped`);
});
