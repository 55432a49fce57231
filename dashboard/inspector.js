// The room inspector: tails one room over GET /v1/rooms/{room}/ws?rewind=N
// and shows every frame (subscribed, reset, event, caught_up, error), newest
// first. It keeps the client's half of the protocol like any good client: the
// cursor (epoch, last seq), a resume from it after a retryable close, and a
// check that seqs arrive gapless and without duplicates.

import { roomPath, socketUrl, validRoom } from './api.js';
import { clock, int, iso } from './format.js';
import { rawFields, renderJson } from './json.js';

const MAX_FRAMES = 400;

/** Close codes (docs/protocol.md): meaning, and whether to resume. */
const CLOSES = {
  1000: ['closed', false],
  1001: ['going away', true],
  1006: ['connection lost', true],
  1008: ['policy violation', false],
  1009: ['frame too big', false],
  1011: ['server error', true],
  1012: ['node restarting', true],
  1013: ['over capacity', true],
  4001: ['unauthenticated', false],
  4003: ['forbidden', false],
  4008: ['rate limited', true],
  4009: ['slow consumer', true],
  4010: ['heartbeat timeout', true],
};

const $ = (id) => document.getElementById(id);

export function createInspector({ onTail = () => {} } = {}) {
  const form = $('inspect-form');
  const roomInput = $('insp-room');
  const rewindInput = $('insp-rewind');
  const toggle = $('insp-toggle');
  const list = $('frames');
  const stateEl = $('insp-state');
  const hold = $('insp-hold');
  const holdLabel = hold.parentElement;

  let ws = null;
  let room = null;
  let epoch = null;
  let head = null;
  let lastSeq = null;
  let events = 0;
  let live = false;
  let ordered = true;
  let wanted = false;
  let attempt = 0;
  let retryTimer = null;
  let held = [];

  function setState(state, label) {
    stateEl.dataset.state = state;
    stateEl.querySelector('.label').textContent = label;
    toggle.textContent = wanted ? 'Stop' : 'Tail';
    toggle.classList.toggle('danger', wanted);
  }

  function facts() {
    const e = $('insp-epoch');
    e.textContent = epoch ? epoch.slice(0, 8) + '…' : '–';
    e.title = epoch || '';
    $('insp-head').textContent = head === null ? '–' : int(head);
    $('insp-seq').textContent = lastSeq === null ? '–' : int(lastSeq);
    $('insp-count').textContent = int(events);
    const order = $('insp-order');
    order.textContent = lastSeq === null ? '–' : ordered ? 'gapless ✓' : 'gap ✗';
    order.className = lastSeq === null ? '' : ordered ? 'good' : 'bad';
  }

  function row(kind, cells) {
    const li = document.createElement('li');
    li.className = `frame f-${kind}`;
    const type = document.createElement('span');
    type.className = 'f-type';
    type.textContent = kind.replace('_', ' ');
    li.appendChild(type);
    for (const cell of cells) li.appendChild(cell);
    return li;
  }

  function text(cls, value, title) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = value;
    if (title) s.title = title;
    return s;
  }

  function push(li) {
    if (hold.checked) {
      held.push(li);
      holdLabel.dataset.count = String(held.length);
      return;
    }
    list.querySelector('.empty')?.remove();
    list.prepend(li);
    while (list.children.length > MAX_FRAMES) list.lastElementChild.remove();
  }

  function note(kind, message) {
    push(row(kind, [text('f-seq', ''), text('f-ts', clock(Date.now())), text('f-note', message)]));
  }

  function onFrame(raw) {
    let frame;
    try { frame = JSON.parse(raw); } catch { note('error', `unparseable frame: ${raw.slice(0, 200)}`); return; }
    const ts = text('f-ts', clock(Date.now()), 'received');
    switch (frame.type) {
      case 'welcome':
        push(row('welcome', [text('f-seq', ''), ts, text('f-note', `session ${frame.session} · heartbeat ${int(frame.heartbeat_ms / 1000)} s`)]));
        break;
      case 'subscribed': {
        const resumedFrom = epoch !== null ? lastSeq : null;
        if (resumedFrom === null) lastSeq = null;
        epoch = frame.epoch;
        head = frame.head;
        attempt = 0;
        live = false;
        setState('replay', 'Catching up');
        push(row('subscribed', [text('f-seq', ''), ts, text('f-note', `${frame.room} · epoch ${frame.epoch} · head ${int(frame.head)}${resumedFrom !== null ? ` · resumed after #${int(resumedFrom)}` : ''}`)]));
        break;
      }
      case 'reset':
        epoch = frame.epoch;
        lastSeq = head;
        push(row('reset', [text('f-seq', ''), ts, text('f-note', `cursor cannot be served · earliest #${int(frame.earliest)} · epoch ${frame.epoch} — continuing live from head #${int(head)}`)]));
        break;
      case 'event': {
        const fields = rawFields(raw);
        if (lastSeq !== null && frame.seq !== lastSeq + 1) {
          ordered = false;
          note('gap', frame.seq <= lastSeq ? `duplicate: #${frame.seq} after #${lastSeq}` : `gap: expected #${lastSeq + 1}, got #${frame.seq}`);
        }
        if (lastSeq === null || frame.seq > lastSeq) lastSeq = frame.seq;
        head = Math.max(head ?? 0, frame.seq);
        events += 1;
        const data = document.createElement('code');
        data.className = 'f-data';
        data.tabIndex = 0;
        data.title = 'click to expand';
        const rawData = fields && fields.data !== undefined ? fields.data : JSON.stringify(frame.data);
        renderJson(data, rawData, 0);
        const toggleData = () => {
          const expanded = data.classList.toggle('expanded');
          data.replaceChildren();
          renderJson(data, rawData, expanded ? 2 : 0);
        };
        data.addEventListener('click', toggleData);
        data.addEventListener('keydown', (e) => { if (e.key === 'Enter') toggleData(); });
        const li = row('event', [text('f-seq', `#${frame.seq}`), text('f-ts', clock(frame.ts), `${iso(frame.ts)} (store time)`), data]);
        li.dataset.seq = String(frame.seq);
        if (!live) li.classList.add('replayed');
        push(li);
        break;
      }
      case 'caught_up':
        live = true;
        setState('live', 'Live');
        push(row('caught_up', [text('f-seq', `#${frame.seq}`), ts, text('f-note', `replay done through #${int(frame.seq)} · live from here`)]));
        break;
      case 'error':
        push(row('error', [text('f-seq', ''), ts, text('f-note', `${frame.code}: ${frame.message}`)]));
        break;
      case 'pong':
        break;
      default:
        push(row('other', [text('f-seq', ''), ts, text('f-note', raw.slice(0, 500))]));
    }
    facts();
  }

  function connect() {
    clearTimeout(retryTimer);
    const params = new URLSearchParams();
    if (lastSeq !== null && epoch) {
      params.set('cursor', String(lastSeq));
      params.set('epoch', epoch);
    } else {
      const rewind = Number.parseInt(rewindInput.value, 10);
      if (rewind > 0) params.set('rewind', String(rewind));
    }
    const query = params.toString();
    const socket = new WebSocket(socketUrl(roomPath(room, `/ws${query ? `?${query}` : ''}`)));
    ws = socket;
    setState('connecting', lastSeq !== null ? `Resuming from #${lastSeq}` : 'Connecting');
    socket.addEventListener('message', (e) => { if (ws === socket && typeof e.data === 'string') onFrame(e.data); });
    socket.addEventListener('close', (e) => {
      if (ws !== socket) return;
      ws = null;
      const [meaning, retry] = CLOSES[e.code] || ['closed', e.code >= 1001 && e.code < 4000];
      const reason = e.reason ? ` (${e.reason})` : '';
      if (!wanted) {
        setState('idle', 'Stopped');
        return;
      }
      if (retry) {
        const delay = Math.min(10000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
        attempt += 1;
        note('closed', `${e.code} ${meaning}${reason} — resuming${lastSeq !== null ? ` from #${lastSeq}` : ''} in ${(delay / 1000).toFixed(1)} s`);
        setState('retry', `Reconnecting (${e.code})`);
        retryTimer = setTimeout(connect, delay);
      } else {
        wanted = false;
        note('closed', `${e.code} ${meaning}${reason}`);
        setState('error', `Closed ${e.code}`);
      }
    });
  }

  function stop() {
    wanted = false;
    clearTimeout(retryTimer);
    const socket = ws;
    ws = null;
    if (socket) socket.close(1000, 'inspector stopped');
    setState('idle', 'Stopped');
  }

  /** Tails `name` from the start (rewind), replacing any current tail. */
  function tail(name) {
    const next = name.trim();
    if (!validRoom(next)) {
      roomInput.setCustomValidity('1–128 of A–Z a–z 0–9 _ - : . @ =');
      roomInput.reportValidity();
      return;
    }
    roomInput.setCustomValidity('');
    stop();
    roomInput.value = next;
    room = next;
    epoch = null;
    head = null;
    lastSeq = null;
    events = 0;
    ordered = true;
    attempt = 0;
    wanted = true;
    list.replaceChildren();
    facts();
    connect();
    onTail(room);
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (wanted && roomInput.value.trim() === room) stop();
    else tail(roomInput.value);
  });
  roomInput.addEventListener('input', () => {
    roomInput.setCustomValidity('');
    if (wanted) toggle.textContent = roomInput.value.trim() === room ? 'Stop' : 'Tail';
  });
  $('insp-clear').addEventListener('click', () => {
    list.replaceChildren();
    held = [];
    delete holdLabel.dataset.count;
  });
  hold.addEventListener('change', () => {
    if (hold.checked) return;
    const pending = held;
    held = [];
    delete holdLabel.dataset.count;
    for (const li of pending) push(li);
  });

  facts();
  return { tail, stop, get room() { return wanted ? room : null; } };
}
