"""Starts the real `hubcast serve` binary for the tests.

Like tests/external/python: every server gets its own directory, config file
and SQLite store, a port picked by binding port 0 (retried if another process
takes it first), and is ready once its log says `hubcast serving` on that
port. The binary is $HUBCAST_BIN, else <repo>/target/debug/hubcast.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
HUBCAST_BIN = Path(os.environ.get("HUBCAST_BIN") or REPO_ROOT / "target" / "debug" / "hubcast")

# Every test's server: quick heartbeats so dead connections show up fast.
BASE_CONFIG = """
[heartbeat]
interval_ms = 1000
stale_ms = 10000

[sqlite]
synchronous = "normal"
"""

API_KEY = "test-api-key-0123456789abcdef"
ROOMS_KEY = "market-only-key-0123456789abcdef"
JWT_SECRET = "jwt-secret-0123456789abcdef0123456789"
JWT_KID_SECRET = "another-secret-for-kid-2026-0123456789"

AUTH_CONFIG = f"""
[[auth.api_keys]]
name = "app"
key = "{API_KEY}"

[[auth.api_keys]]
name = "market-only"
key = "{ROOMS_KEY}"
rooms = ["market:*"]

[[auth.jwt]]
alg = "HS256"
secret = "{JWT_SECRET}"

[[auth.jwt]]
kid = "2026-11"
alg = "HS256"
secret = "{JWT_KID_SECRET}"
audience = "hubcast"
issuer = "https://app.example"
"""

# Proxies from the environment must not take loopback requests elsewhere.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One `hubcast serve` process with its own directory, config and store."""

    def __init__(self, root: Path, config: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "hubcast.toml"
        self.config_path.write_text(BASE_CONFIG + config)
        self.store = f"sqlite://{root / 'h.db'}"
        self.log_path = root / "server.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        # The key `post` publishes with (servers with credentials).
        self.api_key: Optional[str] = API_KEY if "[[auth.api_keys]]" in config else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: Optional[int] = None) -> "Server":
        """Starts the server, on `port` if given (a restart keeps its address),
        else on a free port."""
        if not HUBCAST_BIN.exists():
            pytest.fail(f"hubcast binary not found at {HUBCAST_BIN} (build it or set HUBCAST_BIN)")
        # The server reads HUBCAST_* variables as configuration: give it none.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCAST_")}
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_LOG", "hubcast=info")
        for _attempt in range(20):
            chosen = port or _free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    [str(HUBCAST_BIN), "serve", "--config", str(self.config_path),
                     "--listen", f"127.0.0.1:{chosen}", "--store", self.store],
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=self.root,
                )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                text = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if "hubcast serving" in text and f"127.0.0.1:{chosen}" in text:
                    self.proc, self.port = proc, chosen
                    return self
                time.sleep(0.02)
            else:
                proc.kill()
                proc.wait()
                pytest.fail(f"hubcast did not start within 20s; log:\n{self.log_tail()}")
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "Address already in use" not in text:
                pytest.fail(f"hubcast exited with {proc.returncode}; log:\n{self.log_tail()}")
            time.sleep(0.1)  # a restart on the same port: wait for it to be free
        pytest.fail("could not find a free port for hubcast")

    def kill(self) -> None:
        """SIGKILL: the process dies without closing its sockets cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM: graceful shutdown (sessions are closed with 1012)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> "Server":
        self.kill()
        return self.start(self.port)

    def log_tail(self, n: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def post(self, room: str, data: object) -> int:
        """Publishes with plain httpx (not the library under test); returns the seq."""
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = httpx.post(f"{self.url}/v1/rooms/{room}/events", json={"data": data},
                              headers=headers, timeout=10)
        assert response.status_code == 201, response.text
        seq: int = response.json()["seq"]
        return seq


ServerFactory = Callable[..., Server]


@pytest.fixture
def hubcast_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory: `hubcast_server(config_toml)` starts a server in its own directory."""
    servers: List[Server] = []

    def start(config: str = "") -> Server:
        server = Server(tmp_path / f"server{len(servers)}", config)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.resume()  # in case a test stopped it
        server.kill()
        print(f"--- {server.log_path} ---\n{server.log_tail()}")  # shown when the test failed


@pytest.fixture
def server(hubcast_server: ServerFactory) -> Server:
    """A server without credentials (protected mode: loopback may do everything)."""
    return hubcast_server()


@pytest.fixture
def auth_server(hubcast_server: ServerFactory) -> Server:
    """A server with API keys and two HS256 JWT keys (one with kid, aud, iss)."""
    return hubcast_server(AUTH_CONFIG)
