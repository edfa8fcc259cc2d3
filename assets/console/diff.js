// What each event changed, for the timeline: a running state is folded from the events
// in order (the payloads carry whole origin lists, configs and policies), and each event
// is described against the state before it. The service's own `/state` is what the
// "state then" panel shows; this fold only says what differs between neighbours.

import { when, whenSeconds } from './dom.js';

/** `{a: {b: 1}}` → `{'a.b': 1}`. */
export function flatten(value, prefix = '', out = {}) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

/** Fields whose value differs: `[{field, from, to}]`, in the newer object's order. */
export function changedFields(before, after) {
  const old = flatten(before || {});
  const now = flatten(after || {});
  const fields = [...new Set([...Object.keys(now), ...Object.keys(old)])];
  return fields
    .filter((field) => JSON.stringify(old[field]) !== JSON.stringify(now[field]))
    .map((field) => ({ field, from: old[field], to: now[field] }));
}

/** `{added, removed}` between two lists. */
export function listChange(before, after) {
  const old = new Set(before || []);
  const now = new Set(after || []);
  return {
    added: [...now].filter((item) => !old.has(item)),
    removed: [...old].filter((item) => !now.has(item)),
  };
}

const TITLES = {
  ClientKeyCreated: 'Key created',
  OriginsChanged: 'Origins changed',
  ConfigUpdated: 'Widget config updated',
  TokenPolicySet: 'Token policy set',
  SecretKeyRotated: 'Secret key rotated',
  PublicKeyRotated: 'Public key rotated',
  PreviousKeysExpired: 'Previous keys expired',
  SessionsRevoked: 'Sessions revoked',
  ClientKeyDisabled: 'Key disabled',
  ClientKeyEnabled: 'Key enabled',
};

export function title(type) { return TITLES[type] || type; }

/** Event types an auditor should notice at a glance. */
export function tone(type) {
  if (['SecretKeyRotated', 'PublicKeyRotated', 'PreviousKeysExpired', 'SessionsRevoked', 'ClientKeyDisabled'].includes(type)) return 'danger';
  if (type === 'ClientKeyCreated' || type === 'ClientKeyEnabled') return 'good';
  return 'neutral';
}

/**
 * One event against the state before it → `{state, changes}`, where `state` is the state
 * after it and `changes` a list of
 *   `{kind: 'list', label, added, removed}`,
 *   `{kind: 'fields', label, fields: [{field, from, to}]}`, or
 *   `{kind: 'note', label, text}`.
 */
export function step(before, event) {
  const p = event.payload || {};
  const state = { ...before };
  const changes = [];
  switch (event.type) {
    case 'ClientKeyCreated':
      Object.assign(state, {
        name: p.name, origins: p.origins, config: p.config, policy: p.token_policy,
        publicKey: p.public_key, secretLastFour: p.secret_key && p.secret_key.last_four, status: 'active',
      });
      changes.push({ kind: 'note', label: 'Name', text: p.name });
      changes.push({ kind: 'list', label: 'Origins', added: p.origins || [], removed: [] });
      changes.push({ kind: 'note', label: 'Public key', text: p.public_key });
      if (p.secret_key) changes.push({ kind: 'note', label: 'Secret key', text: `…${p.secret_key.last_four}` });
      // Every field is new here: shown folded, so the timeline stays readable.
      changes.push({ kind: 'fields', label: 'Config', folded: true, fields: changedFields({}, p.config) });
      changes.push({ kind: 'fields', label: 'Policy', folded: true, fields: changedFields({}, p.token_policy) });
      break;
    case 'OriginsChanged': {
      const { added, removed } = listChange(before.origins, p.origins);
      state.origins = p.origins;
      changes.push({ kind: 'list', label: 'Origins', added, removed });
      break;
    }
    case 'ConfigUpdated':
      state.config = p.config;
      changes.push({ kind: 'fields', label: 'Config', fields: changedFields(before.config, p.config) });
      break;
    case 'TokenPolicySet':
      state.policy = p.policy;
      changes.push({ kind: 'fields', label: 'Policy', fields: changedFields(before.policy, p.policy) });
      break;
    case 'SecretKeyRotated': {
      const old = (p.previous && p.previous.last_four) || before.secretLastFour;
      state.secretLastFour = p.secret_key && p.secret_key.last_four;
      changes.push({ kind: 'fields', label: 'Secret key', fields: [{ field: 'secret key', from: old ? `…${old}` : undefined, to: `…${state.secretLastFour}` }] });
      changes.push({ kind: 'note', label: 'Grace', text: `the old one works until ${when(p.previous_valid_until)}` });
      break;
    }
    case 'PublicKeyRotated':
      state.publicKey = p.public_key;
      changes.push({ kind: 'fields', label: 'Public key', fields: [{ field: 'public key', from: p.previous || before.publicKey, to: p.public_key }] });
      changes.push({ kind: 'note', label: 'Grace', text: `the old one works until ${when(p.previous_valid_until)}` });
      break;
    case 'PreviousKeysExpired':
      changes.push({ kind: 'note', label: 'Keys', text: 'every previous public and secret key stopped working' });
      break;
    case 'SessionsRevoked': {
      const whose = p.user_id ? `of user ${p.user_id}` : 'of every visitor';
      const at = p.issued_at_or_before === undefined ? '' : ` issued at or before ${whenSeconds(p.issued_at_or_before)}`;
      changes.push({ kind: 'note', label: 'Sessions', text: `tokens ${whose}${at} can no longer be refreshed or exchanged` });
      break;
    }
    case 'ClientKeyDisabled':
    case 'ClientKeyEnabled': {
      const status = event.type === 'ClientKeyDisabled' ? 'disabled' : 'active';
      changes.push({ kind: 'fields', label: 'Status', fields: [{ field: 'status', from: before.status, to: status }] });
      state.status = status;
      break;
    }
    default:
      changes.push({ kind: 'note', label: 'Payload', text: JSON.stringify(p) });
  }
  return { state, changes };
}
