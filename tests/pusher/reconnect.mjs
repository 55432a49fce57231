// pusher-js across a server restart: subscribe, say `subscribed`, wait for
// `restarted` on stdin (tests/pusher.rs restarts the node on the same port),
// then expect pusher-js to have reconnected and subscribed again by itself,
// and to get an event triggered after the restart. Says `ok` and exits 0.
import readline from "node:readline";
import { client, server, connected, within, eventually } from "./lib.mjs";

const pusher = client({ activityTimeout: 2000, pongTimeout: 2000 });
await connected(pusher);
const channel = pusher.subscribe("restarts");
let subscriptions = 0;
channel.bind("pusher:subscription_succeeded", () => (subscriptions += 1));
const events = [];
channel.bind("after-restart", (data) => events.push(data));
await eventually("the first subscription", () => subscriptions === 1);
console.log("subscribed");

const input = readline.createInterface({ input: process.stdin });
await within("`restarted` on stdin", (done) => input.on("line", (line) => line === "restarted" && done()), 60_000);
await eventually("pusher-js to reconnect and subscribe again", () => subscriptions >= 2 && pusher.connection.state === "connected", 30_000);
await server().trigger("restarts", "after-restart", { n: 1 });
await eventually("the event after the restart", () => events.length === 1);
console.log("ok");
pusher.disconnect();
input.close();
process.exit(0);
