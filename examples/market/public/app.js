// ../../clients/js/src/errors.ts
var HubcastError = class extends Error {
  code;
  constructor(code, message, details = {}) {
    super(message, details.cause === void 0 ? void 0 : { cause: details.cause });
    this.name = "HubcastError";
    this.code = code;
    if (details.closeCode !== void 0) this.closeCode = details.closeCode;
    if (details.room !== void 0) this.room = details.room;
    if (details.id !== void 0) this.id = details.id;
    if (details.head !== void 0) this.head = details.head;
    if (details.status !== void 0) this.status = details.status;
  }
};

// ../../clients/js/src/heartbeat.ts
function heartbeatConfig(options) {
  return options === false ? null : { intervalMs: options?.intervalMs ?? 1e4, timeoutMs: options?.timeoutMs ?? 5e3 };
}
var Heartbeat = class {
  constructor(config, link) {
    this.config = config;
    this.link = link;
  }
  timer = null;
  lastFrameAt = 0;
  framesReceived = 0;
  ping = null;
  /** Any frame from the server: the connection is alive. */
  frameReceived() {
    this.lastFrameAt = Date.now();
    this.framesReceived += 1;
  }
  /** The socket opened: start watching it. */
  start() {
    this.lastFrameAt = Date.now();
    this.ping = null;
    if (this.config) this.schedule(this.config.intervalMs);
  }
  stop() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.ping = null;
  }
  schedule(ms) {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.tick();
    }, Math.max(0, ms));
  }
  /**
   * Any frame counts as liveness. After `intervalMs` of silence a ping is sent;
   * if nothing at all arrives within `timeoutMs` after it, the socket is
   * abandoned and the client reconnects. So a dead connection is noticed at
   * most `intervalMs + timeoutMs` after the last frame.
   */
  tick() {
    const hb = this.config;
    if (!hb || !this.link.isOpen()) return;
    const now = Date.now();
    if (this.ping !== null) {
      if (this.framesReceived > this.ping.frames) {
        this.ping = null;
      } else {
        const waited = now - this.ping.sentAt;
        if (waited >= hb.timeoutMs) {
          this.link.dead();
          return;
        }
        this.schedule(hb.timeoutMs - waited);
        return;
      }
    }
    const idle = now - this.lastFrameAt;
    if (idle >= hb.intervalMs) {
      this.link.sendPing();
      this.ping = { sentAt: now, frames: this.framesReceived };
      this.schedule(hb.timeoutMs);
    } else {
      this.schedule(hb.intervalMs - idle);
    }
  }
};

// ../../clients/js/src/policy.ts
var TERMINAL_CLOSE_CODES = /* @__PURE__ */ new Set([1002, 1007, 1008, 1009, 4001, 4003, 4011, 4012]);
var IMMEDIATE_CLOSE_CODES = /* @__PURE__ */ new Set([1001, 1012]);
var TRY_LATER_CLOSE_CODES = /* @__PURE__ */ new Set([1013, 4008, 4013]);
var LOCAL_HEARTBEAT_TIMEOUT = 4010;
var LOCAL_ABNORMAL = 1006;
function backoffDelay(attempt, config, random) {
  const window2 = Math.min(config.maxDelayMs, config.minDelayMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * window2);
}
function decideReconnect(code, attempt, welcomed, config, random) {
  if (TERMINAL_CLOSE_CODES.has(code)) return { retry: false };
  if (IMMEDIATE_CLOSE_CODES.has(code) && welcomed) return { retry: true, delayMs: 0 };
  const delay = backoffDelay(attempt, config, random);
  if (TRY_LATER_CLOSE_CODES.has(code)) return { retry: true, delayMs: Math.max(config.tryAgainLaterMs, delay) };
  return { retry: true, delayMs: delay };
}
function terminalErrorCode(code) {
  switch (code) {
    case 4001:
      return "unauthenticated";
    case 4003:
      return "forbidden";
    case 1008:
      return "policy_violation";
    case 1009:
      return "frame_too_big";
    case 1002:
      return "protocol_error";
    case 1007:
      return "invalid_data";
    case 4011:
      return "disconnected";
    case 4012:
      return "token_revoked";
    default:
      return "closed";
  }
}
var ROOM_NAME = /^[A-Za-z0-9_\-:.@=]{1,128}$/;
function isValidRoomName(name) {
  return typeof name === "string" && ROOM_NAME.test(name);
}

// ../../clients/js/src/connection.ts
var OPEN = 1;
var Connection = class {
  constructor(config, credentials, emitter, hooks) {
    this.credentials = credentials;
    this.emitter = emitter;
    this.hooks = hooks;
    this.WS = config.WebSocket;
    this.fallback = config.fallback;
    this.wsUrl = config.url;
    this.options = config.options;
    this.backoff = config.backoff;
    this.random = config.random;
    this.heartbeat = new Heartbeat(config.heartbeat, {
      isOpen: () => this.ws !== null && this.currentState === "open",
      sendPing: () => {
        this.send({ type: "ping" });
      },
      dead: () => {
        this.teardown(4e3, "heartbeat timeout");
        this.socketGone(LOCAL_HEARTBEAT_TIMEOUT, "heartbeat timeout (no frame from the server)");
      }
    });
  }
  currentState = "idle";
  ws = null;
  /** Incremented for every connection attempt; callbacks of older attempts are ignored. */
  gen = 0;
  welcomed = false;
  failedAttempts = 0;
  sessionId = null;
  reconnectTimer = null;
  connectTimer = null;
  WS;
  fallback;
  /** A session was ever established on this client (then WebSocket works here). */
  everWelcomed = false;
  wsUrl;
  options;
  backoff;
  random;
  heartbeat;
  get state() {
    return this.currentState;
  }
  /** The server's id of the current session, once `welcome` arrived. */
  get session() {
    return this.sessionId;
  }
  /** The current attempt's number; a publish records the one it was sent on. */
  get generation() {
    return this.gen;
  }
  /** Whether a connection attempt is under way or the socket is open. */
  get active() {
    return this.currentState === "connecting" || this.currentState === "open";
  }
  /** Opens a socket now, skipping a pending backoff. */
  open() {
    this.clearReconnectTimer();
    void this.openSocket();
  }
  /** `welcome`: the session is established, and the backoff starts over. */
  onWelcome(session) {
    this.welcomed = true;
    this.everWelcomed = true;
    this.failedAttempts = 0;
    this.sessionId = session;
  }
  /** Sends a frame if the socket is open; returns whether it was sent. */
  send(frame) {
    const ws = this.ws;
    if (!ws || this.currentState !== "open" || ws.readyState !== OPEN) return false;
    try {
      ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }
  /** Closes the socket for good (`close()`); `connect()` may start again. */
  close() {
    if (this.currentState === "closed" && this.ws === null) return;
    this.teardown(1e3, "client closed");
    this.welcomed = false;
    this.sessionId = null;
    this.clearReconnectTimer();
    this.hooks.stopped(void 0, new HubcastError("closed", "the client was closed"));
    this.setState("closed", { code: 1e3, reason: "client closed" });
  }
  async openSocket() {
    const gen = ++this.gen;
    this.setState("connecting");
    let token;
    if (this.options.getToken) {
      try {
        token = await this.options.getToken();
        this.credentials.token = token ?? null;
      } catch (err) {
        if (gen !== this.gen || this.currentState !== "connecting") return;
        this.emitter.emit("error", new HubcastError("token_error", `getToken failed: ${String(err)}`, { cause: err }));
        this.afterDisconnect(LOCAL_ABNORMAL, "getToken failed", false);
        return;
      }
      if (gen !== this.gen || this.currentState !== "connecting") return;
    }
    const url = token && this.options.sendTokenAs !== "message" ? `${this.wsUrl}?token=${encodeURIComponent(token)}` : this.wsUrl;
    let ws;
    try {
      ws = new this.WS(url);
    } catch (err) {
      this.emitter.emit("error", new HubcastError("closed", `cannot open a WebSocket to ${url}: ${String(err)}`, { cause: err }));
      this.afterDisconnect(LOCAL_ABNORMAL, "WebSocket constructor threw", false);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = () => {
      if (this.ws === ws) this.onOpen();
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) {
        this.heartbeat.frameReceived();
        this.hooks.frame(ev.data);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.onSocketClose(typeof ev.code === "number" ? ev.code : LOCAL_ABNORMAL, ev.reason ?? "");
    };
    ws.onerror = () => {
    };
    const connectTimeoutMs = this.options.connectTimeoutMs ?? 1e4;
    if (connectTimeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        this.connectTimer = null;
        if (this.ws === ws && this.currentState === "connecting") {
          this.teardown(4e3, "connect timeout");
          this.socketGone(LOCAL_ABNORMAL, "connect timeout");
        }
      }, connectTimeoutMs);
    }
  }
  onOpen() {
    this.clearConnectTimer();
    this.hooks.opening();
    this.setState("open");
    this.heartbeat.start();
    if (this.options.sendTokenAs === "message" && this.credentials.token) this.send({ type: "auth", token: this.credentials.token });
    this.hooks.opened();
  }
  onSocketClose(code, reason) {
    this.teardown();
    this.socketGone(code, reason);
  }
  /** Detaches the current socket (closing it with `code` if given). */
  teardown(code, reason) {
    this.clearConnectTimer();
    this.heartbeat.stop();
    this.hooks.detached();
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    if (code !== void 0) {
      try {
        ws.close(code, reason);
      } catch {
      }
    }
  }
  /** The socket is gone: reset per-socket state, then reconnect or stop. */
  socketGone(code, reason) {
    const welcomed = this.welcomed;
    this.welcomed = false;
    this.sessionId = null;
    this.hooks.socketGone();
    this.afterDisconnect(code, reason, welcomed);
  }
  afterDisconnect(code, reason, welcomed) {
    if (this.currentState === "closed") return;
    this.failedAttempts = welcomed ? 0 : this.failedAttempts + 1;
    if (this.fallback && !this.everWelcomed && this.failedAttempts >= 2 && this.WS !== this.fallback) {
      this.WS = this.fallback;
    }
    if (TERMINAL_CLOSE_CODES.has(code)) {
      const error = new HubcastError(terminalErrorCode(code), `connection closed with ${code}${reason ? `: ${reason}` : ""}; not retrying`, {
        closeCode: code
      });
      this.hooks.stopped(error, error);
      this.emitter.emit("error", error);
      this.setState("closed", { code, reason, error });
      return;
    }
    if (!this.backoff) {
      this.hooks.stopped(void 0, new HubcastError("closed", "connection closed and reconnect is disabled", { closeCode: code }));
      this.setState("closed", { code, reason });
      return;
    }
    const decision = decideReconnect(code, this.failedAttempts, welcomed, this.backoff, this.random);
    if (!decision.retry) return;
    this.setState("reconnecting", { code, reason, delayMs: decision.delayMs, attempt: this.failedAttempts });
    this.clearReconnectTimer();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.currentState === "reconnecting") void this.openSocket();
    }, decision.delayMs);
  }
  setState(state, detail = {}) {
    const previous = this.currentState;
    this.currentState = state;
    const change = { state, previous, ...detail };
    this.emitter.emit("state", change);
    this.emitter.emit(state, change);
  }
  clearReconnectTimer() {
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }
  clearConnectTimer() {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
  }
};

// ../../clients/js/src/credentials.ts
var Credentials = class {
  constructor(options, send, reportError) {
    this.options = options;
    this.send = send;
    this.reportError = reportError;
  }
  /** The last token `getToken` returned. */
  token = null;
  refreshing = null;
  /** Whether the application gave a `getToken` (else there is never a token). */
  get enabled() {
    return Boolean(this.options.getToken);
  }
  /**
   * Gets a fresh token from `getToken` and hands it to the open session in
   * an `auth` message. Resolves with the new token, or `null` if there is
   * none; concurrent calls share one `getToken` call.
   */
  refresh() {
    if (!this.options.getToken) return Promise.resolve(null);
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const token = await this.options.getToken() ?? null;
        this.token = token;
        if (token) this.send({ type: "auth", token });
        return token;
      } catch (err) {
        this.reportError(new HubcastError("token_error", `getToken failed: ${String(err)}`, { cause: err }));
        return null;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }
};

// ../../clients/js/src/emitter.ts
var Emitter = class {
  /**
   * @param onListenerError called when a listener throws; delivery to the
   * other listeners goes on.
   */
  constructor(onListenerError) {
    this.onListenerError = onListenerError;
  }
  listeners = /* @__PURE__ */ new Map();
  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }
  /** Adds a listener that is removed after its first call. */
  once(event, listener) {
    const off = this.on(event, (value) => {
      off();
      listener(value);
    });
    return off;
  }
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }
  has(event) {
    return (this.listeners.get(event)?.size ?? 0) > 0;
  }
  emit(event, value) {
    const set = this.listeners.get(event);
    if (!set || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (err) {
        this.onListenerError(err, event);
      }
    }
  }
  clear() {
    this.listeners.clear();
  }
};

// ../../clients/js/src/wire.ts
function isInteger(value) {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
function parseMember(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const v = value;
  if (typeof v.id !== "string") return null;
  const member = { id: v.id };
  if ("info" in v && v.info !== void 0 && v.info !== null) member.info = v.info;
  return member;
}
function parseMembers(value) {
  if (!Array.isArray(value)) return null;
  const members = [];
  for (const item of value) {
    const member = parseMember(item);
    if (member === null) return null;
    members.push(member);
  }
  return members;
}

// ../../clients/js/src/history.ts
var HistoryReader = class {
  constructor(httpBase, options, credentials) {
    this.httpBase = httpBase;
    this.options = options;
    this.credentials = credentials;
    const userFetch = options.fetch;
    this.fetchImpl = (url, init) => {
      const f = userFetch ?? globalThis.fetch;
      if (!f) return Promise.reject(new TypeError("no fetch available: pass the `fetch` option"));
      return f(url, init);
    };
  }
  fetchImpl;
  /** One page of `room` after `after`; fails with `history_unavailable`. */
  async read(room, after, limit) {
    try {
      return await this.readOnce(room, after, limit);
    } catch (err) {
      if (err instanceof HubcastError && err.status === 401 && this.options.getToken) {
        await this.credentials.refresh();
        return this.readOnce(room, after, limit);
      }
      throw err;
    }
  }
  async readOnce(room, after, limit) {
    const url = `${this.httpBase}/v1/rooms/${room}/events?after=${after}&limit=${limit}`;
    const timeoutMs = this.options.historyTimeoutMs ?? 1e4;
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = controller && timeoutMs > 0 ? setTimeout(() => controller.abort(), timeoutMs) : null;
    try {
      const init = { method: "GET" };
      if (controller) init.signal = controller.signal;
      if (this.credentials.token) init.headers = { authorization: `Bearer ${this.credentials.token}` };
      const res = await this.fetchImpl(url, init);
      let body = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      if (!res.ok) {
        const b = body;
        const code = typeof b?.error === "string" ? b.error : "history_unavailable";
        throw new HubcastError("history_unavailable", `GET ${url}: ${res.status} ${code}${typeof b?.message === "string" ? `: ${b.message}` : ""}`, {
          room,
          status: res.status
        });
      }
      return parseHistory(body, room, url);
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }
};
function parseHistory(body, room, url) {
  const b = body;
  const bad = () => new HubcastError("history_unavailable", `GET ${url}: unexpected answer`, { room });
  if (!b || typeof b !== "object" || !Array.isArray(b.events) || !isInteger(b.head)) throw bad();
  const events = [];
  for (const e of b.events) {
    if (!e || !isInteger(e.seq)) throw bad();
    events.push({ seq: e.seq, ts: typeof e.ts === "number" ? e.ts : 0, data: e.data });
  }
  return {
    epoch: typeof b.epoch === "string" ? b.epoch : null,
    head: b.head,
    earliest: isInteger(b.earliest) ? b.earliest : 1,
    events
  };
}

// ../../clients/js/src/inbound.ts
function routeFrame(raw, to) {
  if (typeof raw !== "string") {
    protocolViolation(to, "a binary frame");
    return;
  }
  let frame;
  try {
    const parsed = JSON.parse(raw);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    frame = parsed;
  } catch {
    protocolViolation(to, `a frame that is not a JSON object: ${raw.slice(0, 100)}`);
    return;
  }
  const room = typeof frame.room === "string" ? to.rooms.get(frame.room) : void 0;
  switch (frame.type) {
    case "welcome":
      to.connection.onWelcome(typeof frame.session === "string" ? frame.session : null);
      to.emitter.emit("welcome", {
        session: to.connection.session ?? "",
        heartbeatMs: isInteger(frame.heartbeat_ms) ? frame.heartbeat_ms : 0
      });
      return;
    case "subscribed":
      if (typeof frame.epoch !== "string" || !isInteger(frame.head)) return protocolViolation(to, "a malformed subscribed");
      room?.onSubscribed(frame.epoch, frame.head, frame.echo !== false);
      return;
    case "reset":
      if (typeof frame.epoch !== "string") return protocolViolation(to, "a malformed reset");
      room?.onReset(frame.epoch, isInteger(frame.earliest) ? frame.earliest : null, isInteger(frame.head) ? frame.head : null);
      return;
    case "event":
      if (!isInteger(frame.seq) || !("data" in frame)) return protocolViolation(to, "a malformed event");
      room?.onEvent({ seq: frame.seq, ts: typeof frame.ts === "number" ? frame.ts : 0, data: frame.data });
      return;
    case "ephemeral":
      if (typeof frame.ts !== "number" || !("data" in frame)) return protocolViolation(to, "a malformed ephemeral");
      room?.onEphemeral(frame.ts, frame.data);
      return;
    case "batch": {
      if (!Array.isArray(frame.events)) return protocolViolation(to, "a malformed batch");
      for (const item of frame.events) {
        const e = item;
        if (e === null || typeof e !== "object" || !isInteger(e.seq) || !("data" in e)) {
          protocolViolation(to, "a malformed event in a batch");
          continue;
        }
        room?.onEvent({ seq: e.seq, ts: typeof e.ts === "number" ? e.ts : 0, data: e.data });
      }
      return;
    }
    case "presence": {
      const members = parseMembers(frame.members);
      if (typeof frame.room !== "string" || members === null) return protocolViolation(to, "a malformed presence");
      if (typeof frame.id === "string") {
        if (to.presence.isAnswer(frame.room, frame.id)) to.presence.resolve(frame.room, members);
        return;
      }
      room?.onPresence(members);
      return;
    }
    case "join":
    case "leave": {
      const member = parseMember(frame.member);
      if (member === null) return protocolViolation(to, `a malformed ${frame.type}`);
      room?.onMembership(frame.type, member);
      return;
    }
    case "caught_up":
      if (!isInteger(frame.seq)) return protocolViolation(to, "a malformed caught_up");
      room?.onCaughtUp(frame.seq);
      return;
    case "unsubscribed":
      to.rooms.onUnsubscribed(frame.room);
      return;
    case "ack":
      if (!to.publishes.onAck(frame)) protocolViolation(to, "a malformed ack");
      return;
    case "batch_ack":
      if (!to.publishes.onBatchAck(frame)) protocolViolation(to, "a malformed batch_ack");
      return;
    case "error":
      onErrorFrame(frame, to);
      return;
    case "authenticated": {
      const info = {};
      if (typeof frame.sub === "string") info.sub = frame.sub;
      if (typeof frame.exp === "number") info.exp = frame.exp;
      to.emitter.emit("authenticated", info);
      return;
    }
    case "pong":
      return;
    // liveness is recorded for every frame
    default:
      return;
  }
}
function onErrorFrame(frame, to) {
  const code = typeof frame.code === "string" ? frame.code : "unknown";
  const message = typeof frame.message === "string" ? frame.message : code;
  const roomName = typeof frame.room === "string" ? frame.room : void 0;
  if (typeof frame.id === "string") {
    if (roomName !== void 0 && to.presence.isAnswer(roomName, frame.id)) {
      to.presence.reject(new HubcastError(code, message, { room: roomName }), roomName);
      return;
    }
    if (to.publishes.onError(frame.id, code, message, frame.head, roomName)) return;
  }
  if (code === "token_expired" && roomName === void 0 && frame.id === void 0) {
    if (to.credentials.enabled) {
      void to.credentials.refresh();
      return;
    }
  }
  if (roomName !== void 0) {
    if (to.rooms.isDraining(roomName) && code === "not_subscribed") {
      to.rooms.onUnsubscribed(roomName);
      return;
    }
    const room = to.rooms.get(roomName);
    if (room) {
      const retryAfter = frame.retry_after_ms;
      room.onSubscriptionError(code, message, typeof retryAfter === "number" && retryAfter > 0 ? retryAfter : 0);
      return;
    }
  }
  const details = {};
  if (roomName !== void 0) details.room = roomName;
  to.emitter.emit("error", new HubcastError(code, message, details));
}
function protocolViolation(to, what) {
  to.emitter.emit("error", new HubcastError("protocol_violation", `the server sent ${what}; ignored`));
}

// ../../clients/js/src/presence-requests.ts
var PresenceRequests = class {
  constructor(link) {
    this.link = link;
  }
  /**
   * Presence requests waiting for a `presence` frame, per room; `sent`: asked on the current
   * socket; `id` (`presence:N`) is echoed by the server in the answer and in a refusal, so
   * neither is taken for a subscription's.
   */
  requests = /* @__PURE__ */ new Map();
  nextId = 0;
  /** Adds a waiter for `room`'s members; the caller then connects or calls {@link send}. */
  add(room, waiter) {
    let entry = this.requests.get(room);
    if (!entry) {
      entry = { id: `presence:${++this.nextId}`, sent: false, waiters: [] };
      this.requests.set(room, entry);
    }
    entry.waiters.push(waiter);
  }
  /** Sends one `presence` request per room with waiters not yet asked on this socket. */
  send() {
    if (!this.link.isOpen()) return;
    for (const [room, entry] of this.requests) {
      if (!entry.sent && this.link.send({ type: "presence", room, id: entry.id })) entry.sent = true;
    }
  }
  /** Whether a frame of `room` with this `id` answers the request asked on this socket. */
  isAnswer(room, id) {
    if (room === void 0) return false;
    const entry = this.requests.get(room);
    return entry !== void 0 && entry.sent && entry.id === id;
  }
  /** The answer to `room`'s request: every waiter gets its own copy of the list. */
  resolve(room, members) {
    const entry = this.requests.get(room);
    if (!entry) return;
    this.requests.delete(room);
    for (const waiter of entry.waiters) waiter.resolve(members.map((m) => ({ ...m })));
  }
  /** Fails the requests of `room` (of every room without one). */
  reject(error, room) {
    for (const [name, entry] of [...this.requests]) {
      if (room !== void 0 && name !== room) continue;
      this.requests.delete(name);
      for (const waiter of entry.waiters) waiter.reject(error);
    }
  }
  /** The socket is gone: every request is asked again on the next one. */
  socketClosed() {
    for (const entry of this.requests.values()) entry.sent = false;
  }
};

// ../../clients/js/src/publishes.ts
var MAX_ID_BYTES = 128;
var RETRYABLE_PUBLISH_ERRORS = /* @__PURE__ */ new Set(["store_unavailable", "auth_unavailable", "shutting_down", "over_capacity", "rate_limited", "token_expired"]);
function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}
function newId() {
  const bytes = new Uint8Array(16);
  const crypto = globalThis.crypto;
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let id = "";
  for (const b of bytes) id += b.toString(16).padStart(2, "0");
  return id;
}
var PublishTracker = class {
  constructor(options, backoff, random, link) {
    this.options = options;
    this.backoff = backoff;
    this.random = random;
    this.link = link;
  }
  pending = /* @__PURE__ */ new Map();
  /** Token bucket pacing socket publishes (`maxPublishesPerSecond`). */
  budget = 0;
  budgetAt = -1;
  pumpTimer = null;
  /** Number of publishes waiting for an answer. */
  get size() {
    return this.pending.size;
  }
  /**
   * Checks a publish and queues it. `queued` is false when nothing new was
   * queued (refused locally, or the id is already pending: its promise).
   * The caller then connects or {@link pump}s.
   */
  add(room, data, options, clientClosed, ephemeral = false) {
    const refuse = (err) => ({ promise: Promise.reject(err), queued: false });
    if (!isValidRoomName(room)) {
      return refuse(new HubcastError("invalid_room", `invalid room name ${JSON.stringify(room)}`, { room }));
    }
    const id = options.id ?? newId();
    if (typeof id !== "string" || id.length === 0 || utf8Length(id) > MAX_ID_BYTES) {
      return refuse(new HubcastError("bad_request", `publish id must be 1 to ${MAX_ID_BYTES} bytes`, { room }));
    }
    const existing = this.pending.get(id);
    if (existing) return { promise: existing.promise, queued: false };
    if (clientClosed) {
      return refuse(new HubcastError("closed", "the client is closed", { room, id }));
    }
    if (options.expectedSeq !== void 0 && !isInteger(options.expectedSeq)) {
      return refuse(new HubcastError("bad_request", "expectedSeq must be a non-negative integer", { room, id }));
    }
    let json;
    try {
      json = JSON.stringify(data);
    } catch (err) {
      return refuse(new HubcastError("bad_request", `data is not JSON-serializable: ${String(err)}`, { room, id }));
    }
    if (json === void 0) {
      return refuse(new HubcastError("bad_request", "data is not JSON-serializable", { room, id }));
    }
    const maxBytes = this.options.maxEventBytes ?? 1024 * 1024;
    if (utf8Length(json) > maxBytes) {
      return refuse(new HubcastError("too_large", `data is larger than ${maxBytes} bytes`, { room, id }));
    }
    if (this.pending.size >= (this.options.maxQueuedPublishes ?? 1e3)) {
      return refuse(new HubcastError("queue_full", "too many publishes waiting for an ack", { room, id }));
    }
    let frame = `{"type":"publish","id":${JSON.stringify(id)},"room":${JSON.stringify(room)},"data":${json}`;
    if (options.expectedSeq !== void 0) frame += `,"expected_seq":${options.expectedSeq}`;
    if (ephemeral) frame += ',"ephemeral":true';
    frame += "}";
    return { promise: this.queue(id, [room], false, ephemeral, frame, options.timeoutMs), queued: true };
  }
  /**
   * Checks an atomic batch and queues it as one `publish_batch` message (one
   * id, which is the batch's idempotency key). As {@link add}.
   */
  addBatch(events, options, clientClosed) {
    const first = events[0]?.room;
    const refuse = (err) => ({ promise: Promise.reject(err), queued: false });
    if (!Array.isArray(events) || events.length === 0) {
      return refuse(new HubcastError("bad_request", "a batch holds at least one event", {}));
    }
    for (const event of events) {
      if (!isValidRoomName(event.room)) {
        return refuse(new HubcastError("invalid_room", `invalid room name ${JSON.stringify(event.room)}`, { room: event.room }));
      }
    }
    const id = options.id ?? newId();
    if (typeof id !== "string" || id.length === 0 || utf8Length(id) > MAX_ID_BYTES) {
      return refuse(new HubcastError("bad_request", `publish id must be 1 to ${MAX_ID_BYTES} bytes`, { room: first }));
    }
    const existing = this.pending.get(id);
    if (existing) return { promise: existing.promise, queued: false };
    if (clientClosed) return refuse(new HubcastError("closed", "the client is closed", { room: first, id }));
    const maxBytes = this.options.maxEventBytes ?? 1024 * 1024;
    const items = [];
    for (const [index, event] of events.entries()) {
      if (event.expectedSeq !== void 0 && !isInteger(event.expectedSeq)) {
        return refuse(new HubcastError("bad_request", `events[${index}].expectedSeq must be a non-negative integer`, { room: event.room, id }));
      }
      let json;
      try {
        json = JSON.stringify(event.data);
      } catch (err) {
        return refuse(new HubcastError("bad_request", `events[${index}].data is not JSON-serializable: ${String(err)}`, { room: event.room, id }));
      }
      if (json === void 0) {
        return refuse(new HubcastError("bad_request", `events[${index}].data is not JSON-serializable`, { room: event.room, id }));
      }
      if (utf8Length(json) > maxBytes) {
        return refuse(new HubcastError("too_large", `events[${index}].data is larger than ${maxBytes} bytes`, { room: event.room, id }));
      }
      let item = `{"room":${JSON.stringify(event.room)},"data":${json}`;
      if (event.expectedSeq !== void 0) item += `,"expected_seq":${event.expectedSeq}`;
      items.push(`${item}}`);
    }
    if (this.pending.size >= (this.options.maxQueuedPublishes ?? 1e3)) {
      return refuse(new HubcastError("queue_full", "too many publishes waiting for an ack", { room: first, id }));
    }
    const frame = `{"type":"publish_batch","id":${JSON.stringify(id)},"events":[${items.join(",")}]}`;
    const rooms = [...new Set(events.map((e) => e.room))];
    return { promise: this.queue(id, rooms, true, false, frame, options.timeoutMs), queued: true };
  }
  /** Queues a checked publish or batch: its promise settles with its ack (a batch: every ack). */
  queue(id, rooms, batch, ephemeral, frame, timeoutOption) {
    let resolve;
    let reject;
    const settled = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const promise = batch ? settled : settled.then((acks) => acks[0]);
    const room = rooms[0];
    const entry = {
      id,
      room,
      rooms,
      batch,
      frame,
      ephemeral,
      resolve,
      reject,
      promise,
      sentOn: 0,
      attempts: 0,
      retryTimer: null,
      timeoutTimer: null
    };
    this.pending.set(id, entry);
    const timeoutMs = timeoutOption ?? this.options.publishTimeoutMs ?? 0;
    if (timeoutMs > 0) {
      entry.timeoutTimer = setTimeout(() => {
        this.settle(
          entry,
          new HubcastError("timeout", `publish ${id} was not acknowledged within ${timeoutMs} ms; it may still be appended: retry with the same id to find out`, { room, id })
        );
      }, timeoutMs);
    }
    return promise;
  }
  /**
   * Sends the pending publishes not yet sent on this socket, in call order,
   * at most `maxPublishesPerSecond` (bursts of as many): a queue flushed after
   * a reconnect must not get the session closed for sending too fast (4008).
   */
  pump() {
    if (!this.link.isOpen() || this.pumpTimer !== null) return;
    const rate = this.options.maxPublishesPerSecond ?? 100;
    for (const entry of this.pending.values()) {
      if (entry.retryTimer !== null || entry.sentOn === this.link.generation()) continue;
      if (rate > 0 && !this.takeToken(rate)) {
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = null;
          this.pump();
        }, Math.ceil(1e3 / rate));
        return;
      }
      if (!this.link.send(entry.frame)) return;
      entry.sentOn = this.link.generation();
    }
  }
  /** The socket was detached: the paced sending stops (the next socket starts it again). */
  stopPump() {
    if (this.pumpTimer !== null) {
      clearTimeout(this.pumpTimer);
      this.pumpTimer = null;
    }
  }
  /** The socket is gone: everything pending is resent on the next one. */
  socketClosed() {
    for (const entry of this.pending.values()) entry.sentOn = 0;
  }
  /** Whether a publish to `room` was sent on this socket and is not answered yet. */
  inFlight(room) {
    const generation = this.link.generation();
    for (const entry of this.pending.values()) if (entry.sentOn === generation && entry.rooms.includes(room)) return true;
    return false;
  }
  /** An `ack` frame. Returns `false` when it is malformed (the caller reports it). */
  onAck(frame) {
    if (typeof frame.id !== "string") return true;
    const entry = this.pending.get(frame.id);
    if (!entry) return true;
    const room = typeof frame.room === "string" ? frame.room : entry.room;
    if (entry.ephemeral) {
      if (frame.ephemeral !== true) return false;
      this.settle(entry, [{ id: entry.id, room, ephemeral: true }]);
      return true;
    }
    if (!isInteger(frame.seq)) return false;
    this.settle(entry, [{ id: entry.id, room, seq: frame.seq }]);
    return true;
  }
  /** A `batch_ack` frame: one receipt per event. Returns `false` when it is malformed. */
  onBatchAck(frame) {
    if (typeof frame.id !== "string") return true;
    const entry = this.pending.get(frame.id);
    if (!entry) return true;
    if (!Array.isArray(frame.events)) return false;
    const acks = [];
    for (const receipt of frame.events) {
      if (typeof receipt?.room !== "string" || !isInteger(receipt.seq)) return false;
      acks.push({ id: entry.id, room: receipt.room, seq: receipt.seq });
    }
    this.settle(entry, acks);
    return true;
  }
  /**
   * An `error` frame with an `id`: returns whether it answered a pending
   * publish. Errors after which nothing was appended are retried (same id)
   * after a backoff; any other fails the publish.
   */
  onError(id, code, message, head, room) {
    const entry = this.pending.get(id);
    if (!entry) return false;
    if (RETRYABLE_PUBLISH_ERRORS.has(code) && this.backoff) {
      entry.sentOn = 0;
      const delay = backoffDelay(entry.attempts++, this.backoff, this.random);
      entry.retryTimer = setTimeout(() => {
        entry.retryTimer = null;
        this.pump();
      }, delay);
      return true;
    }
    const details = { room: room ?? entry.room, id: entry.id };
    if (isInteger(head)) details.head = head;
    this.settle(entry, new HubcastError(code, message, details));
    return true;
  }
  /** Fails every pending publish with a copy of `error` (its close code kept). */
  rejectAll(error) {
    for (const entry of [...this.pending.values()]) {
      const details = { room: entry.room, id: entry.id };
      if (error.closeCode !== void 0) details.closeCode = error.closeCode;
      this.settle(entry, new HubcastError(error.code, error.message, details));
    }
  }
  takeToken(rate) {
    const now = Date.now();
    this.budget = this.budgetAt < 0 ? rate : Math.min(rate, this.budget + (now - this.budgetAt) * rate / 1e3);
    this.budgetAt = now;
    if (this.budget < 1) return false;
    this.budget -= 1;
    return true;
  }
  settle(entry, outcome) {
    if (this.pending.get(entry.id) !== entry) return;
    this.pending.delete(entry.id);
    if (entry.retryTimer !== null) clearTimeout(entry.retryTimer);
    if (entry.timeoutTimer !== null) clearTimeout(entry.timeoutTimer);
    if (outcome instanceof HubcastError) entry.reject(outcome);
    else entry.resolve(outcome);
    for (const room of entry.rooms) {
      const own = outcome instanceof HubcastError ? [] : outcome.filter((a) => a.room === room);
      let seqs = 0;
      for (const ack of own) {
        if ("seq" in ack) {
          this.link.settled(room, ack.seq);
          seqs += 1;
        }
      }
      if (seqs === 0) this.link.settled(room, null);
    }
  }
};

// ../../clients/js/src/channel.ts
var Channel = class {
  constructor(onReturn) {
    this.onReturn = onReturn;
  }
  items = [];
  waiters = [];
  finished = false;
  failure = null;
  push(item) {
    if (this.finished) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: item, done: false });
    else this.items.push(item);
  }
  /** Ends the iteration; with `error`, the consumer's next `next()` after the queue drains throws it. */
  end(error) {
    if (this.finished) return;
    this.finished = true;
    if (error !== void 0) this.failure = { error };
    const waiters = this.waiters.splice(0);
    for (const [i, waiter] of waiters.entries()) {
      if (this.failure && i === 0) waiter.reject(this.failure.error);
      else waiter.resolve({ value: void 0, done: true });
    }
    if (waiters.length > 0) this.failure = null;
  }
  get size() {
    return this.items.length;
  }
  next() {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift(), done: false });
    if (this.finished) {
      if (this.failure) {
        const { error } = this.failure;
        this.failure = null;
        return Promise.reject(error);
      }
      return Promise.resolve({ value: void 0, done: true });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  return() {
    this.items.length = 0;
    this.failure = null;
    this.end();
    this.onReturn(this);
    return Promise.resolve({ value: void 0, done: true });
  }
  [Symbol.asyncIterator]() {
    return this;
  }
};

// ../../clients/js/src/room.ts
function sortMembers(members) {
  return [...members].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
var MAX_BUFFERED = 1e4;
var Room = class {
  /** @internal Use `client.room(name)`. */
  constructor(host, name, options, onListenerError) {
    this.host = host;
    this.name = name;
    this.emitter = new Emitter((err) => onListenerError(err));
    if (options.cursor) {
      const { seq } = options.cursor;
      if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError("cursor.seq must be a non-negative integer");
      this.seq = seq;
      this.epoch = options.cursor.epoch ?? null;
    } else {
      this.seq = null;
      this.epoch = null;
    }
    if (options.rewind !== void 0 && (!Number.isSafeInteger(options.rewind) || options.rewind < 0)) {
      throw new TypeError("rewind must be a non-negative integer");
    }
    this.rewind = options.rewind;
    this.withPresence = options.presence === true;
  }
  name;
  emitter;
  eventChannels = /* @__PURE__ */ new Set();
  updateChannels = /* @__PURE__ */ new Set();
  epoch;
  /** Last delivered seq; `null` while unknown (a `rewind` start before its first event). */
  seq;
  rewind;
  withPresence;
  memberList = [];
  wire = "idle";
  closed = false;
  subscribedHead = 0;
  subscribedEpoch = "";
  /** `subscribed` named another epoch than our cursor's: a `reset` must come before anything else. */
  awaitingReset = false;
  subscribeAttempts = 0;
  /** Heals that failed in a row: the resubscribe after one waits a backoff, so
   * an event the client cannot take (or a history route that keeps failing)
   * never turns into a hot loop of resubscribes. */
  healFailures = 0;
  /** Set while a resync after a failed heal waits its backoff. */
  resyncDelayMs = null;
  subscribeRetry = null;
  buffer = /* @__PURE__ */ new Map();
  /** `false` when `subscribed` said `"echo": false`: our own socket publishes are not sent to us. */
  echo = true;
  /** Acked seqs of our own publishes past the cursor (no-echo rooms): the cursor steps across them. */
  own = /* @__PURE__ */ new Set();
  healing = false;
  healGen = 0;
  healTarget = 0;
  /** Counters, for tests and diagnostics. */
  stats = { delivered: 0, duplicatesDropped: 0, gapsHealed: 0, resyncs: 0, resets: 0, historyReads: 0, historyFailures: 0 };
  // ---------------------------------------------------------------- public API
  /** The cursor to persist and resume from: `null` until the start position is known. */
  get cursor() {
    return this.seq === null ? null : { epoch: this.epoch, seq: this.seq };
  }
  /** `true` once `unsubscribe()` was called. */
  get isClosed() {
    return this.closed;
  }
  /** Whether the room is subscribed on the current socket (`subscribed` received). */
  get isSubscribed() {
    return this.wire === "active";
  }
  on(event, listener) {
    return this.emitter.on(event, listener);
  }
  once(event, listener) {
    return this.emitter.once(event, listener);
  }
  off(event, listener) {
    this.emitter.off(event, listener);
  }
  /**
   * Iterates the room's events from now on. Each iterator has its own
   * unbounded queue; `break` out of the loop to release it. Ends when the
   * room is unsubscribed or the client closed, and throws the error of a
   * terminal close (4001, 4003, 1008, 1009).
   */
  [Symbol.asyncIterator]() {
    const channel = new Channel((c) => this.eventChannels.delete(c));
    if (this.closed) channel.end();
    else this.eventChannels.add(channel);
    return channel;
  }
  /** Like iterating the room, but resets come through too, in order with the events. */
  updates() {
    const channel = new Channel((c) => this.updateChannels.delete(c));
    if (this.closed) channel.end();
    else this.updateChannels.add(channel);
    return channel;
  }
  /** Whether this subscription is in the room's presence (`presence: true`). */
  get hasPresence() {
    return this.withPresence;
  }
  /**
   * The member list of a `presence: true` subscription as last received
   * (sorted by `id`; empty before the first `presence` frame and for other rooms).
   */
  get members() {
    return this.memberList.map((m) => ({ ...m }));
  }
  /**
   * Asks the server for the room's members (`{"type":"presence","room"}`; needs
   * the `presence` grant, not `presence: true`). See `HubcastClient.presence`.
   */
  presence() {
    return this.host.requestPresence(this.name);
  }
  /** Publishes to this room; see `HubcastClient.publish`. */
  publish(data, options) {
    return this.host.publish(this.name, data, options);
  }
  /** Stops the subscription. Listeners get nothing more; iterators end. */
  unsubscribe() {
    if (this.closed) return;
    const onServer = this.wire === "subscribing" || this.wire === "active" || this.wire === "resyncing";
    this.closed = true;
    this.cancelHeal();
    this.clearSubscribeRetry();
    this.wire = "idle";
    this.endIterators();
    this.host.removeRoom(this, onServer);
  }
  // ---------------------------------------------------------- client → room
  /** @internal The socket opened (or an earlier unsubscribe of this name finished): subscribe. */
  subscribeNow() {
    if (this.closed || !this.host.isOpen()) return;
    if (this.wire === "subscribing" || this.wire === "active" || this.wire === "resyncing") return;
    if (this.host.isDraining(this.name)) {
      this.wire = "waiting";
      return;
    }
    const frame = { type: "subscribe", room: this.name };
    if (this.seq !== null) {
      frame.cursor = this.seq;
      if (this.epoch !== null) frame.epoch = this.epoch;
    } else if (this.rewind !== void 0) {
      frame.rewind = this.rewind;
    }
    if (this.withPresence) frame.presence = true;
    if (this.host.send(frame)) this.wire = "subscribing";
  }
  /** @internal The socket closed: the next connection resubscribes from the cursor. */
  socketClosed() {
    this.resyncDelayMs = null;
    this.wire = "idle";
    this.awaitingReset = false;
    this.clearSubscribeRetry();
    this.cancelHeal();
  }
  /** @internal The client was closed (`error` set for a terminal close code). */
  clientClosed(error) {
    this.socketClosed();
    this.endIterators(error);
  }
  /** @internal */
  onSubscribed(epoch, head, echo = true) {
    if (this.closed || this.wire !== "subscribing") return;
    this.wire = "active";
    this.echo = echo;
    this.subscribeAttempts = 0;
    this.subscribedHead = head;
    this.subscribedEpoch = epoch;
    this.awaitingReset = this.seq !== null && this.epoch !== null && epoch !== this.epoch;
    if (this.epoch === null) this.epoch = epoch;
    if (this.seq === null && this.rewind === void 0) this.seq = head;
    this.emitter.emit("subscribed", { room: this.name, epoch, head });
  }
  /** @internal */
  /** `head`: a live reset's (the room's log was deleted); the cursor moves to it instead of the `subscribed` head. */
  onReset(epoch, earliest, head = null) {
    if (this.closed || this.wire !== "active") return;
    const previous = this.cursor;
    this.cancelHeal();
    this.awaitingReset = false;
    if (head !== null) {
      this.subscribedHead = head;
      this.subscribedEpoch = epoch;
    }
    this.epoch = epoch;
    this.seq = this.subscribedHead;
    this.own.clear();
    this.stats.resets += 1;
    const reset = { room: this.name, epoch, earliest, head: this.subscribedHead, previous };
    this.emitter.emit("reset", reset);
    for (const channel of this.updateChannels) channel.push({ type: "reset", reset });
  }
  /** @internal */
  onEvent(event) {
    if (this.closed || this.wire !== "active") return;
    if (this.awaitingReset) this.onReset(this.epochOfSubscription(), null);
    this.offer(event, "socket");
  }
  /** @internal */
  onCaughtUp(seq) {
    if (this.closed || this.wire !== "active") return;
    if (this.awaitingReset) this.onReset(this.epochOfSubscription(), null);
    if (this.seq === null) this.seq = seq;
    else if (seq > this.seq) this.requestHeal(seq);
    this.emitter.emit("caught_up", { room: this.name, seq });
  }
  /**
   * @internal A publish to this room was answered (`seq`: its ack's, `null`: it failed). In a
   * no-echo room the acked seq counts as delivered, and events held past a hole are
   * delivered, or the hole healed once no answer can explain it.
   */
  onPublishSettled(seq) {
    if (this.closed || this.echo || this.wire !== "active") return;
    if (seq !== null && this.seq !== null && seq > this.seq) this.own.add(seq);
    this.drain();
  }
  /** @internal An `ephemeral` frame: passed on while the subscription is live; the cursor does not move. */
  onEphemeral(ts, data) {
    if (this.closed || this.wire !== "active") return;
    this.emitter.emit("ephemeral", { room: this.name, ts, data });
  }
  /** @internal A `presence` frame: the full member list (for a presence subscription). */
  onPresence(members) {
    if (this.closed || !this.withPresence || this.wire !== "active") return;
    this.memberList = sortMembers(members);
    this.emitter.emit("presence", { room: this.name, members: this.members });
  }
  /** @internal A `join` or `leave` frame. */
  onMembership(kind, member) {
    if (this.closed || !this.withPresence || this.wire !== "active") return;
    const rest = this.memberList.filter((m) => m.id !== member.id);
    this.memberList = kind === "join" ? sortMembers([...rest, member]) : rest;
    this.emitter.emit(kind, { room: this.name, member: { ...member }, members: this.members });
  }
  /** @internal `unsubscribed` (or `not_subscribed`) for this room. */
  onUnsubscribed() {
    if (this.closed) return;
    if (this.wire === "resyncing") {
      this.wire = "idle";
      const delay = this.resyncDelayMs;
      this.resyncDelayMs = null;
      if (delay === null) {
        this.subscribeNow();
      } else {
        this.clearSubscribeRetry();
        this.subscribeRetry = setTimeout(() => {
          this.subscribeRetry = null;
          this.subscribeNow();
        }, delay);
      }
    }
  }
  /** @internal An `error` frame about this room's subscription. */
  onSubscriptionError(code, message, retryAfterMs = 0) {
    if (this.closed) return;
    const error = new HubcastError(code, message, { room: this.name });
    switch (code) {
      case "already_subscribed":
        if (this.wire === "subscribing") {
          this.wire = "active";
          this.resync();
        }
        break;
      case "not_subscribed":
        this.onUnsubscribed();
        return;
      // expected while resyncing; not worth an error
      case "store_unavailable":
      case "auth_unavailable":
      case "over_capacity":
      case "rate_limited":
        if (this.wire === "subscribing" || this.wire === "active") {
          this.wire = "idle";
          this.cancelHeal();
          const delay = retryAfterMs + this.host.retryDelay(this.subscribeAttempts++);
          this.clearSubscribeRetry();
          this.subscribeRetry = setTimeout(() => {
            this.subscribeRetry = null;
            this.subscribeNow();
          }, delay);
        }
        break;
      default:
        if (this.wire === "subscribing" || this.wire === "active" || this.wire === "resyncing") {
          this.wire = "failed";
          this.cancelHeal();
        }
    }
    this.emitError(error);
  }
  /** @internal Periodic reconciliation: read the history after the cursor and deliver what the socket missed. */
  reconcile() {
    if (this.closed || this.seq === null) return;
    if (this.wire === "subscribing" || this.wire === "resyncing" || this.wire === "waiting") return;
    this.requestHeal("probe");
  }
  // ----------------------------------------------------------------- delivery
  /** The epoch of the current subscription, for a reset the server should have sent but did not. */
  epochOfSubscription() {
    return this.subscribedEpoch;
  }
  /** Delivers `event` if it is the next one, drops it if already delivered, keeps it if it is ahead. */
  offer(event, source) {
    if (this.seq === null) {
      if (source === "socket") {
        this.deliver(event);
        this.drain();
      }
      return;
    }
    this.skipOwn();
    const cursor = this.seq;
    if (event.seq <= cursor) {
      this.stats.duplicatesDropped += 1;
      return;
    }
    if (event.seq === cursor + 1) {
      this.deliver(event);
      this.drain();
      return;
    }
    if (this.buffer.size < MAX_BUFFERED) this.buffer.set(event.seq, event);
    if (source === "socket" && this.holding()) return;
    this.requestHeal(event.seq - 1);
  }
  /** Steps the cursor across our own acked seqs (no-echo rooms). */
  skipOwn() {
    if (this.own.size === 0) return;
    while (this.seq !== null && this.own.delete(this.seq + 1)) this.seq += 1;
    for (const seq of this.own) if (this.seq !== null && seq <= this.seq) this.own.delete(seq);
  }
  /** A no-echo room with publishes sent and unanswered: a hole may be one of ours whose ack is on its way. */
  holding() {
    return !this.echo && this.host.publishesInFlight(this.name);
  }
  deliver(wire) {
    this.seq = wire.seq;
    this.stats.delivered += 1;
    const event = { room: this.name, seq: wire.seq, ts: wire.ts, data: wire.data, epoch: this.epoch };
    this.emitter.emit("event", event);
    for (const channel of this.eventChannels) channel.push(event);
    for (const channel of this.updateChannels) channel.push({ type: "event", event });
  }
  /** Delivers buffered events that became contiguous; heals again if some are still ahead. */
  drain() {
    this.skipOwn();
    while (!this.closed && this.seq !== null && this.buffer.size > 0) {
      const next = this.buffer.get(this.seq + 1);
      if (!next) break;
      this.buffer.delete(next.seq);
      this.deliver(next);
      this.skipOwn();
    }
    if (this.seq === null || this.buffer.size === 0) return;
    let lowest = Infinity;
    for (const seq of this.buffer.keys()) {
      if (seq <= this.seq) this.buffer.delete(seq);
      else lowest = Math.min(lowest, seq);
    }
    if (lowest === Infinity) return;
    if (this.holding() && !this.healing) return;
    this.requestHeal(lowest - 1);
  }
  /** Makes sure everything through `target` gets delivered (`'probe'`: through the head the history route reports). */
  requestHeal(target) {
    if (target !== "probe") this.healTarget = Math.max(this.healTarget, target);
    if (this.healing || this.closed) return;
    if (this.wire === "subscribing" || this.wire === "resyncing" || this.wire === "waiting") return;
    this.healing = true;
    const gen = ++this.healGen;
    void this.heal(gen, target === "probe");
  }
  cancelHeal() {
    this.healGen += 1;
    this.healing = false;
    this.healTarget = 0;
    this.buffer.clear();
  }
  /** Reads the history route after the cursor until `healTarget` is delivered. */
  async heal(gen, probe) {
    let outcome = "done";
    let failure = null;
    const startSeq = this.seq;
    try {
      for (; ; ) {
        const after = this.seq;
        if (after === null || !probe && after >= this.healTarget) break;
        const limit = probe ? this.host.historyPageSize : Math.max(1, Math.min(this.host.historyPageSize, this.healTarget - after));
        const page = await this.host.fetchHistory(this.name, after, limit);
        this.stats.historyReads += 1;
        if (gen !== this.healGen) return;
        const current = this.seq;
        if (this.epoch === null && page.epoch !== null) this.epoch = page.epoch;
        if (page.epoch !== this.epoch && !(page.epoch === null && current === 0)) {
          outcome = "resync";
          break;
        }
        if (current + 1 < page.earliest) {
          outcome = "resync";
          break;
        }
        for (const event of page.events) {
          this.offer(event, "history");
          if (gen !== this.healGen) return;
        }
        if (probe) {
          probe = false;
          this.healTarget = Math.max(this.healTarget, page.head);
        }
        const now = this.seq;
        if (now >= this.healTarget) break;
        if (now === current) {
          outcome = "resync";
          break;
        }
      }
    } catch (err) {
      this.stats.historyFailures += 1;
      if (gen !== this.healGen) return;
      failure = err;
    }
    if (gen !== this.healGen) return;
    this.healing = false;
    if (failure !== null) {
      const needed = this.buffer.size > 0 || this.seq !== null && this.healTarget > this.seq;
      if (!needed) {
        this.healTarget = 0;
        return;
      }
      this.emitError(
        failure instanceof HubcastError && failure.code === "history_unavailable" ? failure : new HubcastError("history_unavailable", `history of ${this.name} could not be read: ${String(failure)}`, {
          room: this.name,
          cause: failure
        })
      );
      this.resyncDelayMs = this.host.retryDelay(this.healFailures++);
      this.resync();
      return;
    }
    if (outcome === "resync") {
      this.resync();
      return;
    }
    if (this.seq !== startSeq) this.stats.gapsHealed += 1;
    this.healFailures = 0;
    this.healTarget = 0;
    this.drain();
  }
  /** Restarts the subscription from the cursor: `unsubscribe`, then `subscribe` with the cursor on `unsubscribed`. */
  resync() {
    this.cancelHeal();
    this.stats.resyncs += 1;
    if (this.wire !== "active" || !this.host.isOpen()) return;
    if (this.host.send({ type: "unsubscribe", room: this.name })) this.wire = "resyncing";
  }
  clearSubscribeRetry() {
    if (this.subscribeRetry !== null) {
      clearTimeout(this.subscribeRetry);
      this.subscribeRetry = null;
    }
  }
  emitError(error) {
    this.emitter.emit("error", error);
    this.host.reportError(error);
  }
  endIterators(error) {
    for (const channel of this.eventChannels) channel.end(error);
    for (const channel of this.updateChannels) channel.end(error);
    this.eventChannels.clear();
    this.updateChannels.clear();
  }
};

// ../../clients/js/src/rooms.ts
var RoomRegistry = class {
  constructor(options, link) {
    this.options = options;
    this.link = link;
  }
  rooms = /* @__PURE__ */ new Map();
  /** Room names whose `unsubscribe` is still in flight on the current socket. */
  draining = /* @__PURE__ */ new Set();
  reconcileTimer = null;
  get(name) {
    return this.rooms.get(name);
  }
  add(room) {
    this.rooms.set(room.name, room);
  }
  /** Whether an `unsubscribe` of `name` is still in flight on the socket. */
  isDraining(name) {
    return this.draining.has(name);
  }
  /** A new socket, or none: no unsubscribe is in flight any more. */
  clearDraining() {
    this.draining.clear();
  }
  /** The room was unsubscribed by the application; `onServer`: the server has (or is getting) its subscription. */
  remove(room, onServer) {
    if (this.rooms.get(room.name) !== room) return;
    this.rooms.delete(room.name);
    if (onServer && this.link.isOpen()) {
      if (!this.draining.has(room.name)) {
        this.draining.add(room.name);
        this.link.send({ type: "unsubscribe", room: room.name });
      }
    }
  }
  /** `unsubscribed` (or the `not_subscribed` that ends a drain) for `name`. */
  onUnsubscribed(name) {
    if (typeof name !== "string") return;
    if (this.draining.delete(name)) {
      this.rooms.get(name)?.subscribeNow();
      return;
    }
    this.rooms.get(name)?.onUnsubscribed();
  }
  /** The socket opened: every room subscribes (from its cursor). */
  subscribeAll() {
    for (const room of this.rooms.values()) room.subscribeNow();
  }
  /** The socket is gone; the next one resubscribes every room. */
  socketClosed() {
    for (const room of this.rooms.values()) room.socketClosed();
  }
  /** The client stopped (`error`: a terminal close): iterators end. */
  clientClosed(error) {
    for (const room of this.rooms.values()) room.clientClosed(error);
  }
  /** Starts the `reconcileMs` poll of every room, if configured and not running. */
  startReconcile() {
    const every = this.options.reconcileMs ?? 0;
    if (every <= 0 || this.reconcileTimer !== null) return;
    this.reconcileTimer = setInterval(() => {
      for (const room of this.rooms.values()) room.reconcile();
    }, every);
  }
  stopReconcile() {
    if (this.reconcileTimer !== null) {
      clearInterval(this.reconcileTimer);
      this.reconcileTimer = null;
    }
  }
};

// ../../clients/js/src/sse.ts
var CONNECTING = 0;
var OPEN2 = 1;
var CLOSED = 3;
var NAMED = ["welcome", "subscribed", "caught_up", "reset"];
function streamId(rooms, positions) {
  const epochs = [];
  const entries = rooms.map((room) => {
    const at = positions.get(room);
    if (at?.seq === void 0) return "-";
    const epoch = at.epoch && /^[A-Za-z0-9_.:-]+$/.test(at.epoch) ? at.epoch : "";
    let index = epochs.indexOf(epoch);
    if (index < 0) index = epochs.push(epoch) - 1;
    return index === 0 ? `${at.seq}` : `${at.seq}.${index}`;
  });
  return `${epochs.join(",")}/${entries.join(",")}`;
}
function sseTransport(EventSourceImpl, fetchImpl) {
  return class SseSocket {
    readyState = CONNECTING;
    onopen = null;
    onmessage = null;
    onclose = null;
    onerror = null;
    http;
    token;
    /** Rooms in the order they were subscribed, and what each asked for. */
    rooms = [];
    wanted = /* @__PURE__ */ new Map();
    positions = /* @__PURE__ */ new Map();
    es = null;
    restart = null;
    constructor(url) {
      const u = new URL(url);
      this.token = u.searchParams.get("token");
      const scheme = u.protocol === "wss:" ? "https:" : "http:";
      this.http = `${scheme}//${u.host}${u.pathname.replace(/\/v1\/ws$/, "")}`;
      queueMicrotask(() => {
        if (this.readyState !== CONNECTING) return;
        this.readyState = OPEN2;
        this.onopen?.({});
      });
    }
    send(data) {
      if (this.readyState !== OPEN2) throw new Error("the SSE transport is not open");
      const frame = JSON.parse(data);
      switch (frame.type) {
        case "subscribe":
          return this.subscribe(frame);
        case "unsubscribe":
          return this.unsubscribe(String(frame.room));
        case "publish":
          return void this.publish(frame);
        case "ping":
          return this.deliver({ type: "pong" });
        default:
          return this.deliver({
            type: "error",
            code: "bad_request",
            message: `${String(frame.type)} is not available over SSE`,
            ...typeof frame.id === "string" ? { id: frame.id } : {},
            ...typeof frame.room === "string" ? { room: frame.room } : {}
          });
      }
    }
    close(code = 1e3, reason = "") {
      if (this.readyState === CLOSED) return;
      this.stopStream();
      this.readyState = CLOSED;
      const onclose = this.onclose;
      queueMicrotask(() => onclose?.({ code, reason }));
    }
    subscribe(frame) {
      const room = String(frame.room);
      if (this.wanted.has(room)) {
        return this.deliver({ type: "error", code: "already_subscribed", message: "already subscribed to this room", room });
      }
      this.rooms.push(room);
      this.wanted.set(room, { rewind: typeof frame.rewind === "number" ? frame.rewind : void 0 });
      if (typeof frame.cursor === "number") {
        this.positions.set(room, { seq: frame.cursor, epoch: typeof frame.epoch === "string" ? frame.epoch : void 0 });
      }
      this.scheduleStream();
    }
    unsubscribe(room) {
      if (!this.wanted.delete(room)) {
        return this.deliver({ type: "error", code: "not_subscribed", message: "not subscribed to this room", room });
      }
      this.rooms.splice(this.rooms.indexOf(room), 1);
      this.positions.delete(room);
      this.deliver({ type: "unsubscribed", room });
      this.scheduleStream();
    }
    /** Opens the stream for the current rooms once the subscribes sent together are all in. */
    scheduleStream() {
      if (this.restart !== null) return;
      this.restart = setTimeout(() => {
        this.restart = null;
        if (this.readyState === OPEN2) this.openStream();
      }, 0);
    }
    openStream() {
      this.stopStream();
      if (this.rooms.length === 0) return;
      const params = new URLSearchParams();
      for (const room of this.rooms) params.append("room", room);
      params.set("lastEventId", streamId(this.rooms, this.positions));
      const rewinds = this.rooms.map((r) => this.wanted.get(r)?.rewind).filter((r) => r !== void 0);
      if (rewinds.length > 0) params.set("rewind", String(Math.max(...rewinds)));
      if (this.token) params.set("token", this.token);
      const es = new EventSourceImpl(`${this.http}/v1/sse?${params}`);
      this.es = es;
      const pass = (ev) => {
        if (this.es !== es) return;
        this.track(ev.data);
        this.onmessage?.({ data: ev.data });
      };
      es.addEventListener("message", pass);
      for (const name of NAMED) es.addEventListener(name, pass);
      es.addEventListener("close", (ev) => {
        if (this.es !== es) return;
        const close = JSON.parse(ev.data);
        if (close.error) this.onmessage?.({ data: JSON.stringify(close.error) });
        this.lost(close.code, close.reason);
      });
      es.onerror = () => {
        if (this.es === es) this.lost(1006, "the event stream was lost");
      };
    }
    /** Follows each room's position from the frames passed on. */
    track(data) {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      if (!frame.room || !this.wanted.has(frame.room)) return;
      const at = this.positions.get(frame.room) ?? {};
      switch (frame.type) {
        case "subscribed":
          if (at.epoch === void 0 && frame.epoch !== void 0) this.positions.set(frame.room, { ...at, epoch: frame.epoch });
          break;
        case "reset":
          this.positions.set(frame.room, { epoch: frame.epoch });
          break;
        case "event":
        case "caught_up":
          if (typeof frame.seq === "number") this.positions.set(frame.room, { ...at, seq: frame.seq });
          break;
      }
    }
    /** The stream is gone: this socket closes, and the client reconnects with its cursors. */
    lost(code, reason) {
      this.close(code, reason);
    }
    stopStream() {
      if (this.restart !== null) {
        clearTimeout(this.restart);
        this.restart = null;
      }
      const es = this.es;
      this.es = null;
      if (es && es.readyState !== CLOSED) es.close();
    }
    async publish(frame) {
      const id = String(frame.id);
      const room = String(frame.room);
      const body = { data: frame.data };
      if (typeof frame.expected_seq === "number") body.expected_seq = frame.expected_seq;
      const headers = { "content-type": "application/json", "idempotency-key": id };
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      let status;
      let answer;
      try {
        const res = await fetchImpl(`${this.http}/v1/rooms/${encodeURIComponent(room)}/events`, {
          method: "POST",
          headers,
          body: JSON.stringify(body)
        });
        status = res.status;
        answer = await res.json().catch(() => ({})) ?? {};
      } catch {
        if (this.readyState === OPEN2) this.lost(1006, "publish request failed");
        return;
      }
      if (this.readyState !== OPEN2) return;
      if (status === 200 || status === 201) {
        this.onmessage?.({ data: JSON.stringify({ type: "ack", id, room, seq: answer.seq }) });
      } else {
        const error = { type: "error", code: answer.error ?? "internal", message: answer.message ?? `HTTP ${status}`, id, room };
        if (typeof answer.head === "number") error.head = answer.head;
        this.onmessage?.({ data: JSON.stringify(error) });
      }
    }
    /** A frame answered here, delivered after `send` returns, as the network would. */
    deliver(frame) {
      queueMicrotask(() => {
        if (this.readyState === OPEN2) this.onmessage?.({ data: JSON.stringify(frame) });
      });
    }
  };
}

// ../../clients/js/src/urls.ts
function deriveUrls(url) {
  const loc = globalThis.location;
  const base = new URL(url, loc?.href);
  let ws;
  let http;
  switch (base.protocol) {
    case "ws:":
    case "http:":
      ws = "ws:";
      http = "http:";
      break;
    case "wss:":
    case "https:":
      ws = "wss:";
      http = "https:";
      break;
    default:
      throw new TypeError(`unsupported URL scheme ${base.protocol} (use http(s):// or ws(s)://)`);
  }
  let path = base.pathname.replace(/\/+$/, "");
  if (path.endsWith("/v1/ws")) path = path.slice(0, -"/v1/ws".length);
  return { ws: `${ws}//${base.host}${path}/v1/ws`, http: `${http}//${base.host}${path}` };
}

// ../../clients/js/src/client.ts
var HubcastClient = class {
  options;
  emitter;
  backoff;
  random;
  credentials;
  connection;
  rooms;
  publishes;
  presenceRequests;
  history;
  /** Where the router hands each frame. */
  recipients;
  host;
  /**
   * @throws TypeError when `options.url` is missing or not http(s)/ws(s), or when there is no
   * WebSocket implementation (no global `WebSocket`, as on Node 20, and no `WebSocket` option).
   */
  constructor(options) {
    if (!options || typeof options.url !== "string") throw new TypeError("options.url is required");
    this.options = options;
    const urls = deriveUrls(options.url);
    const transport = options.transport ?? "websocket";
    const ES = options.EventSource ?? globalThis.EventSource;
    const publishFetch = options.fetch ?? globalThis.fetch;
    const sse = ES && publishFetch ? sseTransport(ES, publishFetch) : void 0;
    if (transport !== "websocket" && !sse) {
      throw new TypeError(`transport '${transport}' needs an EventSource (the \`EventSource\` option or a global one) and fetch`);
    }
    let WS = transport === "sse" ? sse : options.WebSocket ?? globalThis.WebSocket;
    if (!WS && transport === "auto") WS = sse;
    if (!WS) {
      throw new TypeError(
        "no WebSocket implementation: this runtime has no global WebSocket (Node 20 has none), so pass one in the `WebSocket` option, e.g. `import WebSocket from 'ws'` and `new HubcastClient({ url, WebSocket })`"
      );
    }
    this.random = options.random ?? Math.random;
    this.backoff = options.reconnect === false ? null : {
      minDelayMs: options.reconnect?.minDelayMs ?? 250,
      maxDelayMs: options.reconnect?.maxDelayMs ?? 3e4,
      tryAgainLaterMs: options.reconnect?.tryAgainLaterMs ?? 5e3
    };
    this.emitter = new Emitter((err, event) => {
      if (event !== "error") this.reportListenerError(err);
    });
    const isOpen = () => this.connection.state === "open";
    const send = (frame) => this.connection.send(frame);
    this.credentials = new Credentials(options, send, (err) => this.emitter.emit("error", err));
    this.history = new HistoryReader(urls.http, options, this.credentials);
    this.rooms = new RoomRegistry(options, { isOpen, send });
    this.presenceRequests = new PresenceRequests({ isOpen, send });
    this.publishes = new PublishTracker(options, this.backoff, this.random, {
      isOpen,
      generation: () => this.connection.generation,
      send,
      settled: (room, seq) => this.rooms.get(room)?.onPublishSettled(seq)
    });
    const config = {
      WebSocket: WS,
      fallback: transport === "auto" && WS !== sse ? sse : void 0,
      url: urls.ws,
      options,
      backoff: this.backoff,
      heartbeat: heartbeatConfig(options.heartbeat),
      random: this.random
    };
    this.connection = new Connection(config, this.credentials, this.emitter, {
      opening: () => this.rooms.clearDraining(),
      opened: () => {
        this.rooms.subscribeAll();
        this.presenceRequests.send();
        this.publishes.pump();
      },
      frame: (raw) => routeFrame(raw, this.recipients),
      detached: () => this.publishes.stopPump(),
      socketGone: () => {
        this.rooms.clearDraining();
        this.rooms.socketClosed();
        this.publishes.socketClosed();
        this.presenceRequests.socketClosed();
      },
      stopped: (roomError, error) => {
        this.rooms.clearDraining();
        this.rooms.stopReconcile();
        this.rooms.clientClosed(roomError);
        this.publishes.rejectAll(error);
        this.presenceRequests.reject(error);
      }
    });
    this.recipients = {
      emitter: this.emitter,
      connection: this.connection,
      credentials: this.credentials,
      rooms: this.rooms,
      publishes: this.publishes,
      presence: this.presenceRequests
    };
    const client = this;
    this.host = {
      send,
      isOpen,
      isDraining: (room) => this.rooms.isDraining(room),
      fetchHistory: (room, after, limit) => this.history.read(room, after, limit),
      get historyPageSize() {
        return client.options.historyPageSize ?? 1e3;
      },
      retryDelay: (attempt) => backoffDelay(attempt, this.backoff ?? { minDelayMs: 250, maxDelayMs: 3e4, tryAgainLaterMs: 0 }, this.random),
      reportError: (err) => this.emitter.emit("error", err),
      removeRoom: (room, onServer) => this.rooms.remove(room, onServer),
      publishesInFlight: (room) => this.publishes.inFlight(room),
      publish: (room, data, opts) => this.publish(room, data, opts),
      requestPresence: (room) => this.presence(room)
    };
  }
  /** The connection state: `idle` → `connecting` → `open` ⇄ `reconnecting` … → `closed`. */
  get state() {
    return this.connection.state;
  }
  /** The server's id of the current session, once `welcome` arrived. */
  get session() {
    return this.connection.session;
  }
  /** Number of publishes waiting for an ack. */
  get pendingPublishes() {
    return this.publishes.size;
  }
  on(event, listener) {
    return this.emitter.on(event, listener);
  }
  once(event, listener) {
    return this.emitter.once(event, listener);
  }
  off(event, listener) {
    this.emitter.off(event, listener);
  }
  /**
   * The subscription to `name`, created on first use (options apply then).
   * Subscribes at once when connected, else as soon as the socket opens.
   */
  room(name, options = {}) {
    if (!isValidRoomName(name)) throw new HubcastError("invalid_room", `invalid room name ${JSON.stringify(name)}`);
    const existing = this.rooms.get(name);
    if (existing) return existing;
    const room = new Room(this.host, name, options, (err) => this.reportListenerError(err));
    this.rooms.add(room);
    if (this.state === "idle" && this.options.autoConnect !== false) this.connect();
    else if (this.state === "open") room.subscribeNow();
    return room;
  }
  /**
   * Asks the server for `room`'s presence members (sorted by `id`). Needs the
   * token's `presence` grant for the room, not a subscription. Queued while
   * offline and asked again after a reconnect; resolves with the next
   * `presence` frame of the room, fails with the server's error (`forbidden`)
   * or `closed`.
   */
  presence(room) {
    if (!isValidRoomName(room)) return Promise.reject(new HubcastError("invalid_room", `invalid room name ${JSON.stringify(room)}`, { room }));
    return new Promise((resolve, reject) => {
      this.presenceRequests.add(room, { resolve, reject });
      if (this.state === "idle" && this.options.autoConnect !== false) this.connect();
      else this.presenceRequests.send();
    });
  }
  /** Connects (or reconnects now, skipping a pending backoff). Also restarts a client that was closed. */
  connect() {
    if (this.connection.active) return;
    this.rooms.startReconcile();
    this.connection.open();
  }
  /**
   * Publishes `data` to `room` over the socket. Resolves with the seq once
   * the server acknowledged it (durably appended). Queued while offline and
   * resent after every reconnect with the same `id`, which the server uses as
   * the idempotency key, so it is appended at most once. Rejects with a
   * {@link HubcastError}: `conflict` (with `head`) when `expectedSeq` was not the
   * head, `too_large`, `queue_full`, `timeout`, `closed`, or the terminal close.
   */
  publish(room, data, options = {}) {
    return this.send(room, data, options, false);
  }
  /**
   * Publishes an ephemeral message (a typing indicator, a cursor) to `room`:
   * delivered to its current subscribers (their rooms' `ephemeral` listeners),
   * never stored, no seq. The room's namespace must allow it (else
   * `ephemeral_not_allowed`). Resolves once the server handed it on.
   */
  publishEphemeral(room, data, options = {}) {
    return this.send(room, data, options, true);
  }
  send(room, data, options, ephemeral) {
    const { promise, queued } = this.publishes.add(room, data, options, this.state === "closed", ephemeral);
    if (queued) {
      if (this.state === "idle" && this.options.autoConnect !== false) this.connect();
      else this.publishes.pump();
    }
    return promise;
  }
  /**
   * Publishes several events, to one or more rooms, atomically: one
   * `publish_batch` message, appended all in one transaction or not at all.
   * Resolves with one ack per event, in order. Queued and resent with the
   * same `id` (the batch's idempotency key) like {@link publish}. Rejects with
   * `conflict` (with the `room` and its `head`) when an event's `expectedSeq`
   * was not its room's head: then nothing was appended.
   */
  publishBatch(events, options = {}) {
    const { promise, queued } = this.publishes.addBatch(events, options, this.state === "closed");
    if (queued) {
      if (this.state === "idle" && this.options.autoConnect !== false) this.connect();
      else this.publishes.pump();
    }
    return promise;
  }
  /**
   * Gets a fresh token from `getToken` and hands it to the open session in
   * an `auth` message (the client does this by itself on `token_expired`).
   * Resolves with the new token, or `null` if there is none.
   */
  refreshToken() {
    return this.credentials.refresh();
  }
  /** Closes the socket for good: pending publishes fail with `closed`, iterators end. `connect()` starts again. */
  close() {
    this.connection.close();
  }
  reportListenerError(err) {
    this.emitter.emit(
      "error",
      new HubcastError("listener_error", `a listener threw: ${String(err)}`, { cause: err })
    );
  }
};

// src/app.ts
var SPARK_POINTS = 60;
var COLORS = ["#2f6fed", "#e4572e", "#17a398", "#a259c4", "#f2a541"];
var markets = /* @__PURE__ */ new Map();
var series = /* @__PURE__ */ new Map();
var quote = null;
var $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
};
function cents(price) {
  return `${(price * 100).toFixed(1)}\xA2`;
}
async function fetchMarkets() {
  const res = await fetch("/demo/api/markets");
  if (!res.ok) throw new Error(`markets: HTTP ${res.status}`);
  const body = await res.json();
  return body.markets;
}
async function fetchMarket(id) {
  const res = await fetch(`/demo/api/markets/${encodeURIComponent(id)}`);
  if (!res.ok) throw new Error(`market ${id}: HTTP ${res.status}`);
  return await res.json();
}
function card(market) {
  let el = document.querySelector(`.market[data-id="${CSS.escape(market.id)}"]`);
  if (el) return el;
  el = document.createElement("article");
  el.className = "market";
  el.dataset.id = market.id;
  const title = document.createElement("h2");
  title.textContent = market.title;
  const meta = document.createElement("div");
  meta.className = "meta";
  const body = document.createElement("div");
  body.className = "body";
  const list = document.createElement("ul");
  list.className = "outcomes";
  market.outcomes.forEach((name, i) => {
    const li = document.createElement("li");
    li.className = "outcome";
    li.dataset.index = String(i);
    const label = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLORS[i % COLORS.length] ?? "#888";
    label.append(swatch, name);
    const price = document.createElement("span");
    price.className = "price";
    const buy = document.createElement("button");
    buy.type = "button";
    buy.className = "buy";
    buy.textContent = "Buy";
    buy.addEventListener("click", () => openTicket(market.id, i));
    li.append(label, price, buy);
    list.append(li);
  });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 240 70");
  svg.setAttribute("preserveAspectRatio", "none");
  body.append(list, svg);
  el.append(title, meta, body);
  $("markets").append(el);
  return el;
}
function render(market, previous) {
  const el = card(market);
  el.dataset.version = String(market.version);
  const meta = el.querySelector(".meta");
  if (meta) meta.textContent = `version ${market.version} \xB7 volume ${market.volume.toFixed(2)} \xB7 b = ${market.liquidity}`;
  el.querySelectorAll(".outcome").forEach((li) => {
    const i = Number(li.dataset.index);
    const price = market.prices[i] ?? 0;
    const cell = li.querySelector(".price");
    if (!cell) return;
    cell.textContent = cents(price);
    cell.dataset.price = String(price);
    const before = previous?.prices[i];
    cell.classList.toggle("up", before !== void 0 && price > before);
    cell.classList.toggle("down", before !== void 0 && price < before);
  });
  drawSparkline(market.id);
  if (quote?.market === market.id) renderLivePrice();
}
function drawSparkline(id) {
  const svg = document.querySelector(`.market[data-id="${CSS.escape(id)}"] svg.spark`);
  if (!svg) return;
  const points = series.get(id) ?? [];
  svg.replaceChildren();
  svg.dataset.points = String(points.length);
  if (points.length === 0) return;
  const drawn = points.length === 1 ? [points[0] ?? [], points[0] ?? []] : points;
  const all = drawn.flat();
  const mid = (Math.max(...all) + Math.min(...all)) / 2;
  const half = Math.max((Math.max(...all) - Math.min(...all)) / 2 + 0.02, 0.05);
  const y = (p) => (64 - (p - (mid - half)) / (2 * half) * 58).toFixed(1);
  const outcomes = drawn[0]?.length ?? 0;
  for (let o = 0; o < outcomes; o++) {
    const coords = drawn.map((p, i) => `${(i / (drawn.length - 1) * 240).toFixed(1)},${y(p[o] ?? 0)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLORS[o % COLORS.length] ?? "#888");
    line.setAttribute("stroke-width", "1.6");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
}
function pushPoint(id, prices) {
  const points = series.get(id) ?? [];
  points.push(prices);
  if (points.length > SPARK_POINTS) points.splice(0, points.length - SPARK_POINTS);
  series.set(id, points);
}
function adopt(market) {
  const shown = markets.get(market.id);
  if (shown && shown.version >= market.version) return;
  markets.set(market.id, market);
  render(market, shown);
}
function onEvent(id, event) {
  const data = event.data;
  if (data.type === "reset") {
    series.set(id, [data.market.prices]);
    markets.set(id, data.market);
    render(data.market);
    return;
  }
  if (data.type !== "trade") return;
  pushPoint(id, data.prices);
  const shown = markets.get(id);
  if (!shown || data.version <= shown.version) {
    if (shown) drawSparkline(id);
    return;
  }
  const next = { ...shown, version: data.version, prices: data.prices, shares: data.outstanding, volume: data.volume };
  markets.set(id, next);
  render(next, shown);
}
function openTicket(id, outcome) {
  const market = markets.get(id);
  if (!market) return;
  quote = { market: id, outcome, price: market.prices[outcome] ?? 0, version: market.version };
  const ticket = $("ticket");
  ticket.hidden = false;
  $("ticket-empty").hidden = true;
  ticket.dataset.market = id;
  ticket.dataset.outcome = String(outcome);
  $("ticket-outcome").textContent = market.outcomes[outcome] ?? "";
  $("ticket-title").textContent = market.title;
  renderQuote();
  setFeedback("", "");
}
function renderQuote() {
  const el = $("quote-price");
  el.textContent = quote ? `${cents(quote.price)} (v${quote.version})` : "\u2013";
  el.dataset.price = quote ? String(quote.price) : "";
  el.dataset.version = quote ? String(quote.version) : "";
  renderLivePrice();
}
function renderLivePrice() {
  const market = quote ? markets.get(quote.market) : void 0;
  const el = $("live-price");
  const price = quote && market ? market.prices[quote.outcome] : void 0;
  el.textContent = price === void 0 ? "\u2013" : cents(price);
  el.dataset.price = price === void 0 ? "" : String(price);
}
function setFeedback(kind, text) {
  const el = $("feedback");
  el.dataset.kind = kind;
  el.textContent = text;
}
async function confirm() {
  if (!quote) return;
  const shares = Number($("shares").value);
  const slippage = Number($("slippage").value) / 100;
  const sent = quote;
  const button = $("confirm");
  button.disabled = true;
  try {
    const res = await fetch(`/demo/api/markets/${encodeURIComponent(sent.market)}/buy`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ outcome: sent.outcome, shares, expected_price: sent.price, max_slippage: slippage })
    });
    const body = await res.json();
    if (res.ok) {
      adopt(body.market);
      const name = markets.get(sent.market)?.outcomes[sent.outcome] ?? "";
      setFeedback("ok", `Bought ${shares} ${name} for ${body.trade.cost.toFixed(2)} (version ${body.trade.version}).`);
      openQuoteAfterFill(sent);
    } else if (res.status === 409) {
      adopt(body.market);
      setFeedback(
        "rejected",
        `Rejected: stale quote. You were quoted ${cents(sent.price)}, the price was ${cents(body.current_price)} when your buy reached the market (tolerance ${(slippage * 100).toFixed(1)}\xA2). Refresh the quote to buy at the new price.`
      );
    } else {
      setFeedback("error", `The buy failed: ${body.message ?? res.status}`);
    }
  } catch (err) {
    setFeedback("error", `The buy failed: ${err.message}; nothing was bought unless the price shows it.`);
  } finally {
    button.disabled = false;
  }
}
function openQuoteAfterFill(sent) {
  const market = markets.get(sent.market);
  if (!market) return;
  quote = { ...sent, price: market.prices[sent.outcome] ?? 0, version: market.version };
  renderQuote();
}
function showState(state) {
  const el = $("status");
  const shown = state === "open" ? "live" : state === "closed" ? "offline" : state === "idle" ? "connecting" : state;
  el.dataset.state = shown;
  el.textContent = shown === "live" ? "live" : shown === "reconnecting" ? "reconnecting\u2026" : shown === "offline" ? "offline" : "connecting\u2026";
}
async function main() {
  $("ticket").addEventListener("submit", (e) => {
    e.preventDefault();
    void confirm();
  });
  $("requote").addEventListener("click", () => {
    if (quote) openTicket(quote.market, quote.outcome);
  });
  const client = new HubcastClient({ url: location.origin });
  client.on("state", (change) => showState(change.state));
  showState(client.state);
  let list = [];
  for (; ; ) {
    try {
      list = await fetchMarkets();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 1e3));
    }
  }
  for (const market of list) {
    adopt(market);
    const room = client.room(market.room, { rewind: SPARK_POINTS });
    room.on("event", (event) => onEvent(market.id, event));
    room.on("caught_up", () => {
      const shown = markets.get(market.id);
      if (shown && !series.get(market.id)?.length) {
        pushPoint(market.id, shown.prices);
        drawSparkline(market.id);
      }
    });
    room.on("subscribed", () => {
      fetchMarket(market.id).then(adopt, () => void 0);
    });
  }
  client.connect();
  window.hubcastMarket = { client, markets };
}
void main();
