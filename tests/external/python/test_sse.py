"""Server-Sent Events with Python `httpx` + `httpx-sse` against the real binary:
a two-room stream resumed with `Last-Event-ID`, refusals as JSON, and the
same stream through nginx (proxy_buffering off, proxy_read_timeout 60s; and a
second location whose 1 s read timeout only the heartbeat comments survive).

nginx is Debian's (`/usr/sbin/nginx`, installed by tests/external/run.sh when
missing); the nginx tests are skipped only when it cannot be found.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from test_protocol import Hubcast, hubcast  # noqa: F401  (hubcast is a fixture)

# A bound on every read: a hang fails the test.
READ_TIMEOUT = 15.0


def _client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(10.0, read=READ_TIMEOUT), trust_env=False)


def read_until(url: str, heads: dict[str, int], headers: dict | None = None, direct: bool = True):
    """Reads `message` events until each room in `heads` reached its seq.
    Returns (events as dicts, the last id, the names of all events seen)."""
    events, names, last_id = [], [], ""
    with _client() as client, connect_sse(client, "GET", url, headers=headers or {}) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"] == "text/event-stream"
        if direct:  # nginx acts on it and does not pass it on
            assert source.response.headers["x-accel-buffering"] == "no"
        for sse in source.iter_sse():
            names.append(sse.event)
            if sse.event != "message":
                continue
            events.append(sse.json())
            last_id = sse.id or last_id
            if all(any(e["room"] == r and e["seq"] >= s for e in events) for r, s in heads.items()):
                return events, last_id, names
    raise AssertionError(f"stream ended early: {events}")


def seqs(events, room):
    return [e["seq"] for e in events if e["room"] == room]


def test_two_rooms_resume_exactly_from_last_event_id(hubcast):
    server = hubcast()
    for i in range(6):
        server.publish_ok("py-a", {"i": i})
    for i in range(4):
        server.publish_ok("py-b", {"i": i})
    url = f"{server.http}/v1/sse?room=py-a&room=py-b&cursor=0"
    events, last_id, names = read_until(url, {"py-a": 6, "py-b": 4})
    assert seqs(events, "py-a") == list(range(1, 7))
    assert seqs(events, "py-b") == list(range(1, 5))
    # Each room's subscription runs on its own: their frames interleave.
    assert names[0] == "welcome" and names.count("subscribed") == 2
    assert "caught_up" in names
    history = server.get("/v1/rooms/py-a/events?after=0")[1]["events"]
    first = next(e for e in events if e["room"] == "py-a")
    assert (first["type"], first["data"], first["ts"]) == ("event", history[0]["data"], history[0]["ts"])

    for i in range(3):
        server.publish_ok("py-a", {"i": 6 + i})
        server.publish_ok("py-b", {"i": 4 + i})
    events, _, _ = read_until(url, {"py-a": 9, "py-b": 7}, headers={"Last-Event-ID": last_id})
    assert seqs(events, "py-a") == [7, 8, 9]
    assert seqs(events, "py-b") == [5, 6, 7]


def test_refusals_are_json(hubcast):
    server = hubcast({"auth": {"allowed_origins": ["https://app.example"]}})
    with _client() as client:
        cases = [
            ("/v1/rooms/py-x/sse", {"Origin": "https://evil.example"}, 403, "forbidden"),
            ("/v1/sse", {}, 400, "invalid_parameter"),
            ("/v1/rooms/py-x/sse", {"Last-Event-ID": "not-an-id"}, 400, "invalid_parameter"),
        ]
        for path, headers, status, code in cases:
            response = client.get(server.http + path, headers=headers)
            assert (response.status_code, response.json()["error"]) == (status, code), (path, response.text)


# --------------------------------------------------------------------------
# nginx in front


def _nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ["/usr/sbin/nginx"] if Path(p).exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nginx(tmp_path):
    """Factory: `nginx(upstream_port)` starts nginx on a free loopback port
    with two locations: `/` (60 s read timeout) and `/short/` (1 s)."""
    binary = _nginx()
    if binary is None:
        pytest.skip("nginx is not installed (tests/external/run.sh installs it)")
    procs: list[subprocess.Popen] = []

    def start(upstream: int) -> str:
        port = _free_port()
        root = tmp_path / "nginx"
        (root / "logs").mkdir(parents=True, exist_ok=True)
        proxy = f"""
            proxy_pass http://127.0.0.1:{upstream}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;"""
        conf = root / "nginx.conf"
        conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream hubcast {{ server 127.0.0.1:{upstream}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location /short/ {{ {proxy} proxy_read_timeout 1s; }}
        location / {{ {proxy} proxy_read_timeout 60s; }}
    }}
}}
""")
        proc = subprocess.Popen([binary, "-p", str(root), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"nginx exited: {proc.stderr.read().decode()}")
                time.sleep(0.02)
        pytest.fail("nginx did not listen within 10 s")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def test_through_nginx_live_events_arrive_unbuffered_and_resume(hubcast, nginx):
    server = hubcast({"sse": {"heartbeat_ms": 300}})
    proxy = nginx(server.port)
    for i in range(3):
        server.publish_ok("py-nginx", {"i": i})
    url = f"{proxy}/v1/rooms/py-nginx/sse?cursor=0"
    got = []
    with _client() as client, connect_sse(client, "GET", url) as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            if sse.event == "caught_up":
                # Published only now: a buffering proxy would hold these back
                # (a few hundred bytes never fill its buffer) and the read
                # timeout would fail the test.
                for i in range(3, 6):
                    server.publish_ok("py-nginx", {"i": i})
            if sse.event == "message":
                got.append(sse.json()["seq"])
                last_id = sse.id
                if got[-1] == 6:
                    break
    assert got == [1, 2, 3, 4, 5, 6]
    server.publish_ok("py-nginx", {"i": 6})
    events, _, _ = read_until(url, {"py-nginx": 7}, headers={"Last-Event-ID": last_id}, direct=False)
    assert seqs(events, "py-nginx") == [7]


def test_heartbeats_keep_an_idle_stream_open_past_the_proxy_read_timeout(hubcast, nginx):
    server = hubcast({"sse": {"heartbeat_ms": 300}})
    proxy = nginx(server.port)
    url = f"{proxy}/short/v1/rooms/py-idle/sse"
    with _client() as client, connect_sse(client, "GET", url) as source:
        assert source.response.status_code == 200
        started = None
        for sse in source.iter_sse():
            if sse.event == "caught_up":
                # Idle for three of nginx's 1 s read timeouts: only the
                # heartbeat comments keep the upstream read alive.
                time.sleep(3.0)
                started = server.publish_ok("py-idle", {"after": "idle"})
            if sse.event == "message":
                assert sse.json()["seq"] == started["seq"] == 1
                break
