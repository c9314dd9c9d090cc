// podscope web view. Every piece of data is put in the page as text
// (createTextNode / textContent), never parsed as HTML: pod names, paths and
// event fields come from the traced workloads.
'use strict';
(() => {
  const csrf = document.querySelector('meta[name="csrf"]').getAttribute('content');
  const main = document.getElementById('main');
  const statusEl = document.getElementById('status');
  const SVG = 'http://www.w3.org/2000/svg';
  let snap = null;
  let prev = null;
  let page = null;
  let stream = null;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const k of kids.flat()) {
      if (k === null || k === undefined) continue;
      e.appendChild(typeof k === 'object' ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    setAttrs(e, attrs);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.setAttribute('class', v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch('api/' + path, opts);
    if (r.status === 401) {
      location.href = 'login';
      throw new Error('not logged in');
    }
    const text = await r.text();
    let v = null;
    try { v = JSON.parse(text); } catch (_) { v = null; }
    if (!r.ok) throw new Error((v && v.error) || (r.status + ' ' + text));
    return v;
  }

  function bytes(b) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? String(Math.round(b)) : b.toFixed(1)) + ' ' + u[i];
  }
  function num(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (v >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }
  function podKey(p) { return p.namespace + '/' + p.pod; }

  // Rates per second between the last two snapshots.
  function rates(p) {
    const out = { exec: 0, conn: 0, tx: 0, rx: 0, req: 0, err: null };
    if (!prev) return out;
    const q = prev.pods.find((x) => podKey(x) === podKey(p));
    const dt = (snap.at_ms - prev.at_ms) / 1000;
    if (!q || dt <= 0) return out;
    const d = (f) => Math.max(0, p[f] - q[f]) / dt;
    out.exec = d('execs');
    out.conn = d('conns_out') + d('conns_in');
    out.tx = d('tx_bytes');
    out.rx = d('rx_bytes');
    out.req = d('requests_in');
    const dr = p.requests_in - q.requests_in;
    out.err = dr > 0 ? (100 * (p.errors_in - q.errors_in)) / dr : null;
    return out;
  }

  function setStatus() {
    if (!snap) return;
    const o = snap.observer;
    const bad = o.lost > 0 || o.gaps > 0 || o.error;
    statusEl.classList.toggle('bad', !!bad);
    statusEl.textContent = o.error
      ? 'observer: ' + o.error
      : `${snap.nodes.length} node(s) · ${snap.pods.length} pod(s) · ${o.records} records` +
        (o.lost ? ` · LOST ${o.lost}` : '') + (o.gaps ? ` · GAP ${o.gaps}` : '');
  }

  function connectLive() {
    const es = new EventSource('api/live');
    es.addEventListener('snapshot', (e) => {
      prev = snap;
      snap = JSON.parse(e.data);
      setStatus();
      if (page && page.live) page.live();
    });
    es.onerror = () => {
      statusEl.textContent = 'reconnecting…';
      statusEl.classList.add('bad');
      api('GET', 'snapshot').catch(() => {});
    };
  }

  // ---- pods ----
  function podsPage() {
    const filter = el('input', { id: 'pod-filter', type: 'search', placeholder: 'filter by node, namespace, pod' });
    const count = el('span', { class: 'muted', id: 'pod-count' });
    const nodesBody = el('tbody', { id: 'nodes-body' });
    const body = el('tbody', { id: 'pods-body' });
    const cols = ['NODE', 'NAMESPACE', 'POD', 'IP', 'CPU%', 'MEM', 'EXEC/s', 'CONN/s', 'TX/s', 'RX/s', 'REQ/s', 'ERR%', 'EXECS', 'CONNS', 'REQS'];
    const kinds = ['', '', '', '', 'cpu', 'mem'];
    const numeric = (i) => i >= 4;
    main.replaceChildren(
      el('h2', {}, 'Nodes'),
      el('table', { id: 'nodes' },
        el('thead', {}, el('tr', {}, ['NODE', 'STATE', 'KERNEL', 'PODS'].map((h) => el('th', {}, h)))), nodesBody),
      el('h2', {}, 'Pods'),
      el('div', { class: 'toolbar' }, filter, count),
      el('table', { id: 'pods' },
        el('thead', {}, el('tr', {}, cols.map((h, i) => el('th', { class: numeric(i) ? 'num' : '' }, h)))), body),
    );
    function render() {
      if (!snap) return;
      nodesBody.replaceChildren(...snap.nodes.map((n) =>
        el('tr', {}, el('td', {}, n.node), el('td', {}, n.state), el('td', {}, n.kernel), el('td', { class: 'num' }, n.pods))));
      const f = filter.value.trim().toLowerCase();
      const pods = snap.pods.filter((p) => !f || (p.node + ' ' + p.namespace + ' ' + p.pod).toLowerCase().includes(f));
      count.textContent = `${pods.length} of ${snap.pods.length} pods`;
      body.replaceChildren(...pods.map((p) => {
        const r = rates(p);
        const cells = [p.node, p.namespace, p.pod, p.ip || '',
          p.cpu_percent == null ? '' : p.cpu_percent.toFixed(1), p.memory_bytes == null ? '' : bytes(p.memory_bytes),
          num(r.exec), num(r.conn), bytes(r.tx), bytes(r.rx),
          num(r.req), r.err === null ? '' : r.err.toFixed(1), p.execs, p.conns_out + p.conns_in, p.requests_in];
        return el('tr', { 'data-pod': podKey(p) }, cells.map((c, i) =>
          el('td', { class: ((numeric(i) ? 'num ' : '') + (kinds[i] || '')).trim() }, c)));
      }));
    }
    filter.addEventListener('input', render);
    render();
    return { live: render };
  }

  // ---- service map ----
  // A workload's name: the pod name without a ReplicaSet hash and pod
  // suffix (web-7d9f6c5b8-x2x4q -> web) or a StatefulSet ordinal (db-0 -> db).
  function workload(name) {
    return name.replace(/-[a-z0-9]{6,10}-[a-z0-9]{5}$/, '').replace(/-[a-z0-9]{5}$/, '').replace(/-\d+$/, '');
  }

  function mapPage() {
    const group = el('input', { type: 'checkbox', id: 'group-workload' });
    const svgBox = el('div', { id: 'map-box' });
    const edgesBody = el('tbody', { id: 'edges-body' });
    const recentBox = el('div', { id: 'recent-box' });
    let selected = null;
    main.replaceChildren(
      el('h2', {}, 'Service map'),
      el('div', { class: 'toolbar' }, el('label', {}, group, ' group pods by workload'),
        el('span', { class: 'muted' }, 'Edges: TCP connections and HTTP/gRPC requests seen by the kernel probes. Click an edge for its recent requests.')),
      svgBox,
      el('h2', {}, 'Edges'),
      el('table', { id: 'edges' },
        el('thead', {}, el('tr', {}, ['SOURCE', 'TARGET', 'CONNS', 'TX', 'RX', 'REQUESTS', 'ERRORS', 'P99 ms'].map((h, i) =>
          el('th', { class: i >= 2 ? 'num' : '' }, h)))), edgesBody),
      recentBox,
    );
    group.addEventListener('change', render);

    function view() {
      const m = snap.map;
      if (!group.checked) return { nodes: m.nodes, edges: m.edges, grouped: false };
      const id = (n) => (n.kind === 'pod' ? 'wl:' + n.namespace + '/' + workload(n.label) : n.id);
      const byId = new Map(m.nodes.map((n) => [n.id, n]));
      const nodes = new Map();
      for (const n of m.nodes) {
        const k = id(n);
        if (!nodes.has(k)) nodes.set(k, { id: k, kind: n.kind, label: n.kind === 'pod' ? workload(n.label) : n.label, namespace: n.namespace });
      }
      const edges = new Map();
      for (const e of m.edges) {
        const s = id(byId.get(e.source)); const t = id(byId.get(e.target));
        const k = s + '\u0000' + t;
        const a = edges.get(k) || { source: s, target: t, conns: 0, failed_conns: 0, tx_bytes: 0, rx_bytes: 0, requests: 0, errors: 0, p99_ms: null };
        for (const f of ['conns', 'failed_conns', 'tx_bytes', 'rx_bytes', 'requests', 'errors']) a[f] += e[f];
        if (e.p99_ms !== undefined && (a.p99_ms === null || e.p99_ms > a.p99_ms)) a.p99_ms = e.p99_ms;
        edges.set(k, a);
      }
      return { nodes: [...nodes.values()], edges: [...edges.values()], grouped: true };
    }

    function label(id, nodes) {
      const n = nodes.find((x) => x.id === id);
      if (!n) return id;
      return n.kind === 'pod' ? n.namespace + '/' + n.label : n.label;
    }

    function render() {
      if (!snap) return;
      const v = view();
      // Layout: one column per namespace, then addresses outside the pods.
      const cols = [...new Set(v.nodes.filter((n) => n.kind === 'pod').map((n) => n.namespace))].sort();
      const colOf = (n) => (n.kind === 'pod' ? cols.indexOf(n.namespace) : cols.length);
      const ncols = cols.length + (v.nodes.some((n) => n.kind !== 'pod') ? 1 : 0);
      // Inside a namespace, callers left of what they call: a node's layer
      // is the longest chain of edges into it from its own namespace.
      const byId = new Map(v.nodes.map((n) => [n.id, n]));
      const layer = new Map(v.nodes.map((n) => [n.id, 0]));
      for (let round = 0; round < 6; round++) {
        for (const e of v.edges) {
          const a = byId.get(e.source); const b = byId.get(e.target);
          if (!a || !b || a === b || colOf(a) !== colOf(b)) continue;
          const d = layer.get(a.id) + 1;
          if (d > layer.get(b.id) && d < 6) layer.set(b.id, d);
        }
      }
      const layers = new Array(ncols).fill(0);
      for (const n of v.nodes) layers[colOf(n)] = Math.max(layers[colOf(n)], layer.get(n.id) + 1);
      const layerW = 190; const rowH = 46; const top = 40;
      const colX = []; let x = 40;
      for (let c = 0; c < ncols; c++) { colX.push(x); x += layers[c] * layerW + 60; }
      const pos = new Map();
      const rows = new Map();
      for (const n of [...v.nodes].sort((a, b) => a.label.localeCompare(b.label))) {
        const c = colOf(n); const l = layer.get(n.id); const k = c + ':' + l;
        const r = rows.get(k) || 0;
        pos.set(n.id, { x: colX[c] + l * layerW, y: top + r * rowH });
        rows.set(k, r + 1);
      }
      const h = top + Math.max(1, ...rows.values()) * rowH + 20;
      const svg = sv('svg', { class: 'map', id: 'map', width: Math.max(600, x), height: h, role: 'img', 'aria-label': 'service map' });
      const defs = sv('defs');
      const marker = sv('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 18, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse' });
      marker.appendChild(sv('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8796a5' }));
      defs.appendChild(marker);
      svg.appendChild(defs);
      cols.forEach((ns, i) => svg.appendChild(sv('text', { class: 'ns-label', x: colX[i] - 10, y: 20 }, ns)));
      if (ncols > cols.length) svg.appendChild(sv('text', { class: 'ns-label', x: colX[cols.length] - 10, y: 20 }, 'outside the pods'));
      for (const e of v.edges) {
        const a = pos.get(e.source); const b = pos.get(e.target);
        if (!a || !b) continue;
        const key = e.source + '\u0000' + e.target;
        const g = sv('g', { class: 'edge' + (e.errors ? ' err' : '') + (selected === key ? ' sel' : ''), 'data-source': e.source, 'data-target': e.target });
        if (a === b) {
          g.appendChild(sv('path', { d: `M ${a.x} ${a.y - 8} c -30 -30 30 -30 0 0`, fill: 'none', stroke: '#8796a5' }));
        } else {
          g.appendChild(sv('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y, 'marker-end': 'url(#arrow)' }));
        }
        const parts = [];
        if (e.requests) parts.push(`${e.requests} req`, `${e.errors} err`);
        if (e.p99_ms !== null && e.p99_ms !== undefined) parts.push(`p99 ${e.p99_ms.toFixed(1)} ms`);
        if (e.conns) parts.push(`${e.conns} conn`);
        if (e.tx_bytes + e.rx_bytes) parts.push(bytes(e.tx_bytes + e.rx_bytes));
        g.appendChild(sv('text', { x: (a.x + b.x) / 2 + 4, y: (a.y + b.y) / 2 - 4 }, parts.join(' · ')));
        g.appendChild(sv('title', {}, `${label(e.source, v.nodes)} → ${label(e.target, v.nodes)}`));
        g.addEventListener('click', () => select(e, v));
        svg.appendChild(g);
      }
      for (const n of v.nodes) {
        const p = pos.get(n.id);
        const g = sv('g', { class: 'node ' + n.kind, 'data-node': n.id });
        g.appendChild(sv('circle', { cx: p.x, cy: p.y, r: 8 }));
        g.appendChild(sv('text', { x: p.x + 12, y: p.y + 4 }, n.label));
        svg.appendChild(g);
      }
      svgBox.replaceChildren(svg);
      edgesBody.replaceChildren(...v.edges.map((e) => {
        const key = e.source + '\u0000' + e.target;
        const tr = el('tr', { class: selected === key ? 'sel' : '', 'data-source': e.source, 'data-target': e.target },
          el('td', {}, label(e.source, v.nodes)), el('td', {}, label(e.target, v.nodes)),
          el('td', { class: 'num' }, e.conns), el('td', { class: 'num' }, bytes(e.tx_bytes)), el('td', { class: 'num' }, bytes(e.rx_bytes)),
          el('td', { class: 'num req' }, e.requests), el('td', { class: 'num' }, e.errors),
          el('td', { class: 'num' }, e.p99_ms === null || e.p99_ms === undefined ? '' : e.p99_ms.toFixed(2)));
        tr.addEventListener('click', () => select(e, v));
        return tr;
      }));
      if (!v.edges.length) edgesBody.appendChild(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No connections or requests seen yet.')));
    }

    async function select(e, v) {
      selected = e.source + '\u0000' + e.target;
      render();
      const title = `${label(e.source, v.nodes)} → ${label(e.target, v.nodes)}`;
      if (v.grouped) {
        recentBox.replaceChildren(el('h2', {}, title), el('p', { class: 'muted' }, 'Recent requests are kept per pod: clear "group pods by workload" to see them.'));
        return;
      }
      try {
        const q = 'source=' + encodeURIComponent(e.source) + '&target=' + encodeURIComponent(e.target);
        const rows = await api('GET', 'edge?' + q);
        recentBox.replaceChildren(
          el('h2', {}, 'Recent requests: ' + title),
          el('table', { id: 'recent' },
            el('thead', {}, el('tr', {}, ['TIME', 'SIDE', 'METHOD', 'PATH', 'STATUS', 'ms', 'ERROR'].map((h) => el('th', {}, h)))),
            el('tbody', {}, rows.length ? rows.map((r) => el('tr', {},
              el('td', {}, (r.timestamp || '').replace('T', ' ').slice(0, 23)), el('td', {}, r.role),
              el('td', {}, r.grpc ? 'gRPC' : r.method), el('td', { class: 'path' }, r.grpc || r.path),
              el('td', { class: 'num' }, r.status === undefined ? '' : r.status),
              el('td', { class: 'num' }, r.duration_ms.toFixed(2)), el('td', {}, r.error || ''))) :
              el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'Connections only: no HTTP/gRPC requests on this edge.')))));
      } catch (err) {
        recentBox.replaceChildren(el('p', { class: 'error' }, String(err.message)));
      }
    }
    render();
    return { live: render };
  }

  // ---- sessions ----
  function sessionsPage() {
    const probes = el('input', { id: 's-probes', value: 'exec', size: 18, title: 'comma-separated probes, e.g. exec,tcp,http' });
    const ns = el('input', { id: 's-namespace', value: 'default', size: 12 });
    const all = el('input', { id: 's-all', type: 'checkbox' });
    const pod = el('input', { id: 's-pod', placeholder: 'pod name or glob', size: 16 });
    const dur = el('input', { id: 's-duration', placeholder: 'e.g. 60s (none: until stopped)', size: 22 });
    const msg = el('p', { id: 's-msg' });
    const body = el('tbody', { id: 'sessions-body' });
    const create = el('button', { id: 's-create', type: 'submit' }, 'Create and start');
    const form = el('form', { class: 'toolbar', id: 'session-form' },
      el('label', {}, 'probes ', probes), el('label', {}, 'namespace ', ns), el('label', {}, all, ' all namespaces'),
      el('label', {}, 'pod ', pod), el('label', {}, 'duration ', dur), create);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const req = { probes: probes.value.split(',').map((s) => s.trim()).filter(Boolean) };
      if (all.checked) req.all_namespaces = true; else if (ns.value.trim()) req.namespace = ns.value.trim();
      if (pod.value.trim()) req.pod = pod.value.trim();
      if (dur.value.trim()) req.duration = dur.value.trim();
      try {
        const s = await api('POST', 'v1/sessions', req);
        msg.className = '';
        msg.textContent = `session ${s.id} created (${s.state})`;
        refresh();
      } catch (err) {
        msg.className = 'error';
        msg.textContent = String(err.message);
      }
    });
    main.replaceChildren(el('h2', {}, 'Sessions'), form, msg,
      el('table', { id: 'sessions' },
        el('thead', {}, el('tr', {}, ['ID', 'STATE', 'PROBES', 'PODS', 'EVENTS', 'LOST', 'GAPS', ''].map((h) => el('th', {}, h)))), body));
    async function act(fn) {
      try { await fn(); msg.className = ''; } catch (err) { msg.className = 'error'; msg.textContent = String(err.message); }
      refresh();
    }
    async function refresh() {
      let list;
      try { list = await api('GET', 'v1/sessions'); } catch (err) { msg.className = 'error'; msg.textContent = String(err.message); return; }
      body.replaceChildren(...list.map((s) => {
        const sel = s;
        const where = (sel.all_namespaces ? 'all namespaces' : (sel.namespace || 'default')) + (sel.pod ? ' / ' + sel.pod : '');
        const running = s.state === 'running' || s.state === 'stopping';
        return el('tr', { 'data-session': s.id },
          el('td', {}, s.id), el('td', {}, s.state), el('td', {}, (s.probes || []).join(',')), el('td', {}, where),
          el('td', { class: 'num' }, s.events), el('td', { class: 'num' }, s.lost), el('td', { class: 'num' }, s.gaps),
          el('td', {},
            el('button', { type: 'button', class: 'watch', onclick: () => { location.hash = '#session/' + encodeURIComponent(s.id); } }, 'Watch'), ' ',
            running ? el('button', { type: 'button', class: 'stop', onclick: () => act(() => api('PUT', 'v1/sessions/' + encodeURIComponent(s.id), { state: 'stopped' })) }, 'Stop')
              : el('button', { type: 'button', class: 'start', onclick: () => act(() => api('PUT', 'v1/sessions/' + encodeURIComponent(s.id), { state: 'running' })) }, 'Start'), ' ',
            el('button', { type: 'button', class: 'delete', onclick: () => act(() => api('DELETE', 'v1/sessions/' + encodeURIComponent(s.id))) }, 'Delete')));
      }));
    }
    refresh();
    return { live: refresh };
  }

  function detail(r) {
    switch (r.probe) {
      case 'exec': return (r.args && r.args.length ? r.args.join(' ') : r.filename || '') + (r.error ? ' ' + r.error : '');
      case 'tcp': return `${r.saddr}:${r.sport} → ${r.daddr}:${r.dport} ${r.state || ''}` + (r.tx_bytes !== undefined ? ` tx ${r.tx_bytes} rx ${r.rx_bytes}` : '');
      case 'http': return `${r.method} ${r.path} ${r.status === undefined ? '' : r.status} ${((r.duration_ns || 0) / 1e6).toFixed(2)} ms`;
      case 'open': return `${r.filename || r.path || ''} ${r.error || ''}`;
      default: {
        const skip = new Set(['timestamp', 'node', 'namespace', 'pod', 'pod_uid', 'container', 'container_id', 'image', 'pid', 'tid', 'uid', 'comm', 'cgroup_id', 'probe', 'kind']);
        return Object.entries(r).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
      }
    }
  }

  function sessionPage(id) {
    const box = el('div', { class: 'events', id: 'events' });
    const pause = el('button', { type: 'button', id: 'pause' }, 'Pause');
    const info = el('span', { class: 'muted', id: 'events-info' });
    let paused = false; let shown = 0; let held = 0;
    pause.addEventListener('click', () => { paused = !paused; pause.textContent = paused ? 'Resume' : 'Pause'; });
    main.replaceChildren(el('h2', {}, 'Session ' + id), el('div', { class: 'toolbar' }, el('a', { href: '#sessions' }, '← sessions'), pause, info), box);
    const es = new EventSource('api/v1/sessions/' + encodeURIComponent(id) + '/events');
    stream = es;
    es.onmessage = (m) => {
      let r;
      try { r = JSON.parse(m.data); } catch (_) { return; }
      if (paused && r.pid !== undefined) { held++; info.textContent = `${shown} shown · ${held} not shown while paused`; return; }
      let line;
      if (r.pid !== undefined) {
        shown++;
        const who = r.pod ? `${r.namespace}/${r.pod}` : `pid ${r.pid}`;
        line = el('div', { class: 'ev', 'data-probe': r.probe }, `${(r.timestamp || '').slice(11, 23)} ${who} ${r.comm} ${r.probe} ${r.kind} ${detail(r)}`);
      } else {
        line = el('div', { class: 'muted ctl' }, JSON.stringify(r));
        if (r.kind === 'end') es.close();
      }
      const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      box.appendChild(line);
      while (box.childNodes.length > 2000) box.removeChild(box.firstChild);
      if (atEnd) box.scrollTop = box.scrollHeight;
      info.textContent = `${shown} shown` + (held ? ` · ${held} not shown while paused` : '');
    };
    es.onerror = () => { info.textContent = `${shown} shown · stream closed`; es.close(); };
    return {};
  }

  function ms(ns) { return (ns / 1e6).toFixed(ns < 1e7 ? 2 : 1); }

  function tracesPage() {
    const body = el('tbody', { id: 'traces-body' });
    const box = el('div', { id: 'trace-box' });
    let open = null;
    main.replaceChildren(el('h2', {}, 'Traces'),
      el('p', { class: 'muted' }, 'Requests joined into traces by the same rules as the OTLP export (docs/otlp.md, "Request traces"): ' +
        'a server span under the client span at the other end of its connection, or under the span id on the wire; ' +
        'the kernel work of the serving thread as child spans. The last 200 traces.'),
      el('table', { id: 'traces' },
        el('thead', {}, el('tr', {}, ['START', 'ROOT', 'POD', 'SPANS', 'KERNEL', 'ERRORS', 'ms'].map((h, i) => el('th', { class: i >= 3 ? 'num' : '' }, h)))), body),
      box);
    async function refresh() {
      let list;
      try { list = await api('GET', 'traces'); } catch (err) { box.replaceChildren(el('p', { class: 'error' }, String(err.message))); return; }
      body.replaceChildren(...list.map((t) => {
        const tr = el('tr', { 'data-trace': t.trace_id, class: open === t.trace_id ? 'sel' : '' },
          el('td', {}, new Date(t.start_ns / 1e6).toISOString().slice(11, 23)), el('td', { class: 'root' }, t.root), el('td', {}, t.root_pod),
          el('td', { class: 'num' }, t.spans), el('td', { class: 'num' }, t.kernel_spans), el('td', { class: 'num' }, t.errors),
          el('td', { class: 'num' }, ms(t.duration_ns)));
        tr.addEventListener('click', () => show(t.trace_id));
        return tr;
      }));
      if (!list.length) body.appendChild(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No request traces yet (the http probe sees HTTP/1 and HTTP/2 requests).')));
    }
    async function show(id) {
      open = id;
      let t;
      try { t = await api('GET', 'traces/' + encodeURIComponent(id)); } catch (err) { box.replaceChildren(el('p', { class: 'error' }, String(err.message))); return; }
      const spans = t.spans;
      const t0 = Math.min(...spans.map((s) => s.start_ns));
      const t1 = Math.max(...spans.map((s) => s.start_ns + s.duration_ns));
      const total = Math.max(1, t1 - t0);
      // Depth from the parent chain; a span whose parent is not here is a root.
      const byId = new Map(spans.map((s) => [s.span_id, s]));
      const depth = (s) => { let d = 0; let p = s; const seen = new Set(); while (p.parent_id && byId.has(p.parent_id) && !seen.has(p.parent_id) && d < 32) { seen.add(p.parent_id); p = byId.get(p.parent_id); d++; } return d; };
      // Order: depth-first from the roots, children by start.
      const kids = new Map();
      for (const s of spans) { const p = s.parent_id && byId.has(s.parent_id) ? s.parent_id : ''; if (!kids.has(p)) kids.set(p, []); kids.get(p).push(s); }
      const ordered = [];
      const walk = (p, guard) => { for (const s of (kids.get(p) || []).sort((a, b) => a.start_ns - b.start_ns)) { if (guard.has(s.span_id)) continue; guard.add(s.span_id); ordered.push(s); walk(s.span_id, guard); } };
      walk('', new Set());
      const rows = ordered.map((s) => {
        const left = (100 * (s.start_ns - t0)) / total;
        const width = Math.max(0.3, (100 * s.duration_ns) / total);
        const bar = el('div', { class: 'bar ' + s.kind });
        bar.style.marginLeft = left + '%';
        bar.style.width = width + '%';
        return el('tr', { class: 'span ' + s.kind, 'data-span': s.span_id, 'data-parent': s.parent_id || '' },
          el('td', { class: 'span-name' }, el('span', { class: 'indent' }, '\u00a0'.repeat(depth(s) * 3)), s.name),
          el('td', {}, s.kind), el('td', {}, s.namespace + '/' + s.pod), el('td', {}, s.comm),
          el('td', { class: 'num' }, s.status === undefined ? '' : s.status),
          el('td', { class: 'num' }, ms(s.duration_ns)),
          el('td', { class: 'timeline' }, bar));
      });
      const parts = [el('h2', {}, 'Trace ' + t.trace_id),
        el('table', { id: 'waterfall' },
          el('thead', {}, el('tr', {}, ['SPAN', 'KIND', 'POD', 'COMM', 'STATUS', 'ms', `0 … ${ms(total)} ms`].map((h) => el('th', {}, h)))),
          el('tbody', {}, rows))];
      if (t.spans_dropped) parts.push(el('p', { class: 'warn' }, `${t.spans_dropped} more spans not kept`));
      box.replaceChildren(...parts);
      refresh();
    }
    refresh();
    return { live: refresh };
  }

  function route() {
    if (stream) { stream.close(); stream = null; }
    const h = location.hash.replace(/^#/, '') || 'pods';
    const [name, arg] = h.split('/');
    for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.page === (name === 'session' ? 'sessions' : name));
    if (name === 'map') page = mapPage();
    else if (name === 'sessions') page = sessionsPage();
    else if (name === 'session' && arg) page = sessionPage(decodeURIComponent(arg));
    else if (name === 'traces') page = tracesPage();
    else page = podsPage();
  }

  document.getElementById('logout').addEventListener('click', async () => {
    try { await api('POST', 'logout'); } catch (_) { /* logged out either way */ }
    location.href = 'login';
  });
  window.addEventListener('hashchange', route);
  connectLive();
  route();
})();
