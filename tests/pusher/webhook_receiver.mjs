// A Pusher webhook receiver that verifies every delivery with the official
// `pusher` library's own `webhook()` helper (hubcast's signing code is not
// what checks hubcast's signatures). Prints `http://127.0.0.1:PORT` once it
// listens; `GET /received` lists the verified events in arrival order, and
// how many deliveries failed verification.
import http from "node:http";
import PusherServer from "pusher";

const [appId, key, secret] = process.argv.slice(2);
const pusher = new PusherServer({ appId, key, secret });
const events = [];
const raw = [];
let invalid = 0;

const server = http.createServer((req, res) => {
  let rawBody = "";
  req.on("data", (chunk) => (rawBody += chunk));
  req.on("end", () => {
    if (req.method === "GET" && req.url === "/received") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ events, invalid }));
      return;
    }
    if (req.method === "GET" && req.url === "/raw") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(raw));
      return;
    }
    const webhook = pusher.webhook({ headers: req.headers, rawBody });
    if (!webhook.isValid()) {
      invalid += 1;
      res.writeHead(401);
      res.end();
      return;
    }
    for (const event of webhook.getEvents()) events.push(event);
    raw.push({ body: rawBody, signature: req.headers["x-pusher-signature"] });
    res.writeHead(200);
    res.end("{}");
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`http://127.0.0.1:${server.address().port}`);
});
