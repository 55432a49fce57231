"""Hostile and unusual HTTP input against the real `hubcast serve` binary,
driven by clients nobody here wrote: the stdlib's urllib and http.client, raw
sockets, and sqlite3 (to take the store away).

Each test is a regression test for a finding of a fault and hostile-input
run; the docstring names what used to happen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import resource
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest

# The server fixture and its helpers are shared with the protocol suite.
from test_protocol import Hubcast, hubcast  # noqa: F401  (hubcast is a fixture)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Upper bound for one expected answer; a hang fails the test.
ANSWER_TIMEOUT = 20.0


def _read_answer(sock: socket.socket, timeout: float = ANSWER_TIMEOUT) -> tuple[int, dict, bytes]:
    """Reads one HTTP answer up to the server's close: (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), f"no HTTP answer: {data[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _stalled_body(server: Hubcast) -> socket.socket:
    """A publish that promises 100 bytes of body and sends one."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
    sock.sendall(
        b"POST /v1/rooms/stall/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return sock


def _urlopen(request: urllib.request.Request, timeout: float = ANSWER_TIMEOUT) -> tuple[int, object]:
    try:
        with _NO_PROXY.open(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload)
        except json.JSONDecodeError:
            return err.code, payload.decode(errors="replace")


# --------------------------------------------------------------------------
# 1. stalled request bodies


def test_stalled_bodies_are_answered_408_and_free_their_descriptors(hubcast):
    """A body that stalls after its head held its connection forever (the
    header timeout covers only the head): with Content-Length 100 and one byte
    sent, enough of them exhausted the node's file descriptors and it stopped
    answering anyone. Now each is answered 408 request_timeout in JSON and
    closed, so a node limited to 128 descriptors, sent 200 of them, answers
    /healthz again."""
    server = hubcast({"limits": {"body_read_timeout_ms": 1000, "body_deadline_ms": 5000}})
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (128, 128))
    stalled = [_stalled_body(server) for _ in range(200)]
    try:
        # Queued behind the stalled ones until descriptors are freed.
        assert server.request("GET", "/healthz") == (200, {"status": "ok"})
        for sock in stalled:
            status, headers, body = _read_answer(sock)
            assert status == 408, (status, body)
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["error"] == "request_timeout"
    finally:
        for sock in stalled:
            sock.close()
    assert _metric(server, 'hubcast_refusals_total{reason="request_timeout"}') == 200


def _metric(server: Hubcast, name: str) -> float:
    with _NO_PROXY.open(server.http + "/metrics", timeout=ANSWER_TIMEOUT) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_trickled_body_is_cut_at_its_deadline(hubcast):
    """One byte every 200 ms keeps a per-read timeout happy forever; the
    whole-body deadline still ends it."""
    server = hubcast({"limits": {"body_read_timeout_ms": 1000, "body_deadline_ms": 1500}})
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
    sock.sendall(b"POST /v1/rooms/r/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    sock.settimeout(0.2)
    answer = b""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            try:
                sock.send(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"error":"request_timeout"' in answer


# --------------------------------------------------------------------------
# 2. oversized publishes


def test_urllib_reads_the_413_of_an_oversized_publish(hubcast):
    """urllib writes the whole body before it reads: the node answered 413
    after the first megabyte and closed without draining, so urllib saw
    `Broken pipe` (or a reset) instead of the JSON error."""
    server = hubcast()
    body = b'{"data":"' + b"x" * (8 * 1024 * 1024) + b'"}'
    for _ in range(3):
        request = urllib.request.Request(
            server.http + "/v1/rooms/big/events", data=body, method="POST",
            headers={"content-type": "application/json"},
        )
        status, answer = _urlopen(request)
        assert status == 413, answer
        assert answer["error"] == "too_large", answer
    # Nothing was appended, and the node is fine.
    assert server.get("/v1/rooms/big/events")[1]["head"] == 0


def test_a_declared_length_over_the_limit_is_refused_before_the_body(hubcast):
    """The 413 came only once body bytes arrived: a client waiting for the
    answer (or for `100 Continue`) before sending waited forever."""
    server = hubcast({"limits": {"max_event_bytes": 1024}})
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
    sock.sendall(
        b"POST /v1/rooms/big/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    status, headers, body = _read_answer(sock)
    sock.close()
    assert status == 413, body
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "too_large"


# --------------------------------------------------------------------------
# 5. smaller ones

JWT_SECRET = "0123456789abcdef0123456789abcdef-hardening"


def _jwt(claims: dict) -> str:
    """An HS256 token, made with the standard library."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def test_time_claims_of_a_token_must_be_numbers(tmp_path):
    """A string `nbf` was ignored (jsonwebtoken checks it only when it is a
    number), so a token not valid before next year was accepted today; a
    string `iat` was never looked at. Both are refused now."""
    server = Hubcast(tmp_path / "jwt", {})
    server.config_path.write_text(
        server.config_path.read_text() + f'\n[[auth.jwt]]\nalg = "HS256"\nsecret = "{JWT_SECRET}"\n'
    )
    server.start()
    try:
        now = int(time.time())
        grant = {"sub": "u", "exp": now + 600, "subscribe": ["r"]}
        refused = [
            {**grant, "nbf": str(now + 365 * 86400)},
            {**grant, "nbf": "0"},
            {**grant, "iat": "yesterday"},
            {**grant, "exp": str(now + 600)},
        ]
        for claims in refused:
            status, body = server.request("GET", "/v1/rooms/r/events", headers={"authorization": "Bearer " + _jwt(claims)})
            assert (status, body["error"]) == (401, "unauthenticated"), claims
        accepted = {**grant, "nbf": now - 10, "iat": now - 10}
        status, body = server.request("GET", "/v1/rooms/r/events", headers={"authorization": "Bearer " + _jwt(accepted)})
        assert status == 200, body
    finally:
        server.kill()


def test_a_store_outage_is_logged_at_a_bounded_rate(hubcast):
    """Every publish refused during a store outage logged its own WARN line.
    With the SQLite file locked by another process (sqlite3 holding an
    exclusive transaction), publishes are refused 503 store_unavailable, and
    the log has one line a second with the number suppressed."""
    server = hubcast()
    server.publish_ok("r", 0)
    lock = sqlite3.connect(server.store.removeprefix("sqlite://"), isolation_level=None, timeout=10)
    results: list = []

    def publish(n: int) -> None:
        results.append(server.request("POST", "/v1/rooms/r/events", {"data": n}))

    def logged() -> list[str]:
        return [line for line in server.log_path.read_text().splitlines() if "store error answered with 503" in line]

    try:
        lock.execute("BEGIN EXCLUSIVE")
        threads = [threading.Thread(target=publish, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # The burst fails within a second. Keep publishing until a line
        # reports what was suppressed since the first (a second later).
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not any("suppressed=0" not in line for line in logged()):
            assert time.monotonic() < deadline, logged()
            publish(len(results))
            time.sleep(0.1)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert all(status == 503 and body["error"] == "store_unavailable" for status, body in results), results
    lines = logged()
    assert 2 <= len(lines) <= 4, "\n".join(lines)
    # Every refused publish is either a line or counted in the next one.
    suppressed = sum(int(line.split("suppressed=")[1].split()[0]) for line in lines)
    assert suppressed + len(lines) == len(results) >= 21, "\n".join(lines)
    # The store is back: publishing works again.
    server.publish_ok("r", "after")
