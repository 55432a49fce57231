// hubcast chat demo: plain browser JavaScript speaking the WebSocket protocol
// (docs/protocol.md) directly. No build step, no SDK, no CDN.
//
// - one socket to /v1/ws; `subscribe {room, rewind: 50, presence: true}` gives the
//   last 50 messages (history), then live events, then presence frames;
// - a message is a socket `publish` with an `id` (answered by `ack`; the id is
//   also the idempotency key, so a resend after a reconnect never doubles it);
// - presence members of anonymous sessions are keyed by session id and carry no
//   `info`, so names are learned from messages: each message's data holds the
//   sender's name and session id (`member`).
// - after a disconnect it reconnects and resubscribes from its cursor;
// - typing indicator: while you type, an ephemeral publish (`"ephemeral": true`:
//   delivered to the room's current subscribers, never stored, no seq) at most
//   every TYPING_EVERY ms; others show "… is typing" until the message arrives,
//   a `typing: false`, or TYPING_SHOWN ms of silence.

const HISTORY = 50;
const TYPING_EVERY = 2_000;
const TYPING_SHOWN = 5_000;
const NAME_KEY = 'hubcast-chat:name';
const CLIENT_KEY = 'hubcast-chat:client';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = /^[A-Za-z0-9_\-:.@=]{1,128}$/.test(params.get('room') || '') ? params.get('room') : 'chat:lobby';

/** This browser, across reloads: tells our own messages from others'. */
const client = localStorage.getItem(CLIENT_KEY) || randomId();
localStorage.setItem(CLIENT_KEY, client);

const state = {
  name: localStorage.getItem(NAME_KEY) || '',
  socket: null,
  session: null, // our session id = our presence member id
  cursor: null, // {epoch, seq}: the last event shown
  live: false, // caught_up seen on this socket
  members: new Map(), // member id -> {id}
  names: new Map(), // member id -> name learned from a message
  pending: new Map(), // publish id -> {data, li}
  retry: 0,
  sent: 0,
  typing: new Map(), // member id -> {name, timer}: who is typing now
  typingSentAt: 0, // when we last said we are typing (0: we are not)
  typingIds: new Set(), // ids of our typing publishes (their acks and errors are not messages)
  typingOff: false, // the room refused ephemeral messages: stop sending them
};

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// --- connection ------------------------------------------------------------

function connect() {
  setStatus('connecting', 'connecting…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/v1/ws`);
  state.socket = socket;
  state.live = false;
  socket.addEventListener('message', (m) => {
    let frame;
    try {
      frame = JSON.parse(m.data);
    } catch {
      return;
    }
    handle(frame);
  });
  socket.addEventListener('close', (e) => {
    if (state.socket !== socket) return;
    state.socket = null;
    state.session = null;
    setLive(false);
    const delay = Math.min(10_000, 250 * 2 ** state.retry++);
    setStatus('offline', `disconnected (${e.code}); retrying in ${Math.round(delay / 100) / 10} s`);
    setTimeout(connect, delay);
  });
}

function send(frame) {
  if (state.socket?.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(frame));
}

function handle(frame) {
  switch (frame.type) {
    case 'welcome': {
      state.session = frame.session;
      document.body.dataset.member = frame.session;
      const subscribe = { type: 'subscribe', room, presence: true };
      if (state.cursor) Object.assign(subscribe, { cursor: state.cursor.seq, epoch: state.cursor.epoch });
      else subscribe.rewind = HISTORY;
      send(subscribe);
      break;
    }
    case 'subscribed':
      // A different epoch means the room's log was recreated: start over.
      if (state.cursor && state.cursor.epoch !== frame.epoch) clearLog();
      state.cursor = { epoch: frame.epoch, seq: state.cursor?.epoch === frame.epoch ? state.cursor.seq : 0 };
      break;
    case 'reset':
      clearLog();
      system('Older messages are no longer available.');
      break;
    case 'event':
      if (frame.room === room) onEvent(frame);
      break;
    case 'batch':
      if (frame.room === room) for (const e of frame.events) onEvent(e);
      break;
    case 'ephemeral':
      if (frame.room === room) onEphemeral(frame.data);
      break;
    case 'caught_up':
      state.retry = 0;
      setLive(true);
      setStatus('live', 'live');
      resendPending();
      break;
    case 'presence':
      state.members = new Map(frame.members.map((m) => [m.id, m]));
      renderMembers();
      break;
    case 'join':
      if (!state.members.has(frame.member.id)) {
        state.members.set(frame.member.id, frame.member);
        if (frame.member.id !== state.session) system('joined', 'join', frame.member.id);
        renderMembers();
      }
      break;
    case 'leave':
      if (state.members.delete(frame.member.id)) {
        system('left', 'leave', frame.member.id);
        renderMembers();
      }
      break;
    case 'ack': {
      if (state.typingIds.delete(frame.id)) break;
      const p = state.pending.get(frame.id);
      if (p) {
        state.pending.delete(frame.id);
        p.li?.remove(); // the event itself arrives (or arrived) on the subscription
      }
      break;
    }
    case 'error':
      if (frame.id && state.typingIds.delete(frame.id)) {
        state.typingOff = true; // e.g. ephemeral_not_allowed: no indicator in this room
        break;
      }
      if (frame.id && state.pending.has(frame.id)) {
        const p = state.pending.get(frame.id);
        state.pending.delete(frame.id);
        p.li?.classList.add('failed');
        p.li?.setAttribute('title', `${frame.code}: ${frame.message}`);
      }
      system(`error ${frame.code}: ${frame.message}`, 'error');
      break;
  }
}

function onEvent(event) {
  // The cursor rule: drop what we have; a gap means resubscribe from the cursor.
  if (state.cursor && event.seq <= state.cursor.seq) return;
  if (state.cursor && state.cursor.seq > 0 && event.seq > state.cursor.seq + 1 && state.live) {
    state.socket?.close(); // reconnects and resumes from the cursor
    return;
  }
  if (state.cursor) state.cursor.seq = event.seq;
  const data = event.data && typeof event.data === 'object' ? event.data : {};
  if (typeof data.text !== 'string') return; // not a chat message
  // Our own message, confirmed: it replaces its "sending…" line (ack or not yet).
  if (data.client === client && state.pending.has(data.ref)) state.pending.get(data.ref).li?.remove();
  const name = typeof data.name === 'string' && data.name ? data.name.slice(0, 32) : 'anonymous';
  if (typeof data.member === 'string') {
    const known = state.names.get(data.member);
    state.names.set(data.member, name);
    if (known !== name) {
      if (state.members.has(data.member)) renderMembers();
      // Earlier "guest #N joined" lines of this member get its name.
      for (const li of $('log').querySelectorAll('li.system[data-member]')) {
        if (li.dataset.member === data.member) li.textContent = `${name} ${li.dataset.verb}`;
      }
    }
  }
  message({ seq: event.seq, ts: event.ts, name, text: data.text, mine: data.client === client, replayed: !state.live });
  if (typeof data.member === 'string') stopTyping(data.member);
}

// --- typing indicator (ephemeral messages) -----------------------------------

function onEphemeral(data) {
  if (!data || typeof data !== 'object' || typeof data.member !== 'string') return;
  if (data.member === state.session || data.client === client) return; // our own, echoed
  if (data.typing !== true) return stopTyping(data.member);
  const shown = state.typing.get(data.member);
  if (shown) clearTimeout(shown.timer);
  const name = typeof data.name === 'string' && data.name ? data.name.slice(0, 32) : label(data.member);
  const timer = setTimeout(() => stopTyping(data.member), TYPING_SHOWN);
  state.typing.set(data.member, { name, timer });
  renderTyping();
}

function stopTyping(member) {
  const shown = state.typing.get(member);
  if (!shown) return;
  clearTimeout(shown.timer);
  state.typing.delete(member);
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.values()].map((t) => t.name);
  const el = $('typing');
  el.dataset.count = String(names.length);
  if (names.length === 0) el.textContent = '';
  else if (names.length === 1) el.textContent = `${names[0]} is typing…`;
  else if (names.length === 2) el.textContent = `${names[0]} and ${names[1]} are typing…`;
  else el.textContent = `${names.length} people are typing…`;
}

/** Tells the room we are typing (or stopped): ephemeral, so nothing is stored. */
function sendTyping(typing) {
  if (state.typingOff || !state.live || !state.name) return;
  const id = `${client}-t${Date.now().toString(36)}-${state.sent++}`;
  state.typingIds.add(id);
  state.typingSentAt = typing ? Date.now() : 0;
  send({ type: 'publish', id, room, ephemeral: true, data: { typing, name: state.name, member: state.session, client } });
}

// --- sending ---------------------------------------------------------------

function publish(text) {
  const id = `${client}-${Date.now().toString(36)}-${state.sent++}`;
  const data = { name: state.name, text, member: state.session, client, ref: id };
  const li = message({ name: state.name, text, mine: true, pending: true });
  state.pending.set(id, { data, li });
  state.typingSentAt = 0; // the message itself ends our "typing" on the other pages
  send({ type: 'publish', id, room, data });
}

/** After a reconnect: resend what was never acked, with the same ids. */
function resendPending() {
  for (const [id, p] of state.pending) {
    p.data.member = state.session;
    send({ type: 'publish', id, room, data: p.data });
  }
}

// --- rendering -------------------------------------------------------------

/** A member's name, once a message told it; else "guest #N" (from its session id). */
function label(member) {
  return state.names.get(member) || guest(member);
}

function guest(member) {
  return `guest #${member.split('-').pop()}`;
}

function setStatus(kind, text) {
  const el = $('status');
  el.dataset.state = kind;
  el.textContent = text;
}

function setLive(live) {
  state.live = live;
  const ready = live && !!state.name;
  $('text').disabled = !ready;
  $('send').disabled = !ready;
  document.body.dataset.live = String(live);
  if (ready) $('text').focus();
}

function clearLog() {
  for (const li of [...$('log').querySelectorAll('li:not(.pending)')]) li.remove();
}

function atBottom() {
  const log = $('log');
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

function append(li) {
  const stick = atBottom();
  const log = $('log');
  // Pending messages stay below the confirmed ones.
  const firstPending = li.classList.contains('pending') ? null : log.querySelector('li.pending');
  log.insertBefore(li, firstPending);
  if (stick || li.classList.contains('mine')) log.scrollTop = log.scrollHeight;
}

function message({ seq, ts, name, text, mine, pending, replayed }) {
  const li = document.createElement('li');
  li.className = ['msg', mine && 'mine', pending && 'pending', replayed && 'replayed'].filter(Boolean).join(' ');
  if (seq) li.dataset.seq = String(seq);
  const head = document.createElement('div');
  head.className = 'head';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = name;
  const when = document.createElement('time');
  when.textContent = ts ? new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : 'sending…';
  if (ts) when.dateTime = new Date(ts).toISOString();
  head.append(who, when);
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  li.append(head, body);
  append(li);
  return li;
}

/** A line that is not a message; with `member`, "<member's name> <text>". */
function system(text, kind = '', member = null) {
  const li = document.createElement('li');
  li.className = `system ${kind}`.trim();
  if (member) {
    li.dataset.member = member;
    li.dataset.verb = text;
  }
  li.textContent = member ? `${label(member)} ${text}` : text;
  append(li);
}

function renderMembers() {
  const list = $('members');
  list.replaceChildren();
  const members = [...state.members.keys()].sort((a, b) => {
    if (a === state.session) return -1;
    if (b === state.session) return 1;
    return label(a).localeCompare(label(b));
  });
  for (const id of members) {
    const li = document.createElement('li');
    li.dataset.member = id;
    const name = id === state.session ? state.name : state.names.get(id);
    li.className = [id === state.session && 'self', !name && 'unnamed'].filter(Boolean).join(' ');
    const dot = document.createElement('span');
    dot.className = 'dot';
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = name || guest(id);
    li.append(dot, who);
    if (id === state.session) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = 'you';
      li.append(you);
    }
    li.title = `member ${id}`;
    list.append(li);
  }
  $('count').textContent = String(members.length);
}

// --- start -----------------------------------------------------------------

function start(name) {
  state.name = name;
  localStorage.setItem(NAME_KEY, name);
  $('me-name').textContent = name;
  $('me').hidden = false;
  setLive(state.live);
  renderMembers();
}

$('room').textContent = room;
$('join-room').textContent = room;
document.title = `${room} · hubcast chat`;

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!text || !state.live || !state.name) return;
  $('text').value = '';
  publish(text);
});

$('text').addEventListener('input', () => {
  const typing = $('text').value.trim() !== '';
  if (typing && Date.now() - state.typingSentAt >= TYPING_EVERY) sendTyping(true);
  else if (!typing && state.typingSentAt) sendTyping(false);
});

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('name').value.trim().slice(0, 32);
  if (!name) return;
  $('join').close();
  start(name);
});

$('me').addEventListener('click', () => {
  $('name').value = state.name;
  $('join').showModal();
});

if (state.name) start(state.name);
else $('join').showModal();
connect();
