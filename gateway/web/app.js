// The Aether web terminal page.
//
// One module, no framework: a workspace list kept fresh by polling the REST API, and terminal tabs,
// each its own WebSocket to /workspaces/{id}/ws speaking the Aether envelope (protocol.md). The
// token travels only in the `Authorization` header and in the WebSocket subprotocol pair
// `Bearer, <token>`, never in a URL, and is kept in sessionStorage (this browser tab only).
//
// Everything that touches the DOM uses textContent, never innerHTML: workspace data and terminal
// metadata come from the server and must not become markup.

// Load xterm.js with the same cache-busting version as this module (see src/web.rs), so a new
// build never mixes an old xterm.js with a new page.
const version = new URL(import.meta.url).search;
const [{ Terminal }, { FitAddon }] = await Promise.all([
  import(`./xterm.js${version}`),
  import(`./addon-fit.js${version}`),
]);

const POLL_MS = 2000;
const TOKEN_KEY = 'aether.token';
const TABS_KEY = 'aether.tabs';
const PROJECT_KEY = 'aether.project';
// Used until the user picks a project: the local provider accepts any project UUID.
const DEFAULT_PROJECT = '00000000-0000-4000-8000-000000000001';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;

// Close codes (protocol/src/close.rs) and what the page does about them.
const RECONNECT_CODES = new Set([1001, 1005, 1006, 1011, 1012, 1013, 4008]);
const CLOSE_REASONS = {
  1000: 'the session ended',
  1001: 'the server is going away',
  1003: 'the gateway refused a binary frame',
  1006: 'the connection dropped',
  1008: 'the gateway refused the connection (policy: origin or token)',
  1009: 'a message was too big',
  1011: 'the gateway hit an internal error',
  1012: 'the gateway is restarting',
  1013: 'the gateway is overloaded',
  4001: 'the token expired',
  4004: 'the workspace does not exist',
  4008: 'the connection fell behind',
  4009: 'the workspace stopped',
  4500: 'the workspace failed to start',
  4504: 'the workspace did not start in time',
};
const ERROR_TITLES = {
  1008: 'The gateway refused the connection',
  4004: 'Workspace not found',
  4009: 'The workspace stopped',
  4500: 'The workspace failed to start',
  4504: 'The workspace did not start in time',
};
const WAKE_STEPS = ['stopped', 'starting', 'running'];

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function randomId() {
  // crypto.randomUUID needs a secure context; a gateway reached over plain http on a LAN address
  // is not one, while getRandomValues works everywhere.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const shortId = (id) => String(id).slice(0, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function formatDuration(ms) {
  // Tenths while short, so a wake or a retry countdown visibly moves.
  if (ms < 10_000) return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}:${String(s % 60).padStart(2, '0')}`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

// ---------------------------------------------------------------------------------------------
// Authentication

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const auth = {
  token: null,
  user: null,
  local: false,
  expiresAt: null,
  refreshTimer: null,
  pending: null, // the one sign-in in flight, shared by everyone who needs a token
};

function saveAuth() {
  if (!auth.token) {
    sessionStorage.removeItem(TOKEN_KEY);
    return;
  }
  sessionStorage.setItem(
    TOKEN_KEY,
    JSON.stringify({ token: auth.token, user: auth.user, local: auth.local, expiresAt: auth.expiresAt }),
  );
}

function loadAuth() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
    if (saved?.token && (!saved.expiresAt || saved.expiresAt > Date.now() + 30_000)) {
      Object.assign(auth, saved);
    }
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

// The embedded default can issue a token for the local user; the custom header makes the request
// non-simple, so another site cannot trigger it from a browser without a CORS preflight.
// Returns the token body, 'refused' (not offered here: ask the user), or 'unreachable'.
async function fetchLocalToken() {
  let res;
  try {
    res = await fetch('/auth/local-token', {
      method: 'POST',
      headers: { 'X-Aether-Local-Token': '1' },
      cache: 'no-store',
    });
  } catch {
    return 'unreachable';
  }
  if (res.status >= 500) return 'unreachable';
  if (!res.ok) return 'refused';
  try {
    const body = await res.json();
    return body?.token ? body : 'refused';
  } catch {
    return 'refused';
  }
}

// `expires_at` is seconds since the epoch (protocol TokenBody); accept RFC 3339 too.
function parseExpiry(v) {
  const ms = typeof v === 'number' ? (v < 1e12 ? v * 1000 : v) : typeof v === 'string' ? Date.parse(v) : NaN;
  return Number.isFinite(ms) ? ms : null;
}

function userLabel(user) {
  if (!user) return '';
  if (typeof user === 'string') return user;
  return user.name || user.email || user.id || user.sub || '';
}

function scheduleRefresh() {
  clearTimeout(auth.refreshTimer);
  if (!auth.local || !auth.expiresAt) return;
  const left = auth.expiresAt - Date.now();
  // Renew at 80% of the lifetime so a long-lived terminal never reconnects with a stale token.
  auth.refreshTimer = setTimeout(() => signIn({ force: true }).catch(() => {}), Math.max(5_000, left * 0.8));
}

function askForToken(message) {
  const dialog = $('token-dialog');
  const error = $('token-error');
  error.hidden = !message;
  error.textContent = message || '';
  $('token-input').value = '';
  return new Promise((resolve) => {
    $('token-form').onsubmit = (e) => {
      e.preventDefault();
      const token = $('token-input').value.trim();
      if (!token) return;
      dialog.close();
      resolve(token);
    };
    dialog.addEventListener('cancel', (e) => e.preventDefault(), { once: true });
    if (!dialog.open) dialog.showModal();
  });
}

function tokenClaims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

async function signIn({ force = false, reason = null } = {}) {
  if (auth.pending) return auth.pending;
  auth.pending = (async () => {
    if (!force && auth.token) return auth.token;
    for (let wait = 500; ; wait = Math.min(wait * 2, 5_000)) {
      const local = await fetchLocalToken();
      if (local === 'unreachable') {
        // The gateway is down or restarting: a token we still hold stays good; otherwise wait
        // for it rather than asking the user for a token they do not need.
        if (auth.token && auth.expiresAt && auth.expiresAt > Date.now() + 60_000) return auth.token;
        await sleep(wait);
        continue;
      }
      if (local !== 'refused') {
        Object.assign(auth, { token: local.token, user: local.user, local: true, expiresAt: parseExpiry(local.expires_at) });
      } else {
        const token = await askForToken(reason);
        const claims = tokenClaims(token);
        Object.assign(auth, {
          token,
          user: claims.email || claims.sub || 'token',
          local: false,
          expiresAt: parseExpiry(claims.exp),
        });
      }
      break;
    }
    saveAuth();
    scheduleRefresh();
    renderAuth();
    return auth.token;
  })();
  try {
    return await auth.pending;
  } finally {
    auth.pending = null;
  }
}

// Called when the gateway rejected `token`: sign in again unless someone already did.
async function reauthenticate(token, reason) {
  if (auth.token && auth.token !== token) return auth.token;
  auth.token = null;
  saveAuth();
  return signIn({ force: true, reason });
}

function renderAuth() {
  $('auth-user').textContent = auth.token
    ? `${auth.local ? 'local user' : 'signed in'}: ${userLabel(auth.user)}`
    : 'not signed in';
  $('sign-out').hidden = !auth.token || auth.local;
  $('create').disabled = !auth.token;
}

// ---------------------------------------------------------------------------------------------
// REST

let clockSkewMs = 0; // server time minus local time, for idle-stop countdowns

async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const token = await signIn();
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    const date = Date.parse(res.headers.get('date') || '');
    // The Date header has a one-second resolution: only correct a skew larger than that.
    if (!Number.isNaN(date)) {
      const skew = date - Date.now();
      clockSkewMs = Math.abs(skew) > 1500 ? skew : 0;
    }
    if (res.status === 401 && attempt === 0) {
      await reauthenticate(token, 'The gateway did not accept the token.');
      continue;
    }
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      try {
        message = (await res.json()).error || message;
      } catch {
        /* not JSON */
      }
      throw new ApiError(res.status, message);
    }
    return res.status === 204 ? null : res.json();
  }
}

// ---------------------------------------------------------------------------------------------
// Workspace list

const workspaces = new Map(); // id → last workspace object from the API
const rows = new Map(); // id → { li, parts }
let pollTimer = null;

function projectId() {
  const v = $('project-id').value.trim();
  return UUID_RE.test(v) ? v : null;
}

async function refresh() {
  clearTimeout(pollTimer);
  try {
    const { workspaces: list } = await api('GET', '/workspaces');
    showListError(null);
    const seen = new Set();
    for (const ws of list) {
      seen.add(ws.id);
      workspaces.set(ws.id, ws);
    }
    for (const id of [...workspaces.keys()]) if (!seen.has(id)) workspaces.delete(id);
    renderList();
  } catch (e) {
    showListError(`Could not load workspaces: ${e.message}`);
  } finally {
    pollTimer = setTimeout(refresh, POLL_MS);
  }
}

function showListError(message) {
  $('ws-error').hidden = !message;
  $('ws-error').textContent = message || '';
}

function renderList() {
  const list = $('ws-list');
  const sorted = [...workspaces.values()].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
  for (const [id, row] of rows) {
    if (!workspaces.has(id)) {
      row.li.remove();
      rows.delete(id);
    }
  }
  for (const ws of sorted) {
    let row = rows.get(ws.id);
    if (!row) {
      row = makeRow(ws.id);
      rows.set(ws.id, row);
    }
    list.append(row.li); // keeps creation order; moving an existing node is cheap
    updateRow(row, ws);
  }
  $('ws-empty').hidden = workspaces.size > 0;
}

function makeRow(id) {
  const parts = {
    badge: el('span', { class: 'badge' }),
    id: el('code', { class: 'ws-id', title: id }, shortId(id)),
    hw: el('span', { class: 'muted hw' }),
    conns: el('span', { class: 'conns' }),
    idle: el('span', { class: 'idle' }),
    error: el('span', { class: 'ws-err' }),
    open: el('button', { type: 'button', class: 'primary small', 'data-action': 'open' }, 'Open terminal'),
    start: el('button', { type: 'button', class: 'small', 'data-action': 'start' }, 'Start'),
    stop: el('button', { type: 'button', class: 'small', 'data-action': 'stop' }, 'Stop'),
    del: el('button', { type: 'button', class: 'small danger', 'data-action': 'delete', title: 'Delete workspace' }, 'Delete'),
  };
  parts.open.addEventListener('click', () => openTab(id));
  parts.start.addEventListener('click', () => act(id, 'POST', `/workspaces/${id}/start`));
  parts.stop.addEventListener('click', () => act(id, 'POST', `/workspaces/${id}/stop`));
  parts.del.addEventListener('click', () => {
    if (confirm(`Delete workspace ${shortId(id)} and its volume? This cannot be undone.`)) {
      act(id, 'DELETE', `/workspaces/${id}`);
    }
  });
  const li = el(
    'li',
    { class: 'ws', dataset: { id } },
    el('div', { class: 'ws-main' }, parts.badge, parts.id, parts.hw),
    el('div', { class: 'ws-meta' }, parts.conns, parts.idle, parts.error),
    el('div', { class: 'ws-actions' }, parts.open, parts.start, parts.stop, parts.del),
  );
  return { li, parts };
}

function updateRow(row, ws) {
  const p = row.parts;
  const status = String(ws.status);
  p.badge.textContent = status.replace('_', ' ');
  p.badge.className = `badge status-${status}`;
  row.li.dataset.status = status;
  const hw = ws.hardware || {};
  p.hw.textContent = hw.cpus ? `${hw.cpus} cpu · ${hw.memory_mb} MB` : '';
  const n = ws.active_connections ?? 0;
  p.conns.textContent = `${n} connected`;
  p.conns.className = n > 0 ? 'conns live' : 'conns';
  p.idle.textContent = idleText(ws);
  p.error.textContent = ws.error_message || '';
  p.error.hidden = !ws.error_message;
  p.start.disabled = !['stopped', 'error', 'creating'].includes(status);
  p.stop.disabled = !['running', 'starting', 'stop_failed'].includes(status);
}

function idleText(ws) {
  if (ws.keep_active) return 'keep active';
  if ((ws.active_connections ?? 0) > 0 || (ws.active_tasks ?? 0) > 0) {
    return ws.active_tasks ? `${ws.active_tasks} task${ws.active_tasks > 1 ? 's' : ''} running` : '';
  }
  if (!ws.idle_stop_at) return '';
  const left = Date.parse(ws.idle_stop_at) - (Date.now() + clockSkewMs);
  return left > 0 ? `idle-stop in ${formatDuration(left)}` : 'idle-stopping…';
}

// A tab hears about transitions before the next poll does: show them in the list at once.
function noteStatus(id, status) {
  const ws = workspaces.get(id);
  const row = rows.get(id);
  if (!ws || !row || ws.status === status) return;
  ws.status = status;
  updateRow(row, ws);
}

async function act(id, method, path) {
  try {
    await api(method, path);
  } catch (e) {
    showListError(`${method === 'DELETE' ? 'Delete' : path.split('/').pop()} failed: ${e.message}`);
  }
  refresh();
}

async function createWorkspace() {
  const pid = projectId();
  if (!pid) {
    showListError('The project ID must be a UUID.');
    $('project-id').closest('details').open = true;
    return;
  }
  localStorage.setItem(PROJECT_KEY, pid);
  $('create').disabled = true;
  try {
    const ws = await api('POST', `/projects/${pid}/workspaces`, {});
    workspaces.set(ws.id, ws);
    renderList();
  } catch (e) {
    showListError(`Create failed: ${e.message}`);
  } finally {
    $('create').disabled = !auth.token;
    refresh();
  }
}

// ---------------------------------------------------------------------------------------------
// Terminal tabs

const tabs = [];
let activeTab = null;
let tabCounter = 0;

const THEME = {
  background: '#0d1117',
  foreground: '#d6dde6',
  cursor: '#7ee0c3',
  cursorAccent: '#0d1117',
  selectionBackground: '#2b4a6b',
  black: '#1b2129', red: '#f47067', green: '#6bc46d', yellow: '#e0b34d',
  blue: '#5fa8f5', magenta: '#c994e8', cyan: '#4fc6d0', white: '#c9d1d9',
  brightBlack: '#6e7681', brightRed: '#ff938a', brightGreen: '#8ddb8c', brightYellow: '#f2cc60',
  brightBlue: '#8fc1ff', brightMagenta: '#dcb6ff', brightCyan: '#7ee0e8', brightWhite: '#f0f6fc',
};

class Tab {
  constructor(workspaceId, sessionId, { resume = false } = {}) {
    this.id = ++tabCounter;
    this.workspaceId = workspaceId;
    this.sessionId = sessionId;
    // On a restored tab the terminal is blank, so ask for everything the session still holds.
    this.lastSeq = resume ? 0 : null;
    this.ws = null;
    this.state = null;
    this.stateLog = [];
    this.status = null;
    this.statusLog = [];
    this.error = null;
    this.attempt = 0;
    this.everOpened = false;
    this.closing = false;
    this.wakeStartedAt = performance.now();
    this.reconnectTimer = null;
    this.note = '';

    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "JetBrains Mono", "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      lineHeight: 1.15,
      scrollback: 5000,
      theme: THEME,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);

    this.statusText = el('span', { class: 'strip-status' });
    this.sizeText = el('span', { class: 'muted' });
    this.overlayTitle = el('div', { class: 'overlay-title' });
    this.overlayDetail = el('div', { class: 'overlay-detail' });
    this.steps = el('ol', { class: 'steps' }, ...WAKE_STEPS.map((s) => el('li', { dataset: { step: s } }, s)));
    this.overlayButton = el('button', { type: 'button', class: 'primary', hidden: true });
    this.overlayButton.addEventListener('click', () => this.overlayAction?.());
    this.overlay = el(
      'div',
      { class: 'overlay' },
      el('div', { class: 'overlay-card' }, el('div', { class: 'spinner' }), this.overlayTitle, this.steps, this.overlayDetail, this.overlayButton),
    );
    this.termEl = el('div', { class: 'term' });
    this.panel = el(
      'div',
      { class: 'tab-panel', role: 'tabpanel', dataset: { tab: String(this.id) } },
      el('div', { class: 'strip' }, this.statusText, el('span', { class: 'muted' }, `workspace ${shortId(workspaceId)} · session ${shortId(sessionId)}`), this.sizeText),
      el('div', { class: 'term-wrap' }, this.termEl, this.overlay),
    );
    this.dot = el('span', { class: 'dot' });
    this.tabLabel = el('span', {}, `${shortId(workspaceId)} · ${this.id}`);
    const close = el('button', { type: 'button', class: 'tab-close', title: 'Close terminal (ends the shell)', 'aria-label': 'Close terminal' }, '×');
    close.addEventListener('click', (e) => {
      e.stopPropagation();
      this.close();
    });
    this.tabEl = el('div', { class: 'tab', role: 'tab', tabindex: '0' }, this.dot, this.tabLabel, close);
    this.tabEl.addEventListener('click', () => activate(this));
    this.tabEl.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') activate(this);
    });

    this.term.onData((data) => this.send({ channel: 'terminal', type: 'input', sessionId: this.sessionId, data }));
    this.term.onResize(({ cols, rows }) => {
      this.sizeText.textContent = `${cols}×${rows}`;
      this.send({ channel: 'terminal', type: 'resize', sessionId: this.sessionId, cols, rows });
    });
    // Refit whenever the terminal's box changes size: window resizes, panel layout, tab switches.
    this.resizeObserver = new ResizeObserver(() => this.refit());
  }

  mount() {
    $('tabs').append(this.tabEl);
    $('tab-panels').append(this.panel);
    this.term.open(this.termEl);
    this.resizeObserver.observe(this.termEl);
    this.refit();
    this.sizeText.textContent = `${this.term.cols}×${this.term.rows}`;
    this.connect();
  }

  refit() {
    if (this.panel.offsetParent === null) return; // hidden tab: its box has no size
    try {
      this.fit.fit();
    } catch {
      /* not laid out yet */
    }
  }

  setState(state, detail = '') {
    this.state = state;
    if (this.stateLog.at(-1) !== state) this.stateLog.push(state);
    this.note = detail;
    this.render();
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    if (this.closing) return;
    this.error = null;
    if (this.state !== 'reconnecting') this.setState('connecting');
    this.wakeStartedAt = performance.now();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/workspaces/${encodeURIComponent(this.workspaceId)}/ws`;
    const token = auth.token;
    let ws;
    try {
      ws = new WebSocket(url, ['Bearer', token]);
    } catch (e) {
      this.fail(`could not connect: ${e.message}`);
      return;
    }
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => {
      this.opened = true;
      this.everOpened = true;
      // The gateway holds messages sent while the workspace wakes, so create can go at once.
      const create = { channel: 'terminal', type: 'create', sessionId: this.sessionId, cols: this.term.cols, rows: this.term.rows };
      if (this.lastSeq !== null) create.lastSeq = this.lastSeq;
      ws.send(JSON.stringify(create));
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onClose(e.code, e.reason, token);
    };
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  onMessage(msg) {
    if (msg.channel === 'workspace') {
      if (msg.type === 'status') {
        if (typeof msg.elapsedMs === 'number') this.wakeStartedAt = performance.now() - msg.elapsedMs;
        this.status = msg.status;
        if (this.statusLog.at(-1) !== msg.status) this.statusLog.push(msg.status);
        noteStatus(this.workspaceId, msg.status);
        if (msg.status !== 'running') this.setState('waking', msg.message || '');
        else if (this.state !== 'attached') this.setState('attaching');
        else this.render();
      } else if (msg.type === 'error') {
        this.error = { code: msg.code, message: msg.message };
        this.render();
      }
      return;
    }
    if (msg.channel === 'error') {
      console.warn('gateway error frame:', msg.error);
      return;
    }
    if (msg.channel !== 'terminal' || msg.sessionId !== this.sessionId) return;
    switch (msg.type) {
      case 'created':
        if (!msg.resumed && this.lastSeq !== null && this.lastSeq > 0) {
          this.term.write('\r\n\x1b[2m[the previous session had ended: this is a new shell]\x1b[0m\r\n');
        }
        if (!msg.resumed || this.lastSeq === null) this.lastSeq = msg.seq ?? 0;
        this.attempt = 0;
        this.status = 'running';
        if (this.statusLog.at(-1) !== 'running') this.statusLog.push('running');
        this.setState('attached', msg.resumed ? 'resumed' : '');
        saveTabs();
        break;
      case 'output':
        this.term.write(msg.data);
        if (typeof msg.seq === 'number') this.lastSeq = msg.seq;
        break;
      case 'lost':
        this.term.write(`\r\n\x1b[2m[${msg.bytes} bytes of output were lost while disconnected]\x1b[0m\r\n`);
        break;
      case 'close':
        this.exitCode = msg.exitCode;
        this.setState('ended');
        saveTabs();
        break;
      default:
        break;
    }
  }

  async onClose(code, reason, token) {
    if (this.closing || this.state === 'ended') return;
    if (code === 4001) {
      this.setState('reconnecting', 'the token expired; signing in again');
      await reauthenticate(token, 'Your token expired.');
      this.connect();
      return;
    }
    if (RECONNECT_CODES.has(code)) {
      // A handshake that never opened can be a rejected token or a deleted workspace, which a
      // browser reports only as 1006: ask the REST API which it is before retrying forever.
      if (!this.opened) {
        try {
          await api('GET', `/workspaces/${encodeURIComponent(this.workspaceId)}`);
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) {
            this.fail(CLOSE_REASONS[4004], 4004);
            return;
          }
          /* the gateway is unreachable: keep retrying */
        }
      }
      this.scheduleReconnect(CLOSE_REASONS[code] || reason || `closed (${code})`);
      return;
    }
    if (code === 1000) {
      this.setState('closed', reason || 'the connection was closed');
      return;
    }
    this.fail(this.error?.message || reason || CLOSE_REASONS[code] || `closed (${code})`, code);
  }

  scheduleReconnect(why) {
    // Exponential backoff with jitter, so a restarted gateway is not hit by every page at once.
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base * (0.7 + Math.random() * 0.6);
    this.attempt += 1;
    this.reconnectAt = performance.now() + delay;
    this.setState('reconnecting', why);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  fail(message, code) {
    this.failure = { message, code };
    this.setState('error', message);
  }

  render() {
    const s = this.state;
    this.dot.className = `dot state-${s}`;
    this.panel.dataset.state = s;
    this.tabEl.dataset.state = s;
    const elapsed = formatDuration(performance.now() - this.wakeStartedAt);
    let strip;
    let title = '';
    let detail = '';
    let button = null;
    switch (s) {
      case 'connecting':
        strip = 'connecting…';
        title = 'Connecting…';
        break;
      case 'waking':
        strip = `${this.status} · ${elapsed}`;
        title = this.status === 'stopped' ? 'Waking the workspace…' : `Workspace ${this.status.replace('_', ' ')}… ${elapsed}`;
        detail = this.error ? `${this.error.message}` : this.note;
        break;
      case 'attaching':
        strip = 'running · attaching…';
        title = 'Attaching to the terminal…';
        break;
      case 'attached':
        strip = this.note === 'resumed' ? 'connected · resumed' : 'connected';
        break;
      case 'reconnecting': {
        const wait = Math.max(0, (this.reconnectAt ?? 0) - performance.now());
        strip = `reconnecting… (attempt ${this.attempt})`;
        title = 'Reconnecting…';
        detail = `${this.note}${wait > 0 ? ` · retrying in ${formatDuration(wait)}` : ''}`;
        button = ['Reconnect now', () => this.connect()];
        break;
      }
      case 'ended':
        strip = `session ended (exit ${this.exitCode ?? 'signal'})`;
        title = 'The shell exited';
        detail = `exit code ${this.exitCode ?? 'none (killed by a signal)'}`;
        button = ['Start a new shell', () => this.restartSession()];
        break;
      case 'closed':
        strip = 'disconnected';
        title = 'Disconnected';
        detail = this.note;
        button = ['Reconnect', () => this.connect()];
        break;
      case 'error':
        strip = `error: ${this.note}`;
        title = ERROR_TITLES[this.failure?.code] || 'Could not open the terminal';
        detail = this.error && this.error.message !== this.note ? `${this.note} — ${this.error.message}` : this.note;
        button = [this.failure?.code === 4009 ? 'Wake it again' : 'Retry', () => { this.attempt = 0; this.connect(); }];
        break;
      default:
        strip = '';
    }
    this.statusText.textContent = strip;
    this.statusText.className = `strip-status state-${s}`;
    const showOverlay = s !== 'attached';
    this.overlay.hidden = !showOverlay;
    this.overlay.dataset.state = s;
    this.overlayTitle.textContent = title;
    this.overlayDetail.textContent = detail;
    this.overlayDetail.hidden = !detail;
    this.steps.hidden = s !== 'waking' && s !== 'attaching';
    const current = s === 'attaching' ? 2 : WAKE_STEPS.indexOf(this.status);
    this.steps.querySelectorAll('li').forEach((li, i) => {
      li.className = i < current ? 'done' : i === current ? 'current' : '';
    });
    this.overlayButton.hidden = !button;
    if (button) {
      this.overlayButton.textContent = button[0];
      this.overlayAction = button[1];
    }
  }

  restartSession() {
    this.sessionId = randomId();
    this.lastSeq = null;
    this.term.reset();
    saveTabs();
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.setState('attaching');
      this.send({ channel: 'terminal', type: 'create', sessionId: this.sessionId, cols: this.term.cols, rows: this.term.rows });
    } else {
      this.state = null;
      this.connect();
    }
  }

  close() {
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    // Closing the tab ends the shell: a session nobody can see again would only hold resources.
    this.send({ channel: 'terminal', type: 'close', sessionId: this.sessionId });
    this.ws?.close(1000, 'tab closed');
    this.resizeObserver.disconnect();
    this.term.dispose();
    this.tabEl.remove();
    this.panel.remove();
    tabs.splice(tabs.indexOf(this), 1);
    if (activeTab === this) activate(tabs.at(-1) ?? null);
    saveTabs();
  }

  snapshot() {
    const buf = this.term.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
    return {
      id: this.id,
      workspaceId: this.workspaceId,
      sessionId: this.sessionId,
      state: this.state,
      stateLog: [...this.stateLog],
      status: this.status,
      statusLog: [...this.statusLog],
      error: this.failure?.message ?? this.error?.message ?? null,
      cols: this.term.cols,
      rows: this.term.rows,
      lastSeq: this.lastSeq,
      text: lines.join('\n'),
    };
  }
}

function activate(tab) {
  activeTab = tab;
  for (const t of tabs) {
    const on = t === tab;
    t.panel.hidden = !on;
    t.tabEl.classList.toggle('active', on);
    t.tabEl.setAttribute('aria-selected', String(on));
  }
  $('placeholder').hidden = tabs.length > 0;
  if (tab) {
    tab.refit();
    tab.term.focus();
  }
}

function openTab(workspaceId, sessionId = randomId(), opts = {}) {
  const tab = new Tab(workspaceId, sessionId, opts);
  tabs.push(tab);
  $('placeholder').hidden = true;
  activate(tab); // the panel must be visible before xterm measures it
  tab.mount();
  activate(tab);
  saveTabs();
  return tab;
}

function saveTabs() {
  const open = tabs.filter((t) => t.state !== 'ended').map((t) => ({ workspaceId: t.workspaceId, sessionId: t.sessionId }));
  sessionStorage.setItem(TABS_KEY, JSON.stringify(open));
}

function restoreTabs() {
  let saved = [];
  try {
    saved = JSON.parse(sessionStorage.getItem(TABS_KEY) || '[]');
  } catch {
    /* ignore */
  }
  for (const t of saved) {
    if (UUID_RE.test(t.workspaceId) && typeof t.sessionId === 'string') {
      openTab(t.workspaceId, t.sessionId, { resume: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Start-up

// A read-only view for the browser test (tests/web/e2e.mjs): what each tab shows and went through.
Object.defineProperty(window, 'aetherTest', {
  value: Object.freeze({ tabs: () => tabs.map((t) => t.snapshot()) }),
});

// Tickers: elapsed time while waking, reconnect countdowns, idle-stop countdowns.
setInterval(() => {
  for (const t of tabs) if (t.state === 'waking' || t.state === 'reconnecting') t.render();
}, 200);
setInterval(() => {
  for (const [id, row] of rows) {
    const ws = workspaces.get(id);
    if (ws) row.parts.idle.textContent = idleText(ws);
  }
}, 1000);

$('create').addEventListener('click', createWorkspace);
$('sign-out').addEventListener('click', () => {
  auth.token = null;
  saveAuth();
  renderAuth();
  for (const t of [...tabs]) t.close();
  signIn({ force: true });
});
$('project-id').value = localStorage.getItem(PROJECT_KEY) || DEFAULT_PROJECT;

loadAuth();
renderAuth();
await signIn();
scheduleRefresh();
restoreTabs();
refresh();
