// The widget as a visitor sees it, drawn from a config (the same parts web/demo.html
// draws: colours, title, greeting, agent name and avatar initial, input placeholder,
// launcher position) on a stand-in for the customer's page. Colours are set through the
// CSSOM (allowed by the page's style-src 'self'); text goes in as text.

import { h, replace } from './dom.js';

const BUBBLE = 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z';

function launcherIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', BUBBLE);
  svg.append(path);
  return svg;
}

/** An empty preview; `update(config, keyName)` draws into it. */
export function createPreview(label = 'Widget preview') {
  const avatar = h('div', { class: 'wp-avatar', 'aria-hidden': 'true' });
  const title = h('div', { class: 'wp-title', 'data-preview': 'title' });
  const agent = h('div', { class: 'wp-agent', 'data-preview': 'agent' });
  const greeting = h('div', { class: 'wp-bubble', 'data-preview': 'greeting' });
  const placeholder = h('div', { class: 'wp-composer', 'data-preview': 'placeholder' });
  const panel = h('div', { class: 'wp-panel' },
    h('div', { class: 'wp-head' }, avatar, h('div', {}, title, agent)),
    h('div', { class: 'wp-messages' }, greeting),
    placeholder);
  const launcher = h('div', { class: 'wp-launcher', title: 'Launcher' }, launcherIcon());
  const widget = h('div', { class: 'wp-widget bottom-right', 'data-preview': 'widget' }, panel, launcher);
  const note = h('p', { class: 'hint wp-note' });
  const page = h('div', { class: 'wp-page' },
    h('div', { class: 'wp-site' }, h('span', {}), h('span', {}), h('span', {})),
    widget);
  const root = h('figure', { class: 'preview', 'aria-label': label }, page,
    h('figcaption', {}, note));

  function update(config, keyName) {
    const branding = config.branding || {};
    const copy = config.copy || {};
    const agentConfig = config.agent || {};
    // Without a display name the service shows the key's name (API.md, create).
    const displayName = agentConfig.display_name || keyName || '';
    widget.style.setProperty('--wp-primary', branding.primary_color || '#2563EB');
    widget.style.setProperty('--wp-background', branding.background_color || '#FFFFFF');
    widget.style.setProperty('--wp-text', branding.text_color || '#111827');
    widget.dataset.primary = (branding.primary_color || '').toUpperCase();
    widget.className = `wp-widget ${branding.launcher_position === 'bottom-left' ? 'bottom-left' : 'bottom-right'}`;
    title.textContent = copy.title || '';
    agent.textContent = displayName;
    greeting.textContent = copy.greeting || '';
    placeholder.textContent = copy.input_placeholder || '';
    avatar.textContent = (displayName || '?').charAt(0).toUpperCase();
    const position = branding.launcher_position === 'bottom-left' ? 'bottom left' : 'bottom right';
    replace(note,
      `Launcher ${position}, locale ${config.locale || 'en'}.`,
      agentConfig.avatar_url
        ? ` Avatar ${agentConfig.avatar_url} is not loaded here (the console fetches nothing from other hosts): its initial stands in.`
        : '');
  }

  return { element: root, update };
}
