// The console's screens: sign-in, the key list, one key (state, live preview, commands),
// its history (timeline, state at a moment) and the audit checks. Each screen draws
// into `main` from what the internal API answers; nothing is cached between screens.

import { allPages, ApiError, call, setToken } from './api.js';
import { changedFields, step, title, tone } from './diff.js';
import { confirmDialog, duration, field, h, replace, say, secretDialog, when, whenSeconds } from './dom.js';
import { createPreview } from './preview.js';

/** A message carried over one re-render (e.g. "Origins changed: version 3"). */
let flash = null;

function flashed() {
  if (!flash) return null;
  const region = h('div', {});
  say(region, flash.kind, flash.text);
  flash = null;
  return region;
}

function problem(error) {
  return error instanceof ApiError ? error.plain : String(error.message || error);
}

function failure(main, heading, error) {
  // A refused token has already brought up the sign-in form (api.js `whenRefused`).
  if (error instanceof ApiError && error.status === 401) return;
  const region = h('div', {});
  say(region, 'error', problem(error));
  replace(main, h('h1', { tabindex: '-1' }, heading), region);
}

function badge(status) {
  return h('span', { class: `badge ${status === 'active' ? 'good' : 'danger'}` }, status);
}

/** `3 keys`, `1 key`. */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function lines(text) {
  return text.split('\n').map((line) => line.trim()).filter(Boolean);
}

// ---------------------------------------------------------------- sign-in

export function loginView(main, message, onSignedIn) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const region = h('div', {});
  if (message) say(region, 'error', message);
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title', tabindex: '-1' }, 'Sign in to the console'),
    h('p', {}, 'The admin token is ', h('code', {}, 'WIDGET_AUTH_ADMIN_TOKEN'), ', or the file ',
      h('code', {}, 'admin-token'), ' in the data directory. It stays in this tab only (memory and the tab\u2019s session storage) and is sent only to this service\u2019s ',
      h('code', {}, '/internal/v1'), '.'),
    field('Admin token', input),
    region,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Open the console')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setToken(input.value);
    input.value = '';
    say(region, 'busy', 'Checking the token\u2026');
    try {
      await call('GET', '/client-keys?limit=1');
      onSignedIn();
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) say(region, 'error', problem(error));
    }
  });
  replace(main, form);
  input.focus();
}

// ---------------------------------------------------------------- the key list

export async function keysView(main, ctx) {
  const progress = h('p', { class: 'hint' }, 'Loading client keys\u2026');
  replace(main, h('h1', { tabindex: '-1' }, 'Client keys'), progress);
  let keys;
  try {
    keys = await allPages('/client-keys', 'client_keys', 1000, (n) => { progress.textContent = `Loading client keys\u2026 ${n}`; });
  } catch (error) {
    failure(main, 'Client keys', error);
    return;
  }
  const search = h('input', { type: 'search', name: 'search', autocomplete: 'off', placeholder: 'Acme, ck_\u2026, pk_live_\u2026' });
  const status = h('select', { name: 'status' },
    h('option', { value: '' }, 'Any status'), h('option', { value: 'active' }, 'Active'), h('option', { value: 'disabled' }, 'Disabled'));
  const counter = h('p', { class: 'hint', role: 'status', 'aria-live': 'polite' });
  const body = h('tbody', {});
  const table = h('table', { class: 'keys' },
    h('caption', { class: 'visually-hidden' }, 'Client keys'),
    h('thead', {}, h('tr', {}, ['Name', 'Client key id', 'Public key', 'Status', 'Version', 'Updated'].map((c) => h('th', { scope: 'col' }, c)))),
    body);

  function draw() {
    const term = search.value.trim().toLowerCase();
    const shown = keys.filter((key) => {
      if (status.value && key.status !== status.value) return false;
      if (!term) return true;
      const names = [key.name, key.id, key.public_key, ...(key.previous_public_keys || []).map((p) => p.public_key)];
      return names.some((n) => String(n || '').toLowerCase().includes(term));
    });
    counter.textContent = `${shown.length} of ${count(keys.length, 'key')}`;
    replace(body, shown.map((key) => h('tr', {},
      h('td', {}, h('a', { href: `#/keys/${key.id}` }, key.name)),
      h('td', {}, h('code', {}, key.id)),
      h('td', {}, h('code', {}, key.public_key)),
      h('td', {}, badge(key.status)),
      h('td', { class: 'num' }, String(key.version)),
      h('td', {}, when(key.updated_at)))));
    if (!shown.length) {
      body.append(h('tr', {}, h('td', { colspan: '6', class: 'empty' }, keys.length ? 'No key matches.' : 'No client keys yet: create the first one.')));
    }
  }
  search.addEventListener('input', draw);
  status.addEventListener('change', draw);

  const create = createKeyForm(ctx);
  const toggle = h('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'create-key' }, 'New key');
  toggle.addEventListener('click', () => {
    const open = create.hidden;
    create.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) create.querySelector('input').focus();
  });

  replace(main,
    h('div', { class: 'title-row' }, h('h1', { tabindex: '-1' }, 'Client keys'), toggle),
    flashed(),
    create,
    h('div', { class: 'toolbar' },
      field('Search by name, id or public key', search),
      field('Status', status),
      counter),
    h('div', { class: 'table-wrap' }, table));
  draw();
  search.focus();
}

function createKeyForm(ctx) {
  const name = h('input', { name: 'name', required: true, maxlength: '500', autocomplete: 'off' });
  const origins = h('textarea', { name: 'origins', rows: '3', spellcheck: 'false' });
  const reason = h('input', { name: 'reason', maxlength: '500', autocomplete: 'off' });
  const region = h('div', {});
  const form = h('form', { class: 'card', id: 'create-key', hidden: true, 'aria-labelledby': 'create-title' },
    h('h2', { id: 'create-title' }, 'Create a client key'),
    h('div', { class: 'grid-2' },
      field('Name', name, 'Shown as the agent\u2019s name until the config sets one.'),
      field('Allowed origins', origins, 'One a line: scheme, host and port, e.g. a customer\u2019s site; wildcards like *.example.com for subdomains.')),
    field('Reason (optional, kept in the history)', reason),
    region,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create key')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), origins: lines(origins.value) };
    if (reason.value.trim()) body.reason = reason.value.trim();
    say(region, 'busy', 'Creating\u2026');
    try {
      const created = await call('POST', '/client-keys', body);
      region.replaceChildren();
      await secretDialog('The new key\u2019s secret key', created.secret_key,
        `Public key (for the customer\u2019s pages): ${created.public_key}`);
      flash = { kind: 'ok', text: `Created ${body.name} (${created.id}).` };
      ctx.navigate(`#/keys/${created.id}`);
    } catch (error) {
      say(region, 'error', problem(error));
    }
  });
  return form;
}

// ---------------------------------------------------------------- one key

function keyHeader(key, active) {
  const tab = (label, href, current) => h('a', { href, class: 'tab', 'aria-current': current ? 'page' : false }, label);
  return [
    h('p', { class: 'crumbs' }, h('a', { href: '#/keys' }, 'Client keys'), ' / ', key.name),
    h('div', { class: 'title-row' },
      h('h1', { tabindex: '-1' }, key.name, ' ', badge(key.status)),
      h('span', { class: 'version' }, `version ${key.version}`)),
    h('dl', { class: 'facts' },
      fact('Client key id', h('code', {}, key.id)),
      fact('Public key', h('code', { 'data-field': 'public-key' }, key.public_key)),
      fact('Secret key', h('code', {}, `\u2026${key.secret_key_last_four}`)),
      fact('Created', when(key.created_at)),
      fact('Updated', when(key.updated_at))),
    h('nav', { class: 'tabs', 'aria-label': 'Key' },
      tab('Manage', `#/keys/${key.id}`, active === 'manage'),
      tab('History', `#/keys/${key.id}/history`, active === 'history')),
  ];
}

function fact(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

/** Origins, policy, limits, grace periods and revocations of a state, read-only. */
function stateDetails(key) {
  const policy = key.token_policy || {};
  const limits = policy.limits || {};
  const previous = [
    ...(key.previous_public_keys || []).map((p) => `public ${p.public_key} until ${when(p.valid_until)}`),
    ...(key.previous_secret_keys || []).map((p) => `secret \u2026${p.last_four} until ${when(p.valid_until)}`),
  ];
  const revoked = Object.entries(key.user_sessions_revoked_at_or_before || {});
  return h('div', { class: 'details' },
    h('h3', {}, 'Allowed origins'),
    key.origins.length
      ? h('ul', { class: 'origins', 'data-field': 'origins' }, key.origins.map((o) => h('li', {}, h('code', {}, o))))
      : h('p', { class: 'hint', 'data-field': 'origins' }, 'None: no browser origin is allowed.'),
    h('h3', {}, 'Token policy'),
    h('dl', { class: 'facts compact', 'data-field': 'policy' },
      fact('Guests', policy.guests_allowed ? 'allowed' : 'not allowed'),
      fact('Visitor token', duration(policy.visitor_token_ttl_seconds)),
      fact('Session', duration(policy.session_ttl_seconds)),
      fact('Refresh', duration(policy.refresh_ttl_seconds)),
      fact('Refresh at most', duration(policy.refresh_absolute_ttl_seconds))),
    h('h3', {}, 'Rate limits (per minute)'),
    h('dl', { class: 'facts compact' },
      fact('Guests per IP', String(limits.guest_per_ip_per_minute ?? '–')),
      fact('Guests per key', String(limits.guest_per_key_per_minute ?? '–')),
      fact('User tokens per key', String(limits.user_token_per_key_per_minute ?? '–'))),
    h('h3', {}, 'Previous keys in their grace period'),
    previous.length ? h('ul', {}, previous.map((p) => h('li', {}, p))) : h('p', { class: 'hint' }, 'None.'),
    h('h3', {}, 'Revoked sessions'),
    h('p', {}, key.sessions_revoked_at_or_before
      ? `Every token issued at or before ${whenSeconds(key.sessions_revoked_at_or_before)}.`
      : 'No key-wide revocation.'),
    revoked.length ? h('ul', {}, revoked.map(([user, at]) => h('li', {}, `user ${user}: at or before ${whenSeconds(at)}`))) : null);
}

export async function keyView(main, id, ctx) {
  replace(main, h('p', { class: 'hint' }, 'Loading the key\u2026'));
  let key;
  try {
    key = await call('GET', `/client-keys/${encodeURIComponent(id)}`);
  } catch (error) {
    failure(main, 'Client key', error);
    return;
  }
  const preview = createPreview('Live preview of the widget');
  const previewState = h('p', { class: 'hint', 'aria-live': 'polite' }, 'As saved.');
  preview.update(key.config, key.name);

  /** Runs one command; `command` is the body without reason and expected_version. */
  async function run(command, reason, region, confirm) {
    if (confirm && !(await confirmDialog(confirm.title, confirm.body, confirm.action))) {
      say(region, 'ok', 'Cancelled: nothing was sent.');
      return;
    }
    const body = { ...command, expected_version: key.version };
    if (reason) body.reason = reason;
    say(region, 'busy', 'Sending\u2026');
    try {
      const result = await call('POST', `/client-keys/${encodeURIComponent(key.id)}/commands`, body);
      if (result.secret_key) {
        await secretDialog('The new secret key', result.secret_key,
          `The previous secret key keeps working until ${when(result.previous_valid_until)}.`);
      }
      flash = result.event
        ? { kind: 'ok', text: `${title(result.event)}: now version ${result.version}.${result.public_key ? ` New public key ${result.public_key}; the previous one works until ${when(result.previous_valid_until)}.` : ''}` }
        : { kind: 'ok', text: `Nothing to change: the key already was so (still version ${result.version}).` };
      ctx.reload();
    } catch (error) {
      say(region, 'error', problem(error));
    }
  }

  /** A card with the command's own fields, a reason and a submit button. */
  function commandCard({ heading, intro, fields = [], button, danger = false, build, confirm }) {
    const reason = h('input', { name: 'reason', maxlength: '500', autocomplete: 'off' });
    const region = h('div', {});
    const titleId = `cmd-${heading.toLowerCase().replace(/[^a-z]+/g, '-')}`;
    const form = h('form', { class: 'card command', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, heading),
      intro ? h('p', { class: 'hint' }, intro) : null,
      fields,
      field('Reason (optional, kept in the history)', reason),
      region,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: danger ? 'danger' : '' }, button)));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      let command;
      try {
        command = build();
      } catch (error) {
        say(region, 'error', error.message);
        return;
      }
      const buttonElement = form.querySelector('button[type=submit]');
      buttonElement.disabled = true;
      try {
        await run(command, reason.value.trim(), region, typeof confirm === 'function' ? confirm() : confirm);
      } finally {
        buttonElement.disabled = false;
      }
    });
    return form;
  }

  // Origins
  const origins = h('textarea', { name: 'origins', rows: String(Math.max(3, key.origins.length + 1)), spellcheck: 'false', value: key.origins.join('\n') });
  const originsCard = commandCard({
    heading: 'Allowed origins',
    intro: 'Replaces the allowlist. One origin a line; the service refuses an invalid entry and names it.',
    fields: [field('Origins', origins)],
    button: 'Change origins',
    build: () => ({ type: 'change_origins', origins: lines(origins.value) }),
  });

  // Config, with the preview following every keystroke before it is saved.
  const c = key.config;
  const inputs = {
    title: h('input', { name: 'title', maxlength: '500', value: c.copy.title }),
    greeting: h('input', { name: 'greeting', maxlength: '500', value: c.copy.greeting }),
    input_placeholder: h('input', { name: 'input_placeholder', maxlength: '500', value: c.copy.input_placeholder }),
    offline_message: h('input', { name: 'offline_message', maxlength: '500', value: c.copy.offline_message }),
    display_name: h('input', { name: 'display_name', maxlength: '500', value: c.agent.display_name || '', placeholder: key.name }),
    avatar_url: h('input', { name: 'avatar_url', type: 'url', value: c.agent.avatar_url || '', placeholder: 'none' }),
    locale: h('input', { name: 'locale', value: c.locale, maxlength: '35' }),
    launcher_position: h('select', { name: 'launcher_position' },
      h('option', { value: 'bottom-right' }, 'Bottom right'), h('option', { value: 'bottom-left' }, 'Bottom left')),
  };
  inputs.launcher_position.value = c.branding.launcher_position;
  const colours = {};
  const colourFields = ['primary_color', 'background_color', 'text_color'].map((name) => {
    const text = h('input', { name, value: c.branding[name], maxlength: '7', pattern: '#[0-9A-Fa-f]{6}', spellcheck: 'false', class: 'hex' });
    const picker = h('input', { type: 'color', value: c.branding[name].toLowerCase(), 'aria-label': `${name.replace('_', ' ')} picker`, tabindex: '-1' });
    picker.addEventListener('input', () => { text.value = picker.value.toUpperCase(); text.dispatchEvent(new Event('input', { bubbles: true })); });
    text.addEventListener('input', () => { if (/^#[0-9A-Fa-f]{6}$/.test(text.value)) picker.value = text.value.toLowerCase(); });
    colours[name] = text;
    const label = { primary_color: 'Primary colour', background_color: 'Background colour', text_color: 'Text colour' }[name];
    text.id = `cfg-${name}`;
    return h('div', { class: 'field' }, h('label', { for: text.id }, label), h('div', { class: 'colour' }, picker, text));
  });
  function configFromForm() {
    const value = (input) => input.value.trim();
    return {
      agent: { display_name: value(inputs.display_name) || null, avatar_url: value(inputs.avatar_url) || null },
      branding: {
        primary_color: value(colours.primary_color).toUpperCase(),
        background_color: value(colours.background_color).toUpperCase(),
        text_color: value(colours.text_color).toUpperCase(),
        launcher_position: inputs.launcher_position.value,
      },
      copy: {
        title: inputs.title.value, greeting: inputs.greeting.value,
        input_placeholder: inputs.input_placeholder.value, offline_message: inputs.offline_message.value,
      },
      locale: value(inputs.locale),
    };
  }
  const configCard = commandCard({
    heading: 'Widget config',
    intro: 'The preview follows your edits; visitors see them once saved.',
    fields: [
      h('div', { class: 'grid-2' },
        field('Title', inputs.title), field('Agent name', inputs.display_name, 'Empty: the key\u2019s name.'),
        field('Greeting', inputs.greeting), field('Input placeholder', inputs.input_placeholder),
        field('Offline message', inputs.offline_message), field('Avatar URL (https)', inputs.avatar_url)),
      h('div', { class: 'grid-3' }, colourFields),
      h('div', { class: 'grid-2' }, field('Launcher position', inputs.launcher_position), field('Locale', inputs.locale)),
    ],
    button: 'Save config',
    build: () => ({ type: 'update_config', config: configFromForm() }),
  });
  configCard.addEventListener('input', () => {
    const edited = configFromForm();
    preview.update(edited, key.name);
    const unsaved = changedFields(key.config, edited).length > 0;
    previewState.textContent = unsaved ? 'Unsaved changes: this is how the widget will look once saved.' : 'As saved.';
    previewState.className = unsaved ? 'hint unsaved' : 'hint';
  });
  configCard.addEventListener('change', () => configCard.dispatchEvent(new Event('input')));

  // Token policy and limits
  const p = key.token_policy;
  const number = (name, value, min, max) => h('input', { name, type: 'number', min: String(min), max: String(max), step: '1', required: true, value: String(value) });
  const policyInputs = {
    visitor_token_ttl_seconds: number('visitor_token_ttl_seconds', p.visitor_token_ttl_seconds, 10, 600),
    session_ttl_seconds: number('session_ttl_seconds', p.session_ttl_seconds, 60, 86400),
    refresh_ttl_seconds: number('refresh_ttl_seconds', p.refresh_ttl_seconds, 3600, 7776000),
    refresh_absolute_ttl_seconds: number('refresh_absolute_ttl_seconds', p.refresh_absolute_ttl_seconds, 3600, 31536000),
    guest_per_ip_per_minute: number('guest_per_ip_per_minute', p.limits.guest_per_ip_per_minute, 1, 6000),
    guest_per_key_per_minute: number('guest_per_key_per_minute', p.limits.guest_per_key_per_minute, 1, 600000),
    user_token_per_key_per_minute: number('user_token_per_key_per_minute', p.limits.user_token_per_key_per_minute, 1, 600000),
  };
  const guests = h('input', { type: 'checkbox', name: 'guests_allowed', checked: p.guests_allowed, id: 'policy-guests' });
  const policyCard = commandCard({
    heading: 'Token policy',
    intro: 'Lifetimes in seconds; limits per minute. The service checks the bounds and names a value out of them.',
    fields: [
      h('div', { class: 'check' }, guests, h('label', { for: 'policy-guests' }, 'Guests allowed (anonymous visitors get a session)')),
      h('div', { class: 'grid-2' },
        field('Visitor token (10 s – 10 min)', policyInputs.visitor_token_ttl_seconds),
        field('Session (1 min – 24 h)', policyInputs.session_ttl_seconds),
        field('Refresh (1 h – 90 days)', policyInputs.refresh_ttl_seconds),
        field('Refresh absolute lifetime (1 h – 365 days)', policyInputs.refresh_absolute_ttl_seconds)),
      h('div', { class: 'grid-3' },
        field('Guests per IP per minute', policyInputs.guest_per_ip_per_minute),
        field('Guests per key per minute', policyInputs.guest_per_key_per_minute),
        field('User tokens per key per minute', policyInputs.user_token_per_key_per_minute)),
    ],
    button: 'Set policy',
    build: () => {
      const n = (name) => {
        const raw = policyInputs[name].value.trim();
        if (!/^\d+$/.test(raw)) throw new Error(`${name} must be a whole number of ${name.endsWith('minute') ? 'requests' : 'seconds'}.`);
        return Number(raw);
      };
      return {
        type: 'set_token_policy',
        policy: {
          visitor_token_ttl_seconds: n('visitor_token_ttl_seconds'),
          session_ttl_seconds: n('session_ttl_seconds'),
          refresh_ttl_seconds: n('refresh_ttl_seconds'),
          refresh_absolute_ttl_seconds: n('refresh_absolute_ttl_seconds'),
          guests_allowed: guests.checked,
          limits: {
            guest_per_ip_per_minute: n('guest_per_ip_per_minute'),
            guest_per_key_per_minute: n('guest_per_key_per_minute'),
            user_token_per_key_per_minute: n('user_token_per_key_per_minute'),
          },
        },
      };
    },
  });

  // Keys: rotations with a grace, and ending the graces.
  const grace = (name) => h('input', { name, type: 'number', min: '0', max: '604800', step: '1', required: true, value: '3600' });
  const graceValue = (input) => {
    const raw = input.value.trim();
    if (!/^\d+$/.test(raw)) throw new Error('The grace period must be a whole number of seconds (0 to 604800).');
    return Number(raw);
  };
  const secretGrace = grace('secret_grace');
  const rotateSecret = commandCard({
    heading: 'Rotate the secret key',
    intro: 'A new secret key for the customer\u2019s backend, shown once. The current one keeps working for the grace period.',
    fields: [field('Grace period (seconds, 0 – 604800)', secretGrace)],
    button: 'Rotate secret key',
    danger: true,
    build: () => ({ type: 'rotate_secret_key', grace_seconds: graceValue(secretGrace) }),
    confirm: () => ({ title: 'Rotate the secret key?', body: `The customer\u2019s backend must switch to the new key within ${duration(graceValue(secretGrace))}; after that the current key \u2026${key.secret_key_last_four} is refused.`, action: 'Rotate' }),
  });
  const publicGrace = grace('public_grace');
  const rotatePublic = commandCard({
    heading: 'Rotate the public key',
    intro: 'A new public key for the customer\u2019s pages. The current one keeps working for the grace period.',
    fields: [field('Grace period (seconds, 0 – 604800)', publicGrace)],
    button: 'Rotate public key',
    danger: true,
    build: () => ({ type: 'rotate_public_key', grace_seconds: graceValue(publicGrace) }),
    confirm: () => ({ title: 'Rotate the public key?', body: `Pages still embedding ${key.public_key} stop working after ${duration(graceValue(publicGrace))}.`, action: 'Rotate' }),
  });
  const expire = commandCard({
    heading: 'Expire previous keys',
    intro: 'Ends every grace period now: only the current public and secret keys work.',
    button: 'Expire previous keys',
    danger: true,
    build: () => ({ type: 'expire_previous_keys' }),
    confirm: { title: 'Expire the previous keys now?', body: 'Every page or backend still using a previous key is refused from now on.', action: 'Expire' },
  });
  const userId = h('input', { name: 'user_id', maxlength: '500', autocomplete: 'off', placeholder: 'every visitor' });
  const revoke = commandCard({
    heading: 'Revoke sessions',
    intro: 'Tokens issued until now can no longer be refreshed or exchanged: their visitors start over.',
    fields: [field('User id (optional: only this user\u2019s sessions)', userId)],
    button: 'Revoke sessions',
    danger: true,
    build: () => (userId.value.trim() ? { type: 'revoke_sessions', user_id: userId.value.trim() } : { type: 'revoke_sessions' }),
    confirm: () => ({ title: 'Revoke sessions?', body: userId.value.trim() ? `Every session of user ${userId.value.trim()} ends at its next refresh.` : 'Every visitor of this key loses their session at its next refresh.', action: 'Revoke' }),
  });
  const disabled = key.status === 'disabled';
  const statusCard = commandCard({
    heading: disabled ? 'Enable the key' : 'Disable the key',
    intro: disabled ? 'The widget works again on the allowed origins.' : 'The widget stops working everywhere: config, guest sessions and refreshes are refused.',
    button: disabled ? 'Enable key' : 'Disable key',
    danger: !disabled,
    build: () => ({ type: disabled ? 'enable' : 'disable' }),
    confirm: disabled ? null : { title: 'Disable this key?', body: `The widget stops working on ${key.origins.length} origin${key.origins.length === 1 ? '' : 's'} until the key is enabled again.`, action: 'Disable' },
  });

  replace(main,
    keyHeader(key, 'manage'),
    flashed(),
    h('div', { class: 'split' },
      h('aside', { class: 'side', 'aria-label': 'Preview and current state' },
        h('section', { class: 'card' }, h('h2', {}, 'Preview'), preview.element, previewState),
        h('section', { class: 'card' }, h('h2', {}, 'Current state'), stateDetails(key))),
      h('div', { class: 'stack' },
        originsCard, configCard, policyCard,
        h('h2', { class: 'group' }, 'Keys and access'),
        rotateSecret, rotatePublic, expire, revoke, statusCard)));
}

// ---------------------------------------------------------------- history

function renderChange(change) {
  if (change.kind === 'list') {
    const items = [
      ...change.added.map((o) => h('li', { class: 'added' }, h('span', { class: 'sign', 'aria-label': 'added' }, '+'), h('code', {}, o))),
      ...change.removed.map((o) => h('li', { class: 'removed' }, h('span', { class: 'sign', 'aria-label': 'removed' }, '\u2212'), h('code', {}, o))),
    ];
    return h('div', { class: 'change' }, h('span', { class: 'change-label' }, change.label),
      items.length ? h('ul', { class: 'diff' }, items) : h('span', { class: 'hint' }, 'no change'));
  }
  if (change.kind === 'fields') {
    const show = (v) => (v === undefined ? '(none)' : v === null ? '(default)' : String(v));
    const list = h('ul', { class: 'diff' }, change.fields.map((f) => h('li', { class: 'changed' },
      h('code', { class: 'field-name' }, f.field), ' ',
      f.from === undefined ? null : [h('del', {}, show(f.from)), ' \u2192 '],
      h('ins', {}, show(f.to)))));
    let shown = list;
    if (!change.fields.length) shown = h('span', { class: 'hint' }, 'no change');
    else if (change.folded) shown = h('details', {}, h('summary', {}, `${change.fields.length} fields`), list);
    return h('div', { class: 'change' }, h('span', { class: 'change-label' }, change.label), shown);
  }
  return h('div', { class: 'change' }, h('span', { class: 'change-label' }, change.label), h('span', {}, change.text));
}

export async function historyView(main, id) {
  replace(main, h('p', { class: 'hint' }, 'Loading the history\u2026'));
  let key;
  try {
    key = await call('GET', `/client-keys/${encodeURIComponent(id)}`);
  } catch (error) {
    failure(main, 'History', error);
    return;
  }
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Events, oldest first' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more events');
  const timelineRegion = h('div', {});
  const statePanel = h('section', { class: 'card', 'aria-labelledby': 'then-title', 'aria-live': 'polite' });
  let running = {};
  let after = 0;
  let selected = null;

  async function showState(query, heading, item) {
    if (selected) selected.removeAttribute('aria-current');
    selected = item || null;
    if (selected) selected.setAttribute('aria-current', 'true');
    const region = h('div', {});
    say(region, 'busy', 'Replaying the history\u2026');
    replace(statePanel, h('h2', { id: 'then-title' }, heading), region);
    try {
      const state = await call('GET', `/client-keys/${encodeURIComponent(key.id)}/state?${query}`);
      const preview = createPreview('The widget as it was then');
      preview.update(state.config, state.name);
      replace(statePanel,
        h('h2', { id: 'then-title' }, heading),
        h('p', { class: 'then-meta', 'data-field': 'then' }, badge(state.status), ` version ${state.version} \u00b7 updated ${when(state.updated_at)} \u00b7 public key `, h('code', {}, state.public_key)),
        preview.element,
        stateDetails(state));
    } catch (error) {
      say(region, 'error', problem(error));
    }
  }

  async function loadPage() {
    more.disabled = true;
    try {
      const page = await call('GET', `/client-keys/${encodeURIComponent(key.id)}/events?after=${after}&limit=100`);
      for (const event of page.events) {
        const { state, changes } = step(running, event);
        running = state;
        const m = event.metadata || {};
        const show = h('button', { type: 'button', class: 'link' }, `State after #${event.sequence}`);
        const item = h('li', { class: `event ${tone(event.type)}`, 'data-sequence': String(event.sequence) },
          h('div', { class: 'event-head' },
            h('span', { class: 'seq' }, `#${event.sequence}`),
            h('span', { class: 'event-title' }, title(event.type)),
            h('code', { class: 'event-type' }, event.type)),
          h('p', { class: 'event-meta' },
            h('time', { datetime: m.at }, when(m.at)), ' \u00b7 by ', h('span', { class: 'actor' }, m.actor || 'unknown')),
          h('p', { class: m.reason ? 'reason' : 'reason none' }, m.reason ? `\u201c${m.reason}\u201d` : 'No reason given.'),
          h('div', { class: 'changes' }, changes.map(renderChange)),
          show);
        show.addEventListener('click', () => showState(`at_sequence=${event.sequence}`, `State after event #${event.sequence}`, item));
        timeline.append(item);
      }
      after = page.events.length ? page.events[page.events.length - 1].sequence : after;
      more.hidden = page.next_after === null || page.next_after === undefined;
      timelineRegion.replaceChildren();
    } catch (error) {
      say(timelineRegion, 'error', problem(error));
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener('click', loadPage);

  const moment = h('input', { type: 'datetime-local', step: '1', name: 'moment', required: true });
  const momentForm = h('form', { class: 'inline-form', 'aria-label': 'State at a moment' },
    field('Moment (UTC)', moment), h('button', { type: 'submit', class: 'secondary' }, 'Show state then'));
  momentForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = moment.value.length === 16 ? `${moment.value}:00` : moment.value;
    showState(`at=${encodeURIComponent(`${value}Z`)}`, `State at ${value.replace('T', ' ')} UTC`, null);
  });
  replace(statePanel, h('h2', { id: 'then-title' }, 'State then'),
    h('p', { class: 'hint' }, 'Pick an event on the timeline, or a moment, to see the key as it stood then: origins, policy and the widget, replayed from the history.'));

  replace(main,
    keyHeader(key, 'history'),
    h('div', { class: 'split history' },
      h('section', { 'aria-labelledby': 'timeline-title' },
        h('h2', { id: 'timeline-title' }, 'Timeline'),
        timeline, timelineRegion, more),
      h('aside', { class: 'side', 'aria-label': 'State then and integrity' },
        statePanel,
        h('section', { class: 'card' }, h('h2', {}, 'Or pick a moment'), momentForm),
        integrityCards())));
  await loadPage();
}

// ---------------------------------------------------------------- audit checks

function integrityCards() {
  const chainRegion = h('div', {});
  const chainButton = h('button', { type: 'button', class: 'secondary' }, 'Check the chain');
  chainButton.addEventListener('click', async () => {
    say(chainRegion, 'busy', 'Checking every event\u2019s link\u2026');
    try {
      const report = await call('GET', '/audit/verify');
      if (report.intact) {
        say(chainRegion, 'ok', h('strong', {}, 'Intact. '), `${report.events === 1 ? 'The 1 event matches its chain link' : `All ${report.events} events match their chain links`}`,
          report.legacy_events ? ` (${report.legacy_events} written before the chain existed).` : '.');
      } else {
        const b = report.broken || {};
        say(chainRegion, 'error', h('strong', {}, 'Broken. '), `${b.message || b.problem} \u2014 key ${b.client_key_id}, event ${b.sequence} (${b.problem}); ${count(report.events, 'event')} checked before it.`);
      }
    } catch (error) {
      say(chainRegion, 'error', problem(error));
    }
  });

  const checkpointText = h('textarea', { name: 'checkpoint', rows: '4', spellcheck: 'false', placeholder: '{"format": "widget-auth-checkpoint/1", \u2026}' });
  const file = h('input', { type: 'file', accept: 'application/json,.json', name: 'checkpoint_file' });
  file.addEventListener('change', async () => {
    if (file.files && file.files[0]) checkpointText.value = await file.files[0].text();
  });
  const checkpointRegion = h('div', {});
  const checkpointForm = h('form', { 'aria-label': 'Checkpoint check' },
    field('Checkpoint JSON', checkpointText, 'Paste one kept outside the database, or choose its file.'),
    field('Or a file', file),
    checkpointRegion,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'secondary' }, 'Check against the checkpoint')));
  checkpointForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = checkpointText.value.trim();
    if (!text) { say(checkpointRegion, 'error', 'Paste a checkpoint or choose its file first.'); return; }
    say(checkpointRegion, 'busy', 'Checking the store against the checkpoint\u2026');
    try {
      const report = await call('POST', '/audit/verify', text, { raw: true });
      const summary = `Checkpoint of ${when(report.checkpoint_at)}: ${count(report.keys, 'key')}, ${count(report.events, 'event')}; signature ${report.signature.replace('_', ' ')}${report.new_keys ? `; ${count(report.new_keys, 'key')} created since` : ''}.`;
      if (report.intact) {
        say(checkpointRegion, 'ok', h('strong', {}, 'Intact. '), `The store still extends it. ${summary}`);
      } else {
        say(checkpointRegion, 'error', h('strong', {}, 'Not intact. '), summary,
          h('ul', { class: 'problems' }, report.problems.map((p) => h('li', {},
            p.client_key ? [h('code', {}, p.client_key), p.sequence ? ` event ${p.sequence}` : '', ': '] : 'The checkpoint: ',
            p.message, ` (${p.problem})`))));
      }
    } catch (error) {
      say(checkpointRegion, 'error', problem(error));
    }
  });

  const takeRegion = h('div', {});
  const take = h('button', { type: 'button', class: 'secondary' }, 'Take a checkpoint');
  take.addEventListener('click', async () => {
    try {
      const checkpoint = await call('GET', '/audit/checkpoint');
      const text = JSON.stringify(checkpoint, null, 2);
      const link = h('a', { href: URL.createObjectURL(new Blob([text], { type: 'application/json' })), download: `checkpoint-${checkpoint.at}.json` }, 'Download it');
      say(takeRegion, 'ok', `Signed checkpoint of ${when(checkpoint.at)} (${count(checkpoint.keys, 'key')}, ${count(checkpoint.events, 'event')}). `, link, ' and keep it outside the database.');
    } catch (error) {
      say(takeRegion, 'error', problem(error));
    }
  });

  return h('section', { class: 'card', 'aria-labelledby': 'integrity-title' },
    h('h2', { id: 'integrity-title' }, 'Integrity'),
    h('p', { class: 'hint' }, 'The chain check recomputes every event\u2019s link in the whole store; a checkpoint check also proves no history was cut short or rewritten since the checkpoint.'),
    h('div', { class: 'actions start' }, chainButton, take),
    chainRegion, takeRegion,
    h('h3', {}, 'Checkpoint check'),
    checkpointForm);
}

export function auditView(main) {
  replace(main, h('h1', { tabindex: '-1' }, 'Audit'), h('div', { class: 'narrow-wide' }, integrityCards()));
}
