// Laravel Echo over pusher-js against hubcast: the calls a Laravel app's
// front end makes (Echo.channel().listen(), Echo.private(), Echo.join()
// .here/joining/leaving), with events triggered by the official `pusher`
// server library as Laravel's Pusher broadcaster does.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import Echo from "laravel-echo";
import { client, server, connected, within, eventually } from "./lib.mjs";

const echoes = [];
after(() => echoes.forEach((e) => e.disconnect()));
const unique = (name) => `${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

/// An Echo on node `i` whose pusher-js client is authorized by the server library.
async function echo(i, user) {
  const pusher = client({ i, user });
  const e = new Echo({ broadcaster: "pusher", key: "key1", client: pusher });
  echoes.push(e);
  await connected(pusher);
  return e;
}

test("Echo.channel().listen() gets Laravel's namespaced and dotted events", async () => {
  const name = unique("orders");
  const e = await echo(0);
  const got = [];
  const waiters = [];
  const push = (what) => (data) => {
    got.push([what, data]);
    waiters.splice(0).forEach((w) => w());
  };
  const channel = e.channel(name).listen("OrderShipped", push("class")).listen(".order.paid", push("dotted"));
  await within("subscription", (done) => channel.subscribed(done));
  await server(1).trigger(name, "App\\Events\\OrderShipped", { order: 1 });
  await server(1).trigger(name, "order.paid", { order: 2 });
  await eventually("both events", () => got.length === 2);
  assert.deepEqual(got, [["class", { order: 1 }], ["dotted", { order: 2 }]]);
});

test("Echo.private() authorizes through the app and listens", async () => {
  const name = unique("user");
  const e = await echo(1);
  const channel = e.private(name);
  await within("private subscription", (done) => channel.subscribed(done));
  const message = within("the private event", (done) => channel.listen(".notified", done));
  await server().trigger(`private-${name}`, "notified", { n: 1 });
  assert.deepEqual(await message, { n: 1 });
});

test("Echo.join(): here, joining, leaving", async () => {
  const name = unique("room");
  const alice = await echo(0, { id: "alice", info: { name: "Alice" } });
  const here = [];
  const joining = [];
  const leaving = [];
  alice
    .join(name)
    .here((users) => here.push(users))
    .joining((user) => joining.push(user))
    .leaving((user) => leaving.push(user));
  await eventually("here()", () => here.length === 1);
  assert.deepEqual(here[0], [{ name: "Alice" }]);
  const bob = await echo(1, { id: "bob", info: { name: "Bob" } });
  const bobHere = [];
  bob.join(name).here((users) => bobHere.push(users));
  await eventually("joining()", () => joining.length === 1);
  assert.deepEqual(joining[0], { name: "Bob" });
  await eventually("bob's here()", () => bobHere.length === 1);
  assert.deepEqual(bobHere[0].map((u) => u.name).sort(), ["Alice", "Bob"]);
  bob.leave(name);
  await eventually("leaving()", () => leaving.length === 1);
  assert.deepEqual(leaving[0], { name: "Bob" });
});
