// The console's only way out: `fetch` to this listener's `/internal/v1`, with the admin
// token in the Authorization header. The token is kept in this module and, so that a
// reload of the tab keeps it, in sessionStorage (tab-scoped, gone when the tab closes);
// never in a URL, never logged.

const STORAGE_KEY = 'widgetAuthConsole:token';

let token = null;
let onRefused = () => {};

/**
 * Takes `#token=…` out of the address (replacing the history entry, so neither the
 * address bar nor Back shows it) and keeps it. Returns what is left of the fragment.
 */
export function takeTokenFromFragment() {
  const fragment = location.hash.replace(/^#/, '');
  if (!fragment.startsWith('token=')) return fragment;
  const value = decodeURIComponent(fragment.slice('token='.length).split('&')[0]);
  history.replaceState(null, '', location.pathname + location.search);
  if (value) setToken(value);
  return '';
}

export function setToken(value) {
  token = value.trim();
  try { sessionStorage.setItem(STORAGE_KEY, token); } catch { /* storage off: memory only */ }
}

export function loadToken() {
  if (token) return token;
  try { token = sessionStorage.getItem(STORAGE_KEY); } catch { token = null; }
  return token;
}

export function forgetToken() {
  token = null;
  try { sessionStorage.removeItem(STORAGE_KEY); } catch { /* nothing kept */ }
}

/** Called when the service refuses the token (401), so the page can ask for another. */
export function whenRefused(callback) { onRefused = callback; }

/** An answer other than 2xx, with the service's own sentence. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** What people read: the service's sentence, and the status for those who know them. */
  get plain() {
    if (this.status === 0) return this.message;
    return `${this.message} (HTTP ${this.status}${this.code ? `, ${this.code}` : ''})`;
  }
}

/** `call('GET', '/client-keys')` → the parsed JSON body; throws `ApiError`. */
export async function call(method, path, body, { raw = false } = {}) {
  const headers = { authorization: `Bearer ${loadToken() || ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/internal/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : (raw ? body : JSON.stringify(body)),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, null, `The service did not answer (${error.message}). Is it running?`);
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    const message = json && typeof json.message === 'string' ? json.message : (text || response.statusText);
    const error = new ApiError(response.status, json && json.error, message);
    if (response.status === 401) onRefused(error);
    throw error;
  }
  return json;
}

/** Every page of a paged listing, following `next_after`. */
export async function allPages(path, field, limit = 1000, onPage = () => {}) {
  const items = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after !== null) query.set('after', String(after));
    const page = await call('GET', `${path}?${query}`);
    items.push(...page[field]);
    onPage(items.length);
    if (page.next_after === null || page.next_after === undefined) return items;
    after = page.next_after;
  }
}
