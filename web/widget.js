/*! widget-auth widget.js: the widget's config and session for a customer's page.
 * <script src="<service>/widget/v1/widget.js" data-client-key="pk_live_..."></script>
 * defines window.widgetAuth = {ready, token(), login(visitorToken), logout()}.
 * Plain JS, no dependencies, served as committed (no build step). It keeps the refresh
 * token in localStorage and sends it only to /refresh, always in a request body; the
 * session token lives in memory only. It never logs. */
(function () {
  'use strict';
  var script = document.currentScript;
  var clientKey = script && script.getAttribute('data-client-key');
  // The API is wherever this script came from.
  var base = script ? new URL(script.src, location.href).origin : '';
  var api = base + '/api/v1/widget/';
  var storeKey = 'widgetAuth:' + clientKey + ':refresh_token';
  var session = null; // {token, visitorId, at, ttl}: at and ttl in ms of the page's clock
  var config = null;
  var timer = 0;
  var queue = Promise.resolve();

  function error(message, props) {
    var e = new Error('widget-auth: ' + message);
    for (var k in props) e[k] = props[k];
    return e;
  }

  function stored() {
    try { return localStorage.getItem(storeKey); } catch (e) { return null; }
  }

  function store(token) {
    try {
      if (token) localStorage.setItem(storeKey, token);
      else localStorage.removeItem(storeKey);
    } catch (e) { /* storage off: the session lasts as long as the page */ }
  }

  // One operation at a time (refresh, login, logout), so two callers never spend the
  // same refresh token or race a login.
  function serial(fn) {
    var p = queue.then(fn);
    queue = p.catch(function () {});
    return p;
  }

  // Bodies go as text/plain JSON: a "simple" request, so no CORS preflight round trip.
  function call(path, body) {
    var init = { credentials: 'omit' };
    if (body) {
      init.method = 'POST';
      init.headers = { 'Content-Type': 'text/plain' };
      init.body = JSON.stringify(body);
    }
    return fetch(api + path, init).then(function (r) {
      if (r.ok) return r.json();
      return r.text().then(function (text) {
        var props = { status: r.status };
        if (r.status === 429) {
          var s = parseInt(r.headers.get('Retry-After'), 10);
          props.retryAfter = s > 0 ? s : null;
        }
        throw error(text || 'HTTP ' + r.status, props);
      });
    }, function () {
      // A refusal without CORS headers (a 403 for this origin) reaches the page exactly
      // like a network failure. A no-cors request tells them apart: it succeeds whenever
      // the service answers at all.
      return fetch(base + '/healthz', { mode: 'no-cors', cache: 'no-store', credentials: 'omit' })
        .then(function () {
          throw error('the service refused this request without saying why to the page; ' +
            'the usual cause: this page\'s origin ' + location.origin +
            ' is not in the allowed origins of client key ' + clientKey, { status: 0, refused: true });
        }, function () {
          throw error('could not reach ' + base, { status: 0, refused: false });
        });
    });
  }

  function subject(jwt) {
    var b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    var bytes = Uint8Array.from(atob(b64), function (c) { return c.charCodeAt(0); });
    return JSON.parse(new TextDecoder().decode(bytes)).sub;
  }

  function remaining(s) { return s.at + s.ttl - Date.now(); }

  // Refresh a quarter of the lifetime ahead (a minute at most): a 15 min session renews
  // with a minute to spare, a 60 s one at 45 s.
  function ahead(s) { return Math.min(60000, s.ttl / 4); }

  function fresh() { return session && remaining(session) > ahead(session); }

  function adopt(body, visitorId) {
    store(body.refresh_token);
    session = {
      token: body.token,
      visitorId: visitorId || subject(body.token),
      at: Date.now(),
      ttl: body.expires_in * 1000
    };
    clearTimeout(timer);
    timer = setTimeout(function () {
      // Errors here show on the next token() call.
      serial(function () { return fresh() ? session : start(); }).catch(function () {});
    }, remaining(session) - ahead(session));
    return session;
  }

  function guest() {
    if (config && config.guests_allowed === false) {
      return Promise.reject(error('guests are not allowed for this client_key', { status: 403 }));
    }
    return call('auth/guest', { client_key: clientKey }).then(function (b) {
      return adopt(b, b.visitor_id);
    });
  }

  function forget() {
    clearTimeout(timer);
    session = null;
    store(null);
  }

  function refresh(token, retried) {
    return call('auth/refresh', { refresh_token: token }).then(function (b) {
      return adopt(b, session && session.visitorId);
    }, function (e) {
      // No answer: the response may have been lost after the server rotated the token.
      // The server answers a retry of the same token (within 10 s) with the same
      // successor, so one retry is safe; more would look like reuse.
      if (e.status === 0 && !retried) return refresh(token, true);
      // Refused (revoked, expired or reused family): the session is gone; start afresh.
      if (e.status === 400 || e.refused) {
        if (stored() === token) forget();
        session = null;
        return guest();
      }
      throw e;
    });
  }

  // A session: the stored one refreshed (another tab may have rotated it: always read
  // the latest), or a new guest session.
  function start() {
    var token = stored();
    return token ? refresh(token, false) : guest();
  }

  function token() {
    return serial(function () {
      if (fresh()) return session;
      return start().catch(function (e) {
        // Renewing failed for now (429, 503, offline): a still valid token still serves.
        if (session && remaining(session) > 5000) return session;
        throw e;
      });
    }).then(function (s) { return s.token; });
  }

  function login(visitorToken) {
    return serial(function () {
      return call('auth/exchange', { token: visitorToken }).then(function (b) {
        return adopt(b, b.visitor_id).visitorId;
      });
    });
  }

  function logout() {
    return serial(forget);
  }

  var ready = clientKey
    ? call('config?client_key=' + encodeURIComponent(clientKey)).then(function (c) {
      config = c;
      // With guests off and no stored session, there is no session until login().
      if (c.guests_allowed === false && !stored()) return { config: c, visitorId: null };
      return serial(start).then(function (s) { return { config: c, visitorId: s.visitorId }; });
    })
    : Promise.reject(error('the script tag has no data-client-key attribute'));
  ready.catch(function () {}); // the page decides whether a failure is worth reporting

  window.widgetAuth = Object.freeze({ ready: ready, token: token, login: login, logout: logout });
})();
