// Building the page's DOM. Every value from the API goes in as text, never as HTML: names,
// origins and config copy are whatever an operator typed.

/**
 * `h('p', {class: 'note'}, 'text', child)`: an element with attributes and children.
 * Attributes named `on…` are listeners; `false`, `null` and `undefined` leave one out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'value') {
      element.value = value;
    } else if (name === 'checked') {
      element.checked = Boolean(value);
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces everything in `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let ids = 0;
/** A fresh id for tying a label to its input. */
export function uid(prefix = 'f') {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled input; `input` is an element made with `h`. */
export function field(label, input, hint) {
  if (!input.id) input.id = uid();
  const hintId = hint ? uid('hint') : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' },
    h('label', { for: input.id }, label),
    input,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

/** `2026-12-02T04:47:36Z` → `2026-12-02 04:47:36 UTC`: auditors compare times across zones. */
export function when(rfc3339) {
  if (!rfc3339) return '–';
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return String(rfc3339);
  return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** Unix seconds → the same form as `when`. */
export function whenSeconds(seconds) {
  return seconds === null || seconds === undefined ? '–' : when(new Date(seconds * 1000).toISOString());
}

/** A duration in seconds as people say it (`900` → `15 min`). */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const units = [['d', 86400], ['h', 3600], ['min', 60], ['s', 1]];
  for (const [unit, size] of units) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size} ${unit}`;
  }
  return `${seconds} s`;
}

/** A status message in a live region: `kind` is `ok`, `error` or `busy`. */
export function say(region, kind, ...text) {
  region.className = `message ${kind}`;
  region.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  replace(region, ...text);
}

/** Asks before a destructive command; resolves to true only on an explicit yes. */
export function confirmDialog(title, body, action) {
  return new Promise((resolve) => {
    const yes = h('button', { type: 'button', class: 'danger' }, action);
    const no = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': uid('dlg') },
      h('h2', {}, title), h('p', {}, body), h('div', { class: 'actions' }, no, yes));
    dialog.querySelector('h2').id = dialog.getAttribute('aria-labelledby');
    let answer = false;
    yes.addEventListener('click', () => { answer = true; dialog.close(); });
    no.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

/**
 * Shows a new secret key once. The text lives only in this dialog: closing it removes
 * the element, and nothing else on the page (or in storage) keeps the key.
 */
export function secretDialog(label, secret, note) {
  return new Promise((resolve) => {
    const value = h('code', { class: 'secret', 'data-secret': '' }, secret);
    const copied = h('span', { class: 'hint', role: 'status' });
    const copy = h('button', { type: 'button', class: 'secondary' }, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copied.textContent = 'Copied.';
      } catch {
        copied.textContent = 'Copying was refused by the browser: select the key and copy it.';
      }
    });
    const done = h('button', { type: 'button' }, 'I have stored it');
    const titleId = uid('dlg');
    const dialog = h('dialog', { class: 'dialog secret-dialog', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, label),
      h('p', { class: 'warning' },
        h('strong', {}, 'Shown once. '),
        'Store it now in the customer\u2019s backend secrets: the service keeps only its hash and '
        + 'cannot show it again.'),
      note ? h('p', {}, note) : null,
      h('div', { class: 'secret-row' }, value, copy),
      copied,
      h('div', { class: 'actions' }, done));
    done.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => { dialog.remove(); resolve(); });
    document.body.append(dialog);
    dialog.showModal();
    done.focus();
  });
}
