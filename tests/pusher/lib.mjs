// Shared helpers of the Pusher suites: the real pusher-js client and the
// official `pusher` server library pointed at hubcast. tests/pusher.rs
// starts the servers and passes them in the environment:
//   HUBCAST_URLS      comma-separated http://127.0.0.1:PORT, one per node
//   PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET
//   WEBHOOK_RECEIVER  the receiver's http://127.0.0.1:PORT (when webhooks are on)
// Every wait has a limit: a hang fails with a message, never hangs.
import Pusher from "pusher-js";
import PusherServer from "pusher";

export const urls = (process.env.HUBCAST_URLS ?? "").split(",").filter(Boolean);
if (urls.length === 0) throw new Error("HUBCAST_URLS is not set (tests/pusher.rs sets it)");
export const app = {
  id: process.env.PUSHER_APP_ID ?? "123",
  key: process.env.PUSHER_KEY ?? "key1",
  secret: process.env.PUSHER_SECRET ?? "secret1",
};
export const STEP = 10_000;

/// The node `i` (wrapping): two-node suites put clients on different nodes.
export function node(i = 0) {
  const url = new URL(urls[i % urls.length]);
  return { host: url.hostname, port: Number(url.port), base: url.origin };
}

/// The official server library, for the app, on node `i`.
export function server(i = 0) {
  const { host, port } = node(i);
  return new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host, port: String(port), useTLS: false });
}

/// A pusher-js client on node `i`, its private/presence channels authorized
/// and its sign-in authenticated by the server library (as an app's auth
/// endpoint would), as `user` ({id, info}) when given.
export function client({ i = 0, user, key = app.key, badAuth = false, ...options } = {}) {
  const { host, port } = node(i);
  const signer = server(i);
  return new Pusher(key, {
    cluster: "mt1",
    wsHost: host,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith("presence-") ? { user_id: user?.id, user_info: user?.info } : undefined;
        const auth = signer.authorizeChannel(badAuth ? "1.1" : socketId, channelName, presence);
        callback(null, auth);
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        callback(null, signer.authenticateUser(socketId, { id: user?.id, ...(user?.info ?? {}) }));
      },
    },
    ...options,
  });
}

/// Resolves when `fn(resolve)` calls back, or fails after `ms` saying `what`.
export function within(what, fn, ms = STEP) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    fn((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

export function connected(pusher) {
  return within("pusher:connection_established", (done) => {
    if (pusher.connection.state === "connected") return done(pusher.connection.socket_id);
    pusher.connection.bind("connected", () => done(pusher.connection.socket_id));
  });
}

export function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  return within(`subscription_succeeded on ${name}`, (done) => {
    channel.bind("pusher:subscription_succeeded", (data) => done({ channel, data }));
  });
}

/// Collects `event` on `channel`; `next()` resolves with the next one.
export function collect(channel, event) {
  const seen = [];
  const waiters = [];
  channel.bind(event, (data, metadata) => {
    const item = { data, metadata };
    const waiter = waiters.shift();
    if (waiter) waiter(item);
    else seen.push(item);
  });
  return {
    seen,
    next: (what = event) => within(`${what} on ${channel.name}`, (done) => {
      if (seen.length) done(seen.shift());
      else waiters.push(done);
    }),
  };
}

/// A JSON request to hubcast's own API on node `i`.
export async function hubcast(path, { i = 0, method = "GET", body } = {}) {
  const response = await fetch(`${node(i).base}${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: response.status, body: await response.json() };
}

/// Polls `check` until it returns a truthy value (or fails after `ms`).
export async function eventually(what, check, ms = STEP) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
}

/// The room a channel of the app is stored as (docs/pusher.md).
export const room = (channel) =>
  `pusher:${app.id}:${channel.replaceAll(",", ":2C").replaceAll(";", ":3B").replaceAll("#", ":23")}`;
