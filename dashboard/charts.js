// Small SVG charts, drawn by hand: a sparkline and a time-series line chart
// with a y axis, a moving time window and a hover read-out. Colours come from
// CSS classes (.s1 … .s3), so both themes style them.

const NS = 'http://www.w3.org/2000/svg';

function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

const r1 = (x) => Math.round(x * 10) / 10;

/** A one-line chart with a soft area, scaled to its box. */
export function sparkline(container, { cls = 's1' } = {}) {
  const svg = el('svg', { class: `sparkline ${cls}`, viewBox: '0 0 100 32', preserveAspectRatio: 'none', 'aria-hidden': 'true' }, container);
  const area = el('path', { class: 'area' }, svg);
  const line = el('path', { class: 'line', 'vector-effect': 'non-scaling-stroke' }, svg);
  return {
    update(values) {
      const v = values.filter((x) => Number.isFinite(x));
      if (v.length < 2) {
        line.setAttribute('d', '');
        area.setAttribute('d', '');
        return;
      }
      const max = Math.max(...v);
      const min = Math.min(0, ...v);
      const span = max - min || 1;
      const pts = v.map((x, i) => [r1((i / (v.length - 1)) * 100), r1(30 - ((x - min) / span) * 27)]);
      const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x} ${y}`).join('');
      line.setAttribute('d', d);
      area.setAttribute('d', `${d}L100 32L0 32Z`);
    },
  };
}

/** Round steps for an axis from 0 to `max`: 1, 2, 2.5, 5 × 10^n. */
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

/**
 * A time-series chart.
 *   series:  [{key, label, cls, area?}]
 *   format:  value → text (axis and read-out)
 *   windowMs: the width of the time window ending at `now`
 *   floor:   the smallest top of the y axis (so an idle chart has a sane scale)
 * update(points, now): points are [{t, values: {key: number|null}}], oldest first.
 */
export function lineChart(container, { series, format, windowMs = 60000, floor = 1, empty = 'collecting…' }) {
  container.classList.add('linechart');
  const svg = el('svg', { role: 'img' }, container);
  const tip = document.createElement('div');
  tip.className = 'chart-tip';
  tip.hidden = true;
  container.appendChild(tip);
  let state = { points: [], now: Date.now() };
  let hoverX = null;
  let layout = null;

  function draw() {
    const w = container.clientWidth;
    const h = container.clientHeight;
    if (w < 40 || h < 40) return;
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.setAttribute('width', w);
    svg.setAttribute('height', h);
    svg.replaceChildren();
    const { points, now } = state;
    const t0 = now - windowMs;
    const visible = points.filter((p) => p.t >= t0 - 2000);
    let max = 0;
    for (const p of visible) for (const s of series) {
      const v = p.values[s.key];
      if (Number.isFinite(v) && v > max) max = v;
    }
    const { top, step } = niceScale(Math.max(max, floor));
    const labels = [];
    for (let v = 0; v <= top + step / 2; v += step) labels.push(v);
    const left = Math.max(...labels.map((v) => format(v).length)) * 6.4 + 10;
    const m = { l: left, r: 8, t: 8, b: 20 };
    const iw = w - m.l - m.r;
    const ih = h - m.t - m.b;
    const x = (t) => m.l + ((t - t0) / windowMs) * iw;
    const y = (v) => m.t + ih - (v / top) * ih;
    layout = { x, y, m, iw, ih, t0 };

    const grid = el('g', { class: 'grid' }, svg);
    for (const v of labels) {
      const yy = Math.round(y(v)) + 0.5;
      el('line', { x1: m.l, x2: w - m.r, y1: yy, y2: yy, class: v === 0 ? 'base' : '' }, grid);
      const text = el('text', { x: m.l - 8, y: yy + 3.5, 'text-anchor': 'end' }, grid);
      text.textContent = format(v);
    }
    const seconds = windowMs / 1000;
    for (let i = 0; i <= 4; i += 1) {
      const t = t0 + (windowMs * i) / 4;
      const text = el('text', { x: x(t), y: h - 5, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, grid);
      text.textContent = i === 4 ? 'now' : `−${Math.round(seconds - (seconds * i) / 4)}s`;
    }

    const clip = `clip-${Math.random().toString(36).slice(2)}`;
    const defs = el('defs', {}, svg);
    const cp = el('clipPath', { id: clip }, defs);
    el('rect', { x: m.l, y: 0, width: iw, height: h }, cp);
    const plot = el('g', { 'clip-path': `url(#${clip})` }, svg);

    let anyPoint = false;
    for (const s of series) {
      const segments = [];
      let current = [];
      for (const p of visible) {
        const v = p.values[s.key];
        if (Number.isFinite(v)) current.push([r1(x(p.t)), r1(y(v))]);
        else if (current.length) { segments.push(current); current = []; }
      }
      if (current.length) segments.push(current);
      const g = el('g', { class: `series ${s.cls}` }, plot);
      for (const seg of segments) {
        anyPoint = true;
        const d = seg.map(([px, py], i) => `${i ? 'L' : 'M'}${px} ${py}`).join('');
        if (s.area && seg.length > 1) el('path', { class: 'area', d: `${d}L${seg[seg.length - 1][0]} ${m.t + ih}L${seg[0][0]} ${m.t + ih}Z` }, g);
        if (seg.length === 1) el('circle', { class: 'dot', cx: seg[0][0], cy: seg[0][1], r: 2.5 }, g);
        else el('path', { class: 'line', d }, g);
      }
    }
    if (!anyPoint) {
      const text = el('text', { x: m.l + iw / 2, y: m.t + ih / 2, 'text-anchor': 'middle', class: 'empty' }, svg);
      text.textContent = empty;
    }
    svg.setAttribute('aria-label', series.map((s) => s.label).join(', ') + ' over the last ' + seconds + ' seconds');
    drawHover();
  }

  function drawHover() {
    svg.querySelector('.hover')?.remove();
    if (hoverX === null || !layout || !state.points.length) { tip.hidden = true; return; }
    const { x, y, m, ih, t0 } = layout;
    const candidates = state.points.filter((p) => p.t >= t0);
    if (!candidates.length) { tip.hidden = true; return; }
    let best = candidates[0];
    for (const p of candidates) if (Math.abs(x(p.t) - hoverX) < Math.abs(x(best.t) - hoverX)) best = p;
    const bx = r1(x(best.t));
    const g = el('g', { class: 'hover' }, svg);
    el('line', { x1: bx, x2: bx, y1: m.t, y2: m.t + ih }, g);
    tip.replaceChildren();
    const head = document.createElement('div');
    head.className = 'tip-time';
    const ago = Math.max(0, Math.round((state.now - best.t) / 1000));
    head.textContent = ago === 0 ? 'now' : `${ago}s ago`;
    tip.appendChild(head);
    for (const s of series) {
      const v = best.values[s.key];
      if (Number.isFinite(v)) el('circle', { cx: bx, cy: r1(y(v)), r: 3.5, class: `${s.cls} hover-dot` }, g);
      const row = document.createElement('div');
      row.className = `tip-row ${s.cls}`;
      const key = document.createElement('i');
      const name = document.createElement('span');
      name.textContent = s.label;
      const val = document.createElement('b');
      val.textContent = Number.isFinite(v) ? format(v) : '–';
      row.append(key, name, val);
      tip.appendChild(row);
    }
    tip.hidden = false;
    const cw = container.clientWidth;
    const tw = tip.offsetWidth;
    const left = bx + 12 + tw > cw ? bx - 12 - tw : bx + 12;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${m.t}px`;
  }

  svg.addEventListener('pointermove', (e) => {
    const rect = svg.getBoundingClientRect();
    hoverX = e.clientX - rect.left;
    drawHover();
  });
  svg.addEventListener('pointerleave', () => { hoverX = null; drawHover(); });
  new ResizeObserver(() => draw()).observe(container);

  return {
    update(points, now = Date.now()) {
      state = { points, now };
      draw();
    },
  };
}
