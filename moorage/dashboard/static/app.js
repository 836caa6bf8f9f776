/* Moorage dashboard: a dependency-free single-page app over the JSON API at /api. Routes live in the URL hash. */
'use strict';

const REFRESH_MS = 5000;
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'TERMINATED']);
const STATUS_ORDER = ['RUNNING', 'PENDING', 'SUSPENDED', 'COMPLETED', 'FAILED', 'TERMINATED', 'CONTINUED_AS_NEW', 'CANCELED'];

const app = { info: null, hub: null, page: null, timer: null, seq: 0 };

// ---------------------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// A sidecar with --auth-token-file/--auth-jwks answers 401 until the page sends a bearer token: it asks once and
// keeps the token in sessionStorage (this tab only; gone when the tab closes).
const TOKEN_KEY = 'moorage.token';

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askToken(reason) {
  return new Promise((resolve) => {
    const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', placeholder: 'bearer token or JWT', 'aria-label': 'Access token' });
    const form = h('form', { class: 'banner', id: 'token-form' },
      h('div', {}, `This sidecar requires a token${reason ? ` (${reason})` : ''}. It is kept for this tab only.`),
      input, h('button', { type: 'submit', class: 'small' }, 'Use token'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      form.remove();
      resolve();
    });
    document.getElementById('view').replaceChildren(form);
    input.focus();
  });
}

async function authedFetch(url, init = {}) {
  for (;;) {
    const res = await fetch(url, { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
    if (res.status !== 401) return res;
    let reason = '';
    try { reason = (await res.json()).error || ''; } catch (e) { /* not JSON */ }
    if (sessionStorage.getItem(TOKEN_KEY)) sessionStorage.removeItem(TOKEN_KEY);
    await askToken(reason);
  }
}

async function api(path, opts = {}) {
  const sep = path.includes('?') ? '&' : '?';
  const url = `/api/${path}${sep}hub=${encodeURIComponent(app.hub || '')}`;
  const init = { method: opts.method || 'GET', headers: {} };
  if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await authedFetch(url, init);
  } catch (e) {
    throw new ApiError(0, `cannot reach the sidecar (${e.message})`);
  }
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

const enc = encodeURIComponent;

function fill(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}

function pad(n, w = 2) { return String(n).padStart(w, '0'); }

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDur(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${pad(Math.floor(s % 60))} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${pad(m % 60)} m`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

function ago(iso) {
  if (!iso) return '';
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 5) return 'just now';
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function pretty(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (e) { return value; }
  }
  return JSON.stringify(value, null, 2);
}

function payload(value, emptyText = 'none') {
  if (value === null || value === undefined || value === '') return h('span', { class: 'muted' }, emptyText);
  return h('pre', { class: 'json light' }, pretty(value));
}

function badge(status, label) {
  return h('span', { class: `badge s-${status}`, 'data-status': status }, label || status.replace(/_/g, ' ').toLowerCase());
}

function num(n) { return (n || 0).toLocaleString('en-US'); }

function toast(message, bad = false) {
  const t = h('div', { class: `toast${bad ? ' bad' : ''}` }, message);
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), bad ? 7000 : 3500);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const parts = (path || '').split('/').filter((p) => p !== '').map((p) => decodeURIComponent(p));
  return { parts, query: new URLSearchParams(query || '') };
}

function go(hash) { if (location.hash !== hash) location.hash = hash; else route(); }

function actionsDisabledTitle() {
  return app.info && app.info.actions ? null : 'The dashboard is read-only: start the sidecar with --dashboard-actions';
}

function actionButton(label, onClick, opts = {}) {
  const ro = !(app.info && app.info.actions);
  return h('button', {
    class: opts.class || '', disabled: ro || opts.disabled, title: ro ? actionsDisabledTitle() : (opts.title || null),
    'data-action': opts.name || label.toLowerCase(), onclick: onClick,
  }, label);
}

function parseJsonField(text, what) {
  if (text === undefined || text.trim() === '') return undefined;
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON: ${e.message}`); }
}

function localToIso(value) {
  if (!value) return undefined;
  const d = new Date(value);
  if (isNaN(d)) throw new Error(`not a valid time: ${value}`);
  return d.toISOString();
}

function isoToLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// ---------------------------------------------------------------------------------------------------------------
// modal forms
// ---------------------------------------------------------------------------------------------------------------

function openModal({ title, text, fields = [], submit = 'OK', danger = false, onSubmit }) {
  const root = document.getElementById('modal-root');
  const inputs = {};
  const err = h('div', { class: 'formerr' });
  const body = h('div', { class: 'body' }, text ? h('p', { style: { margin: 0 } }, text) : null);
  for (const f of fields) {
    let input;
    if (f.type === 'textarea') input = h('textarea', { name: f.name, placeholder: f.placeholder || '', rows: f.rows || 5 });
    else if (f.type === 'checkbox') input = h('input', { type: 'checkbox', name: f.name, checked: f.value ? true : null });
    else input = h('input', { type: f.type || 'text', name: f.name, placeholder: f.placeholder || '' });
    if (f.type !== 'checkbox' && f.value !== undefined) input.value = f.value;
    inputs[f.name] = input;
    if (f.type === 'checkbox') body.append(h('label', { class: 'check' }, input, f.label));
    else body.append(h('label', { class: 'field' }, f.label, input, f.hint ? h('span', { class: 'muted' }, f.hint) : null));
  }
  body.append(err);
  const close = () => { root.innerHTML = ''; document.removeEventListener('keydown', onKey); };
  const ok = h('button', { class: danger ? 'danger' : 'primary', type: 'submit', 'data-submit': '1' }, submit);
  const form = h('form', { class: 'modal', role: 'dialog', 'aria-label': title },
    h('header', {}, title), body,
    h('footer', {}, h('button', { type: 'button', onclick: close }, 'Cancel'), ok));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const values = {};
    for (const [k, el] of Object.entries(inputs)) values[k] = el.type === 'checkbox' ? el.checked : el.value;
    ok.disabled = true;
    try {
      await onSubmit(values);
      close();
    } catch (e) {
      err.textContent = e.message;
    } finally {
      ok.disabled = false;
    }
  });
  const onKey = (ev) => { if (ev.key === 'Escape') close(); };
  document.addEventListener('keydown', onKey);
  const backdrop = h('div', { class: 'backdrop', onclick: (ev) => { if (ev.target === backdrop) close(); } }, form);
  root.innerHTML = '';
  root.append(backdrop);
  const first = form.querySelector('input, textarea');
  if (first) first.focus();
}

function modalOpen() { return document.getElementById('modal-root').childElementCount > 0; }

// ---------------------------------------------------------------------------------------------------------------
// orchestrations list
// ---------------------------------------------------------------------------------------------------------------

function orchestrationsPage(q) {
  const filters = {
    name: q.get('name') || '', q: q.get('q') || '', status: (q.get('status') || '').split(',').filter(Boolean),
    tags: q.get('tags') || '', from: q.get('from') || '', to: q.get('to') || '',
  };
  const size = Number(q.get('size') || 25);
  let tokens = [null];  // continuation token of each page seen so far
  let pageIndex = 0;
  let data = null;
  let form = null;  // built once, so a refresh never disturbs what is being typed
  const root = h('div');
  const chipsBox = h('div');
  const tableBox = h('div');

  function hashFor(f) {
    const p = new URLSearchParams();
    if (f.name) p.set('name', f.name);
    if (f.q) p.set('q', f.q);
    if (f.status.length) p.set('status', f.status.join(','));
    if (f.tags) p.set('tags', f.tags);
    if (f.from) p.set('from', f.from);
    if (f.to) p.set('to', f.to);
    if (size !== 25) p.set('size', String(size));
    const s = p.toString();
    return `#/orchestrations${s ? '?' + s : ''}`;
  }

  function apiQuery() {
    const p = new URLSearchParams();
    if (filters.name) p.append('name', filters.name);
    if (filters.q) p.set('q', filters.q);
    if (filters.status.length) p.set('status', filters.status.join(','));
    for (const t of filters.tags.split(',').map((s) => s.trim()).filter(Boolean)) p.append('tag', t);
    if (filters.from) p.set('created_from', localToIso(filters.from));
    if (filters.to) p.set('created_to', localToIso(filters.to));
    p.set('page_size', String(size));
    if (tokens[pageIndex]) p.set('continuation', tokens[pageIndex]);
    return p.toString();
  }

  async function load() {
    data = await api(`orchestrations?${apiQuery()}`);
    tokens[pageIndex + 1] = data.next;
    draw();
  }

  function draw() {
    const counts = data ? data.statusCounts : {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const chips = h('div', { class: 'chips', id: 'status-chips' },
      h('span', { class: `chip${filters.status.length ? '' : ' on'}`, onclick: () => go(hashFor({ ...filters, status: [] })) },
        'All', h('b', {}, num(total))),
      STATUS_ORDER.filter((s) => counts[s] || filters.status.includes(s) || ['RUNNING', 'COMPLETED', 'FAILED'].includes(s)).map((s) =>
        h('span', {
          class: `chip${filters.status.includes(s) ? ' on' : ''}`, 'data-chip': s,
          onclick: () => {
            const next = filters.status.includes(s) ? filters.status.filter((x) => x !== s) : [...filters.status, s];
            go(hashFor({ ...filters, status: next }));
          },
        }, h('span', { class: `dot s-${s}` }), s.replace(/_/g, ' ').toLowerCase(), h('b', {}, num(counts[s] || 0)))));

    if (!form) {
      const f = {};
      const inp = (name, attrs) => (f[name] = h('input', { ...attrs, name }));
      const apply = (ev) => {
        ev.preventDefault();
        go(hashFor({ ...filters, name: f.name.value.trim(), q: f.q.value.trim(), tags: f.tags.value.trim(),
          from: f.from.value, to: f.to.value }));
      };
      form = h('form', { class: 'panel filters', onsubmit: apply, id: 'filters' },
        h('label', { class: 'field wide' }, 'Instance ID contains', inp('q', { type: 'search', placeholder: 'text in the id' })),
        h('label', { class: 'field' }, 'Name', inp('name', { type: 'text', placeholder: 'exact orchestration name' })),
        h('label', { class: 'field' }, 'Tags', inp('tags', { type: 'text', placeholder: 'key=value, key2=value2' })),
        h('label', { class: 'field' }, 'Created from', inp('from', { type: 'datetime-local' })),
        h('label', { class: 'field' }, 'Created to', inp('to', { type: 'datetime-local' })),
        h('div', { class: 'actions' },
          h('button', { type: 'submit', class: 'primary' }, 'Apply'),
          h('button', { type: 'button', onclick: () => go('#/orchestrations') }, 'Reset')));
      f.q.value = filters.q; f.name.value = filters.name; f.tags.value = filters.tags;
      f.from.value = filters.from; f.to.value = filters.to;
      fill(root,
        h('div', { class: 'page-head' },
          h('div', { class: 'grow' }, h('h1', {}, 'Orchestrations'),
            h('p', { class: 'sub' }, `Task hub ${app.hub} · newest first`)),
          h('div', { class: 'actions' }, actionButton('New orchestration', newOrchestration, { class: 'primary', name: 'new-orchestration' }))),
        chipsBox, form, tableBox);
    }
    fill(chipsBox, chips);

    const rows = data ? data.items : [];
    const table = h('div', { class: 'panel flush' },
      h('table', { id: 'instances' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Instance ID'), h('th', {}, 'Name'), h('th', {}, 'Status'),
          h('th', {}, 'Created'), h('th', {}, 'Last updated'), h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Tags'))),
        h('tbody', {}, rows.length ? rows.map((r) => h('tr', {
          class: 'clickable', 'data-instance': r.instanceId, onclick: (ev) => {
            if (ev.target.tagName !== 'A') go(`#/orchestrations/${enc(r.instanceId)}`);
          },
        },
        h('td', { class: 'id' }, h('a', { href: `#/orchestrations/${enc(r.instanceId)}` }, r.instanceId)),
        h('td', {}, r.name, r.version ? h('span', { class: 'muted' }, ` v${r.version}`) : null),
        h('td', {}, badge(r.status)),
        h('td', { class: 'nowrap', title: r.createdAt }, fmtTime(r.createdAt)),
        h('td', { class: 'nowrap', title: r.lastUpdatedAt }, ago(r.lastUpdatedAt)),
        h('td', { class: 'num nowrap' }, fmtDur(r.durationMs)),
        h('td', {}, Object.entries(r.tags || {}).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)))))
          : h('tr', {}, h('td', { colspan: 7, class: 'empty' }, data ? 'No orchestrations match these filters.' : 'Loading…')))),
      h('div', { class: 'pager' },
        h('span', {}, rows.length ? `Page ${pageIndex + 1} · ${rows.length} shown` : ''),
        h('button', { class: 'small', disabled: pageIndex === 0, 'data-page': 'prev', onclick: () => { pageIndex -= 1; load().catch(showError); } }, '‹ Previous'),
        h('button', { class: 'small', disabled: !(data && data.next), 'data-page': 'next', onclick: () => { pageIndex += 1; load().catch(showError); } }, 'Next ›')));

    fill(tableBox, table);
  }

  return { root, load, refresh: load, title: 'Orchestrations' };
}

function newOrchestration() {
  openModal({
    title: 'Start a new orchestration',
    submit: 'Start',
    fields: [
      { name: 'name', label: 'Orchestration name', placeholder: 'e.g. hello_cities' },
      { name: 'instanceId', label: 'Instance ID', placeholder: 'leave empty for a generated id' },
      { name: 'input', label: 'Input (JSON)', type: 'textarea', placeholder: '{"city": "Tokyo"}', rows: 4 },
      { name: 'tags', label: 'Tags', placeholder: 'key=value, key2=value2' },
      { name: 'scheduled', label: 'Scheduled start (optional)', type: 'datetime-local' },
    ],
    onSubmit: async (v) => {
      if (!v.name.trim()) throw new Error('The orchestration name is required.');
      const tags = {};
      for (const pair of v.tags.split(',').map((s) => s.trim()).filter(Boolean)) {
        const i = pair.indexOf('=');
        if (i <= 0) throw new Error(`Tag "${pair}" must look like key=value.`);
        tags[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
      }
      const body = { name: v.name.trim(), tags };
      if (v.instanceId.trim()) body.instanceId = v.instanceId.trim();
      const input = parseJsonField(v.input, 'Input');
      if (input !== undefined) body.input = input;
      if (v.scheduled) body.scheduledStartAt = localToIso(v.scheduled);
      const res = await api('orchestrations', { method: 'POST', body });
      toast(`Started ${res.instanceId}`);
      go(`#/orchestrations/${enc(res.instanceId)}`);
    },
  });
}

// ---------------------------------------------------------------------------------------------------------------
// instance detail
// ---------------------------------------------------------------------------------------------------------------

function instancePage(instanceId, q) {
  let tab = q.get('tab') || 'timeline';
  let data = null;
  const open = new Set();
  const root = h('div');

  async function load() {
    data = await api(`orchestrations/${enc(instanceId)}`);
    draw();
  }

  async function act(action, body, message) {
    const res = await api(`orchestrations/${enc(instanceId)}/${action}`, { method: 'POST', body: body || {} });
    toast(message || `${action} sent`);
    if (action === 'purge') { go('#/orchestrations'); return res; }
    if (res.newInstanceId && res.newInstanceId !== instanceId) { go(`#/orchestrations/${enc(res.newInstanceId)}`); return res; }
    setTimeout(() => load().catch(showError), 400);
    await load();
    return res;
  }

  function actionBar(inst) {
    const s = inst.status;
    const done = TERMINAL.has(s);
    return h('div', { class: 'actions', id: 'instance-actions' },
      actionButton('Suspend', () => openModal({ title: 'Suspend instance', submit: 'Suspend',
        fields: [{ name: 'reason', label: 'Reason (optional)' }], onSubmit: (v) => act('suspend', { reason: v.reason }, 'Suspend requested') }),
      { disabled: !(s === 'RUNNING' || s === 'PENDING') }),
      actionButton('Resume', () => openModal({ title: 'Resume instance', submit: 'Resume',
        fields: [{ name: 'reason', label: 'Reason (optional)' }], onSubmit: (v) => act('resume', { reason: v.reason }, 'Resume requested') }),
      { disabled: s !== 'SUSPENDED' }),
      actionButton('Raise event', () => openModal({ title: 'Raise an event', submit: 'Raise',
        fields: [{ name: 'name', label: 'Event name', placeholder: 'e.g. approval' },
          { name: 'input', label: 'Event data (JSON)', type: 'textarea', placeholder: '{"approved": true}', rows: 4 }],
        onSubmit: (v) => {
          if (!v.name.trim()) throw new Error('The event name is required.');
          const body = { name: v.name.trim() };
          const input = parseJsonField(v.input, 'Event data');
          if (input !== undefined) body.input = input;
          return act('raise-event', body, `Event ${body.name} raised`);
        } }), { disabled: done, name: 'raise-event' }),
      actionButton('Terminate', () => openModal({ title: 'Terminate instance', submit: 'Terminate', danger: true,
        fields: [{ name: 'reason', label: 'Reason', placeholder: 'why it is being stopped' },
          { name: 'recursive', label: 'Also terminate sub-orchestrations', type: 'checkbox', value: true }],
        onSubmit: (v) => act('terminate', { reason: v.reason, recursive: v.recursive }, 'Terminate requested') }),
      { disabled: done, class: 'danger' }),
      actionButton('Restart', () => openModal({ title: 'Restart instance', submit: 'Restart',
        text: 'Starts the orchestration again with the same name and input.',
        fields: [{ name: 'newId', label: 'Use a new instance ID', type: 'checkbox', value: false }],
        onSubmit: (v) => act('restart', { newInstanceId: v.newId }, 'Restarted') }), { disabled: !done }),
      actionButton('Rewind', () => openModal({ title: 'Rewind failed instance', submit: 'Rewind',
        text: 'Retries the failed work of this instance (and its failed sub-orchestrations).',
        fields: [{ name: 'reason', label: 'Reason (optional)' }], onSubmit: (v) => act('rewind', { reason: v.reason }, 'Rewind requested') }),
      { disabled: s !== 'FAILED' }),
      actionButton('Purge', () => openModal({ title: 'Purge instance', submit: 'Purge', danger: true,
        text: `Deletes ${instanceId} and its history for good.`,
        fields: [{ name: 'recursive', label: 'Also purge sub-orchestrations', type: 'checkbox', value: true }],
        onSubmit: (v) => act('purge', { recursive: v.recursive }, 'Purged') }), { disabled: !done, class: 'danger' }));
  }

  function summary(inst) {
    const kv = [
      ['Status', badge(inst.status)],
      ['Name', inst.name + (inst.version ? ` (v${inst.version})` : '')],
      ['Created', `${fmtTime(inst.createdAt)} (${ago(inst.createdAt)})`],
      ['Completed', fmtTime(inst.completedAt)],
      ['Duration', fmtDur(inst.durationMs)],
      ['Last updated', fmtTime(inst.lastUpdatedAt)],
      inst.scheduledStartAt ? ['Scheduled start', fmtTime(inst.scheduledStartAt)] : null,
      ['Execution ID', h('span', { class: 'mono' }, inst.executionId || '—')],
      inst.parentInstanceId ? ['Parent', h('a', { class: 'mono', href: `#/orchestrations/${enc(inst.parentInstanceId)}` }, inst.parentInstanceId)] : null,
      ['Tags', Object.keys(inst.tags || {}).length ? Object.entries(inst.tags).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)) : h('span', { class: 'muted' }, 'none')],
      inst.customStatus ? ['Custom status', h('span', { class: 'mono' }, inst.customStatus)] : null,
    ].filter(Boolean);
    const half = Math.ceil(kv.length / 2);
    const col = (items) => h('dl', { class: 'kv' }, items.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    return h('div', { class: 'panel' },
      h('div', { class: 'grid cols-2', id: 'summary' }, col(kv.slice(0, half)), col(kv.slice(half))),
      inst.failure ? failureBox(inst.failure) : null);
  }

  function tabs() {
    const names = [['timeline', 'Timeline'], ['history', `History (${data.history.length})`], ['flow', `Flow (${data.flow.nodes})`], ['io', 'Input & output']];
    return h('div', { class: 'subtabs', role: 'tablist' }, names.map(([k, label]) =>
      h('button', { class: tab === k ? 'on' : '', role: 'tab', 'data-tab': k, onclick: () => { tab = k; draw(); } }, label)));
  }

  function timelineView() {
    const tl = data.timeline;
    const total = Math.max(tl.durationMs, 1);
    if (!tl.items.length) return h('div', { class: 'panel empty' }, 'Nothing scheduled yet: no activities, timers, sub-orchestrations or events.');
    const grid = h('div', { class: 'tl', id: 'timeline' },
      h('div', { class: 'h' }, 'Step'),
      h('div', { class: 'h' }, h('div', { class: 'axis' }, [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', {}, fmtDur(total * f))))),
      h('div', { class: 'h', style: { justifyContent: 'flex-end' } }, 'Duration'));
    tl.items.forEach((it, i) => {
      const key = `${it.kind}:${it.taskId ?? i}:${it.start}`;
      const point = it.start === it.end && ['event', 'event-sent', 'signal', 'terminated', 'rewound'].includes(it.kind);
      const left = Math.min(100, (it.offsetMs / total) * 100);
      const width = Math.max(0.4, Math.min(100 - left, (it.durationMs / total) * 100));
      const toggle = () => { if (open.has(key)) open.delete(key); else open.add(key); draw(); };
      grid.append(
        h('div', { class: 'lbl', onclick: toggle, 'data-kind': it.kind, 'data-name': it.name, title: 'Show details' },
          h('span', { class: `kind k-${it.kind}` }, it.kind === 'suborchestration' ? 'sub-orch' : it.kind),
          h('span', { class: 'n' }, it.name),
          it.status !== 'completed' && !point ? badge(it.status) : null),
        h('div', { class: 'track', onclick: toggle },
          h('div', { class: `bar k-${it.kind} st-${it.status}${point ? ' point' : ''}`, style: { left: `${left}%`, width: point ? null : `${width}%` },
            title: `${it.name}: ${fmtDur(it.durationMs)}` })),
        h('div', { class: 'dur', 'data-duration-ms': it.durationMs }, point ? fmtTime(it.start).slice(11) : fmtDur(it.durationMs)));
      if (open.has(key)) {
        grid.append(h('div', { class: 'detail' }, h('div', { class: 'grid cols-2' },
          h('div', {}, h('h2', {}, 'Input'), payload(it.input)),
          h('div', {}, h('h2', {}, it.failure ? 'Failure' : 'Output'), it.failure ? failureBox(it.failure) : payload(it.output, it.status === 'running' ? 'still running' : 'none'))),
          h('p', { class: 'muted' }, `Started ${fmtTime(it.start)}`, it.end ? ` · ended ${fmtTime(it.end)}` : '',
            it.fireAt ? ` · due ${fmtTime(it.fireAt)}` : '',
            it.instanceId ? [' · ', h('a', { href: `#/orchestrations/${enc(it.instanceId)}` }, `open ${it.instanceId}`)] : '',
            it.entityId ? [' · ', h('a', { href: `#/entities/${enc(it.entityId)}` }, it.entityId)] : '')));
      }
    });
    return h('div', { class: 'panel flush' }, grid,
      h('div', { class: 'legend', style: { padding: '10px 12px' } },
        h('span', {}, `Started ${fmtTime(tl.start)}`), h('span', {}, tl.end ? `Ended ${fmtTime(tl.end)}` : 'Still running'),
        h('span', {}, `Total ${fmtDur(tl.durationMs)}`), h('span', {}, 'Click a row for its input and output.')));
  }

  function historyView() {
    const rows = data.history.map((e) => {
      const key = `h${e.index}`;
      const d = e.details || {};
      const name = d.name || d.operation || '';
      const tr = h('tr', { class: 'clickable', 'data-event': e.type, onclick: () => { if (open.has(key)) open.delete(key); else open.add(key); draw(); } },
        h('td', { class: 'num' }, e.index),
        h('td', { class: 'num' }, e.eventId >= 0 ? e.eventId : ''),
        h('td', {}, h('span', { class: 'mono' }, e.type)),
        h('td', {}, name),
        h('td', { class: 'nowrap' }, fmtTime(e.timestamp) + '.' + (e.timestamp || '').slice(20, 23)),
        h('td', { class: 'clip mono muted' }, summaryOf(d)));
      return open.has(key) ? [tr, h('tr', {}, h('td', { colspan: 6 }, h('pre', { class: 'json' }, pretty(expandPayloads(d)))))] : tr;
    });
    return h('div', { class: 'panel flush' }, h('table', { id: 'history' },
      h('thead', {}, h('tr', {}, h('th', { class: 'num' }, '#'), h('th', { class: 'num' }, 'Event ID'), h('th', {}, 'Type'), h('th', {}, 'Name'), h('th', {}, 'Time'), h('th', {}, 'Details'))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No history yet: the instance has not started.')))));
  }

  function flowView() {
    const node = (n) => h('li', {},
      h('a', { class: `node${n.current ? ' current' : ''}`, href: `#/orchestrations/${enc(n.instanceId)}`, 'data-flow': n.instanceId },
        badge(n.status), h('b', {}, n.name), h('span', { class: 'mono' }, n.instanceId), h('span', { class: 'muted' }, fmtDur(n.durationMs))),
      n.children.length ? h('ul', {}, n.children.map(node)) : null,
      n.truncated ? h('div', { class: 'muted' }, '… more children not shown') : null);
    return h('div', { class: 'panel flow', id: 'flow' },
      data.flow.missingParent ? h('p', { class: 'muted' }, `Parent ${data.flow.missingParent} (purged)`) : null,
      h('ul', {}, node(data.flow.root)),
      data.flow.nodes === 1 ? h('p', { class: 'muted' }, 'This instance has no parent and no sub-orchestrations.') : null);
  }

  function ioView() {
    const inst = data.instance;
    return h('div', { class: 'grid cols-2' },
      h('div', { class: 'panel' }, h('h2', {}, 'Input'), payload(inst.input)),
      h('div', { class: 'panel' }, h('h2', {}, inst.failure ? 'Failure' : 'Output'),
        inst.failure ? failureBox(inst.failure) : payload(inst.output, TERMINAL.has(inst.status) ? 'none' : 'not finished yet')),
      inst.customStatus ? h('div', { class: 'panel' }, h('h2', {}, 'Custom status'), payload(inst.customStatus)) : null);
  }

  function draw() {
    const inst = data.instance;
    const body = { timeline: timelineView, history: historyView, flow: flowView, io: ioView }[tab] || timelineView;
    fill(root, 
      h('div', { class: 'crumbs' }, h('a', { href: '#/orchestrations' }, 'Orchestrations'), ' / ', inst.name),
      h('div', { class: 'page-head' },
        h('div', { class: 'grow' }, h('div', { class: 'title-id', id: 'instance-id' }, inst.instanceId),
          h('p', { class: 'sub' }, inst.name, ' · ', badge(inst.status),
            data.pendingEvents.length ? h('span', { class: 'muted' }, ` · ${data.pendingEvents.length} event(s) waiting`) : null)),
        actionBar(inst)),
      summary(inst), tabs(), body());
  }

  return { root, load, refresh: load, title: instanceId };
}

function failureBox(f) {
  return h('div', { class: 'failure' }, h('b', {}, f.errorType || 'Error'), ': ', f.errorMessage || '',
    f.stackTrace ? h('details', {}, h('summary', {}, 'Stack trace'), h('pre', {}, f.stackTrace)) : null,
    f.innerFailure ? h('div', { style: { marginTop: '8px' } }, 'Caused by: ', failureBox(f.innerFailure)) : null);
}

function summaryOf(d) {
  const parts = [];
  for (const k of ['input', 'result', 'output', 'fireAt', 'instanceId', 'orchestrationStatus', 'taskScheduledId', 'timerId', 'reason']) {
    if (d[k] !== undefined) parts.push(`${k}=${typeof d[k] === 'string' ? d[k] : JSON.stringify(d[k])}`);
  }
  if (d.failureDetails) parts.push(`error=${d.failureDetails.errorMessage || d.failureDetails.errorType}`);
  const s = parts.join('  ');
  return s.length > 160 ? s.slice(0, 160) + '…' : s;
}

function expandPayloads(d) {
  const out = {};
  for (const [k, v] of Object.entries(d)) {
    if (typeof v === 'string' && ['input', 'result', 'output', 'data'].includes(k)) {
      try { out[k] = JSON.parse(v); continue; } catch (e) { /* keep */ }
    }
    out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// entities
// ---------------------------------------------------------------------------------------------------------------

function entitiesPage(q) {
  const filters = { name: q.get('name') || '', q: q.get('q') || '' };
  const tokens = [null];
  let pageIndex = 0;
  let data = null;
  const root = h('div');

  async function load() {
    const p = new URLSearchParams({ page_size: '50' });
    if (filters.name) p.set('name', filters.name);
    if (filters.q) p.set('q', filters.q);
    if (tokens[pageIndex]) p.set('continuation', tokens[pageIndex]);
    data = await api(`entities?${p}`);
    tokens[pageIndex + 1] = data.next;
    draw();
  }

  let form = null;
  const tableBox = h('div');

  function draw() {
    if (!form) {
      const f = {};
      form = h('form', { class: 'panel filters', onsubmit: (ev) => {
        ev.preventDefault();
        const p = new URLSearchParams();
        if (f.name.value.trim()) p.set('name', f.name.value.trim());
        if (f.q.value.trim()) p.set('q', f.q.value.trim());
        go(`#/entities${p.toString() ? '?' + p : ''}`);
      } },
      h('label', { class: 'field' }, 'Entity name', f.name = h('input', { type: 'text', name: 'name', placeholder: 'e.g. counter' })),
      h('label', { class: 'field wide' }, 'ID contains', f.q = h('input', { type: 'search', name: 'q', placeholder: 'text in the entity id' })),
      h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Apply'),
        h('button', { type: 'button', onclick: () => go('#/entities') }, 'Reset')));
      f.name.value = filters.name; f.q.value = filters.q;
      fill(root,
        h('div', { class: 'page-head' }, h('div', { class: 'grow' }, h('h1', {}, 'Entities'),
          h('p', { class: 'sub' }, `Durable entities of task hub ${app.hub}; agent sessions are the entities the Agents page lists.`)),
        h('div', { class: 'actions' }, actionButton('Signal an entity', () => signalModal(null, load), { name: 'signal-any' }))),
        form, tableBox);
    }
    const items = data ? data.items : [];
    fill(tableBox,
      h('div', { class: 'panel flush' }, h('table', { id: 'entities' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Entity ID'), h('th', {}, 'Name'), h('th', {}, 'Key'), h('th', {}, 'Last modified'),
          h('th', { class: 'num' }, 'Backlog'), h('th', {}, 'Locked by'), h('th', {}, 'State'))),
        h('tbody', {}, items.length ? items.map((e) => h('tr', { class: 'clickable', 'data-entity': e.entityId, onclick: (ev) => {
          if (ev.target.tagName !== 'A') go(`#/entities/${enc(e.entityId)}`);
        } },
        h('td', { class: 'id' }, h('a', { href: `#/entities/${enc(e.entityId)}` }, e.entityId)),
        h('td', {}, e.name, e.agent ? [' ', h('span', { class: 'tag' }, 'agent')] : null),
        h('td', { class: 'mono' }, e.key),
        h('td', { class: 'nowrap', title: e.lastModifiedAt }, fmtTime(e.lastModifiedAt)),
        h('td', { class: 'num' }, num(e.backlog)),
        h('td', { class: 'mono' }, e.lockedByInstance || e.lockedBy || ''),
        h('td', { class: 'clip mono muted' }, e.statePreview || ''))) :
          h('tr', {}, h('td', { colspan: 7, class: 'empty' }, data ? 'No entities.' : 'Loading…')))),
      h('div', { class: 'pager' },
        h('button', { class: 'small', disabled: pageIndex === 0, onclick: () => { pageIndex -= 1; load().catch(showError); } }, '‹ Previous'),
        h('button', { class: 'small', disabled: !(data && data.next), onclick: () => { pageIndex += 1; load().catch(showError); } }, 'Next ›'))));
  }

  return { root, load, refresh: load, title: 'Entities' };
}

function signalModal(entityId, after) {
  const fields = [];
  if (!entityId) fields.push({ name: 'entityId', label: 'Entity ID', placeholder: '@counter@my-key' });
  fields.push({ name: 'operation', label: 'Operation', placeholder: 'e.g. add' },
    { name: 'input', label: 'Input (JSON)', type: 'textarea', placeholder: '5', rows: 4 },
    { name: 'scheduled', label: 'Deliver at (optional)', type: 'datetime-local' });
  openModal({
    title: entityId ? `Signal ${entityId}` : 'Signal an entity', submit: 'Signal', fields,
    onSubmit: async (v) => {
      const id = entityId || v.entityId.trim();
      if (!id) throw new Error('The entity ID is required.');
      if (!v.operation.trim()) throw new Error('The operation name is required.');
      const body = { operation: v.operation.trim() };
      const input = parseJsonField(v.input, 'Input');
      if (input !== undefined) body.input = input;
      if (v.scheduled) body.scheduledTime = localToIso(v.scheduled);
      await api(`entities/${enc(id)}/signal`, { method: 'POST', body });
      toast(`Signalled ${body.operation} to ${id}`);
      if (after) setTimeout(() => after().catch(showError), 500);
    },
  });
}

function entityPage(entityId) {
  let data = null;
  const root = h('div');
  async function load() { data = await api(`entities/${enc(entityId)}`); draw(); }
  function draw() {
    const e = data;
    fill(root, 
      h('div', { class: 'crumbs' }, h('a', { href: '#/entities' }, 'Entities'), ' / ', e.name),
      h('div', { class: 'page-head' },
        h('div', { class: 'grow' }, h('div', { class: 'title-id' }, e.entityId), h('p', { class: 'sub' }, `Entity ${e.name} · key ${e.key}`)),
        h('div', { class: 'actions' },
          e.agent ? h('a', { class: 'btn', href: `#/agents/${enc(e.agent)}/${enc(e.key)}` }, 'Open conversation') : null,
          actionButton('Signal', () => signalModal(entityId, load), { class: 'primary', name: 'signal' }))),
      h('div', { class: 'panel' }, h('dl', { class: 'kv' },
        h('dt', {}, 'Last modified'), h('dd', {}, `${fmtTime(e.lastModifiedAt)} (${ago(e.lastModifiedAt)})`),
        h('dt', {}, 'Backlog'), h('dd', {}, `${num(e.backlog)} operation(s) waiting`),
        h('dt', {}, 'Locked by'), h('dd', {}, e.lockedByInstance ? h('a', { href: `#/orchestrations/${enc(e.lockedByInstance)}` }, e.lockedByInstance) : 'not locked'),
        h('dt', {}, 'State size'), h('dd', {}, `${num(e.stateSize)} bytes`))),
      h('div', { class: 'panel' }, h('h2', {}, 'State'), h('pre', { class: 'json', id: 'entity-state' }, pretty(e.state))),
      e.pendingOperations.length ? h('div', { class: 'panel' }, h('h2', {}, 'Waiting operations'),
        h('table', {}, h('tbody', {}, e.pendingOperations.map((o) => h('tr', {}, h('td', { class: 'mono' }, o.operation || o.type),
          h('td', {}, o.scheduledTime ? `due ${fmtTime(o.scheduledTime)}` : `sent ${fmtTime(o.timestamp)}`)))))) : null);
  }
  return { root, load, refresh: load, title: entityId };
}

// ---------------------------------------------------------------------------------------------------------------
// agents
// ---------------------------------------------------------------------------------------------------------------

function agentsPage(agent) {
  let agents = null;
  let sessions = null;
  const root = h('div');
  async function load() {
    const [a, s] = await Promise.all([api('agents'), agent ? api(`agents/${enc(agent)}/sessions?page_size=200`) : Promise.resolve(null)]);
    agents = a.agents;
    sessions = s;
    draw();
  }
  function draw() {
    const cards = h('div', { class: 'cards', id: 'agents' }, agents.length ? agents.map((a) =>
      h('div', { class: `card${a.agent === agent ? ' on' : ''}`, 'data-agent': a.agent, onclick: () => go(`#/agents/${enc(a.agent)}`) },
        h('span', { class: 't' }, a.agent),
        h('span', { class: 'muted' }, `${num(a.sessions)}${a.sessionsCapped ? '+' : ''} session(s)`),
        h('span', { class: 'muted' }, a.lastActiveAt ? `active ${ago(a.lastActiveAt)}` : ''))) :
      h('div', { class: 'panel empty' }, 'No agent sessions in this task hub yet. Agents keep each session in a durable entity of their own.'));
    let table = null;
    if (agent && sessions) {
      table = h('div', { class: 'panel flush' },
        h('table', { id: 'sessions' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Session'), h('th', {}, 'Status'), h('th', { class: 'num' }, 'Turns'), h('th', { class: 'num' }, 'Messages'),
            h('th', { class: 'num' }, 'Tool calls'), h('th', { class: 'num' }, 'Tokens'), h('th', {}, 'Last message'), h('th', {}, 'Last active'))),
          h('tbody', {}, sessions.items.length ? sessions.items.map((s) => h('tr', { class: 'clickable', 'data-session': s.sessionId,
            onclick: (ev) => { if (ev.target.tagName !== 'A') go(`#/agents/${enc(agent)}/${enc(s.sessionId)}`); } },
          h('td', { class: 'id' }, h('a', { href: `#/agents/${enc(agent)}/${enc(s.sessionId)}` }, s.sessionId)),
          h('td', {}, badge(s.status)),
          h('td', { class: 'num' }, num(s.totals.turns)),
          h('td', { class: 'num' }, num(s.totals.messages)),
          h('td', { class: 'num' }, num(s.totals.toolCalls)),
          h('td', { class: 'num' }, num(s.totals.usage.totalTokenCount)),
          h('td', { class: 'clip' }, s.lastMessage || ''),
          h('td', { class: 'nowrap', title: s.lastModifiedAt }, ago(s.lastModifiedAt)))) :
            h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No sessions.')))));
    }
    fill(root, 
      h('div', { class: 'page-head' }, h('div', { class: 'grow' }, h('h1', {}, agent ? `Agent ${agent}` : 'Agents'),
        h('p', { class: 'sub' }, agent ? 'Sessions, most recently active first. Open one to read the conversation.' : 'Pick an agent to see its sessions.'))),
      cards, table);
  }
  return { root, load, refresh: load, title: agent ? `Agent ${agent}` : 'Agents' };
}

function sessionPage(agent, sessionId, q) {
  let tab = q.get('tab') || 'conversation';
  let data = null;
  let gone = false;
  const root = h('div');
  async function load() {
    try {
      data = await api(`agents/${enc(agent)}/sessions/${enc(sessionId)}`);
      gone = false;
    } catch (e) {
      if (e.status !== 404 || !data) throw e;
      gone = true;
    }
    draw();
  }

  async function signal(action, message) {
    await api(`agents/${enc(agent)}/sessions/${enc(sessionId)}/${action}`, { method: 'POST', body: {} });
    toast(message);
    setTimeout(() => load().catch(showError), 600);
  }

  function draw() {
    if (gone) {
      fill(root, h('div', { class: 'crumbs' }, h('a', { href: '#/agents' }, 'Agents'), ' / ', h('a', { href: `#/agents/${enc(agent)}` }, agent)),
        h('div', { class: 'panel empty', id: 'session-gone' }, `Session ${sessionId} was deleted.`));
      return;
    }
    const c = data.conversation;
    const t = c.totals;
    fill(root, 
      h('div', { class: 'crumbs' }, h('a', { href: '#/agents' }, 'Agents'), ' / ', h('a', { href: `#/agents/${enc(agent)}` }, agent), ' / ', sessionId),
      h('div', { class: 'page-head' },
        h('div', { class: 'grow' }, h('div', { class: 'title-id', id: 'session-id' }, sessionId),
          h('p', { class: 'sub' }, `Agent ${data.agent} · `, badge(data.status), ` · last active ${ago(data.lastModifiedAt)}`,
            c.pending ? ` · ${c.pending} request(s) queued` : '', c.schemaVersion ? ` · schema ${c.schemaVersion}` : '')),
        h('div', { class: 'actions' },
          h('a', { class: 'btn', href: `#/entities/${enc(data.entityId)}` }, 'Entity'),
          actionButton('Reset', () => openModal({ title: 'Reset session', submit: 'Reset', danger: true,
            text: 'Clears the conversation history of this session; the session stays.',
            onSubmit: () => signal('reset', 'Reset requested') }), { name: 'reset-session' }),
          actionButton('Delete', () => openModal({ title: 'Delete session', submit: 'Delete', danger: true,
            text: `Deletes session ${sessionId} and its whole conversation.`,
            onSubmit: () => signal('delete', 'Delete requested') }), { class: 'danger', name: 'delete-session' }))),
      h('div', { class: 'grid cols-4', id: 'session-totals' },
        stat(t.turns, 'turns'), stat(t.messages, 'messages'), stat(t.toolCalls, 'tool calls'),
        stat(t.usage.totalTokenCount, `tokens (in ${num(t.usage.inputTokenCount)} · out ${num(t.usage.outputTokenCount)})`)),
      h('div', { class: 'subtabs', style: { marginTop: '16px' } },
        [['conversation', 'Conversation'], ['raw', 'Raw state']].map(([k, label]) =>
          h('button', { class: tab === k ? 'on' : '', 'data-tab': k, onclick: () => { tab = k; draw(); } }, label))),
      tab === 'raw' ? h('pre', { class: 'json' }, pretty(data.state)) : [archivePager(), conversationView(c)]);
  }

  // Older (archived) entries: the pages the context policy moved out of the state (page 0 is the oldest), fetched
  // one at a time on demand; `archive` stays across refreshes of the page.
  let archive = null; // { page, data } once opened
  async function openArchive(n) {
    archive = { page: n, data: await api(`agents/${enc(agent)}/sessions/${enc(sessionId)}/archive?page=${n}`) };
    draw();
  }
  function archivePager() {
    const a = data.archive || { entries: 0, pages: 0 };
    if (!a.pages) return null;
    const head = `Older (archived) entries: ${num(a.entries)} in ${num(a.pages)} page(s)`;
    if (!archive) {
      return h('div', { class: 'panel', id: 'archive' }, head, ' ',
        h('button', { class: 'btn', 'data-archive': 'open', onclick: () => openArchive(a.pages - 1).catch(showError) }, 'Show'));
    }
    const n = archive.page;
    return h('div', { class: 'panel', id: 'archive', 'data-page': n },
      h('div', { class: 'actions' }, head, ` · page ${n + 1} of ${a.pages}`,
        h('button', { class: 'btn', 'data-archive': 'older', disabled: n <= 0, onclick: () => openArchive(n - 1).catch(showError) }, 'Older'),
        h('button', { class: 'btn', 'data-archive': 'newer', disabled: n >= a.pages - 1, onclick: () => openArchive(n + 1).catch(showError) }, 'Newer'),
        h('button', { class: 'btn', 'data-archive': 'hide', onclick: () => { archive = null; draw(); } }, 'Hide')),
      conversationView(archive.data.conversation, 'archive-conversation'));
  }
  return { root, load, refresh: load, title: `Session ${sessionId}` };
}

function stat(v, label) {
  return h('div', { class: 'panel stat' }, h('span', { class: 'v' }, num(v)), h('span', { class: 'l' }, label));
}

function conversationView(c, id = 'conversation') {
  if (!c.turns.length) return h('div', { class: 'panel empty', id }, 'No messages in this session yet.');
  return h('div', { class: 'conv', id }, c.turns.map((turn, i) => {
    const blocks = [turn.request, ...turn.responses].filter(Boolean);
    const results = {};
    for (const b of blocks) for (const m of b.messages) for (const x of m.contents) if (x.type === 'functionResult') results[x.callId] = x;
    const shown = new Set();
    const body = h('div', { class: 'turn-body' });
    for (const b of blocks) for (const m of b.messages) renderMessage(body, m, results, shown);
    const u = turn.usage;
    return h('section', { class: `turn${turn.isError ? ' error' : ''}`, 'data-turn': i + 1, 'data-status': turn.status },
      h('div', { class: 'turn-head' },
        h('b', {}, `Turn ${i + 1}`), badge(turn.status),
        h('span', { class: 'mono' }, turn.correlationId),
        turn.turnInstanceId ? h('a', { href: `#/orchestrations/${enc(turn.turnInstanceId)}`, 'data-turn-link': '1' }, 'turn orchestration') : null,
        turn.orchestrationId ? h('a', { href: `#/orchestrations/${enc(turn.orchestrationId)}` }, 'caller') : null,
        h('span', { class: 'grow' }),
        u ? h('span', { class: 'usage', 'data-usage': u.totalTokenCount },
          h('span', {}, 'in ', h('b', {}, num(u.inputTokenCount))), h('span', {}, 'out ', h('b', {}, num(u.outputTokenCount))),
          h('span', {}, 'total ', h('b', {}, num(u.totalTokenCount)), ' tokens')) : null,
        turn.durationMs !== null ? h('span', {}, fmtDur(turn.durationMs)) : null,
        h('span', { title: turn.createdAt }, fmtTime(turn.createdAt))),
      body);
  }));
}

function renderMessage(body, m, results, shown) {
  const role = ['user', 'assistant', 'system', 'tool'].includes(m.role) ? m.role : 'assistant';
  const parts = [];
  for (const x of m.contents) {
    if (x.type === 'text') {
      if (x.text) parts.push(h('div', { class: 'bubble' }, x.text));
    } else if (x.type === 'functionCall') {
      const r = results[x.callId];
      if (r) shown.add(x.callId);
      parts.push(h('div', { class: 'tool', 'data-tool': x.name },
        h('div', { class: 'thead' }, h('span', { class: 'kind k-tool' }, 'tool call'), h('span', { class: 'tname' }, x.name),
          h('span', { class: 'muted mono' }, x.callId || '')),
        h('div', { class: 'lab' }, 'Arguments'), h('pre', {}, pretty(x.arguments)),
        h('div', { class: 'lab' }, 'Result'), r ? h('pre', { 'data-result': '1' }, pretty(r.result)) : h('span', { class: 'muted' }, 'no result')));
    } else if (x.type === 'functionResult') {
      if (shown.has(x.callId)) continue;
      parts.push(h('div', { class: 'tool' }, h('div', { class: 'lab' }, `Result of ${x.callId}`), h('pre', {}, pretty(x.result))));
    } else if (x.type === 'error') {
      parts.push(h('div', { class: 'err', 'data-error': '1' }, h('b', {}, 'Error'), x.errorCode ? ` (${x.errorCode})` : '', ': ', x.message || '',
        x.details ? h('div', { class: 'mono' }, typeof x.details === 'string' ? x.details : JSON.stringify(x.details)) : null));
    } else if (x.type === 'reasoning') {
      parts.push(h('details', {}, h('summary', { class: 'muted' }, 'Reasoning'), h('div', { class: 'bubble' }, x.text || '')));
    } else if (x.type === 'uri' || x.type === 'data') {
      parts.push(h('div', { class: 'bubble' }, h('span', { class: 'kind' }, x.mediaType || 'file'), ' ', h('span', { class: 'mono' }, (x.uri || '').slice(0, 120))));
    } else if (x.type === 'usage') {
      // shown in the turn header
    } else {
      parts.push(h('pre', { class: 'json light' }, pretty(x)));
    }
  }
  if (!parts.length) return;
  const who = role === 'tool' ? 'tool' : (m.authorName ? `${role} · ${m.authorName}` : role);
  body.append(h('div', { class: `msg ${role === 'tool' ? 'assistant' : role}`, 'data-role': m.role },
    h('span', { class: 'who' }, who), parts));
}

// ---------------------------------------------------------------------------------------------------------------
// workers & metrics
// ---------------------------------------------------------------------------------------------------------------

function workersPage() {
  let m = null;
  const root = h('div');
  async function load() { m = await api('metrics'); draw(); }
  function draw() {
    const w = m.workItems;
    const tp = m.throughput.perSecond;
    fill(root, 
      h('div', { class: 'page-head' }, h('div', { class: 'grow' }, h('h1', {}, 'Workers & metrics'),
        h('p', { class: 'sub' }, `Task hub ${m.hub} · work items dispatched to connected workers, backlog and throughput.`))),
      h('div', { class: 'grid cols-4', id: 'metric-cards' },
        stat(m.workers.length, 'connected workers'),
        h('div', { class: 'panel stat' }, h('span', { class: 'v' }, `${tp.orchestration.toFixed(2)}/s`), h('span', { class: 'l' }, 'orchestration steps (last minute)')),
        h('div', { class: 'panel stat' }, h('span', { class: 'v' }, `${tp.activity.toFixed(2)}/s`), h('span', { class: 'l' }, 'activities (last minute)')),
        h('div', { class: 'panel stat' }, h('span', { class: 'v' }, `${tp.entity.toFixed(2)}/s`), h('span', { class: 'l' }, 'entity batches (last minute)'))),
      h('div', { class: 'grid cols-2' },
        h('div', { class: 'panel' }, h('h2', {}, 'Throughput (completed work items per second)'), spark(m.throughput.series),
          h('div', { class: 'legend' }, h('span', { style: { color: '#2563eb' } }, '● orchestrations'), h('span', { style: { color: '#16a34a' } }, '● activities'),
            h('span', { style: { color: '#d97706' } }, '● entities'),
            h('span', { class: 'grow' }), h('span', {}, `last ${Math.round(m.throughput.series.length * m.throughput.intervalSeconds)} s · peak ${peak(m.throughput.series).toFixed(2)}/s`))),
        h('div', { class: 'panel flush' }, h('table', { id: 'work-items' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Work items'), h('th', { class: 'num' }, 'Pending'), h('th', { class: 'num' }, 'Active'),
            h('th', { class: 'num' }, 'Dispatched'), h('th', { class: 'num' }, 'Completed'))),
          h('tbody', {},
            h('tr', { 'data-kind': 'orchestration' }, h('td', {}, 'Orchestrations', h('div', { class: 'muted' }, 'pending = events waiting')),
              h('td', { class: 'num' }, num(w.orchestration.pendingEvents)), h('td', { class: 'num' }, num(w.orchestration.active)),
              h('td', { class: 'num' }, num(w.orchestration.dispatched)), h('td', { class: 'num' }, num(w.orchestration.completed))),
            h('tr', { 'data-kind': 'activity' }, h('td', {}, 'Activities'), h('td', { class: 'num' }, num(w.activity.pending)),
              h('td', { class: 'num' }, num(w.activity.active)), h('td', { class: 'num' }, num(w.activity.dispatched)), h('td', { class: 'num' }, num(w.activity.completed))),
            h('tr', { 'data-kind': 'entity' }, h('td', {}, 'Entities', h('div', { class: 'muted' }, 'pending = operations waiting')),
              h('td', { class: 'num' }, num(w.entity.pendingMessages)), h('td', { class: 'num' }, num(w.entity.active)),
              h('td', { class: 'num' }, num(w.entity.dispatched)), h('td', { class: 'num' }, num(w.entity.completed))))))),
      h('div', { class: 'panel flush' }, h('table', { id: 'workers' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Worker stream'), h('th', {}, 'Connected'), h('th', { class: 'num' }, 'Orchestrations'),
          h('th', { class: 'num' }, 'Activities'), h('th', { class: 'num' }, 'Entities'), h('th', {}, 'Filters'))),
        h('tbody', {}, m.workers.length ? m.workers.map((x) => h('tr', { 'data-worker': x.id },
          h('td', { class: 'id' }, x.id),
          h('td', { class: 'nowrap', title: x.connectedSince || '' }, x.connectedSince ? ago(x.connectedSince) : ''),
          ['orchestration', 'activity', 'entity'].map((k) => h('td', { class: 'num', title: 'active / capacity' }, `${num(x.active[k])} / ${num(x.capacity[k])}`)),
          h('td', { class: 'muted' }, filterText(x.filters)))) :
          h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No worker is connected to this task hub.'))))),
      h('div', { class: 'panel' }, h('h2', {}, 'Instances by status'),
        h('div', { class: 'chips', id: 'instance-counts' }, Object.keys(m.instances).length ? Object.entries(m.instances).map(([s, n]) =>
          h('a', { class: 'chip', href: `#/orchestrations?status=${s}` }, h('span', { class: `dot s-${s}` }), s.replace(/_/g, ' ').toLowerCase(), h('b', {}, num(n)))) :
          h('span', { class: 'muted' }, 'No instances yet.'))));
  }
  return { root, load, refresh: load, title: 'Workers & metrics' };
}

function filterText(f) {
  const parts = [];
  if (f.orchestrations) parts.push(`orchestrations: ${f.orchestrations.join(', ') || 'none'}`);
  if (f.activities) parts.push(`activities: ${f.activities.join(', ') || 'none'}`);
  if (f.entities) parts.push(`entities: ${f.entities.join(', ') || 'none'}`);
  return parts.length ? parts.join(' · ') : 'all work';
}

function spark(series) {
  const W = 600, H = 120, P = 4;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'spark');
  const max = Math.max(1, ...series.flatMap((s) => [s.orchestration, s.activity, s.entity]));
  for (const f of [0.25, 0.5, 0.75]) {
    const l = document.createElementNS(ns, 'line');
    l.setAttribute('x1', 0); l.setAttribute('x2', W); l.setAttribute('y1', H * f); l.setAttribute('y2', H * f);
    l.setAttribute('class', 'grid-line');
    svg.append(l);
  }
  const colors = { orchestration: '#2563eb', activity: '#16a34a', entity: '#d97706' };
  if (series.length >= 2) {
    for (const [k, color] of Object.entries(colors)) {
      const pts = series.map((s, i) => `${(i / (series.length - 1)) * W},${H - P - (s[k] / max) * (H - 2 * P)}`).join(' ');
      const pl = document.createElementNS(ns, 'polyline');
      pl.setAttribute('points', pts); pl.setAttribute('fill', 'none'); pl.setAttribute('stroke', color);
      pl.setAttribute('stroke-width', '2'); pl.setAttribute('vector-effect', 'non-scaling-stroke');
      svg.append(pl);
    }
  }
  return svg;
}

function peak(series) {
  return Math.max(0, ...series.flatMap((s) => [s.orchestration, s.activity, s.entity]));
}

// ---------------------------------------------------------------------------------------------------------------
// router and shell
// ---------------------------------------------------------------------------------------------------------------

function showError(e) {
  const view = document.getElementById('view');
  const existing = view.querySelector('.banner.bad');
  const msg = e && e.message ? e.message : String(e);
  if (existing) existing.textContent = msg;
  else view.prepend(h('div', { class: 'banner bad', id: 'error' }, msg));
}

async function route() {
  const { parts, query } = parseHash();
  const seq = ++app.seq;
  const section = parts[0] || 'orchestrations';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === section);
  let page;
  if (section === 'orchestrations' && parts.length > 1) page = instancePage(parts.slice(1).join('/'), query);
  else if (section === 'orchestrations') page = orchestrationsPage(query);
  else if (section === 'entities' && parts.length > 1) page = entityPage(parts.slice(1).join('/'));
  else if (section === 'entities') page = entitiesPage(query);
  else if (section === 'agents' && parts.length > 2) page = sessionPage(parts[1], parts.slice(2).join('/'), query);
  else if (section === 'agents') page = agentsPage(parts[1] || null);
  else if (section === 'workers') page = workersPage();
  else page = orchestrationsPage(query);
  app.page = page;
  const view = document.getElementById('view');
  view.replaceChildren(page.root);
  page.root.append(h('div', { class: 'empty' }, 'Loading…'));
  document.title = `${page.title} · Moorage`;
  try {
    await page.load();
  } catch (e) {
    if (seq !== app.seq) return;
    page.fill(root, h('div', { class: 'banner bad', id: 'error' }, e.message));
  }
}

function tick() {
  if (!document.getElementById('autorefresh').checked || modalOpen() || !app.page || document.hidden) return;
  const seq = app.seq;
  app.page.refresh().catch((e) => { if (seq === app.seq) showError(e); });
}

async function boot() {
  try {
    app.info = await (await authedFetch('/api/info')).json();
  } catch (e) {
    document.getElementById('view').replaceChildren(h('div', { class: 'banner bad' }, `Cannot reach the sidecar: ${e.message}`));
    return;
  }
  if (app.info.security && app.info.security.unauthenticatedExposed) {
    document.querySelector('header.topbar').after(h('div', { class: 'banner bad', id: 'unauthenticated-banner' },
      'This sidecar listens beyond loopback without authentication (--allow-unauthenticated): anyone who can reach it can read and change everything.'));
  }
  const stored = localStorage.getItem('moorage.hub');
  app.hub = app.info.hubs.includes(stored) ? stored : app.info.defaultHub;
  const sel = document.getElementById('hub');
  for (const name of app.info.hubs) sel.append(h('option', { value: name }, name));
  sel.value = app.hub;
  sel.addEventListener('change', () => {
    app.hub = sel.value;
    localStorage.setItem('moorage.hub', app.hub);
    const { parts } = parseHash();
    go(`#/${parts[0] || 'orchestrations'}`);
  });
  const mode = document.getElementById('mode');
  mode.textContent = app.info.actions ? 'actions enabled' : 'read-only';
  mode.className = `mode ${app.info.actions ? 'rw' : 'ro'}`;
  mode.title = app.info.actions ? 'This dashboard can change instances and entities' : actionsDisabledTitle();
  const auto = document.getElementById('autorefresh');
  auto.checked = localStorage.getItem('moorage.autorefresh') !== 'off';
  auto.addEventListener('change', () => localStorage.setItem('moorage.autorefresh', auto.checked ? 'on' : 'off'));
  window.addEventListener('hashchange', route);
  app.timer = setInterval(tick, REFRESH_MS);
  route();
}

boot();
