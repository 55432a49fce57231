// The playground: publish a test event through POST /v1/rooms/{room}/events,
// with the optional expected_seq and Idempotency-Key, and show the answer
// exactly as the server gave it (201 appended, 200 idempotent retry, 409
// conflict with the head, 4xx/5xx errors).

import { getJson, hasToken, request, roomPath } from './api.js';
import { clock, int } from './format.js';
import { renderJson } from './json.js';

const $ = (id) => document.getElementById(id);

const DEFAULT_DATA = '{\n  "message": "hello from the dashboard",\n  "price": 101.25\n}';

const STATUS_TEXT = {
  200: 'Duplicate — first receipt',
  201: 'Created',
  400: 'Bad request',
  404: 'Not found',
  409: 'Conflict',
  413: 'Too large',
  503: 'Unavailable',
};

function randomKey() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return 'dash-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function shellQuote(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function createPlayground({ onPublished = () => {}, inspectorRoom = () => null, tail = () => {} } = {}) {
  const form = $('publish-form');
  const room = $('pub-room');
  const data = $('pub-data');
  const dataState = $('pub-data-state');
  const expected = $('pub-expected');
  const key = $('pub-key');
  const send = $('pub-send');
  const curl = $('pub-curl');
  const result = $('pub-result');
  const recent = $('pub-recent');
  let roomTouched = false;

  data.value = DEFAULT_DATA;

  /** The request as it will be sent, or {error} naming the bad field. */
  function build() {
    const name = room.value.trim();
    if (!name) return { error: 'room', message: 'name a room' };
    const raw = data.value.trim();
    try { JSON.parse(raw); } catch (e) { return { error: 'data', message: e.message }; }
    const exp = expected.value.trim();
    if (exp && !/^\d+$/.test(exp)) return { error: 'expected', message: 'expected_seq is a whole number' };
    let body = `{"data":${raw}`;
    if (exp) body += `,"expected_seq":${exp}`;
    body += '}';
    const headers = {};
    const k = key.value.trim();
    if (k) headers['Idempotency-Key'] = k;
    return { room: name, path: roomPath(name, '/events'), body, headers };
  }

  function refresh() {
    const req = build();
    room.classList.toggle('invalid', req.error === 'room');
    data.classList.toggle('invalid', req.error === 'data');
    expected.classList.toggle('invalid', req.error === 'expected');
    dataState.textContent = req.error === 'data' ? `invalid JSON — ${req.message}` : 'JSON';
    dataState.classList.toggle('bad', req.error === 'data');
    send.disabled = Boolean(req.error);
    if (req.error) {
      curl.textContent = `# ${req.message}`;
      return req;
    }
    const url = new URL(req.path, document.baseURI).href;
    const parts = [`curl -i -X POST ${shellQuote(url)}`, `  -H 'Content-Type: application/json'`];
    // The key itself is never put on screen.
    if (hasToken()) parts.push('  -H "Authorization: Bearer $HUBCAST_KEY"');
    for (const [h, v] of Object.entries(req.headers)) parts.push(`  -H ${shellQuote(`${h}: ${v}`)}`);
    parts.push(`  -d ${shellQuote(req.body)}`);
    curl.textContent = parts.join(' \\\n');
    return req;
  }

  let answers = 0;
  function show(answer, req) {
    result.hidden = false;
    answers += 1;
    result.dataset.answers = String(answers);
    const status = $('pub-status');
    const s = answer.status;
    status.textContent = s ? `${s} ${STATUS_TEXT[s] || (answer.body && answer.body.error) || ''}`.trim() : 'network error';
    status.dataset.kind = s === 201 ? 'ok' : s === 200 ? 'dup' : s === 409 ? 'warn' : 'bad';
    const meta = [];
    if (answer.body && Number.isFinite(answer.body.seq)) meta.push(`seq ${int(answer.body.seq)}`);
    if (answer.ms !== undefined) meta.push(`${answer.ms < 10 ? answer.ms.toFixed(1) : Math.round(answer.ms)} ms`);
    const rid = answer.headers && answer.headers.get('x-request-id');
    if (rid) meta.push(`request ${rid}`);
    $('pub-meta').textContent = meta.join(' · ');

    const take = $('pub-take-head');
    take.hidden = true;
    take.onclick = null;
    if (s === 409 && answer.body && Number.isFinite(answer.body.head)) {
      take.hidden = false;
      take.textContent = `use head ${answer.body.head}`;
      take.title = 'Set expected_seq to the head the server reported';
      take.onclick = () => { expected.value = String(answer.body.head); refresh(); expected.focus(); };
    } else if ((s === 200 || s === 201) && inspectorRoom() !== req.room) {
      take.hidden = false;
      take.textContent = 'tail this room';
      take.title = 'Point the room inspector at this room';
      take.onclick = () => tail(req.room);
    }

    const body = $('pub-body');
    body.replaceChildren();
    if (answer.body) renderJson(body, answer.text, 2);
    else body.textContent = answer.text || answer.error || '';

    const li = document.createElement('li');
    const pill = document.createElement('span');
    pill.className = 'code-pill small';
    pill.dataset.kind = status.dataset.kind;
    pill.textContent = s || 'ERR';
    const what = document.createElement('span');
    what.className = 'recent-room';
    what.textContent = req.room;
    const detail = document.createElement('span');
    detail.className = 'recent-detail';
    detail.textContent = answer.body && Number.isFinite(answer.body.seq) ? `#${answer.body.seq}` : answer.body && answer.body.error ? answer.body.error : '';
    const when = document.createElement('time');
    when.textContent = clock(Date.now());
    li.append(pill, what, detail, when);
    recent.prepend(li);
    while (recent.children.length > 5) recent.lastElementChild.remove();
  }

  async function publish() {
    const req = refresh();
    if (req.error) return;
    send.disabled = true;
    send.classList.add('busy');
    try {
      const answer = await request(req.path, { method: 'POST', headers: req.headers, body: req.body });
      show(answer, req);
      if (answer.status === 200 || answer.status === 201) onPublished(req.room, answer.body);
    } catch (e) {
      show({ status: 0, error: e.name === 'AbortError' ? 'timed out' : String(e.message || e), text: '' }, req);
    } finally {
      send.classList.remove('busy');
      refresh();
    }
  }

  form.addEventListener('submit', (e) => { e.preventDefault(); publish(); });
  form.addEventListener('input', (e) => {
    if (e.target === room) roomTouched = true;
    refresh();
  });
  data.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); publish(); }
  });
  $('pub-new-key').addEventListener('click', () => { key.value = randomKey(); refresh(); });
  $('pub-use-head').addEventListener('click', async () => {
    const req = build();
    if (req.error === 'room') return;
    try {
      const stats = await getJson(roomPath(req.room || room.value.trim()));
      expected.value = String(stats.head);
      refresh();
    } catch (e) {
      show({ status: e.status || 0, body: e.body, text: e.body ? JSON.stringify(e.body) : String(e.message) }, { room: room.value.trim() });
    }
  });

  refresh();
  return {
    /** Follows the inspector's room until the user picks one here. */
    followRoom(name) {
      if (!roomTouched) { room.value = name; refresh(); }
    },
  };
}
