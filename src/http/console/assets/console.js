// The operations console: polls /console/api/* with the token kept in sessionStorage and
// renders each panel. Everything from the server is put in the page as text (textContent),
// never as HTML: dead-letter payloads and reasons come from outside.
(() => {
  'use strict';

  const TOKEN_KEY = 'aliexpress.console.token';
  const EVERY_MS = { lag: 2000, overview: 5000, deadLetters: 5000, parked: 5000 };
  const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989'];

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  const charts = {};

  // el('td', {class: 'num'}, 'text', childNode, ...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'onclick') e.addEventListener('click', v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function table(headers, rows) {
    const head = el('tr', {}, headers.map((h) => el('th', { class: h.endsWith('#') ? 'num' : null }, h.replace(/#$/, ''))));
    return el('table', {}, el('thead', {}, head), el('tbody', {}, rows));
  }

  function replace(id, ...nodes) {
    $(id).replaceChildren(...nodes.flat());
  }

  function showError(message) {
    const box = $('error');
    box.hidden = !message;
    box.textContent = message || '';
  }

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function api(path, body) {
    const init = { headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } };
    if (body !== undefined) {
      init.method = 'POST';
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new HttpError(r.status, data.detail || `${r.status} ${r.statusText}`);
    return data;
  }

  // Runs a poller: first at once, then every `ms`, while a token is set.
  const pollers = [];
  function poll(name, ms, fn) {
    const run = async () => {
      if (!token) return;
      try {
        await fn();
        $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
        if ($('error').dataset.source === name) showError('');
      } catch (e) {
        if (e instanceof HttpError && e.status === 401) {
          setToken('');
          showError('The token was refused (401): enter a valid read or write token.');
        } else {
          $('error').dataset.source = name;
          showError(`${name}: ${e.message}`);
        }
      }
    };
    pollers.push(run);
    setInterval(run, ms);
  }

  function setToken(t) {
    token = t;
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    $('updated').textContent = t ? 'Loading…' : 'Enter a token to see the platform.';
    if (t) pollers.forEach((run) => run());
  }

  const fmtAge = (s) => (s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
  const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '-');

  // ---------------------------------------------------------------- overview
  async function overview() {
    const o = await api('/console/api/overview');
    replace('health', table(['dependency', 'state', 'latency#'], o.health.map((c) => el('tr', { 'data-dependency': c.name },
      el('td', {}, c.name),
      el('td', { class: c.ok ? 'ok' : 'bad' }, c.ok ? 'ok' : `DOWN: ${c.error || ''}`),
      el('td', { class: 'num' }, c.latency_ms === null ? '-' : `${c.latency_ms} ms`)))));
    const b = o.outbox;
    replace('outbox', b ? table(['', 'value#'], [
      ['pending rows', b.pending],
      ['parked rows', b.parked],
      ['oldest pending', fmtAge(b.oldest_pending_age_secs)],
      ['relays', Object.keys(b.relays).length],
      ['slices owned', `${b.slices_owned} / 64`],
    ].map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', { class: 'num', id: `outbox-${k.replace(/ /g, '-')}` }, v)))) :
      el('p', { class: 'bad' }, 'unavailable (database down?)'));
    replace('replays', o.replays.length ? table(['when', 'group', 'topic', 'partition#', 'from#', 'to#', 'mode', 'host'],
      o.replays.map((r) => el('tr', {}, el('td', {}, fmtTime(r.executed_at)), el('td', {}, r.group), el('td', {}, r.topic),
        el('td', { class: 'num' }, r.partition), el('td', { class: 'num' }, r.from_offset ?? '-'),
        el('td', { class: 'num' }, r.to_offset), el('td', {}, r.mode), el('td', {}, r.host))))
      : el('p', { class: 'empty' }, 'No replay recorded.'));
    const r = o.last_reconcile;
    const drifted = r ? Object.entries(r.drift) : [];
    replace('drift', !r ? el('p', { class: 'empty' }, 'No scheduled check recorded (run-product-event-consumer --reconcile-every).') :
      el('div', {},
        el('p', { id: 'drift-summary', class: drifted.length ? 'bad' : 'ok' },
          drifted.length ? `drift: ${drifted.map(([k, n]) => `${k} ${n}`).join(', ')}` : 'no drift',
          el('span', { class: 'muted' }, ` (${r.compared} products, ${fmtTime(r.ran_at)}, ${r.host})`)),
        r.examples.length ? table(['store', 'kind', 'product', 'postgres#', 'store#'], r.examples.map((d) => el('tr', {},
          el('td', {}, d.store), el('td', {}, d.kind), el('td', {}, el('code', {}, d.product_id)),
          el('td', { class: 'num' }, d.postgres_version ?? '-'), el('td', { class: 'num' }, d.store_version ?? '-')))) : ''));
    const depth = Object.fromEntries(o.dead_letters.map((d) => [d.topic, d.records]));
    for (const opt of $('dlq-topic').options) {
      const topic = [...Object.keys(depth)].find((t) => t.endsWith(`dlq.product.${opt.value}`));
      if (topic) opt.textContent = `${topic} (${depth[topic] ?? '?'} records)`;
    }
  }

  // ---------------------------------------------------------------- groups and chart
  // An ETA in words: '-' when unknown, never 0 for a lag nobody knows.
  function etaText(secs) {
    if (secs === null || secs === undefined) return '-';
    if (secs < 120) return `${Math.round(secs)} s`;
    if (secs < 7200) return `${Math.round(secs / 60)} min`;
    return `${(secs / 3600).toFixed(1)} h`;
  }

  function catchUpText(c) {
    if (!c) return 'ETA -';
    if (c.trend === 'catching up') return `catching up, ETA ${etaText(c.eta_secs)} (partition ${c.slowest_partition})`;
    if (c.trend === 'not catching up') return `not catching up (partition ${c.slowest_partition})`;
    if (c.trend === 'caught up') return 'caught up';
    return 'ETA -';
  }

  async function lag() {
    const v = await api('/console/api/lag');
    const partitionEta = (g, p) => {
      const c = g.catch_up && g.catch_up.partitions.find((x) => x.partition === p.partition);
      return c ? etaText(c.eta_secs) : '-';
    };
    replace('groups', v.groups.map((g) => el('div', { class: 'group', 'data-group': g.group },
      el('h3', {}, el('span', {}, g.group), el('span', { class: 'muted' }, g.topic),
        el('span', {}, 'lag ', el('b', { class: 'group-lag' }, g.lag)),
        el('span', {}, `members ${g.members}`), el('span', { class: 'muted' }, g.state || ''),
        el('span', { class: `verdict verdict-${g.verdict}` }, g.verdict),
        el('span', { class: 'group-eta' }, catchUpText(g.catch_up))),
      g.error ? el('p', { class: 'bad' }, g.error) :
        g.partitions.length ? table(['partition#', 'committed#', 'log end#', 'lag#', 'eta#', 'consumer', 'host'],
          g.partitions.map((p) => el('tr', { 'data-partition': p.partition },
            el('td', { class: 'num' }, p.partition), el('td', { class: 'num' }, p.current ?? '-'),
            el('td', { class: 'num' }, p.log_end), el('td', { class: 'num partition-lag' }, p.lag),
            el('td', { class: 'num partition-eta' }, partitionEta(g, p)), el('td', {}, p.client_id || '-'), el('td', {}, p.host || '-'))))
          : el('p', { class: 'empty' }, 'No committed offsets and no members yet.'))));
    const h = v.history;
    draw('lag-chart', h.at, h.series.map((s) => ({ label: s.group, values: s.lag })), 'messages');
    draw('rate-chart', h.at, h.series.flatMap((s) => [
      { label: `${s.group} consumed`, values: s.consumed_per_sec },
      { label: `${s.group} produced`, values: s.produced_per_sec, dash: [6, 4] },
    ]), 'msg/s');
  }

  function draw(id, at, lines, unit) {
    const box = $(id);
    box.dataset.points = String(at.length);
    if (typeof uPlot === 'undefined') return;
    const data = [at, ...lines.map((l) => l.values)];
    const shape = lines.map((l) => l.label).join('|');
    let c = charts[id];
    if (c && c.shape !== shape) {
      c.plot.destroy();
      c = undefined;
    }
    if (!c) {
      const opts = {
        width: Math.max(320, box.clientWidth || 600),
        height: 220,
        series: [{}, ...lines.map((l, i) => ({
          label: l.label, stroke: COLORS[Math.floor(i / (lines.length > 2 ? 2 : 1)) % COLORS.length], width: 2, dash: l.dash, spanGaps: false,
        }))],
        axes: [{}, { label: unit, size: 60 }],
        scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      };
      c = charts[id] = { shape, plot: new uPlot(opts, data, box) };
      box.dataset.points = String(at.length);
    } else {
      c.plot.setData(data);
    }
  }

  // ---------------------------------------------------------------- dead letters
  async function deadLetters() {
    const topic = $('dlq-topic').value;
    const d = await api(`/console/api/dead-letters?topic=${encodeURIComponent(topic)}`);
    const checked = new Set([...document.querySelectorAll('#dead-letters input:checked')].map((c) => c.value));
    replace('dlq-triage', d.triage.length ? table(['fingerprint', 'count#', 'products#', 'failed after redrive#', 'stage', 'class', 'first seen', 'last seen', 'reason', ''],
      d.triage.map((g) => el('tr', { class: 'cause', 'data-fingerprint': g.fingerprint },
        el('td', {}, el('code', {}, g.fingerprint)), el('td', { class: 'num cause-count' }, g.count), el('td', { class: 'num' }, g.products),
        el('td', { class: 'num' }, g.failed_after_redrive), el('td', {}, g.stage), el('td', { class: 'error-class' }, g.error_class),
        el('td', {}, g.first_seen), el('td', {}, g.last_seen), el('td', {}, g.reason.slice(0, 160)),
        el('td', {}, el('button', { type: 'button', class: 'cause-dry-run', onclick: () => redriveCause(g) }, 'Dry run: redrive this cause')))))
      : el('p', { class: 'empty' }, 'No causes.'));
    replace('dead-letters', d.records.length ? [
      el('p', { class: 'muted' }, `${d.total} record(s) in ${d.topic}; the newest ${d.records.length} shown.`),
      table(['', 'at', 'failed at', 'class', 'reason', 'original', 'key', 'state'], d.records.slice().reverse().map((r) => {
        const at = `${r.partition}:${r.offset}`;
        return el('tr', { class: 'dead-letter', 'data-at': at },
          el('td', {}, r.redriven ? '' : el('input', { type: 'checkbox', value: at, checked: checked.has(at), 'aria-label': `select ${at}` })),
          el('td', {}, at), el('td', {}, r.failed_at), el('td', { class: 'error-class' }, r.error_class),
          el('td', {}, el('details', {}, el('summary', {}, r.reason.slice(0, 160)), el('pre', {}, r.reason), el('pre', {}, r.payload), r.reads ? el('p', {}, 'this binary: ' + r.reads) : null)),
          el('td', {}, `${r.original_topic}[${r.original_partition}]@${r.original_offset}`), el('td', {}, r.key),
          el('td', {}, r.redriven ? 'redriven' : 'waiting'));
      })),
    ] : el('p', { class: 'empty' }, `No dead letters in ${d.topic}.`));
  }

  // A dry run of one cause's records (a fingerprint of the triage table).
  function redriveCause(g) {
    const offsets = g.records.map(([p, o]) => `${p}:${o}`);
    plan('dlq-plan', '/console/api/dead-letters/redrive', { topic: $('dlq-topic').value, offsets, all: false },
      (r) => [`${r.count} record(s) of cause ${g.fingerprint} (${g.error_class}).`,
        `With a canary first (stops if one fails again): aliexpress dlq redrive --fingerprint ${g.fingerprint} --execute --canary 5`],
      deadLetters).catch((e) => showError(e.message));
  }

  function selected(id) {
    return [...document.querySelectorAll(`#${id} input:checked`)].map((c) => c.value);
  }

  // A dry run, shown with the button that executes it (which needs a write token).
  async function plan(planId, path, body, describe, refresh) {
    const box = $(planId);
    box.hidden = false;
    box.replaceChildren(el('p', {}, 'Dry run…'));
    try {
      const dry = await api(path, { ...body, execute: false });
      const run = el('button', { type: 'button', class: 'danger', disabled: dry.count === 0 }, `Execute (${dry.count})`);
      run.addEventListener('click', async () => {
        run.disabled = true;
        try {
          const done = await api(path, { ...body, execute: true });
          box.replaceChildren(el('p', { class: 'ok' }, `Done: ${done.count} record(s).`));
          refresh();
        } catch (e) {
          box.append(el('p', { class: 'bad' }, e.status === 403 ? 'This token may not execute: use a write token.' : e.message));
        }
      });
      box.replaceChildren(el('p', {}, `Dry run: ${dry.count} would be changed. Nothing was changed yet.`),
        el('ul', {}, describe(dry).map((t) => el('li', {}, t))),
        el('div', { class: 'toolbar' }, run, el('button', { type: 'button', onclick: () => { box.hidden = true; } }, 'Cancel')));
    } catch (e) {
      box.replaceChildren(el('p', { class: 'bad' }, e.message));
    }
  }

  const redrivePlan = (all) => {
    const offsets = all ? [] : selected('dead-letters');
    if (!all && !offsets.length) return showError('Select dead letters first.');
    plan('dlq-plan', '/console/api/dead-letters/redrive', { topic: $('dlq-topic').value, offsets, all },
      (r) => r.records.map((x) => (x.to ? `${x.partition}:${x.offset} -> ${x.to} (key ${x.key}, ${x.error_class})` : `${x.partition}:${x.offset} skipped: no original topic`)),
      deadLetters);
  };

  // ---------------------------------------------------------------- parked rows
  async function parked() {
    const p = await api('/console/api/outbox/parked');
    const checked = new Set(selected('parked'));
    replace('parked', p.rows.length ? [
      el('p', { class: 'muted' }, `${p.total} parked row(s); the oldest ${p.rows.length} shown.`),
      table(['', 'id#', 'product', 'version#', 'event', 'attempts#', 'parked at', 'last error'], p.rows.map((r) => el('tr', { 'data-id': r.id },
        el('td', {}, el('input', { type: 'checkbox', value: r.id, checked: checked.has(String(r.id)), 'aria-label': `select ${r.id}` })),
        el('td', { class: 'num' }, r.id), el('td', {}, r.aggregate_id), el('td', { class: 'num' }, r.aggregate_version),
        el('td', {}, r.event_type), el('td', { class: 'num' }, r.attempts), el('td', {}, fmtTime(r.parked_at)),
        el('td', {}, r.last_error || '-')))),
    ] : el('p', { class: 'empty' }, 'No parked rows.'));
  }

  const retryPlan = (all) => {
    const ids = all ? [] : selected('parked').map(Number);
    if (!all && !ids.length) return showError('Select parked rows first.');
    plan('parked-plan', '/console/api/outbox/retry', { ids, all_parked: all },
      (r) => r.rows.map((x) => `row ${x.id}: ${x.event_type} v${x.aggregate_version} of ${x.aggregate_id} (${x.attempts} attempts)`),
      parked);
  };

  // ---------------------------------------------------------------- trace
  async function trace(id) {
    $('trace-verdict').textContent = 'Tracing…';
    const t = await api(`/console/api/trace/${encodeURIComponent(id)}`);
    $('trace-verdict').textContent = t.verdict.text;
    $('trace-verdict').className = t.verdict.state === 'ok' ? 'ok' : 'bad';
    replace('trace', table(['hop', 'at', '+ms#', 'detail'], t.hops.map((h) => el('tr', {},
      el('td', {}, h.hop), el('td', {}, fmtTime(h.at)), el('td', { class: 'num' }, h.after_ms ?? '-'), el('td', {}, h.detail)))));
  }

  // ---------------------------------------------------------------- wiring
  function start() {
    poll('overview', EVERY_MS.overview, overview);
    poll('lag', EVERY_MS.lag, lag);
    poll('dead letters', EVERY_MS.deadLetters, deadLetters);
    poll('parked rows', EVERY_MS.parked, parked);
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      showError('');
      setToken($('token').value.trim());
      $('token').value = '';
    });
    $('forget').addEventListener('click', () => setToken(''));
    $('dlq-topic').addEventListener('change', () => { $('dlq-plan').hidden = true; deadLetters().catch((e) => showError(e.message)); });
    $('dlq-dry-selected').addEventListener('click', () => redrivePlan(false));
    $('dlq-dry-all').addEventListener('click', () => redrivePlan(true));
    $('parked-dry-selected').addEventListener('click', () => retryPlan(false));
    $('parked-dry-all').addEventListener('click', () => retryPlan(true));
    $('trace-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const id = $('trace-id').value.trim();
      if (id) trace(id).catch((err) => { $('trace-verdict').textContent = ''; showError(`trace: ${err.message}`); });
    });
    setToken(token);
  }

  start();
})();
