"""A webhook receiver for tests/webhooks.rs: verifies every delivery with the
`standardwebhooks` package (the Standard Webhooks reference library), records
it, and answers as told.

    python receiver.py SECRET
prints `listening on http://127.0.0.1:PORT` once it listens.

    POST /control {"mode": "ok" | "fail" | "hang"}   how to answer from now on
    GET  /received   every verified delivery in arrival order:
                     {"id", "type", "data", "timestamp", "answered": status}
    GET  /rejected   how many requests failed verification
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = sys.argv[1]
WEBHOOK = Webhook(SECRET)
LOCK = threading.Lock()
STATE = {"mode": "ok", "received": [], "rejected": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            if self.path == "/received":
                body = json.dumps(STATE["received"]).encode()
            elif self.path == "/rejected":
                body = json.dumps(STATE["rejected"]).encode()
            else:
                return self.reply(404)
        self.reply(200, body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/control":
            with LOCK:
                STATE["mode"] = json.loads(body)["mode"]
            return self.reply(200, b"{}")
        try:
            message = WEBHOOK.verify(body, dict(self.headers.items()))
        except WebhookVerificationError:
            with LOCK:
                STATE["rejected"] += 1
            return self.reply(400)
        with LOCK:
            mode = STATE["mode"]
            status = {"ok": 204, "fail": 500}.get(mode, 0)
            STATE["received"].append(
                {
                    "id": self.headers["webhook-id"],
                    "type": message["type"],
                    "timestamp": message["timestamp"],
                    "data": message["data"],
                    "answered": status,
                }
            )
        if mode == "hang":
            # Never answer: hold the connection until hubcast gives up.
            time.sleep(3600)
            return
        self.reply(status)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
