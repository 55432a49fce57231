// socket.io 4 broadcast server for bench/compare.sh: a client emits
// `join` with a room name and is answered `joined`; POST /publish/ROOM with a
// JSON body emits it to the room as `event`. NODE_PATH points at the cache
// where compare.sh installed socket.io.
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 3001);
const server = http.createServer((req, res) => {
  const match = req.method === "POST" && req.url.match(/^\/publish\/([^/?]+)$/);
  if (!match) return res.writeHead(404).end();
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    let data;
    try { data = JSON.parse(body); } catch { return res.writeHead(400).end(); }
    io.to(decodeURIComponent(match[1])).emit("event", data);
    res.writeHead(204).end();
  });
});
const io = new Server(server, { transports: ["websocket"], serveClient: false });
io.on("connection", (socket) => {
  socket.on("join", (room) => { socket.join(room); socket.emit("joined", room); });
});
server.listen(port, "127.0.0.1");
