#!/usr/bin/env python3
"""hubcast chaos soak.

Three `hubcast serve` nodes share one PRIVATE PostgreSQL (initdb into a temp
dir, a free loopback port) and one PRIVATE nats-server (a free loopback port):
the machine's shared services on 5432/4222 are never touched. Publishers (HTTP
with Idempotency-Key, WebSocket `publish` with ids) and resuming subscribers
run on every node while faults are injected at random (kill -9 / SIGTERM a
node, restart NATS, restart PostgreSQL fast or immediate, freeze PostgreSQL
with SIGSTOP, stall a subscriber until it is cut as a slow consumer). At the
end every room's log is read back over HTTP and checked against every
subscriber stream and every acknowledged publish.

The subscriber streams are read with the plain `websockets` library and
checked strictly: a subscription must deliver exactly cursor+1, cursor+2, …
(no gap, no duplicate; only a `batch` may overlap what was already processed,
as docs/protocol.md allows). No hubcast SDK is used anywhere.

Run it through bench/chaos/run.sh (makes the venv):

    bench/chaos/run.sh --duration 120 --seed 7

Exit status: 0 all checks passed, 1 a guarantee was violated, 2 the harness
itself failed (setup, a service that would not start, a timeout of its own).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import atexit
import collections
import contextlib
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

FAULT_KINDS = (
    "kill9_node",
    "sigterm_node",
    "restart_nats",
    "restart_pg_fast",
    "restart_pg_immediate",
    "freeze_pg",
    "stall_client",
)

T0 = time.monotonic()


def now() -> float:
    """Seconds since the harness started."""
    return time.monotonic() - T0


def log(msg: str) -> None:
    print(f"[{now():7.1f}s] {msg}", flush=True)


class HarnessError(Exception):
    """The harness could not do its job (not a hubcast guarantee violation)."""


def digest(data: Any) -> int:
    """A stable 64-bit digest of a JSON value."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: if the harness dies (even by SIGKILL) its nodes
    # and nats-server die too.
    _libc.prctl(1, signal.SIGKILL)


_used_ports: set[int] = set()


def pick_port(rng: random.Random) -> int:
    """A free loopback port below the ephemeral range, so no outgoing client
    connection can take it while a node or service is down and restarting."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 12000)
    for _ in range(500):
        port = rng.randrange(10000, low)
        if port in _used_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise HarnessError("no free loopback port found")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


async def run_tool(argv: list[str], timeout: float, what: str, check: bool = True) -> tuple[int, str]:
    """Runs a short-lived tool without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/tmp"
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise HarnessError(f"{what}: no answer within {timeout:.0f}s")
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise HarnessError(f"{what} failed ({proc.returncode}): {text.strip()[-2000:]}")
    return proc.returncode or 0, text


def tail(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(data[-lines:])


def find_binary(name: str, fallbacks: list[str]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None


def pg_bin_dir() -> Path:
    """As tests/cluster.rs: HUBCAST_TEST_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin, else `pg_config --bindir`, else PATH."""
    env = os.environ.get("HUBCAST_TEST_PG_BIN")
    if env:
        return Path(env)
    versions = []
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for entry in base.iterdir():
            if entry.name.isdigit() and os.access(entry / "bin" / "initdb", os.X_OK):
                versions.append((int(entry.name), entry / "bin"))
    if versions:
        return sorted(versions)[-1][1]
    with contextlib.suppress(OSError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
        if out and os.access(Path(out) / "initdb", os.X_OK):
            return Path(out)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise HarnessError("PostgreSQL server binaries (initdb, pg_ctl) not found; scripts/services.sh installs them")


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


# ---------------------------------------------------------------------------
# private services
# ---------------------------------------------------------------------------


class PrivatePg:
    """A PostgreSQL of this run alone, as tests/cluster.rs makes it: initdb into
    a temp dir under /tmp, trust auth, loopback, a free port; as user postgres
    (runuser) when we are root, since initdb and pg_ctl refuse root."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.bin = pg_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="hubcast-chaos-pg-", dir="/tmp"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = pick_port(run.port_rng)
        self.frozen: list[int] = []
        self.up = False
        self.restarts = 0

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def logfile(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def tool(self, name: str, *args: str) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return prefix + [str(self.bin / name), *args]

    def pg_ctl(self, action: str, *extra: str) -> list[str]:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        return self.tool("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "-t", "60", *extra, action)

    async def init(self) -> None:
        await run_tool(
            self.tool("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"),
            180,
            "initdb",
        )

    async def start(self) -> None:
        await run_tool(self.pg_ctl("start"), 90, "pg_ctl start")
        self.up = True

    async def stop(self, mode: str) -> None:
        self.up = False
        await run_tool(self.pg_ctl("stop", "-m", mode), 90, f"pg_ctl stop -m {mode}")

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def freeze(self) -> int:
        """SIGSTOPs the postmaster (first, so it forks no more) and every child."""
        pm = self.postmaster_pid()
        if pm is None:
            raise HarnessError("no postmaster.pid to freeze")
        os.kill(pm, signal.SIGSTOP)
        self.frozen = [pm]
        for child in children_of(pm):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                self.frozen.append(child)
        return len(self.frozen)

    def thaw(self) -> None:
        for pid in reversed(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def cleanup(self) -> None:
        self.thaw()
        if self.data.exists():
            with contextlib.suppress(Exception):
                subprocess.run(self.pg_ctl("stop", "-m", "immediate"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60, cwd="/tmp")
        pm = self.postmaster_pid()
        if pm is not None and Path(f"/proc/{pm}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pm, signal.SIGKILL)


class PrivateNats:
    """A nats-server of this run alone, on a free loopback port."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        bin_ = find_binary("nats-server", ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"])
        if bin_ is None:
            raise HarnessError("nats-server is not installed (scripts/services.sh installs it)")
        self.bin = bin_
        self.port = pick_port(run.port_rng)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.up = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        logf = open(self.run.workdir / f"nats-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [self.bin, "-a", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
        logf.close()
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"private nats-server did not start: {tail(self.run.workdir / f'nats-{self.starts}.log')}")
            await asyncio.sleep(0.05)
        self.up = True

    async def stop(self, sig: int) -> None:
        self.up = False
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        deadline = time.monotonic() + 20
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
            await asyncio.sleep(0.05)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(10)


# ---------------------------------------------------------------------------
# hubcast nodes
# ---------------------------------------------------------------------------

NODE_CONFIG = """\
# written by bench/chaos/chaos.py
[postgres]
schema = "{schema}"
pool_size = 8
timeout_ms = 2000

[nats]
subject_prefix = "{prefix}"

[hub]
reconcile_ms = 1000
# A small tail and queue, so a stalled subscriber is cut as a slow consumer
# (4009) within seconds; the queue stays larger than the tail, as resumes
# served from the tail need.
tail = 64

[limits]
outbound_queue = 192

[retention]
# Keep everything: the final check reads each room's whole log.
max_events = 0
max_age_secs = 0

[heartbeat]
interval_ms = 5000
stale_ms = 30000

[rate_limits]
# Every client of the soak connects from 127.0.0.1; reconnect storms after a
# node is killed must not be refused by the per-address connect limit.
connects_per_ip_per_minute = 100000
messages_per_session_per_second = 5000

[[namespaces]]
prefix = "batch:"
batch_ms = 10
batch_max = 16
"""


class Node:
    def __init__(self, run: "Run", index: int) -> None:
        self.run = run
        self.index = index
        self.name = "ABCDEFGHIJ"[index]
        self.port = pick_port(run.port_rng)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.up = False
        self.config = run.workdir / "hubcast.toml"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def logfile(self, start: int | None = None) -> Path:
        return self.run.workdir / f"node-{self.name}-{start or self.starts}.log"

    def spawn(self) -> None:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCAST_")}
        env.setdefault("RUST_LOG", "hubcast=info")
        logf = open(self.logfile(), "wb")
        self.proc = subprocess.Popen(
            [
                self.run.args.hubcast_bin, "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--store", self.run.pg.url,
                "--bus", self.run.nats.url,
                "--config", str(self.config),
            ],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
        )
        logf.close()

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"{self.http}/readyz")
                    if r.status_code == 200:
                        return True
                await asyncio.sleep(0.1)
        return False

    async def start(self, timeout: float = 60.0) -> float:
        """Starts the node and waits until /readyz answers 200. Returns the
        seconds it took. A node that does not get ready is a finding."""
        t = time.monotonic()
        for attempt in range(3):
            self.spawn()
            if await self.wait_ready(timeout):
                self.up = True
                return time.monotonic() - t
            assert self.proc is not None
            if self.proc.poll() is None:
                self.run.violation("node_not_ready", node=self.name, start=self.starts,
                                   detail=f"/readyz not 200 within {timeout:.0f}s", log_tail=tail(self.logfile()))
                # Leave it running: it may still recover; clients just skip it.
                self.up = True
                return time.monotonic() - t
            self.run.note("node_start_failed", node=self.name, start=self.starts, attempt=attempt,
                          log_tail=tail(self.logfile(), 10))
            await asyncio.sleep(1.0)
        raise HarnessError(f"node {self.name} would not start: {tail(self.logfile())}")

    async def stop(self, sig: int, timeout: float) -> tuple[bool, float]:
        """Sends `sig` and waits for the exit. Returns (exited in time, seconds)."""
        await self.scrape_slow_consumers()
        self.up = False
        t = time.monotonic()
        if self.proc is None:
            return True, 0.0
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                while self.proc.poll() is None:
                    await asyncio.sleep(0.05)
                return False, time.monotonic() - t
            await asyncio.sleep(0.05)
        return True, time.monotonic() - t

    async def scrape_slow_consumers(self) -> None:
        """Adds this incarnation's slow-consumer cuts (metric) to the run's
        total; called before every stop and at the end."""
        if not self.alive():
            return
        with contextlib.suppress(httpx.HTTPError, ValueError):
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
                r = await client.get(f"{self.http}/metrics")
                for line in r.text.splitlines():
                    if line.startswith('hubcast_connections_closed_total{reason="slow_consumer"}'):
                        self.run.slow_consumer_cuts += int(float(line.split()[-1]))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(10)


# ---------------------------------------------------------------------------
# publishers
# ---------------------------------------------------------------------------


class Ack:
    __slots__ = ("room", "seq", "key", "via", "epoch", "status", "node", "t")

    def __init__(self, room: str, seq: int, key: str, via: str, epoch: str | None, status: int, node: str) -> None:
        self.room, self.seq, self.key, self.via, self.epoch, self.status, self.node = room, seq, key, via, epoch, status, node
        self.t = now()


def make_data(rng: random.Random, key: str, src: str, n: int) -> dict[str, Any]:
    pad_len = rng.randrange(0, 600)
    pad = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 é→😀\"\\") for _ in range(pad_len))
    return {"k": key, "src": src, "n": n, "pad": pad}


class HttpPublisher:
    """POST /v1/rooms/{room}/events with an Idempotency-Key; every failure is
    retried with the same key (to any live node) until acknowledged."""

    def __init__(self, run: "Run", index: int, name: str | None = None) -> None:
        self.run = run
        self.name = name or f"h{index}"
        self.rng = random.Random(run.args.seed * 1000 + 100 + index)
        self.home = run.nodes[index % len(run.nodes)]
        self.sent = 0
        self.acked = 0
        self.retries = 0
        self.duplicates = 0
        self.abandoned = 0
        self.statuses: collections.Counter[str] = collections.Counter()

    async def publish_one(self, client: httpx.AsyncClient, room: str, key: str, data: dict[str, Any]) -> None:
        self.run.attempted[key] = room
        first = time.monotonic()
        attempt = 0
        node = self.run.pick_node(self.rng, prefer=self.home)
        while True:
            if attempt > 0:
                self.retries += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + self.rng.random()))
                node = self.run.pick_node(self.rng, prefer=None)
            status: int | None = None
            try:
                r = await client.post(f"{node.http}/v1/rooms/{room}/events", json={"data": data},
                                      headers={"Idempotency-Key": key})
                status = r.status_code
                self.statuses[str(status)] += 1
            except httpx.HTTPError as err:
                self.statuses[type(err).__name__] += 1
            if status in (200, 201):
                body = r.json()
                if status == 200:
                    self.duplicates += 1
                    if attempt == 0:
                        self.run.violation("duplicate_on_first_attempt", key=key, room=room, body=body)
                seq = body.get("seq")
                if body.get("room") != room or not isinstance(seq, int):
                    self.run.violation("bad_receipt", key=key, room=room, body=body)
                    return
                self.run.record_ack(Ack(room, seq, key, "http", body.get("epoch"), status, node.name))
                self.acked += 1
                return
            if status is not None and status not in (429, 500, 502, 503, 504):
                self.run.violation("unexpected_http_status", key=key, room=room, status=status, body=r.text[:500])
                return
            if status == 500:
                self.run.note("http_500_on_publish", key=key, room=room, node=node.name, body=r.text[:300])
            attempt += 1
            if time.monotonic() - first > self.run.args.publish_give_up:
                self.abandoned += 1
                self.run.note("publish_abandoned", key=key, room=room, via="http", attempts=attempt)
                return

    async def main(self) -> None:
        interval = 1.0 / self.run.args.rate
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), trust_env=False,
                                     limits=httpx.Limits(max_connections=4)) as client:
            n = 0
            while not self.run.stop_publishing.is_set():
                n += 1
                key = f"{self.name}-{n}"
                room = self.rng.choice(self.run.rooms)
                self.sent += 1
                await self.publish_one(client, room, key, make_data(self.rng, key, self.name, n))
                await asyncio.sleep(interval * (0.5 + self.rng.random()))


class WsPublisher:
    """`publish` messages over /v1/ws with ids; a window of them in flight; on
    a disconnect it reconnects to a random live node and resends every
    unacknowledged one with the same id."""

    WINDOW = 4

    def __init__(self, run: "Run", index: int) -> None:
        self.run = run
        self.name = f"w{index}"
        self.rng = random.Random(run.args.seed * 1000 + 200 + index)
        self.home = run.nodes[(index + 1) % len(run.nodes)]
        self.pending: collections.OrderedDict[str, tuple[str, dict[str, Any], float]] = collections.OrderedDict()
        self.acked_seq: dict[str, tuple[str, int]] = {}
        self.n = 0
        self.sent = 0
        self.acked = 0
        self.resent = 0
        self.connects = 0
        self.closes: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.abandoned = 0

    def frame(self, pid: str) -> str:
        room, data, _ = self.pending[pid]
        return json.dumps({"type": "publish", "id": pid, "room": room, "data": data})

    async def sender(self, ws: Any) -> None:
        interval = 1.0 / self.run.args.rate
        try:
            while not self.run.stop_publishing.is_set():
                if len(self.pending) < self.WINDOW:
                    self.n += 1
                    pid = f"{self.name}-{self.n}"
                    room = self.rng.choice(self.run.rooms)
                    self.pending[pid] = (room, make_data(self.rng, pid, self.name, self.n), time.monotonic())
                    self.run.attempted[pid] = room
                    self.sent += 1
                    await ws.send(self.frame(pid))
                await asyncio.sleep(interval * (0.5 + self.rng.random()))
            # Publishing is over: once every publish is answered, hang up.
            while self.pending:
                await asyncio.sleep(0.1)
            await ws.close()
        except ConnectionClosed:
            pass

    async def resend_later(self, ws: Any, pid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if pid in self.pending:
            self.resent += 1
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self.frame(pid))

    async def watchdog(self, ws: Any) -> None:
        """A publish with no answer for long is resent on a new connection."""
        while True:
            await asyncio.sleep(1.0)
            if self.pending:
                oldest = min(t for _, _, t in self.pending.values())
                if time.monotonic() - oldest > 30:
                    self.run.note("ws_publish_no_answer_30s", publisher=self.name, pending=len(self.pending))
                    for pid in self.pending:
                        r, d, _ = self.pending[pid]
                        self.pending[pid] = (r, d, time.monotonic())
                    with contextlib.suppress(ConnectionClosed):
                        await ws.close()
                    return

    def handle(self, msg: dict[str, Any], ws: Any, node: Node, tasks: set[asyncio.Task[None]]) -> None:
        kind = msg.get("type")
        if kind == "ack":
            pid, room, seq = msg.get("id"), msg.get("room"), msg.get("seq")
            if pid in self.pending:
                expect_room = self.pending[pid][0]
                del self.pending[pid]
                if room != expect_room or not isinstance(seq, int):
                    self.run.violation("bad_ack", publisher=self.name, msg=msg, room=expect_room)
                    return
                self.acked_seq[pid] = (room, seq)
                self.run.record_ack(Ack(room, seq, pid, "ws", None, 0, node.name))
                self.acked += 1
            elif pid in self.acked_seq:
                # A resend answered after the first ack: must be the same receipt.
                if self.acked_seq[pid] != (room, seq):
                    self.run.violation("ack_changed", publisher=self.name, id=pid, first=self.acked_seq[pid], again=[room, seq])
            else:
                self.run.violation("unknown_ack", publisher=self.name, msg=msg)
        elif kind == "error":
            code = msg.get("code")
            self.errors[str(code)] += 1
            pid = msg.get("id")
            if code in ("store_unavailable", "shutting_down", "rate_limited", "over_capacity") and pid in self.pending:
                task = asyncio.create_task(self.resend_later(ws, pid, 0.2 + self.rng.random()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif pid in self.acked_seq:
                pass
            else:
                self.run.violation("unexpected_publish_error", publisher=self.name, msg=msg)
        elif kind in ("welcome", "pong"):
            pass
        else:
            self.run.note("ws_publisher_unexpected_frame", publisher=self.name, msg=msg)

    async def main(self) -> None:
        node: Node | None = self.home
        backoff = 0.1
        stop_deadline: float | None = None
        while True:
            if self.run.stop_publishing.is_set():
                if not self.pending:
                    return
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.run.args.publish_give_up
                elif time.monotonic() > stop_deadline:
                    self.abandoned += len(self.pending)
                    self.run.note("publish_abandoned", via="ws", publisher=self.name, ids=list(self.pending)[:20])
                    return
            if node is None:
                node = self.run.pick_node(self.rng)
            tasks: set[asyncio.Task[None]] = set()
            try:
                async with ws_connect(f"{node.ws}/v1/ws", proxy=None, compression=None, open_timeout=10,
                                      ping_interval=5, ping_timeout=20, close_timeout=2, max_size=4 * 2**20) as ws:
                    self.connects += 1
                    backoff = 0.1
                    for pid in list(self.pending):
                        self.resent += 1
                        await ws.send(self.frame(pid))
                    for coro in (self.sender(ws), self.watchdog(ws)):
                        task = asyncio.create_task(coro)
                        tasks.add(task)
                    async for raw in ws:
                        self.handle(json.loads(raw), ws, node, tasks)
                        if self.run.stop_publishing.is_set() and not self.pending:
                            await ws.close()
                            return
                    self.closes[str(ws.close_code)] += 1
            except ConnectionClosed as err:
                self.closes[str(err.rcvd.code if err.rcvd else 1006)] += 1
            except (OSError, asyncio.TimeoutError) as err:
                self.closes[type(err).__name__] += 1
            except Exception as err:  # handshake refusals (503, 429) and the like
                self.closes[type(err).__name__] += 1
            finally:
                for task in tasks:
                    task.cancel()
            node = None
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(2.0, backoff * 2)


# ---------------------------------------------------------------------------
# subscribers (the streams that are checked)
# ---------------------------------------------------------------------------


class RoomStream:
    """What one subscriber processed of one room: the start cursor and, in
    order, (ts, digest) of every event processed (seq = start + 1 + index)."""

    __slots__ = ("start", "cursor", "epoch", "ts", "digests", "overlap_dropped")

    def __init__(self) -> None:
        self.start: int | None = None
        self.cursor: int | None = None
        self.epoch: str | None = None
        self.ts = array.array("q")
        self.digests = array.array("Q")
        self.overlap_dropped = 0


class Subscriber:
    def __init__(self, run: "Run", name: str, home: Node, rooms: list[str], mode: str, start: str,
                 cursors: dict[str, tuple[str | None, int]] | None = None) -> None:
        """mode: "multi" (/v1/ws, one `subscribe` per room) or "room"
        (/v1/rooms/{room}/ws?cursor=&epoch=, one room). start: "zero"
        (cursor 0), "cursor" (the given cursors) or "live" (no cursor: from
        the head the first `subscribed` reports)."""
        self.run = run
        self.name = name
        self.home = home
        self.rooms = rooms
        self.mode = mode
        self.start_kind = start
        self.rng = random.Random(f"{run.args.seed}-{name}")
        self.streams = {room: RoomStream() for room in rooms}
        for room in rooms:
            if start == "zero":
                self.streams[room].start = 0
                self.streams[room].cursor = 0
            elif start == "cursor":
                assert cursors is not None
                epoch, seq = cursors[room]
                self.streams[room].start = seq
                self.streams[room].cursor = seq
                self.streams[room].epoch = epoch
        self.connects = 0
        self.closes: collections.Counter[str] = collections.Counter()
        self.nodes_used: collections.Counter[str] = collections.Counter()
        self.stall_until = 0.0
        self.stalls = 0
        self.stall_cuts = 0
        self.stalled_this_conn = False
        self.received = 0
        self.gap_heals = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=60)
        self.stop = False
        self.connected_to: str | None = None

    # -- cursor rules -------------------------------------------------------

    def violation(self, kind: str, **detail: Any) -> None:
        self.run.violation(kind, subscriber=self.name, node=self.connected_to, conn=self.connects,
                           recent_frames=list(self.recent)[-15:], **detail)

    def subscribe_msg(self, room: str) -> dict[str, Any]:
        s = self.streams[room]
        msg: dict[str, Any] = {"type": "subscribe", "room": room}
        if s.cursor is not None:
            msg["cursor"] = s.cursor
            if s.epoch is not None:
                msg["epoch"] = s.epoch
        return msg

    def process(self, room: str, seq: Any, ts: Any, data: Any, frame: str, active: dict[str, str]) -> bool:
        """Applies one event; False if the connection must be dropped (a gap)."""
        s = self.streams.get(room)
        if s is None:
            self.violation("event_for_unsubscribed_room", room=room, seq=seq)
            return True
        if active.get(room) != "subscribed":
            self.violation("event_before_subscribed", room=room, seq=seq, frame=frame)
        if not isinstance(seq, int) or s.cursor is None:
            self.violation("bad_event", room=room, seq=seq, cursor=s.cursor)
            return True
        self.received += 1
        if seq == s.cursor + 1:
            s.cursor = seq
            s.ts.append(int(ts) if isinstance(ts, int) else -1)
            s.digests.append(digest(data))
            return True
        if seq <= s.cursor:
            if frame == "batch":
                # docs/protocol.md, Batching: a batch may begin before the
                # cursor after a resume; the client drops those events.
                s.overlap_dropped += 1
                return True
            self.violation("duplicate_or_reordered_event", room=room, seq=seq, cursor=s.cursor, frame=frame)
            return True
        self.violation("gap", room=room, seq=seq, cursor=s.cursor, missing=seq - s.cursor - 1, frame=frame)
        # Resume from the cursor on a new connection, so the check goes on.
        self.gap_heals += 1
        return False

    def handle(self, msg: dict[str, Any], active: dict[str, str], pending_resubs: list[str]) -> bool:
        kind = msg.get("type")
        room = msg.get("room")
        if kind == "event":
            return self.process(room, msg.get("seq"), msg.get("ts"), msg.get("data"), "event", active)
        if kind == "batch":
            for ev in msg.get("events") or []:
                if not self.process(room, ev.get("seq"), ev.get("ts"), ev.get("data"), "batch", active):
                    return False
            return True
        if kind == "subscribed":
            s = self.streams.get(room)
            if s is None:
                self.violation("subscribed_unknown_room", room=room)
                return True
            epoch, head = msg.get("epoch"), msg.get("head")
            if s.epoch is None:
                s.epoch = epoch
            elif s.epoch != epoch:
                self.violation("epoch_changed", room=room, before=s.epoch, after=epoch)
            if s.start is None:  # "live": starts after the head the server reports
                s.start = head
                s.cursor = head
            elif isinstance(head, int) and s.cursor is not None and head < s.cursor:
                self.violation("head_behind_cursor", room=room, head=head, cursor=s.cursor)
            active[room] = "subscribed"
            return True
        if kind == "caught_up":
            s = self.streams.get(room)
            if s is not None and msg.get("seq") != s.cursor:
                self.violation("caught_up_mismatch", room=room, caught_up=msg.get("seq"), cursor=s.cursor)
            return True
        if kind == "reset":
            self.violation("unexpected_reset", room=room, msg=msg, cursor=self.streams[room].cursor if room in self.streams else None)
            return True
        if kind == "error":
            code = msg.get("code")
            if code in ("store_unavailable", "shutting_down") and room in self.streams:
                active[room] = "retry"
                pending_resubs.append(room)
                return True
            self.violation("unexpected_error_frame", msg=msg)
            return True
        if kind in ("welcome", "pong", "presence", "join", "leave"):
            return True
        self.run.note("subscriber_unexpected_frame", subscriber=self.name, msg=msg)
        return True

    # -- connection loop ----------------------------------------------------

    async def open_socket(self, node: Node) -> socket.socket:
        # A small receive buffer: a subscriber that stops reading fills the
        # server's outbound queue within seconds (slow consumer, 4009).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port)), 5)
        except BaseException:
            sock.close()
            raise
        return sock

    def url(self, node: Node) -> str:
        if self.mode == "room":
            room = self.rooms[0]
            s = self.streams[room]
            query = []
            if s.cursor is not None:
                query.append(f"cursor={s.cursor}")
                if s.epoch is not None:
                    query.append(f"epoch={s.epoch}")
            return f"{node.ws}/v1/rooms/{room}/ws" + ("?" + "&".join(query) if query else "")
        return f"{node.ws}/v1/ws"

    async def connection(self, node: Node) -> None:
        sock = await self.open_socket(node)
        active: dict[str, str] = {}
        pending_resubs: list[str] = []
        resub_at = 0.0
        self.stalled_this_conn = False
        async with ws_connect(self.url(node), sock=sock, proxy=None, compression=None, open_timeout=10,
                              ping_interval=5, ping_timeout=None, close_timeout=2, max_queue=4,
                              max_size=8 * 2**20) as ws:
            self.connects += 1
            self.connected_to = node.name
            self.nodes_used[node.name] += 1
            if self.mode == "multi":
                for room in self.rooms:
                    active[room] = "pending"
                    await ws.send(json.dumps(self.subscribe_msg(room)))
            else:
                active[self.rooms[0]] = "pending"
            while not self.stop:
                if time.monotonic() < self.stall_until:
                    # The stall: read nothing (the library stops reading the
                    # socket once its small queue is full).
                    self.stalled_this_conn = True
                    await asyncio.sleep(min(0.2, self.stall_until - time.monotonic()))
                    continue
                if pending_resubs and time.monotonic() >= resub_at and self.mode == "multi":
                    for room in pending_resubs:
                        active[room] = "pending"
                        await ws.send(json.dumps(self.subscribe_msg(room)))
                    pending_resubs.clear()
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                self.recent.append(raw[:300] if isinstance(raw, str) else repr(raw[:100]))
                msg = json.loads(raw)
                if not self.handle(msg, active, pending_resubs):
                    await ws.close()
                    return
                if pending_resubs and resub_at < time.monotonic():
                    resub_at = time.monotonic() + 0.3 + self.rng.random() * 0.5
                    if self.mode == "room":
                        await ws.close()  # a room URL resubscribes by reconnecting
                        return

    async def main(self) -> None:
        node: Node | None = self.home
        backoff = 0.1
        while not self.stop:
            if node is None:
                node = self.run.pick_node(self.rng)
            try:
                await self.connection(node)
                if self.stop:
                    return
                self.closes["client_closed"] += 1
            except ConnectionClosed as err:
                code = err.rcvd.code if err.rcvd else 1006
                self.closes[str(code)] += 1
                if self.stalled_this_conn:
                    self.stall_cuts += 1
                backoff = 0.1
            except (OSError, asyncio.TimeoutError) as err:
                self.closes[type(err).__name__] += 1
            except Exception as err:  # handshake refusals (503, 429) and the like
                self.closes[type(err).__name__] += 1
            self.connected_to = None
            node = None
            if self.stop:
                return
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(2.0, backoff * 2)

    def events_checked(self) -> int:
        return sum(len(s.digests) for s in self.streams.values())


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.fault_rng = random.Random(args.seed)
        self.port_rng = random.Random()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hubcast-chaos-{args.seed}-", dir=args.workdir_root))
        self.pg: PrivatePg = None  # type: ignore[assignment]
        self.nats: PrivateNats = None  # type: ignore[assignment]
        self.nodes: list[Node] = []
        self.rooms = [f"chaos:r{i}" for i in range(args.rooms - args.batch_rooms)] + \
                     [f"batch:r{i}" for i in range(args.batch_rooms)]
        self.violations: list[dict[str, Any]] = []
        self.violation_counts: collections.Counter[str] = collections.Counter()
        self.notes: list[dict[str, Any]] = []
        self.note_counts: collections.Counter[str] = collections.Counter()
        self.faults: list[dict[str, Any]] = []
        self.acks: list[Ack] = []
        self.attempted: dict[str, str] = {}
        self.http_pubs: list[HttpPublisher] = []
        self.ws_pubs: list[WsPublisher] = []
        self.subscribers: list[Subscriber] = []
        self.stop_publishing = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.stall_tasks: set[asyncio.Task[None]] = set()
        self.timeline = open(self.workdir / "timeline.jsonl", "w")
        self.current_fault = "-"
        self.cleaned = False
        self.t_start = 0.0
        self.late_rng = random.Random(args.seed + 7)
        self.pub_tasks: list[asyncio.Task[None]] = []
        self.flood_pub: HttpPublisher | None = None
        self.slow_consumer_cuts = 0  # from the nodes' metrics, summed over restarts

    # -- recording ----------------------------------------------------------

    def _write(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.timeline.write(json.dumps(record, default=str) + "\n")
            self.timeline.flush()

    def violation(self, kind: str, **detail: Any) -> None:
        self.violation_counts[kind] += 1
        record = {"t": round(now() - self.t_start, 2), "kind": kind,
                  "during_fault": self.current_fault, **detail}
        if len(self.violations) < 500:
            self.violations.append(record)
        self._write({"violation": record})
        if self.violation_counts[kind] <= 5:
            short = {k: v for k, v in detail.items() if k not in ("recent_frames", "log_tail")}
            log(f"VIOLATION {kind}: {json.dumps(short, default=str)[:600]}")

    def note(self, kind: str, **detail: Any) -> None:
        self.note_counts[kind] += 1
        record = {"t": round(now() - self.t_start, 2), "kind": kind, **detail}
        if len(self.notes) < 300:
            self.notes.append(record)
        self._write({"note": record})

    def record_ack(self, ack: Ack) -> None:
        self.acks.append(ack)

    def pick_node(self, rng: random.Random, prefer: Node | None = None) -> Node:
        if prefer is not None and prefer.up:
            return prefer
        live = [n for n in self.nodes if n.up]
        return rng.choice(live or self.nodes)

    # -- setup --------------------------------------------------------------

    async def setup(self) -> None:
        log(f"seed {self.args.seed}, duration {self.args.duration}s, workdir {self.workdir}")
        self.pg = PrivatePg(self)
        self.nats = PrivateNats(self)
        await self.pg.init()
        await self.pg.start()
        await self.nats.start()
        log(f"private PostgreSQL on 127.0.0.1:{self.pg.port} ({self.pg.dir}), private NATS on 127.0.0.1:{self.nats.port}")
        schema = "chaos"
        (self.workdir / "hubcast.toml").write_text(NODE_CONFIG.format(schema=schema, prefix=f"chaos{self.args.seed}"))
        self.nodes = [Node(self, i) for i in range(self.args.nodes)]
        # The first node runs the migrations alone; the others start together.
        await self.nodes[0].start()
        await asyncio.gather(*(n.start() for n in self.nodes[1:]))
        log("nodes ready: " + ", ".join(f"{n.name}=127.0.0.1:{n.port}" for n in self.nodes))

        per_node = self.args.subscribers_per_node
        for node in self.nodes:
            for j in range(per_node):
                if j == per_node - 1 and per_node > 1:
                    # One room-URL subscriber per node (one room each).
                    room = self.rooms[(node.index * per_node + j) % len(self.rooms)]
                    sub = Subscriber(self, f"s{node.name}{j}-room", node, [room], "room", "zero")
                else:
                    name = f"s{node.name}{j}"
                    sub = Subscriber(self, name, node, list(self.rooms) + [f"flood:{name}"], "multi", "zero")
                self.subscribers.append(sub)
        self.http_pubs = [HttpPublisher(self, i) for i in range(self.args.http_publishers)]
        self.ws_pubs = [WsPublisher(self, i) for i in range(self.args.ws_publishers)]
        self.flood_pub = HttpPublisher(self, 99, name="flood")

    def all_rooms(self) -> list[str]:
        rooms = list(self.rooms)
        for sub in self.subscribers:
            rooms += [r for r in sub.rooms if r not in rooms]
        return rooms

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    async def start_clients(self) -> None:
        for sub in self.subscribers:
            self.spawn(sub.main())
        # Wait until every subscriber holds its first subscription (its
        # epoch), so the first events are seen by all.
        deadline = time.monotonic() + 60
        while any(s.epoch is None for sub in self.subscribers for s in sub.streams.values()):
            if time.monotonic() > deadline:
                raise HarnessError("subscribers did not get their first subscriptions within 60s")
            await asyncio.sleep(0.1)
        for pub in self.http_pubs + self.ws_pubs:
            self.pub_tasks.append(self.spawn(pub.main()))

    async def add_late_subscriber(self, index: int) -> None:
        """A subscriber that joins mid-run: from a cursor inside the log taken
        from the history route, or live from the head."""
        node = self.nodes[index % len(self.nodes)]
        start = "cursor" if index % 2 == 0 else "live"
        name = f"late{index}-{start}"
        cursors: dict[str, tuple[str | None, int]] = {}
        if start == "cursor":
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                for room in self.rooms + [f"flood:{name}"]:
                    body = await self.get_json(client, f"/v1/rooms/{room}/events?after=0&limit=1")
                    head = body["head"]
                    # Sometimes within a hub's tail (64), sometimes far back (a store replay).
                    back = self.late_rng.choice([self.late_rng.randrange(0, 64), self.late_rng.randrange(0, head + 1)])
                    cursors[room] = (body["epoch"], max(0, head - back))
        sub = Subscriber(self, name, node, list(self.rooms) + [f"flood:{name}"], "multi", start, cursors)
        self.subscribers.append(sub)
        self.spawn(sub.main())
        log(f"late subscriber {sub.name} joined on node {node.name}" +
            (f" from cursors {{{', '.join(f'{r}: {c[1]}' for r, c in cursors.items())}}}" if cursors else ""))

    async def get_json(self, client: httpx.AsyncClient, path: str, attempts: int = 60) -> Any:
        last: Any = None
        for _ in range(attempts):
            node = self.pick_node(random.Random())
            try:
                r = await client.get(f"{node.http}{path}")
                if r.status_code == 200:
                    return r.json()
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as err:
                last = repr(err)
            await asyncio.sleep(0.5)
        raise HarnessError(f"GET {path} failed: {last}")

    # -- faults -------------------------------------------------------------

    def fault_plan(self) -> list[str]:
        """Every kind once (shuffled), then weighted picks."""
        first = list(FAULT_KINDS)
        self.fault_rng.shuffle(first)
        return first

    def next_fault(self, plan: list[str]) -> str:
        if plan:
            return plan.pop(0)
        weights = {"kill9_node": 3, "sigterm_node": 2, "restart_nats": 2, "restart_pg_fast": 1,
                   "restart_pg_immediate": 2, "freeze_pg": 2, "stall_client": 3}
        kinds = list(weights)
        return self.fault_rng.choices(kinds, weights=[weights[k] for k in kinds])[0]

    async def inject(self, kind: str) -> dict[str, Any]:
        rng = self.fault_rng
        rec: dict[str, Any] = {"kind": kind}
        if kind in ("kill9_node", "sigterm_node"):
            node = rng.choice(self.nodes)
            down = round(rng.uniform(0.2, 3.0), 2)
            rec.update(node=node.name, down_s=down)
            if kind == "kill9_node":
                await node.stop(signal.SIGKILL, 10)
            else:
                exited, took = await node.stop(signal.SIGTERM, 30)
                rec["exit_s"] = round(took, 2)
                if not exited:
                    self.violation("node_ignored_sigterm", node=node.name, detail="no exit within 30s of SIGTERM",
                                   log_tail=tail(node.logfile()))
                rc = node.proc.returncode if node.proc else None
                rec["exit_code"] = rc
            await asyncio.sleep(down)
            rec["ready_s"] = round(await node.start(), 2)
        elif kind == "restart_nats":
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            down = round(rng.uniform(0.2, 3.0), 2)
            rec.update(signal=sig.name, down_s=down)
            await self.nats.stop(sig)
            await asyncio.sleep(down)
            await self.nats.start()
        elif kind in ("restart_pg_fast", "restart_pg_immediate"):
            mode = "fast" if kind == "restart_pg_fast" else "immediate"
            down = round(rng.uniform(0.0, 2.0), 2)
            rec.update(down_s=down)
            t = time.monotonic()
            await self.pg.stop(mode)
            rec["stop_s"] = round(time.monotonic() - t, 2)
            await asyncio.sleep(down)
            await self.pg.start()
            self.pg.restarts += 1
        elif kind == "freeze_pg":
            secs = round(rng.uniform(1.0, 6.0), 2)
            rec["frozen_s"] = secs
            try:
                rec["processes"] = self.pg.freeze()
                await asyncio.sleep(secs)
            finally:
                self.pg.thaw()
        elif kind == "stall_client":
            # A subscriber stops reading while a burst of events arrives in a
            # room only it follows: the server's socket buffer (up to 4 MiB on
            # loopback) fills, then its outbound queue, and it is cut (4009).
            candidates = [s for s in self.subscribers if s.mode == "multi" and s.stall_until < time.monotonic()]
            sub = rng.choice(candidates or [s for s in self.subscribers if s.mode == "multi"])
            extra = round(rng.uniform(1.0, 4.0), 2)
            rec.update(subscriber=sub.name, after_flood_s=extra, flood_events=self.args.stall_flood_events)
            sub.stalls += 1
            sub.stall_until = time.monotonic() + 120
            task = asyncio.create_task(self.flood_and_release(sub, extra))
            self.stall_tasks.add(task)
            task.add_done_callback(self.stall_tasks.discard)
            # Runs on while the next faults are injected.
        return rec

    async def flood_and_release(self, sub: "Subscriber", extra: float) -> None:
        room = next(r for r in sub.rooms if r.startswith("flood:"))
        assert self.flood_pub is not None
        pub = self.flood_pub
        n0 = sub.stalls
        pad = "f" * self.args.stall_flood_bytes
        t = time.monotonic()
        try:
            sem = asyncio.Semaphore(16)
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), trust_env=False,
                                         limits=httpx.Limits(max_connections=16)) as client:
                async def one(i: int) -> None:
                    async with sem:
                        key = f"flood-{sub.name}-{n0}-{i}"
                        pub.sent += 1
                        await pub.publish_one(client, room, key, {"k": key, "src": "flood", "n": i, "pad": pad})
                await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(self.args.stall_flood_events))), 90)
        except asyncio.TimeoutError:
            self.note("stall_flood_timeout", subscriber=sub.name)
        finally:
            sub.stall_until = time.monotonic() + extra
            self._write({"stall_flood_done": {"subscriber": sub.name, "t": round(now() - self.t_start, 2),
                                              "flood_s": round(time.monotonic() - t, 2)}})

    async def fault_loop(self, until: float) -> None:
        plan = self.fault_plan()
        while True:
            gap = self.fault_rng.uniform(self.args.fault_gap_min, self.args.fault_gap_max)
            if time.monotonic() + gap >= until:
                await asyncio.sleep(max(0.0, until - time.monotonic()))
                return
            await asyncio.sleep(gap)
            kind = self.next_fault(plan)
            self.current_fault = kind
            t = now() - self.t_start
            try:
                rec = await asyncio.wait_for(self.inject(kind), 180)
            except asyncio.TimeoutError:
                raise HarnessError(f"fault {kind} did not finish within 180s")
            rec["t"] = round(t, 2)
            rec["took_s"] = round(now() - self.t_start - t, 2)
            self.faults.append(rec)
            self._write({"fault": rec})
            log("fault " + " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("t",)))
            self.current_fault = "-"

    # -- progress -----------------------------------------------------------

    def progress_line(self) -> str:
        http = sum(p.acked for p in self.http_pubs)
        ws = sum(p.acked for p in self.ws_pubs)
        events = sum(s.events_checked() for s in self.subscribers)
        reconnects = sum(max(0, s.connects - 1) for s in self.subscribers)
        cut = sum(s.stall_cuts for s in self.subscribers)
        up = sum(1 for n in self.nodes if n.up)
        return (f"faults={len(self.faults)} acked http={http} ws={ws} | sub events={events} "
                f"reconnects={reconnects} stall-cuts={cut} | nodes up={up}/{len(self.nodes)} "
                f"pg={'frozen' if self.pg.frozen else ('up' if self.pg.up else 'down')} "
                f"nats={'up' if self.nats.up else 'down'} | violations={sum(self.violation_counts.values())}")

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(self.args.progress_every)
            # A node that died on its own (not by a fault) is a finding.
            for node in self.nodes:
                if node.up and not node.alive():
                    rc = node.proc.returncode if node.proc else None
                    self.violation("node_crashed", node=node.name, exit_code=rc, log_tail=tail(node.logfile()))
                    node.up = False
            log(self.progress_line())

    # -- the end ------------------------------------------------------------

    async def settle_services(self) -> None:
        """After the last fault: everything up and ready."""
        self.pg.thaw()
        if not self.pg.up:
            await self.pg.start()
        if not self.nats.up:
            await self.nats.start()
        for node in self.nodes:
            if not node.alive():
                await node.start()
        for node in self.nodes:
            if not await node.wait_ready(60):
                self.violation("node_not_ready_at_end", node=node.name, log_tail=tail(node.logfile()))
        # Stalls end with their floods; let them finish before the quiet.
        deadline = time.monotonic() + 120
        while self.stall_tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for sub in self.subscribers:
            sub.stall_until = min(sub.stall_until, time.monotonic())

    async def wait_quiet(self) -> dict[str, int]:
        """Publishers finish (every in-flight publish acknowledged), then every
        subscriber reaches the store's head of every room it follows."""
        self.stop_publishing.set()
        pub_tasks = self.pub_tasks
        deadline = time.monotonic() + self.args.publish_give_up + 30
        while any(not t.done() for t in pub_tasks):
            if time.monotonic() > deadline:
                self.note("publishers_still_running_at_end")
                for t in pub_tasks:
                    t.cancel()
                break
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            heads = {}
            for room in self.all_rooms():
                body = await self.get_json(client, f"/v1/rooms/{room}")
                heads[room] = int(body["head"])
        log(f"publishers done; heads: {heads}; waiting for subscribers to reach them")
        deadline = time.monotonic() + self.args.quiet_timeout
        while True:
            behind = {
                sub.name: {r: s.cursor for r, s in sub.streams.items() if s.cursor != heads[r]}
                for sub in self.subscribers
            }
            behind = {k: v for k, v in behind.items() if v}
            if not behind:
                break
            if time.monotonic() > deadline:
                for name, rooms in behind.items():
                    sub = next(s for s in self.subscribers if s.name == name)
                    self.violation("subscriber_not_caught_up", subscriber=name, cursors=rooms,
                                   heads={r: heads[r] for r in rooms}, connected_to=sub.connected_to,
                                   stalled=sub.stall_until > time.monotonic(), recent_frames=list(sub.recent)[-10:])
                break
            await asyncio.sleep(0.2)
        return heads

    async def read_logs(self) -> dict[str, dict[str, Any]]:
        logs: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            for room in self.all_rooms():
                after = 0
                # (seq, ts, digest of data, the publisher's key in data.k)
                events: list[tuple[int, int, int, str | None]] = []
                epoch = None
                head = earliest = None
                for _ in range(100000):
                    body = await self.get_json(client, f"/v1/rooms/{room}/events?after={after}&limit=1000")
                    if epoch is None:
                        epoch, earliest = body.get("epoch"), body.get("earliest")
                    elif body.get("epoch") != epoch:
                        self.violation("log_epoch_changed_while_reading", room=room)
                    head = body.get("head")
                    page = body.get("events") or []
                    for e in page:
                        data = e.get("data")
                        k = data.get("k") if isinstance(data, dict) else None
                        events.append((e["seq"], e["ts"], digest(data), k))
                    if not page or page[-1]["seq"] >= head:
                        break
                    after = page[-1]["seq"]
                logs[room] = {"epoch": epoch, "head": head, "earliest": earliest, "events": events}
        return logs

    def check(self, heads: dict[str, int], logs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        stats: dict[str, Any] = {"rooms": {}, "subscribers": {}}
        key_at: dict[str, dict[str, list[int]]] = {}
        for room, lg in logs.items():
            events = lg["events"]
            seqs = [e[0] for e in events]
            if lg["earliest"] != 1:
                self.violation("log_pruned", room=room, earliest=lg["earliest"])
            if seqs != list(range(1, len(seqs) + 1)) or (seqs and seqs[-1] != lg["head"]):
                first_bad = next((i for i, s in enumerate(seqs) if s != i + 1), None)
                self.violation("log_not_gapless", room=room, head=lg["head"], count=len(seqs), first_bad_index=first_bad)
            if lg["head"] != heads[room]:
                self.violation("head_moved_after_quiet", room=room, quiet_head=heads[room], head=lg["head"])
            last_ts = -1
            keys: dict[str, list[int]] = collections.defaultdict(list)
            for seq, ts, _, k in events:
                if ts < last_ts:
                    self.violation("ts_decreased", room=room, seq=seq, ts=ts, before=last_ts)
                last_ts = ts
                if k is None or self.attempted.get(k) != room:
                    self.violation("phantom_event", room=room, seq=seq, key=k)
                else:
                    keys[k].append(seq)
            for k, at in keys.items():
                if len(at) > 1:
                    self.violation("duplicate_append", room=room, key=k, seqs=at)
            key_at[room] = keys
            stats["rooms"][room] = {"head": lg["head"], "events": len(events), "epoch": lg["epoch"]}

        # acknowledged publishes: present exactly once, at the acknowledged seq
        acked_keys: set[str] = set()
        for ack in self.acks:
            acked_keys.add(ack.key)
            lg = logs.get(ack.room)
            at = key_at.get(ack.room, {}).get(ack.key, [])
            if lg is None or not at:
                self.violation("acked_publish_lost", room=ack.room, key=ack.key, seq=ack.seq, via=ack.via,
                               node=ack.node, acked_at=round(ack.t - self.t_start, 2))
            elif at != [ack.seq]:
                self.violation("acked_publish_misplaced", room=ack.room, key=ack.key, acked_seq=ack.seq, log_seqs=at,
                               via=ack.via)
            if ack.epoch is not None and lg is not None and ack.epoch != lg["epoch"]:
                self.violation("receipt_epoch_mismatch", room=ack.room, key=ack.key, receipt=ack.epoch, log=lg["epoch"])
        if len(acked_keys) != len(self.acks):
            self.violation("key_acked_twice", count=len(self.acks) - len(acked_keys))
        committed_unacked = sum(1 for room in key_at for k in key_at[room] if k not in acked_keys)
        stats["committed_but_unacknowledged"] = committed_unacked

        # subscriber streams: exactly the log from where they started
        for sub in self.subscribers:
            per_room = {}
            for room, s in sub.streams.items():
                lg = logs[room]
                events = lg["events"]
                if s.start is None:
                    self.violation("never_subscribed", subscriber=sub.name, room=room)
                    continue
                if s.epoch != lg["epoch"]:
                    self.violation("stream_epoch_mismatch", subscriber=sub.name, room=room, stream=s.epoch, log=lg["epoch"])
                expected = len(events) - s.start
                got = len(s.digests)
                if got != expected:
                    self.violation("stream_length", subscriber=sub.name, room=room, start=s.start, got=got,
                                   expected=expected)
                bad = 0
                for i in range(min(got, expected)):
                    seq, ts, dig, _ = events[s.start + i]
                    if s.digests[i] != dig or s.ts[i] != ts:
                        bad += 1
                        if bad <= 3:
                            self.violation("stream_data_mismatch", subscriber=sub.name, room=room, seq=seq)
                per_room[room] = {"start": s.start, "events": got, "batch_overlap_dropped": s.overlap_dropped}
            stats["subscribers"][sub.name] = per_room
        return stats

    # -- summary ------------------------------------------------------------

    def summary(self, stats: dict[str, Any], elapsed: float) -> dict[str, Any]:
        by_kind = collections.Counter(f["kind"] for f in self.faults)
        result: dict[str, Any] = {
            "seed": self.args.seed,
            "duration_s": self.args.duration,
            "elapsed_s": round(elapsed, 1),
            "nodes": len(self.nodes),
            "rooms": self.rooms,
            "passed": not self.violation_counts,
            "faults_by_kind": {k: by_kind.get(k, 0) for k in FAULT_KINDS},
            "faults": self.faults,
            "publishes": {
                "acked_http": sum(p.acked for p in self.http_pubs),
                "acked_ws": sum(p.acked for p in self.ws_pubs),
                "http_retries": sum(p.retries for p in self.http_pubs),
                "http_duplicate_receipts": sum(p.duplicates for p in self.http_pubs),
                "ws_resends": sum(p.resent for p in self.ws_pubs),
                "acked_flood": self.flood_pub.acked if self.flood_pub else 0,
                "abandoned": sum(p.abandoned for p in self.http_pubs + ([self.flood_pub] if self.flood_pub else []))
                + sum(p.abandoned for p in self.ws_pubs),
                "committed_but_unacknowledged": stats.get("committed_but_unacknowledged"),
                "http_answers": dict(sum((p.statuses for p in self.http_pubs), collections.Counter())),
                "ws_errors": dict(sum((p.errors for p in self.ws_pubs), collections.Counter())),
                "ws_closes": dict(sum((p.closes for p in self.ws_pubs), collections.Counter())),
            },
            "rooms_log": stats.get("rooms"),
            "slow_consumer_cuts_server": self.slow_consumer_cuts,
            "subscribers": {
                sub.name: {
                    "mode": sub.mode,
                    "start": sub.start_kind,
                    "home": sub.home.name,
                    "events_checked": sub.events_checked(),
                    "connects": sub.connects,
                    "nodes_used": dict(sub.nodes_used),
                    "closes": dict(sub.closes),
                    "stalls": sub.stalls,
                    "stall_cuts": sub.stall_cuts,
                    "rooms": stats.get("subscribers", {}).get(sub.name),
                }
                for sub in self.subscribers
            },
            "violation_counts": dict(self.violation_counts),
            "violations": self.violations,
            "note_counts": dict(self.note_counts),
            "notes": self.notes[:100],
            "node_starts": {n.name: n.starts for n in self.nodes},
            "workdir": str(self.workdir),
        }
        return result

    def print_summary(self, result: dict[str, Any]) -> None:
        p = result["publishes"]
        print()
        print(f"== chaos soak: seed {result['seed']}, {result['duration_s']}s of faults, {result['nodes']} nodes, "
              f"{len(result['rooms'])} rooms, {result['elapsed_s']}s in all")
        print()
        print("faults injected")
        for kind, count in result["faults_by_kind"].items():
            print(f"  {kind:<22} {count:>5}")
        print(f"  {'total':<22} {sum(result['faults_by_kind'].values()):>5}")
        print()
        print("publishes")
        print(f"  acknowledged (HTTP)    {p['acked_http']:>7}   retries {p['http_retries']}, "
              f"duplicate receipts (200) {p['http_duplicate_receipts']}")
        print(f"  acknowledged (socket)  {p['acked_ws']:>7}   resends {p['ws_resends']}")
        print(f"  acknowledged (floods)  {p['acked_flood']:>7}   (HTTP bursts into a stalled subscriber's own room)")
        print(f"  abandoned              {p['abandoned']:>7}   committed but never acknowledged: "
              f"{p['committed_but_unacknowledged']}")
        print(f"  HTTP answers           {json.dumps(p['http_answers'], sort_keys=True)}")
        print()
        print("subscribers (every stream checked against the log)")
        print(f"  {'name':<18} {'mode':<6} {'start':<7} {'events':>8} {'conns':>6} {'stalls':>6} {'cut':>4}  closes seen")
        for name, s in result["subscribers"].items():
            closes = ", ".join(f"{k}:{v}" for k, v in sorted(s["closes"].items()))
            print(f"  {name:<18} {s['mode']:<6} {s['start']:<7} {s['events_checked']:>8} {s['connects']:>6} "
                  f"{s['stalls']:>6} {s['stall_cuts']:>4}  {closes}")
        total = sum(s["events_checked"] for s in result["subscribers"].values())
        print(f"  {'total':<18} {'':<6} {'':<7} {total:>8}")
        print(f"  slow consumers cut by the nodes (metric hubcast_connections_closed_total{{reason=\"slow_consumer\"}}): "
              f"{result['slow_consumer_cuts_server']}")
        print()
        if result["violation_counts"]:
            print("VIOLATIONS")
            for kind, count in sorted(result["violation_counts"].items()):
                print(f"  {kind:<34} {count:>5}")
        else:
            print("violations: none")
        if result["note_counts"]:
            print("notes: " + ", ".join(f"{k}={v}" for k, v in sorted(result["note_counts"].items())))
        print()

    # -- cleanup ------------------------------------------------------------

    def cleanup(self) -> None:
        """Stops every process this run started (by pid). Idempotent; also
        called at exit."""
        if self.cleaned:
            return
        self.cleaned = True
        for node in self.nodes:
            node.cleanup()
        if self.nats is not None:
            self.nats.cleanup()
        if self.pg is not None:
            self.pg.cleanup()
        with contextlib.suppress(Exception):
            self.timeline.close()


async def soak(args: argparse.Namespace) -> int:
    run = Run(args)
    atexit.register(run.cleanup)
    started = time.monotonic()
    result: dict[str, Any] | None = None
    code = 2
    try:
        await run.setup()
        await run.start_clients()
        run.t_start = now()
        log(f"clients running: {len(run.subscribers)} subscribers, {len(run.http_pubs)} HTTP and "
            f"{len(run.ws_pubs)} socket publishers, rooms {run.rooms}; faults for {args.duration}s")
        progress = asyncio.create_task(run.progress())
        until = time.monotonic() + args.duration
        late = [asyncio.create_task(late_joiner(run, i, until)) for i in range(args.late_subscribers)]
        await run.fault_loop(until)
        for task in late:
            await task
        log("faults over; bringing every service back")
        await run.settle_services()
        heads = await run.wait_quiet()
        for node in run.nodes:
            await node.scrape_slow_consumers()
        logs = await run.read_logs()
        stats = run.check(heads, logs)
        progress.cancel()
        for sub in run.subscribers:
            sub.stop = True
        result = run.summary(stats, time.monotonic() - started)
        run.print_summary(result)
        code = 0 if result["passed"] else 1
    except HarnessError as err:
        log(f"HARNESS ERROR: {err}")
        code = 2
    except asyncio.CancelledError:
        log("interrupted; cleaning up")
        code = 130
    finally:
        for task in run.tasks:
            task.cancel()
        for task in run.tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
        run.cleanup()
    if result is None:
        result = {"seed": args.seed, "passed": False, "harness_error": True, "exit_code": code,
                  "violation_counts": dict(run.violation_counts), "violations": run.violations,
                  "faults": run.faults, "workdir": str(run.workdir)}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    (run.workdir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    keep = args.keep or code != 0
    if keep:
        log(f"logs kept in {run.workdir} (PostgreSQL data: {run.pg.dir if run.pg else '-'})")
    else:
        if run.pg is not None:
            shutil.rmtree(run.pg.dir, ignore_errors=True)
        shutil.rmtree(run.workdir, ignore_errors=True)
    log(f"result written to {out}; {'PASSED' if code == 0 else 'FAILED'} (exit {code})")
    return code


async def late_joiner(run: Run, index: int, until: float) -> None:
    total = run.args.late_subscribers + 1
    at = time.monotonic() + (until - time.monotonic()) * (index + 1) / total
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    try:
        await run.add_late_subscriber(index)
    except HarnessError as err:
        run.note("late_subscriber_failed", error=str(err))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120, help="seconds of fault injection (default 120)")
    parser.add_argument("--seed", type=int, default=None, help="fault sequence seed (default: random, printed)")
    parser.add_argument("--hubcast-bin", default=os.environ.get("HUBCAST_BIN", "target/debug/hubcast"))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=6, help="rooms in all (default 6)")
    parser.add_argument("--batch-rooms", type=int, default=2, help="of which in a batching namespace (default 2)")
    parser.add_argument("--http-publishers", type=int, default=3)
    parser.add_argument("--ws-publishers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=8.0, help="publishes per second per publisher (default 8)")
    parser.add_argument("--subscribers-per-node", type=int, default=4,
                        help="resuming subscribers per node; the last of each node follows one room by URL")
    parser.add_argument("--late-subscribers", type=int, default=2, help="subscribers joining mid-run")
    parser.add_argument("--fault-gap-min", type=float, default=2.0, help="seconds between faults, at least")
    parser.add_argument("--fault-gap-max", type=float, default=6.0, help="seconds between faults, at most")
    parser.add_argument("--publish-give-up", type=float, default=120.0,
                        help="a publish still unacknowledged after this many seconds of retries is abandoned")
    parser.add_argument("--quiet-timeout", type=float, default=60.0,
                        help="seconds subscribers get to reach the heads after the publishers stop")
    parser.add_argument("--stall-flood-events", type=int, default=800,
                        help="events published into a stalled subscriber's own room (default 800)")
    parser.add_argument("--stall-flood-bytes", type=int, default=8000,
                        help="bytes of padding per flood event (default 8000: 800 x 8 kB fills a 4 MiB socket buffer)")
    parser.add_argument("--progress-every", type=float, default=5.0)
    parser.add_argument("--json", default="/tmp/hubcast-chaos-result.json", help="where to write the JSON result")
    parser.add_argument("--workdir-root", default="/tmp")
    parser.add_argument("--keep", action="store_true", help="keep logs and the PostgreSQL data dir after a pass")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    args.hubcast_bin = os.path.abspath(args.hubcast_bin)
    if not os.access(args.hubcast_bin, os.X_OK):
        print(f"hubcast binary not found: {args.hubcast_bin} (set HUBCAST_BIN or --hubcast-bin)", file=sys.stderr)
        return 2
    if args.rooms <= args.batch_rooms or args.nodes < 2:
        print("need more rooms than batch rooms and at least 2 nodes", file=sys.stderr)
        return 2

    async def guarded() -> int:
        task = asyncio.create_task(soak(args))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        # A bound on the whole run, whatever happens: then it is cancelled,
        # which cleans up like Ctrl-C.
        limit = args.duration + 2 * args.publish_give_up + args.quiet_timeout + 600
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done:
            log(f"HARNESS ERROR: the run exceeded its bound of {limit:.0f}s")
            task.cancel()
            await asyncio.wait({task}, timeout=120)
            return 2
        return task.result()

    return asyncio.run(guarded())


if __name__ == "__main__":
    sys.exit(main())
