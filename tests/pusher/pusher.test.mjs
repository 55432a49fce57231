// pusher-js and the official `pusher` server library against hubcast: the
// calls a Pusher app makes, with every answer checked. Run by tests/pusher.rs
// (`node --test`), on one node or two (HUBCAST_URLS): with two, the clients
// of a scenario sit on different nodes.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  app, client, server, connected, subscribed, collect, within, hubcast, eventually, room, urls, node,
} from "./lib.mjs";

const open = [];
function track(pusher) {
  open.push(pusher);
  return pusher;
}
after(() => open.forEach((p) => p.disconnect()));
const unique = (name) => `${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

test("public channel: triggers to several channels arrive; they are durable rooms", async () => {
  const [a, b] = [unique("news"), unique("sport")];
  const pusher = track(client());
  await connected(pusher);
  const { channel: first } = await subscribed(pusher, a);
  const { channel: second } = await subscribed(pusher, b);
  const got = [collect(first, "headline"), collect(second, "headline")];
  await server(1).trigger([a, b], "headline", { text: "hello" });
  for (const events of got) assert.deepEqual((await events.next()).data, { text: "hello" });
  // The same event, durable, with a seq, through hubcast's history.
  const history = await hubcast(`/v1/rooms/${room(a)}/events?after=0`);
  assert.equal(history.status, 200);
  assert.equal(history.body.head, 1);
  assert.equal(history.body.events[0].data.event, "headline");
  assert.deepEqual(JSON.parse(history.body.events[0].data.data), { text: "hello" });
  // A hubcast publish to the room reaches pusher-js.
  const published = await hubcast(`/v1/rooms/${room(a)}/events`, {
    i: 1,
    method: "POST",
    body: { data: { event: "headline", data: { text: "from hubcast" } } },
  });
  assert.equal(published.status, 201);
  assert.equal(published.body.seq, 2);
  assert.deepEqual((await got[0].next()).data, { text: "from hubcast" });
  const foreign = collect(first, "hubcast:event");
  await hubcast(`/v1/rooms/${room(a)}/events`, { method: "POST", body: { data: { price: 3 } } });
  assert.deepEqual((await foreign.next()).data, { price: 3 });
});

test("triggerBatch appends every event; socket_id excludes that connection", async () => {
  const name = unique("batch");
  const [one, two] = [track(client()), track(client({ i: 1 }))];
  const socketOne = await connected(one);
  await connected(two);
  const got = [collect((await subscribed(one, name)).channel, "tick"), collect((await subscribed(two, name)).channel, "tick")];
  await server().trigger(name, "tick", { n: 1 }, { socket_id: socketOne });
  await server().triggerBatch([
    { channel: name, name: "tick", data: JSON.stringify({ n: 2 }) },
    { channel: name, name: "tick", data: JSON.stringify({ n: 3 }) },
  ]);
  assert.deepEqual((await got[1].next()).data, { n: 1 });
  assert.deepEqual((await got[1].next()).data, { n: 2 });
  assert.deepEqual((await got[1].next()).data, { n: 3 });
  // In order: the excluded connection's first event is n = 2.
  assert.deepEqual((await got[0].next()).data, { n: 2 });
  assert.deepEqual((await got[0].next()).data, { n: 3 });
  const history = await hubcast(`/v1/rooms/${room(name)}/events?after=0`);
  assert.deepEqual(history.body.events.map((e) => e.seq), [1, 2, 3]);
});

test("private channel: authorized by the server library; a bad signature is refused", async () => {
  const name = unique("private-orders");
  const pusher = track(client());
  await connected(pusher);
  const orders = collect((await subscribed(pusher, name)).channel, "shipped");
  await server().trigger(name, "shipped", { id: 7 });
  assert.deepEqual((await orders.next()).data, { id: 7 });

  const forger = track(client({ badAuth: true }));
  await connected(forger);
  const errors = [];
  forger.connection.bind("error", (err) => errors.push(err));
  const channel = forger.subscribe(unique("private-secret"));
  const refusal = await within("pusher:subscription_error", (done) => channel.bind("pusher:subscription_error", done));
  assert.equal(refusal.status, 401);
  assert.equal(refusal.type, "AuthError");
  await eventually("pusher:error 4009", () => errors.find((e) => e?.data?.code === 4009));
  assert.equal(forger.connection.state, "connected");
});

test("presence channel: members, member_added and member_removed, users and channels", async () => {
  const name = unique("presence-room");
  const alice = track(client({ user: { id: "alice", info: { name: "Alice" } } }));
  await connected(alice);
  const { channel: aliceChannel, data: first } = await subscribed(alice, name);
  assert.equal(first.count, 1);
  assert.equal(first.me.id, "alice");
  assert.deepEqual(first.me.info, { name: "Alice" });
  const added = collect(aliceChannel, "pusher:member_added");
  const removed = collect(aliceChannel, "pusher:member_removed");

  const bob = track(client({ i: 1, user: { id: "bob", info: { name: "Bob" } } }));
  await connected(bob);
  const { data: members } = await subscribed(bob, name);
  const joined = await added.next();
  assert.equal(joined.data.id, "bob");
  assert.deepEqual(joined.data.info, { name: "Bob" });
  // Bob's list has both (Alice may be on the other node: presence is cluster-wide).
  assert.equal(members.count, 2);
  assert.deepEqual(Object.keys(members.members).sort(), ["alice", "bob"]);

  const users = await server().get({ path: `/channels/${name}/users` });
  assert.deepEqual((await users.json()).users.map((u) => u.id).sort(), ["alice", "bob"]);
  const info = await server(1).get({ path: `/channels/${name}`, params: { info: "user_count" } });
  assert.deepEqual(await info.json(), { occupied: true, user_count: 2 });
  const list = await server().get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } });
  assert.deepEqual((await list.json()).channels[name], { user_count: 2 });

  bob.disconnect();
  const left = await removed.next();
  assert.equal(left.data.id, "bob");
});

test("client events reach the others on the channel, never the sender", async () => {
  const name = unique("presence-chat");
  const alice = track(client({ user: { id: "alice" } }));
  const bob = track(client({ i: 1, user: { id: "bob" } }));
  await Promise.all([connected(alice), connected(bob)]);
  const aliceChannel = (await subscribed(alice, name)).channel;
  const bobChannel = (await subscribed(bob, name)).channel;
  const atAlice = collect(aliceChannel, "client-typing");
  const atBob = collect(bobChannel, "client-typing");
  // Bob heard subscription_succeeded: a client event sent now reaches him.
  assert.ok(aliceChannel.trigger("client-typing", { typing: true }));
  const typing = await atBob.next();
  assert.deepEqual(typing.data, { typing: true });
  assert.equal(typing.metadata.user_id, "alice");
  bobChannel.trigger("client-typing", { typing: false });
  assert.deepEqual((await atAlice.next()).data, { typing: false });
  assert.equal(atAlice.seen.length, 0, "alice never got her own client event");
  // Client events are live only: the room's log has none of them.
  const history = await hubcast(`/v1/rooms/${room(name)}/events?after=0`);
  assert.equal(history.body.head, 0);
});

test("trigger with info answers the channels' attributes, as Pusher does", async () => {
  const [members, plain] = [unique("presence-info"), unique("info")];
  const pusher = track(client({ user: { id: "alice" } }));
  await connected(pusher);
  await subscribed(pusher, members);
  await subscribed(pusher, plain);
  const answer = await server().trigger([members, plain], "x", {}, { info: "subscription_count,user_count" });
  assert.deepEqual(await answer.json(), {
    channels: {
      [members]: { user_count: 1, subscription_count: 1 },
      [plain]: { subscription_count: 1 },
    },
  });
  const batch = await server().triggerBatch([
    { channel: members, name: "x", data: "{}", info: "user_count" },
    { channel: plain, name: "x", data: "{}" },
  ]);
  assert.deepEqual(await batch.json(), { batch: [{ user_count: 1 }, {}] });
  const without = await server().trigger(plain, "x", {});
  assert.deepEqual(await without.json(), {});
  // A refused info publishes nothing.
  await assert.rejects(server().trigger(plain, "x", {}, { info: "colour" }), (err) => err.status === 400);
  const history = await hubcast(`/v1/rooms/${room(plain)}/events?after=0`);
  assert.equal(history.body.head, 3);
});

test("subscription_count, occupancy and the channel list are the cluster's", async () => {
  // The subscribers sit on the last node; the questions go to the first.
  const name = unique("counted");
  const last = urls.length - 1;
  const [one, two] = [track(client({ i: last })), track(client({ i: last }))];
  await Promise.all([connected(one), connected(two)]);
  await subscribed(one, name);
  const info = await server(0).get({ path: `/channels/${name}`, params: { info: "subscription_count" } });
  assert.deepEqual(await info.json(), { occupied: true, subscription_count: 1 });
  const list = await server(0).get({ path: "/channels", params: { filter_by_prefix: name } });
  assert.deepEqual(await list.json(), { channels: { [name]: {} } });
  await subscribed(two, name);
  const answer = await server(0).trigger(name, "x", {}, { info: "subscription_count" });
  assert.deepEqual(await answer.json(), { channels: { [name]: { subscription_count: 2 } } });
  const batch = await server(0).triggerBatch([{ channel: name, name: "x", data: "{}", info: "subscription_count" }]);
  assert.deepEqual(await batch.json(), { batch: [{ subscription_count: 2 }] });
  one.disconnect();
  two.disconnect();
  await eventually("the channel to be vacated everywhere", async () => {
    const info = await (await server(0).get({ path: `/channels/${name}`, params: { info: "subscription_count" } })).json();
    return info.occupied === false && info.subscription_count === 0;
  });
  const empty = await server(0).get({ path: "/channels", params: { filter_by_prefix: name } });
  assert.deepEqual(await empty.json(), { channels: {} });
});

test("server-to-user: sendToUser reaches the signed-in user's pusher.user, as a durable room", async () => {
  const user = unique("user");
  const pusher = track(client({ i: 1, user: { id: user, info: { name: "U" } } }));
  await connected(pusher);
  const notices = [];
  pusher.user.bind("notice", (data) => notices.push(data));
  pusher.signin();
  await within("pusher:signin_success", (done) => pusher.user.signinDonePromise.then(done));
  // pusher-js subscribes to #server-to-user-{id} once signed in.
  await eventually("the user's channel to be subscribed", () => pusher.user.serverToUserChannel?.subscribed);
  await server(0).sendToUser(user, "notice", { n: 1 });
  await eventually("the notice", () => notices.length === 1);
  assert.deepEqual(notices[0], { n: 1 });
  const history = await hubcast(`/v1/rooms/${room(`#server-to-user-${user}`)}/events?after=0`);
  assert.equal(history.status, 200);
  assert.equal(history.body.events[0].data.event, "notice");
});

test("cache channel: the last event first, pusher:cache_miss when there is none", async () => {
  const name = unique("cache-price");
  const pusher = track(client());
  await connected(pusher);
  const empty = pusher.subscribe(unique("cache-empty"));
  await within("pusher:cache_miss", (done) => empty.bind("pusher:cache_miss", done));
  await server().trigger(name, "price", { p: 1 });
  await server().trigger(name, "price", { p: 2 });
  const late = track(client({ i: 1 }));
  await connected(late);
  const channel = late.subscribe(name);
  const prices = collect(channel, "price");
  assert.deepEqual((await prices.next()).data, { p: 2 });
  await server().trigger(name, "price", { p: 3 });
  assert.deepEqual((await prices.next()).data, { p: 3 });
});

test("what is triggered after subscription_succeeded arrives (after a cache channel's last event)", async () => {
  // Pusher's guarantee: once a client hears subscription_succeeded, every
  // event and client event triggered after reaches it. Many channels at
  // once, the subscriber on the other node when there are two: the trigger
  // and the client event go out the moment pusher-js reports the subscription.
  const rounds = 30;
  const [sender, subscriber] = [track(client()), track(client({ i: 1 }))];
  await Promise.all([connected(sender), connected(subscriber)]);
  await Promise.all(Array.from({ length: rounds }, async (_, n) => {
    const name = unique(`private-cache-race${n}`);
    const { channel: atSender } = await subscribed(sender, name);
    await server().trigger(name, "price", { n: "cached" });
    const channel = subscriber.subscribe(name);
    const frames = [];
    const triggered = [];
    await within(`the cached event, a trigger and a client event on ${name}`, (done) => {
      const note = (item) => {
        frames.push(item);
        if (frames.length === 3) done();
      };
      channel.bind("price", (data) => note(`price ${data.n}`));
      channel.bind("client-ping", (data) => note(`client-ping ${data.n}`));
      channel.bind("pusher:subscription_succeeded", () => {
        assert.ok(atSender.trigger("client-ping", { n: "after" }));
        triggered.push(server(n).trigger(name, "price", { n: "after" }));
      });
    }).catch((err) => {
      throw new Error(`${err.message}; got: ${frames.join(", ") || "nothing"}`);
    });
    await Promise.all(triggered);
    assert.equal(frames[0], "price cached", frames.join());
    assert.deepEqual(frames.slice(1).sort(), ["client-ping after", "price after"]);
  }));
});

test("signin and terminate_connections: the user's connections close and stay closed", async () => {
  const user = unique("user");
  const pusher = track(client({ user: { id: user, info: { name: "U" } } }));
  await connected(pusher);
  pusher.signin();
  await within("pusher:signin_success", (done) => pusher.user.signinDonePromise.then(done));
  assert.equal(pusher.user.user_data.id, user);
  const states = [];
  pusher.connection.bind("state_change", ({ current }) => states.push(current));
  await eventually("terminate_connections to be answered", async () => {
    const response = await server(1).terminateUserConnections(user);
    return response.status === 200;
  });
  await eventually("the connection to be closed", () => ["disconnected", "unavailable", "failed"].includes(pusher.connection.state));
  assert.ok(!states.includes("connected"), `no reconnect after terminate: ${states}`);
});

test("an unknown app key is refused with 4001", async () => {
  const pusher = track(client({ key: "no-such-key" }));
  const error = await within("the 4001 error", (done) =>
    pusher.connection.bind("error", (err) => {
      const code = err?.data?.code ?? err?.error?.data?.code;
      if (code === 4001) done(err);
    }),
  );
  assert.ok(error);
  await eventually("pusher-js to give up", () => ["failed", "disconnected", "unavailable"].includes(pusher.connection.state));
});

test("the HTTP API refuses bad signatures and stale timestamps", async () => {
  const base = node().base;
  const body = JSON.stringify({ name: "x", channels: ["c"], data: "{}" });
  const bad = await fetch(`${base}/apps/${app.id}/events?auth_key=${app.key}&auth_timestamp=${Math.floor(Date.now() / 1000)}&auth_version=1.0&body_md5=00&auth_signature=00`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  assert.equal(bad.status, 401);
  const wrongSecret = new (await import("pusher")).default({
    appId: app.id, key: app.key, secret: "not-the-secret", host: node().host, port: String(node().port), useTLS: false,
  });
  await assert.rejects(wrongSecret.trigger("c", "x", {}), (err) => err.status === 401);
  const unknownApp = new (await import("pusher")).default({
    appId: "999", key: app.key, secret: app.secret, host: node().host, port: String(node().port), useTLS: false,
  });
  await assert.rejects(unknownApp.trigger("c", "x", {}), (err) => err.status === 404);
});

test("webhooks: occupancy, presence and client events, verified by the library's webhook()", { skip: !process.env.WEBHOOK_RECEIVER }, async () => {
  const name = unique("presence-hooked");
  const alice = track(client({ user: { id: "alice" } }));
  const bob = track(client({ i: 1, user: { id: "bob" } }));
  await Promise.all([connected(alice), connected(bob)]);
  const aliceChannel = (await subscribed(alice, name)).channel;
  const waves = collect((await subscribed(bob, name)).channel, "client-wave");
  assert.ok(aliceChannel.trigger("client-wave", { hi: 1 }));
  await waves.next();
  alice.disconnect();
  bob.disconnect();
  const received = async () => (await (await fetch(`${process.env.WEBHOOK_RECEIVER}/received`)).json());
  const events = await eventually("channel_vacated", async () => {
    const { events } = await received();
    const mine = events.filter((e) => e.channel === name);
    return mine.some((e) => e.name === "channel_vacated") && mine;
  }, 30_000);
  const names = events.map((e) => e.name);
  assert.equal(names.filter((n) => n === "channel_occupied").length, 1, names.join());
  assert.equal(names.filter((n) => n === "channel_vacated").length, 1, names.join());
  assert.deepEqual(events.filter((e) => e.name === "member_added").map((e) => e.user_id).sort(), ["alice", "bob"]);
  assert.deepEqual(events.filter((e) => e.name === "member_removed").map((e) => e.user_id).sort(), ["alice", "bob"]);
  const wave = events.find((e) => e.name === "client_event");
  assert.equal(wave.event, "client-wave");
  assert.deepEqual(JSON.parse(wave.data), { hi: 1 });
  assert.equal(wave.user_id, "alice");
  assert.equal((await received()).invalid, 0);
});

test("webhooks: cache_miss and subscription_count (the cluster's), verified by the library's webhook()", { skip: !process.env.WEBHOOK_RECEIVER }, async () => {
  const name = unique("cache-hooked");
  const [one, two] = [track(client()), track(client({ i: 1 }))];
  await Promise.all([connected(one), connected(two)]);
  for (const pusher of [one, two]) {
    const channel = pusher.subscribe(name);
    await within("pusher:cache_miss", (done) => channel.bind("pusher:cache_miss", done));
  }
  const received = async () => (await (await fetch(`${process.env.WEBHOOK_RECEIVER}/received`)).json());
  const mine = async () => (await received()).events.filter((e) => e.channel === name);
  const counted = (n) => async () => {
    const events = await mine();
    return events.some((e) => e.name === "subscription_count" && e.subscription_count === n) && events;
  };
  await eventually("subscription_count 2", counted(2), 30_000);
  one.disconnect();
  await eventually("subscription_count 1", counted(1), 30_000);
  two.disconnect();
  const events = await eventually("subscription_count 0", counted(0), 30_000);
  assert.equal(events.filter((e) => e.name === "cache_miss").length, 2, JSON.stringify(events));
  const counts = events.filter((e) => e.name === "subscription_count").map((e) => e.subscription_count);
  assert.ok(counts.every((n) => n >= 0 && n <= 2), counts.join());
  assert.equal(counts.at(-1), 0, counts.join());
  assert.equal((await received()).invalid, 0);
});
