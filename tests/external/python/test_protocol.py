"""Integration tests that drive the real `hubcast serve` binary with the Python
`websockets` client and plain stdlib HTTP.

Every test starts its own server (own port, own temp dir, own hubcast.toml and
SQLite file) through the `hubcast` fixture, and every wait is bounded by a
timeout so a hang becomes a failure instead of a stuck run.

The binary is taken from $HUBCAST_BIN, else <repo>/target/debug/hubcast.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

REPO_ROOT = Path(__file__).resolve().parents[3]
HUBCAST_BIN = Path(os.environ.get("HUBCAST_BIN") or REPO_ROOT / "target" / "debug" / "hubcast")

# Upper bound for one whole test (asyncio part); a hang fails the test.
TEST_TIMEOUT = 60.0
# Upper bound for one expected frame.
FRAME_TIMEOUT = 10.0
# How long "nothing more arrives" is checked for (a check for duplicates, not a
# latency assertion).
QUIET = 0.3

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------
# server fixture


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(config: dict) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


BASE_CONFIG = {
    "heartbeat": {"interval_ms": 1000, "stale_ms": 10000},
    "sqlite": {"synchronous": "normal"},
}


def _merge(base: dict, extra: dict) -> dict:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    return merged


class Hubcast:
    """One `hubcast serve` process with its own directory and config."""

    def __init__(self, root: Path, config: dict):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "db").mkdir(exist_ok=True)
        self.config_path = self.root / "hubcast.toml"
        self.config_path.write_text(_toml(_merge(BASE_CONFIG, config)))
        self.store = f"sqlite://{self.root / 'db' / 'hubcast.db'}"
        self.log_path = self.root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    # -- lifecycle

    def start(self) -> "Hubcast":
        if not HUBCAST_BIN.exists():
            pytest.fail(f"hubcast binary not found at {HUBCAST_BIN} (build it with `cargo build` or set HUBCAST_BIN)")
        # The server reads HUBCAST_* variables as configuration: give it none.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCAST_")}
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_LOG", "hubcast=info")
        for _attempt in range(5):
            port = _free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = open(self.log_path, "ab")
            proc = subprocess.Popen(
                [str(HUBCAST_BIN), "serve", "--config", str(self.config_path),
                 "--listen", f"127.0.0.1:{port}", "--store", self.store],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=self.root,
            )
            log.close()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                text = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if "hubcast serving" in text and f"127.0.0.1:{port}" in text:
                    self.proc, self.port = proc, port
                    status, body = self.get("/healthz")
                    assert (status, body) == (200, {"status": "ok"})
                    return self
                time.sleep(0.02)
            else:
                proc.kill()
                proc.wait()
                pytest.fail(f"hubcast did not start within 15s; log:\n{self.log_tail()}")
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "Address already in use" not in text:
                pytest.fail(f"hubcast exited with {proc.returncode}; log:\n{self.log_tail()}")
        pytest.fail("could not find a free port for hubcast")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log_tail(self, n: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    # -- addresses and HTTP

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"content-type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.http + path, data=data, method=method, headers=hdrs)
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                payload = resp.read()
                return resp.status, json.loads(payload) if payload else None
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload) if payload else None
            except json.JSONDecodeError:
                return err.code, payload.decode(errors="replace")

    def get(self, path: str):
        return self.request("GET", path)

    def publish(self, room: str, data, *, key: str | None = None, expected_seq: int | None = None):
        body = {"data": data}
        if expected_seq is not None:
            body["expected_seq"] = expected_seq
        headers = {"Idempotency-Key": key} if key is not None else None
        return self.request("POST", f"/v1/rooms/{room}/events", body, headers=headers)

    def publish_ok(self, room: str, data, **kw) -> dict:
        status, receipt = self.publish(room, data, **kw)
        assert status == 201, (status, receipt)
        return receipt

    async def apublish_ok(self, room: str, data, **kw) -> dict:
        return await asyncio.to_thread(self.publish_ok, room, data, **kw)

    async def aget(self, path: str):
        return await asyncio.to_thread(self.get, path)


@pytest.fixture
def hubcast(tmp_path):
    """Factory: `hubcast(config_dict)` starts a server in its own directory."""
    servers: list[Hubcast] = []

    def start(config: dict | None = None, *, root: Path | None = None) -> Hubcast:
        server = Hubcast(root or tmp_path / f"server{len(servers)}", config or {})
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
        # Shown by pytest only when the test failed.
        print(f"--- {server.log_path} ---\n{server.log_tail()}")


def run(coro):
    """Runs one test's async body with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


# --------------------------------------------------------------------------
# WebSocket client helpers


class Client:
    """A `websockets` client speaking hubcast's JSON frames."""

    def __init__(self, ws, name: str):
        self.ws = ws
        self.name = name
        self.skipped: list[dict] = []

    @classmethod
    async def open(cls, url: str, name: str = "client", **kw) -> "Client":
        ws = await asyncio.wait_for(
            connect(url, proxy=None, compression=None, ping_interval=None, max_size=None,
                    open_timeout=FRAME_TIMEOUT, close_timeout=2, **kw),
            FRAME_TIMEOUT,
        )
        return cls(ws, name)

    async def recv(self, timeout: float = FRAME_TIMEOUT) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no frame within {timeout}s") from None
        assert isinstance(raw, str), f"{self.name}: expected a text frame, got {raw!r}"
        return json.loads(raw)

    async def expect(self, **fields) -> dict:
        """Receives one frame and checks that it has these fields and values."""
        frame = await self.recv()
        for key, value in fields.items():
            assert frame.get(key) == value, f"{self.name}: expected {fields}, got {frame}"
        return frame

    async def reply(self, **fields) -> dict:
        """Like `expect`, but first sets aside event frames (into `self.skipped`)
        that a subscription delivers meanwhile."""
        while True:
            frame = await self.recv()
            if frame["type"] == "event" and fields.get("type") != "event":
                self.skipped.append(frame)
                continue
            for key, value in fields.items():
                assert frame.get(key) == value, f"{self.name}: expected {fields}, got {frame}"
            return frame

    async def welcome(self) -> dict:
        frame = await self.expect(type="welcome")
        assert isinstance(frame["session"], str) and frame["session"]
        assert isinstance(frame["heartbeat_ms"], int)
        return frame

    async def send(self, obj) -> None:
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def quiet(self, seconds: float = QUIET) -> None:
        """Asserts that no frame arrives for a short while (no duplicates, no strays)."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"{self.name}: unexpected frame {raw!r}")

    async def events_through(self, room: str, last_seq: int) -> list[dict]:
        """Receives frames until the event `last_seq` of `room`; returns them all."""
        frames = []
        while True:
            frame = await self.recv()
            frames.append(frame)
            if frame["type"] == "event" and frame["room"] == room and frame["seq"] >= last_seq:
                return frames

    async def close_code(self, timeout: float = FRAME_TIMEOUT) -> tuple[int | None, list]:
        """Reads until the server closes; returns (close code received, frames read before)."""
        frames = []

        async def drain():
            while True:
                try:
                    frames.append(await self.ws.recv())
                except ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None

        try:
            return await asyncio.wait_for(drain(), timeout), frames
        except TimeoutError:
            raise AssertionError(f"{self.name}: server did not close within {timeout}s") from None

    async def close(self) -> None:
        await self.ws.close()


def seqs(frames, room=None) -> list[int]:
    return [f["seq"] for f in frames if f["type"] == "event" and (room is None or f["room"] == room)]


def kinds(frames) -> list[str]:
    return [f["type"] for f in frames]


async def subscribe_room_ws(server: Hubcast, room: str, name: str, query: str = "") -> tuple[Client, dict]:
    """Opens /v1/rooms/{room}/ws; returns the client and its `subscribed` frame."""
    client = await Client.open(f"{server.ws}/v1/rooms/{room}/ws{query}", name)
    await client.welcome()
    subscribed = await client.expect(type="subscribed", room=room)
    return client, subscribed


# --------------------------------------------------------------------------
# HTTP


def test_http_publish_receipt_history_and_stats(hubcast):
    server = hubcast()
    r1 = server.publish_ok("market:1", {"p": 0.5})
    assert set(r1) == {"room", "seq", "epoch", "ts"}
    assert (r1["room"], r1["seq"]) == ("market:1", 1)
    assert isinstance(r1["epoch"], str) and r1["epoch"]
    r2 = server.publish_ok("market:1", [1, "two", None])
    assert (r2["seq"], r2["epoch"]) == (2, r1["epoch"])
    assert r2["ts"] >= r1["ts"]

    status, history = server.get("/v1/rooms/market:1/events")
    assert status == 200
    assert history == {
        "room": "market:1", "epoch": r1["epoch"], "head": 2, "earliest": 1,
        "events": [
            {"seq": 1, "ts": r1["ts"], "data": {"p": 0.5}},
            {"seq": 2, "ts": r2["ts"], "data": [1, "two", None]},
        ],
    }
    status, stats = server.get("/v1/rooms/market:1")
    assert (status, stats) == (200, {"room": "market:1", "epoch": r1["epoch"], "head": 2, "earliest": 1,
                                     "retained": 2, "subscribers": 0})
    # A room that was never written to.
    status, empty = server.get("/v1/rooms/nobody/events")
    # A room never written: no events, and the epoch it will be born with.
    assert status == 200 and isinstance(empty.pop("epoch"), str), empty
    assert empty == {"room": "nobody", "head": 0, "earliest": 1, "events": []}


def test_http_idempotent_retry(hubcast):
    server = hubcast()
    status, first = server.publish("idem", {"order": 1}, key="order-1")
    assert status == 201, first
    assert first["seq"] == 1
    # The retry returns the first receipt, with 200, and appends nothing.
    status, retry = server.publish("idem", {"order": 1}, key="order-1")
    assert (status, retry) == (200, first)
    # The same key with different data is not a retry: 422, nothing appended.
    status, refused = server.publish("idem", {"order": "changed"}, key="order-1")
    assert status == 422 and refused["error"] == "idempotency_mismatch", refused
    status, second = server.publish("idem", {"order": 2}, key="order-2")
    assert status == 201 and second["seq"] == 2
    status, unkeyed = server.publish("idem", {"order": 3})
    assert status == 201 and unkeyed["seq"] == 3
    # The key is per room: the same key in another room is a new event.
    status, other = server.publish("idem-other", {"order": 1}, key="order-1")
    assert status == 201 and other["seq"] == 1
    status, history = server.get("/v1/rooms/idem/events")
    assert status == 200
    assert [(e["seq"], e["data"]) for e in history["events"]] == [(1, {"order": 1}), (2, {"order": 2}), (3, {"order": 3})]
    assert history["head"] == 3

    # A retried conditional publish returns its first result even though the
    # head has moved on since (the key is checked before expected_seq).
    status, cond = server.publish("idem-cond", {"v": 1}, key="cond-1", expected_seq=0)
    assert status == 201 and cond["seq"] == 1, cond
    server.publish_ok("idem-cond", {"v": 2})
    status, retry = server.publish("idem-cond", {"v": 1}, key="cond-1", expected_seq=0)
    assert (status, retry) == (200, cond)


def test_http_idempotent_retries_racing_each_other(hubcast):
    """Many copies of one publish in flight at once (they share a group
    commit): exactly one is appended, every copy gets the same receipt."""
    server = hubcast()

    async def body():
        for round_ in range(5):
            key = f"race-{round_}"
            results = await asyncio.gather(
                *(asyncio.to_thread(server.publish, "idem-race", {"round": round_}, key=key) for _ in range(16))
            )
            statuses = sorted(status for status, _ in results)
            assert statuses == [200] * 15 + [201], results
            assert len({json.dumps(receipt, sort_keys=True) for _, receipt in results}) == 1, results
            assert results[0][1]["seq"] == round_ + 1
        status, history = await server.aget("/v1/rooms/idem-race/events")
        assert [(e["seq"], e["data"]) for e in history["events"]] == [(n + 1, {"round": n}) for n in range(5)]

    run(body())


def test_http_expected_seq_conflict(hubcast):
    server = hubcast()
    # expected_seq 0 on an empty room appends the first event.
    status, r1 = server.publish("quotes", {"q": 1}, expected_seq=0)
    assert status == 201 and r1["seq"] == 1, r1
    server.publish_ok("quotes", {"q": 2})
    server.publish_ok("quotes", {"q": 3})
    status, body = server.publish("quotes", {"q": "stale"}, expected_seq=1)
    assert status == 409, body
    assert body["error"] == "conflict"
    assert body["head"] == 3
    assert body["epoch"] == r1["epoch"]
    assert isinstance(body["message"], str) and body["message"]
    status, r4 = server.publish("quotes", {"q": 4}, expected_seq=3)
    assert status == 201 and r4["seq"] == 4, r4
    # A stale expectation above the head is a conflict too.
    status, body = server.publish("quotes", {"q": "future"}, expected_seq=10)
    assert (status, body["error"], body["head"]) == (409, "conflict", 4)
    status, history = server.get("/v1/rooms/quotes/events")
    assert [e["data"] for e in history["events"]] == [{"q": 1}, {"q": 2}, {"q": 3}, {"q": 4}]


def test_http_history_paging(hubcast):
    server = hubcast({"limits": {"max_page": 10}})
    receipts = [server.publish_ok("paged", {"n": n}) for n in range(1, 26)]
    epoch = receipts[0]["epoch"]

    collected, after, pages = [], 0, 0
    while True:
        status, page = server.get(f"/v1/rooms/paged/events?after={after}&limit=7")
        assert status == 200
        assert (page["room"], page["epoch"], page["head"], page["earliest"]) == ("paged", epoch, 25, 1)
        if not page["events"]:
            break
        assert len(page["events"]) <= 7
        pages += 1
        collected += page["events"]
        after = page["events"][-1]["seq"]
    assert pages == 4
    assert [e["seq"] for e in collected] == list(range(1, 26))
    assert [e["data"] for e in collected] == [{"n": n} for n in range(1, 26)]
    assert [e["ts"] for e in collected] == [r["ts"] for r in receipts]

    # limit is clamped to limits.max_page; the default page is clamped too.
    status, page = server.get("/v1/rooms/paged/events?after=3&limit=1000")
    assert status == 200 and [e["seq"] for e in page["events"]] == list(range(4, 14))
    status, page = server.get("/v1/rooms/paged/events")
    assert status == 200 and [e["seq"] for e in page["events"]] == list(range(1, 11))
    status, page = server.get("/v1/rooms/paged/events?after=24&limit=5")
    assert [e["seq"] for e in page["events"]] == [25]
    status, page = server.get("/v1/rooms/paged/events?after=25")
    assert (status, page["events"], page["head"]) == (200, [], 25)
    status, body = server.get("/v1/rooms/paged/events?after=-1")
    assert (status, body["error"]) == (400, "invalid_parameter")


def test_http_bad_input(hubcast):
    server = hubcast({"limits": {"max_event_bytes": 4096}})
    status, body = server.request("POST", "/v1/rooms/bad%20room/events", {"data": 1})
    assert (status, body["error"]) == (400, "invalid_room"), body
    status, body = server.request("POST", "/v1/rooms/star*/events", {"data": 1})
    assert (status, body["error"]) == (400, "invalid_room"), body
    status, body = server.get("/v1/rooms/" + "x" * 129)
    assert (status, body["error"]) == (400, "invalid_room"), body
    status, body = server.request("POST", "/v1/rooms/ok/events", raw=b'{"data": ')
    assert (status, body["error"]) == (400, "invalid_json"), body
    status, body = server.request("POST", "/v1/rooms/ok/events", {"nodata": 1})
    assert (status, body["error"]) == (400, "bad_request"), body
    status, body = server.request("POST", "/v1/rooms/ok/events", {"data": "x" * 5000})
    assert (status, body["error"]) == (413, "too_large"), body
    status, body = server.request("POST", "/v1/rooms/ok/events", raw=b'{"data":"' + b"y" * 200_000 + b'"}')
    assert (status, body["error"]) == (413, "too_large"), body
    status, body = server.publish("ok", 1, key="k" * 129)
    assert (status, body["error"]) == (400, "invalid_parameter"), body
    status, body = server.get("/v1/nope")
    assert (status, body["error"]) == (404, "not_found"), body
    # Nothing was appended by any of the refused requests.
    status, history = server.get("/v1/rooms/ok/events")
    assert (status, history["head"], history["events"]) == (200, 0, [])
    assert server.publish_ok("ok", {"fine": True})["seq"] == 1


# --------------------------------------------------------------------------
# fan-out and replay


def test_live_fanout_order_to_three_subscribers(hubcast):
    server = hubcast()
    room = "fanout"

    async def body():
        clients = []
        for i in range(3):
            client, subscribed = await subscribe_room_ws(server, room, f"sub{i}")
            assert subscribed["head"] == 0
            await client.expect(type="caught_up", room=room, seq=0)
            clients.append(client)
        epoch = subscribed["epoch"]

        # Three publishers race; the store orders them. Every subscriber must
        # see exactly that order.
        async def publisher(p):
            out = []
            for i in range(20):
                out.append(await server.apublish_ok(room, {"p": p, "i": i}))
            return out

        receipts = [r for rs in await asyncio.gather(*(publisher(p) for p in range(3))) for r in rs]
        assert sorted(r["seq"] for r in receipts) == list(range(1, 61))
        assert {r["epoch"] for r in receipts} == {epoch}
        by_seq = {r["seq"]: r for r in receipts}

        for client in clients:
            frames = await client.events_through(room, 60)
            assert kinds(frames) == ["event"] * 60, kinds(frames)
            assert seqs(frames) == list(range(1, 61))
            assert [f["ts"] for f in frames] == [by_seq[s]["ts"] for s in range(1, 61)]
            assert all(f["room"] == room for f in frames)
            # Each publisher's own events stay in its order.
            for p in range(3):
                assert [f["data"]["i"] for f in frames if f["data"]["p"] == p] == list(range(20))
        await asyncio.gather(*(c.quiet() for c in clients))
        status, stats = await server.aget(f"/v1/rooms/{room}")
        assert (stats["head"], stats["subscribers"]) == (60, 3)
        for client in clients:
            await client.close()

    run(body())


@pytest.mark.parametrize("tail", [8, 256])
def test_replay_from_cursor_while_publishing(hubcast, tail):
    """A subscriber that joins at cursor 0 while another task keeps publishing
    gets exactly 1..N: the store replay, the hub tail and the live stream meet
    without a gap or a duplicate."""
    server = hubcast({"hub": {"tail": tail}})
    room = "replay"
    total, before = 400, 150

    async def body():
        receipts = [await server.apublish_ok(room, {"n": n}) for n in range(1, before + 1)]
        epoch = receipts[0]["epoch"]

        async def publisher(p, count):
            return [await server.apublish_ok(room, {"p": p, "k": k}) for k in range(count)]

        publishing = asyncio.gather(publisher(0, (total - before) // 2), publisher(1, (total - before) // 2))
        await asyncio.sleep(0)  # let the publishers start
        client, subscribed = await subscribe_room_ws(server, room, "replayer", f"?cursor=0&epoch={epoch}")
        assert subscribed["epoch"] == epoch
        assert subscribed["head"] >= before
        frames = await client.events_through(room, total)
        late = [r for rs in await publishing for r in rs]
        data = {r["seq"]: {"n": r["seq"]} for r in receipts}
        for p in (0, 1):
            for k, r in enumerate(late[p * len(late) // 2:(p + 1) * len(late) // 2]):
                data[r["seq"]] = {"p": p, "k": k}
        assert len(late) == total - before
        assert sorted(r["seq"] for r in late) == list(range(before + 1, total + 1))

        kinds_seen = kinds(frames)
        assert kinds_seen.count("caught_up") == 1, kinds_seen
        assert "reset" not in kinds_seen
        assert seqs(frames) == list(range(1, total + 1))
        cut = kinds_seen.index("caught_up")
        caught_up = frames[cut]
        # caught_up names the last event replayed before it, at least the head
        # the subscriber was told of.
        assert caught_up["seq"] == cut
        assert caught_up["seq"] >= subscribed["head"]
        events = [f for f in frames if f["type"] == "event"]
        assert [e["data"] for e in events] == [data[s] for s in range(1, total + 1)]
        await client.quiet()
        await client.close()

    run(body())


def test_resume_with_cursor_after_disconnect_while_publishing(hubcast):
    server = hubcast({"hub": {"tail": 16}})
    room = "resume"
    total = 300

    async def body():
        first = await server.apublish_ok(room, {"n": 1})
        epoch = first["epoch"]

        async def publisher():
            return [await server.apublish_ok(room, {"n": n}) for n in range(2, total + 1)]

        publishing = asyncio.create_task(publisher())
        client, _ = await subscribe_room_ws(server, room, "first", f"?cursor=0&epoch={epoch}")
        frames = await client.events_through(room, 60)
        await client.close()
        got = seqs(frames)
        cursor = got[-1]
        assert got == list(range(1, cursor + 1))

        client, subscribed = await subscribe_room_ws(server, room, "second", f"?cursor={cursor}&epoch={epoch}")
        assert subscribed["epoch"] == epoch
        frames2 = await client.events_through(room, total)
        await publishing
        assert "reset" not in kinds(frames2)
        assert kinds(frames2).count("caught_up") == 1
        got += seqs(frames2)
        assert got == list(range(1, total + 1))
        assert [f["data"]["n"] for f in frames2 if f["type"] == "event"] == list(range(cursor + 1, total + 1))
        await client.quiet()
        await client.close()

    run(body())


def test_multiplexed_subscriptions_on_one_socket(hubcast):
    server = hubcast({"limits": {"max_subscriptions": 2}})

    async def body():
        for n in range(1, 4):
            server.publish_ok("mux-b", {"b": n})
        client = await Client.open(f"{server.ws}/v1/ws", "mux")
        await client.welcome()

        await client.send({"type": "subscribe", "room": "mux-a"})
        sub_a = await client.expect(type="subscribed", room="mux-a", head=0)
        await client.expect(type="caught_up", room="mux-a", seq=0)
        await client.send({"type": "subscribe", "room": "mux-b", "cursor": 1})
        sub_b = await client.expect(type="subscribed", room="mux-b", head=3)
        assert sub_a["epoch"] != sub_b["epoch"]
        await client.expect(type="event", room="mux-b", seq=2, data={"b": 2})
        await client.expect(type="event", room="mux-b", seq=3, data={"b": 3})
        await client.expect(type="caught_up", room="mux-b", seq=3)

        # Limits and state errors answer with an error frame naming the room.
        await client.send({"type": "subscribe", "room": "mux-c"})
        await client.expect(type="error", code="too_many_subscriptions", room="mux-c")
        await client.send({"type": "subscribe", "room": "mux-a"})
        await client.expect(type="error", code="already_subscribed", room="mux-a")

        for n in range(1, 21):
            await server.apublish_ok("mux-a", {"a": n})
            await server.apublish_ok("mux-b", {"b": n + 3})
        frames = []
        while len(seqs(frames, "mux-a")) < 20 or len(seqs(frames, "mux-b")) < 23 - 3:
            frames.append(await client.recv())
        assert kinds(frames) == ["event"] * 40
        assert seqs(frames, "mux-a") == list(range(1, 21))
        assert seqs(frames, "mux-b") == list(range(4, 24))
        assert [f["data"] for f in frames if f["room"] == "mux-a"] == [{"a": n} for n in range(1, 21)]

        await client.send({"type": "unsubscribe", "room": "mux-a"})
        await client.expect(type="unsubscribed", room="mux-a")
        await client.send({"type": "unsubscribe", "room": "mux-a"})
        await client.expect(type="error", code="not_subscribed", room="mux-a")
        # Now a third room fits under the limit.
        await client.send({"type": "subscribe", "room": "mux-c"})
        await client.expect(type="subscribed", room="mux-c", head=0)
        await client.expect(type="caught_up", room="mux-c", seq=0)

        await server.apublish_ok("mux-a", {"a": 21})
        await server.apublish_ok("mux-b", {"b": 24})
        await server.apublish_ok("mux-c", {"c": 1})
        await server.apublish_ok("mux-b", {"b": 25})
        frames = []
        while len(seqs(frames, "mux-b")) < 2 or len(seqs(frames, "mux-c")) < 1:
            frames.append(await client.recv())
        assert seqs(frames, "mux-a") == [], frames
        assert seqs(frames, "mux-b") == [24, 25]
        assert seqs(frames, "mux-c") == [1]
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong"}

        # Re-subscribing with the cursor it had gets exactly what it missed.
        await client.send({"type": "unsubscribe", "room": "mux-c"})
        await client.expect(type="unsubscribed", room="mux-c")
        await client.send({"type": "subscribe", "room": "mux-a", "cursor": 20, "epoch": sub_a["epoch"]})
        await client.expect(type="subscribed", room="mux-a", head=21)
        await client.expect(type="event", room="mux-a", seq=21, data={"a": 21})
        await client.expect(type="caught_up", room="mux-a", seq=21)
        await client.quiet()
        await client.close()

    run(body())


def test_publish_over_websocket_ack_retry_and_conflict(hubcast):
    server = hubcast()
    room = "wspub"

    async def body():
        watcher, _ = await subscribe_room_ws(server, room, "watcher")
        await watcher.expect(type="caught_up", room=room, seq=0)
        client = await Client.open(f"{server.ws}/v1/ws", "publisher")
        await client.welcome()
        await client.send({"type": "publish", "id": "m1", "room": room, "data": {"v": 1}})
        assert await client.recv() == {"type": "ack", "id": "m1", "room": room, "seq": 1}
        await client.send({"type": "publish", "id": "m2", "room": room, "data": {"v": 2}})
        assert await client.recv() == {"type": "ack", "id": "m2", "room": room, "seq": 2}
        # A retry with the same id is acknowledged with the same seq, not appended again.
        await client.send({"type": "publish", "id": "m1", "room": room, "data": {"v": 1}})
        assert await client.recv() == {"type": "ack", "id": "m1", "room": room, "seq": 1}
        # The ids are shared with HTTP idempotency keys.
        status, receipt = server.publish(room, {"v": 1}, key="m1")
        assert (status, receipt["seq"]) == (200, 1)
        await client.send({"type": "publish", "id": "m3", "room": room, "data": {"v": 3}, "expected_seq": 1})
        err = await client.expect(type="error", code="conflict", id="m3", room=room, head=2)
        assert err["message"]
        await client.send({"type": "publish", "id": "m4", "room": room, "data": {"v": 4}, "expected_seq": 2})
        assert await client.recv() == {"type": "ack", "id": "m4", "room": room, "seq": 3}

        frames = await watcher.events_through(room, 3)
        assert [(f["seq"], f["data"]) for f in frames] == [(1, {"v": 1}), (2, {"v": 2}), (3, {"v": 4})]
        await watcher.quiet()
        await client.close()
        await watcher.close()

    run(body())


class Publishers:
    """Threads that keep publishing to a room until stopped."""

    def __init__(self, server: Hubcast, room: str, threads: int):
        self.server, self.room = server, room
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, t: int) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                self.server.publish_ok(self.room, {"t": t, "n": n})
                n += 1
        except BaseException as err:  # reported by close()
            self.errors.append(err)

    def __enter__(self) -> "Publishers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        if exc[0] is None:
            assert not self.errors, self.errors


def test_no_event_after_unsubscribed_while_publishing(hubcast):
    """`unsubscribed {room}` ends that room's stream on this session: no event
    of the room may follow it. Re-subscribing from the cursor then continues
    exactly (no duplicate, no gap). Checked over many rounds while other
    clients publish to the room as fast as they can."""
    # Hundreds of subscribe/unsubscribe rounds a second: this test is about
    # ordering, not the per-session message rate limit.
    server = hubcast({"rate_limits": {"messages_per_session_per_second": 0}})
    room = "unsub-race"

    async def body():
        client = await Client.open(f"{server.ws}/v1/ws", "churn")
        await client.welcome()
        delivered: list[int] = []
        cursor = epoch = None
        rounds = 0
        budget = time.monotonic() + 15  # a bound on the work, not an assertion
        while rounds < 300 and time.monotonic() < budget:
            rounds += 1
            request = {"type": "subscribe", "room": room}
            if cursor is not None:
                request.update(cursor=cursor, epoch=epoch)
            await client.send(request)
            subscribed = await client.expect(type="subscribed", room=room)
            epoch = subscribed["epoch"]
            live = 0
            caught_up = False
            while not caught_up or live < 2:
                frame = await client.recv()
                assert frame["type"] in ("event", "caught_up"), frame
                if frame["type"] == "caught_up":
                    caught_up = True
                    continue
                delivered.append(frame["seq"])
                live += caught_up
            await client.send({"type": "unsubscribe", "room": room})
            while True:
                frame = await client.recv()
                if frame["type"] == "unsubscribed":
                    break
                assert frame["type"] == "event", frame
                delivered.append(frame["seq"])
            await client.send({"type": "ping"})
            while True:
                frame = await client.recv()
                if frame["type"] == "pong":
                    break
                raise AssertionError(
                    f"round {rounds}: {frame['type']} seq {frame.get('seq')} of room {room} arrived after "
                    f"`unsubscribed` (last seq delivered before it: {delivered[-1]}): {frame}"
                )
            cursor = delivered[-1]
            assert delivered == list(range(delivered[0], delivered[-1] + 1)), f"gap or duplicate in round {rounds}"
        assert rounds >= 10
        await client.close()

    with Publishers(server, room, 8):
        run(body())


def test_hub_hibernation_churn_keeps_streams_exact(hubcast):
    """Hubs are dropped when idle and re-created on the next subscriber; a
    client that keeps reconnecting with its cursor across that, while events
    keep coming, still sees every seq exactly once."""
    server = hubcast({"hub": {"idle_ms": 5, "tail": 8, "reconcile_ms": 50}})
    room = "hibernate"

    async def body():
        first = await server.apublish_ok(room, {"t": -1, "n": 0})
        epoch = first["epoch"]
        delivered = [1]
        for round_ in range(40):
            client, subscribed = await subscribe_room_ws(server, room, f"round{round_}",
                                                         f"?cursor={delivered[-1]}&epoch={epoch}")
            assert subscribed["epoch"] == epoch
            caught_up, live = False, 0
            while not caught_up or live < 2:
                frame = await client.recv()
                assert frame["type"] in ("event", "caught_up"), frame
                if frame["type"] == "caught_up":
                    caught_up = True
                    assert frame["seq"] == delivered[-1], (frame, delivered[-5:])
                    continue
                assert frame["seq"] == delivered[-1] + 1, f"round {round_}: got {frame['seq']} after {delivered[-1]}"
                delivered.append(frame["seq"])
                live += caught_up
            await client.close()
            await asyncio.sleep(0.02)  # long enough for the idle hub to hibernate
        assert delivered == list(range(1, delivered[-1] + 1))

    with Publishers(server, room, 2):
        run(body())


# --------------------------------------------------------------------------
# resets


def test_reset_on_wrong_epoch(hubcast):
    server = hubcast()
    room = "epochs"

    async def body():
        receipts = [await server.apublish_ok(room, {"n": n}) for n in range(1, 6)]
        epoch = receipts[0]["epoch"]
        client, subscribed = await subscribe_room_ws(server, room, "stale", "?cursor=2&epoch=not-the-epoch")
        assert (subscribed["epoch"], subscribed["head"]) == (epoch, 5)
        assert await client.recv() == {"type": "reset", "room": room, "epoch": epoch, "earliest": 1}
        # After the reset the stream continues live from the head: nothing replayed.
        await client.expect(type="caught_up", room=room, seq=5)
        await server.apublish_ok(room, {"n": 6})
        await client.expect(type="event", room=room, seq=6, data={"n": 6})
        await client.quiet()
        await client.close()

        # The same over the multiplexed socket, and a cursor past the head.
        mux = await Client.open(f"{server.ws}/v1/ws", "mux")
        await mux.welcome()
        await mux.send({"type": "subscribe", "room": room, "cursor": 1, "epoch": "bogus"})
        await mux.expect(type="subscribed", room=room, epoch=epoch, head=6)
        await mux.expect(type="reset", room=room, epoch=epoch, earliest=1)
        await mux.expect(type="caught_up", room=room, seq=6)
        await mux.send({"type": "subscribe", "room": "epochs2", "cursor": 99})
        await mux.expect(type="subscribed", room="epochs2", head=0)
        await mux.expect(type="reset", room="epochs2", earliest=1)
        await mux.expect(type="caught_up", room="epochs2", seq=0)
        # The right epoch replays exactly.
        await mux.send({"type": "unsubscribe", "room": room})
        await mux.expect(type="unsubscribed", room=room)
        await mux.send({"type": "subscribe", "room": room, "cursor": 4, "epoch": epoch})
        await mux.expect(type="subscribed", room=room, epoch=epoch, head=6)
        await mux.expect(type="event", room=room, seq=5)
        await mux.expect(type="event", room=room, seq=6)
        await mux.expect(type="caught_up", room=room, seq=6)
        await mux.quiet()
        await mux.close()

    run(body())


def test_reset_on_pruned_cursor(hubcast):
    server = hubcast({"retention": {"max_events": 5, "max_age_secs": 0, "interval_ms": 100}})
    room = "pruned"

    async def body():
        receipts = [await server.apublish_ok(room, {"n": n}) for n in range(1, 21)]
        epoch = receipts[0]["epoch"]
        deadline = time.monotonic() + 15
        while True:
            status, stats = await server.aget(f"/v1/rooms/{room}")
            assert status == 200
            if stats["earliest"] == 16:
                break
            assert stats["earliest"] < 16, stats
            assert time.monotonic() < deadline, f"retention did not prune: {stats}"
            await asyncio.sleep(0.05)
        assert (stats["head"], stats["retained"]) == (20, 5)
        status, history = await server.aget(f"/v1/rooms/{room}/events?after=0")
        assert (history["earliest"], [e["seq"] for e in history["events"]]) == (16, [16, 17, 18, 19, 20])

        # A cursor older than retention gets an explicit reset, then live.
        client, subscribed = await subscribe_room_ws(server, room, "pruned", f"?cursor=3&epoch={epoch}")
        assert (subscribed["epoch"], subscribed["head"]) == (epoch, 20)
        assert await client.recv() == {"type": "reset", "room": room, "epoch": epoch, "earliest": 16}
        await client.expect(type="caught_up", room=room, seq=20)

        # The oldest cursor still served exactly is earliest - 1.
        edge, subscribed = await subscribe_room_ws(server, room, "edge", f"?cursor=15&epoch={epoch}")
        frames = []
        while not frames or frames[-1]["type"] != "caught_up":
            frames.append(await edge.recv())
        assert kinds(frames) == ["event"] * 5 + ["caught_up"], frames
        assert seqs(frames) == [16, 17, 18, 19, 20]
        assert frames[-1]["seq"] == 20

        # rewind is capped by what is retained.
        rewind, _ = await subscribe_room_ws(server, room, "rewind", "?rewind=50")
        frames = []
        while not frames or frames[-1]["type"] != "caught_up":
            frames.append(await rewind.recv())
        assert seqs(frames) == [16, 17, 18, 19, 20] and frames[-1]["seq"] == 20, frames

        await server.apublish_ok(room, {"n": 21})
        for c in (client, edge, rewind):
            await c.expect(type="event", room=room, seq=21, data={"n": 21})
            await c.quiet(0.1)
            await c.close()

    run(body())


# --------------------------------------------------------------------------
# bad input on one session never disturbs another


def test_bad_input_is_contained_to_its_session(hubcast):
    server = hubcast({"limits": {"max_event_bytes": 4096}})
    room = "victim"

    async def body():
        watcher, _ = await subscribe_room_ws(server, room, "watcher")
        await watcher.expect(type="caught_up", room=room, seq=0)
        published = 0

        async def publish():
            nonlocal published
            published += 1
            receipt = await server.apublish_ok(room, {"n": published})
            assert receipt["seq"] == published

        bad = await Client.open(f"{server.ws}/v1/ws", "bad")
        await bad.welcome()
        await bad.send({"type": "subscribe", "room": room})
        await bad.expect(type="subscribed", room=room)
        await bad.expect(type="caught_up", room=room)
        await publish()

        await bad.send("this is not json")
        err = await bad.reply(type="error", code="invalid_json")
        assert err["message"]
        await publish()
        await bad.send('{"type":"subscribe"')
        await bad.reply(type="error", code="invalid_json")
        await bad.send({"type": "dance", "id": "x1"})
        await bad.reply(type="error", code="unknown_type", id="x1")
        await publish()
        await bad.send({"type": "subscribe"})
        await bad.reply(type="error", code="bad_request")
        await bad.send({"room": room})
        await bad.reply(type="error", code="bad_request")
        await bad.send({"type": "publish", "id": "p", "room": room})
        await bad.reply(type="error", code="bad_request", id="p")
        await bad.send({"type": "subscribe", "room": room, "cursor": "3"})
        await bad.reply(type="error", code="bad_request")
        await bad.send({"type": "subscribe", "room": "bad room"})
        await bad.reply(type="error", code="invalid_room")
        await bad.send({"type": "unsubscribe", "room": "x" * 129})
        await bad.reply(type="error", code="invalid_room")
        await publish()
        # data over max_event_bytes, in a frame under the frame limit: an error
        # frame, and nothing appended.
        await bad.send({"type": "publish", "id": "big", "room": room, "data": "z" * 5000})
        await bad.reply(type="error", code="too_large", id="big", room=room)
        # The bad session still works, and its own subscription kept every event.
        await bad.send({"type": "ping"})
        await bad.reply(type="pong")
        own = list(bad.skipped)
        if seqs(own)[-1:] != [published]:
            own += await bad.events_through(room, published)
        assert kinds(own) == ["event"] * published, own
        assert seqs(own) == list(range(1, published + 1)), own

        # A binary frame closes that session with 1008.
        await bad.send(b"\x00\x01binary")
        code, _ = await bad.close_code()
        assert code == 1008
        await publish()

        # A frame over the limit (max_event_bytes + overhead) closes with 1009.
        big = await Client.open(f"{server.ws}/v1/ws", "big")
        await big.welcome()
        await big.send({"type": "publish", "id": "huge", "room": room, "data": "h" * 64_000})
        code, _ = await big.close_code()
        assert code == 1009
        await publish()

        # Binary on a room-scoped socket too.
        raw, _ = await subscribe_room_ws(server, room, "raw")
        await raw.expect(type="caught_up", room=room)
        await raw.send(b"\xff")
        code, _ = await raw.close_code()
        assert code == 1008
        await publish()

        frames = await watcher.events_through(room, published)
        assert kinds(frames) == ["event"] * published
        assert seqs(frames) == list(range(1, published + 1))
        assert [f["data"] for f in frames] == [{"n": n} for n in range(1, published + 1)]
        await watcher.quiet()
        status, history = await server.aget(f"/v1/rooms/{room}/events")
        assert history["head"] == published
        status, health = await server.aget("/healthz")
        assert status == 200
        await watcher.close()

    run(body())


# --------------------------------------------------------------------------
# heartbeat, using a raw socket that never answers pings


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    opcode = head[0] & 0x0F
    masked = head[1] & 0x80
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    assert not masked, "server frames must not be masked"
    return opcode, await reader.readexactly(length)


async def _raw_upgrade(server: Hubcast, path: str, rcvbuf: int | None = None):
    """Opens a WebSocket by hand; the caller decides whether to ever write."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # A fixed small receive buffer (no autotuning): a client that does not
        # read makes the server's writes block early.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)), FRAME_TIMEOUT)
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), FRAME_TIMEOUT)
    assert response.startswith(b"HTTP/1.1 101"), response
    return reader, writer


def test_heartbeat_timeout_closes_silent_client_with_4010(hubcast):
    server = hubcast({"heartbeat": {"interval_ms": 200, "stale_ms": 600}})
    room = "heartbeat"

    async def body():
        # A well-behaved client answers the server's pings (websockets does so
        # by itself) and so stays connected for several stale periods.
        alive, _ = await subscribe_room_ws(server, room, "alive")
        await alive.expect(type="caught_up", room=room, seq=0)

        # A dead client: upgrades by hand, then never writes a byte.
        reader, writer = await _raw_upgrade(server, f"/v1/rooms/{room}/ws")
        frames = []

        async def read_until_close():
            while True:
                opcode, payload = await _read_frame(reader)
                frames.append((opcode, payload))
                if opcode == 0x8:
                    return payload

        close_payload = await asyncio.wait_for(read_until_close(), FRAME_TIMEOUT)
        texts = [json.loads(p) for op, p in frames if op == 0x1]
        assert kinds(texts) == ["welcome", "subscribed", "caught_up"], texts
        assert texts[0]["heartbeat_ms"] == 200
        assert any(op == 0x9 for op, _ in frames), "the server never pinged"
        (code,) = struct.unpack("!H", close_payload[:2])
        assert code == 4010, (code, close_payload)
        # The connection ends after the close frame.
        rest = await asyncio.wait_for(reader.read(), FRAME_TIMEOUT)
        assert rest == b""
        writer.close()

        # The live client outlived the dead one and still gets events.
        await server.apublish_ok(room, {"still": "here"})
        await alive.expect(type="event", room=room, seq=1, data={"still": "here"})
        await alive.send({"type": "ping"})
        await alive.expect(type="pong")
        status, stats = await server.aget(f"/v1/rooms/{room}")
        assert stats["subscribers"] == 1
        await alive.close()

    run(body())


def test_heartbeat_timeout_applies_while_replay_is_stalled(hubcast):
    """A client that goes silent (never answers a ping, never reads) while its
    replay is still being sent must be closed like any other silent client,
    once heartbeat.stale_ms has passed: the session must not stay stuck
    waiting for queue room for as long as the client stays away."""
    server = hubcast({
        "heartbeat": {"interval_ms": 200, "stale_ms": 600},
        "limits": {"outbound_queue": 16},
        "hub": {"tail": 8},
    })
    room = "stalled-replay"
    total = 200
    pad = "r" * 64_000  # 200 x 64 KB: far more than the socket buffers and the queue hold

    async def body():
        for n in range(1, total + 1):
            await server.apublish_ok(room, {"n": n, "pad": pad})
        reader, writer = await _raw_upgrade(server, f"/v1/rooms/{room}/ws?cursor=0", rcvbuf=64 * 1024)
        # Silent for many stale periods (the server should give up after one).
        await asyncio.sleep(4)
        frames, ended = [], "eof"
        try:
            while True:
                opcode, payload = await asyncio.wait_for(_read_frame(reader), 20)
                frames.append((opcode, payload))
                if opcode == 0x8:
                    ended = f"close {struct.unpack('!H', payload[:2])[0]}"
                    break
        except asyncio.IncompleteReadError:
            ended = "eof"  # dropped mid-frame: the close frame could not be written
        writer.close()
        texts = [json.loads(p) for op, p in frames if op == 0x1]
        events = [t for t in texts if t["type"] == "event"]
        assert "caught_up" not in kinds(texts) and len(events) < total, (
            f"the session was kept open through {4 / 0.6:.0f} stale periods of client silence and went on "
            f"to finish the replay ({len(events)} of {total} events, then caught_up; ended with {ended}) "
            "instead of being closed with 4010 once heartbeat.stale_ms passed"
        )
        assert seqs(events) == list(range(1, len(events) + 1))
        if ended.startswith("close"):
            assert ended == "close 4010", ended

    run(body())


# --------------------------------------------------------------------------
# graceful shutdown


def test_graceful_shutdown_closes_with_1012_and_loses_nothing(hubcast, tmp_path):
    root = tmp_path / "node"
    server = hubcast(root=root)
    room = "shutdown"

    async def body():
        client, _ = await subscribe_room_ws(server, room, "room-socket")
        await client.expect(type="caught_up", room=room, seq=0)
        mux = await Client.open(f"{server.ws}/v1/ws", "mux")
        await mux.welcome()
        await mux.send({"type": "subscribe", "room": room})
        await mux.expect(type="subscribed", room=room)
        await mux.expect(type="caught_up", room=room)
        receipts = [await server.apublish_ok(room, {"n": n}) for n in range(1, 6)]
        epoch = receipts[0]["epoch"]
        for c in (client, mux):
            frames = await c.events_through(room, 5)
            assert seqs(frames) == [1, 2, 3, 4, 5]

        server.terminate()
        codes = await asyncio.gather(client.close_code(), mux.close_code())
        assert [code for code, _ in codes] == [1012, 1012]
        assert [frames for _, frames in codes] == [[], []]
        return epoch

    epoch = run(body())
    assert server.wait_exit() == 0, server.log_tail()

    # Everything acknowledged survives; a client resumes from its cursor.
    again = hubcast(root=root)

    async def resume():
        status, history = await again.aget(f"/v1/rooms/{room}/events")
        assert (history["epoch"], history["head"]) == (epoch, 5)
        assert [e["data"] for e in history["events"]] == [{"n": n} for n in range(1, 6)]
        client, subscribed = await subscribe_room_ws(again, room, "resumed", f"?cursor=3&epoch={epoch}")
        assert (subscribed["epoch"], subscribed["head"]) == (epoch, 5)
        await client.expect(type="event", room=room, seq=4)
        await client.expect(type="event", room=room, seq=5)
        await client.expect(type="caught_up", room=room, seq=5)
        receipt = await again.apublish_ok(room, {"n": 6})
        assert (receipt["seq"], receipt["epoch"]) == (6, epoch)
        await client.expect(type="event", room=room, seq=6, data={"n": 6})
        await client.close()

    run(resume())


def test_graceful_shutdown_keeps_every_acknowledged_publish(hubcast, tmp_path):
    """SIGTERM while publishers are busy: every publish answered 201 is in
    the log after a restart, with its seq and data, and the log is gapless."""
    root = tmp_path / "node"
    server = hubcast(root=root)
    room = "durable"
    acked: list[tuple[dict, dict]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def publisher(t: int) -> None:
        n = 0
        while not stop.is_set():
            data = {"t": t, "n": n}
            try:
                status, receipt = server.publish(room, data)
            except (urllib.error.URLError, ConnectionError, OSError):
                return  # the server has stopped accepting
            if status != 201:
                assert status == 503, (status, receipt)
                return
            with lock:
                acked.append((receipt, data))
            n += 1

    threads = [threading.Thread(target=publisher, args=(t,), daemon=True) for t in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while len(acked) < 100:
        assert time.monotonic() < deadline, "publishers made no progress"
        time.sleep(0.01)
    server.terminate()
    assert server.wait_exit() == 0, server.log_tail()
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    assert acked

    again = hubcast(root=root)
    events = []
    after = 0
    while True:
        status, page = again.get(f"/v1/rooms/{room}/events?after={after}&limit=1000")
        assert status == 200
        if not page["events"]:
            break
        events += page["events"]
        after = page["events"][-1]["seq"]
    assert [e["seq"] for e in events] == list(range(1, page["head"] + 1))
    by_seq = {e["seq"]: e for e in events}
    epochs = {receipt["epoch"] for receipt, _ in acked}
    assert epochs == {page["epoch"]}
    for receipt, data in acked:
        stored = by_seq.get(receipt["seq"])
        assert stored is not None, f"acknowledged seq {receipt['seq']} is missing after restart"
        assert (stored["data"], stored["ts"]) == (data, receipt["ts"])
