// The console's entry point: takes the admin token out of the URL fragment before
// anything else runs, then draws the screen the fragment route names
// (`#/keys`, `#/keys/<id>`, `#/keys/<id>/history`, `#/audit`).

import { forgetToken, loadToken, takeTokenFromFragment, whenRefused } from './api.js';
import { h, replace } from './dom.js';
import { auditView, historyView, keyView, keysView, loginView } from './views.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const session = document.getElementById('session');

takeTokenFromFragment();

whenRefused((error) => {
  forgetToken();
  drawChrome();
  loginView(main, `The service refused the admin token: ${error.message}. Check it and try again.`, route);
});

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function drawChrome() {
  const signedIn = Boolean(loadToken());
  const current = location.hash.startsWith('#/audit') ? 'audit' : 'keys';
  const link = (label, href, name) => h('a', { href, 'aria-current': signedIn && current === name ? 'page' : false }, label);
  replace(nav, signedIn ? [link('Client keys', '#/keys', 'keys'), link('Audit', '#/audit', 'audit')] : []);
  const signOut = h('button', { type: 'button', class: 'secondary small' }, 'Sign out');
  signOut.addEventListener('click', () => {
    forgetToken();
    navigate('#/keys');
  });
  replace(session, signedIn ? signOut : []);
}

async function route() {
  // A token pasted into the address bar of an open tab arrives as a hash change.
  takeTokenFromFragment();
  drawChrome();
  if (!loadToken()) {
    loginView(main, null, route);
    return;
  }
  const path = location.hash.replace(/^#/, '') || '/keys';
  const ctx = { navigate, reload: route };
  const key = path.match(/^\/keys\/([A-Za-z0-9_-]+)(\/history)?$/);
  if (key && key[2]) await historyView(main, key[1], ctx);
  else if (key) await keyView(main, key[1], ctx);
  else if (path === '/audit') auditView(main);
  else await keysView(main, ctx);
  const heading = main.querySelector('h1');
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
}

window.addEventListener('hashchange', () => { window.scrollTo(0, 0); route(); });
route();
