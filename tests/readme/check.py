#!/usr/bin/env python3
"""Runs the commands of README.md's ```sh blocks as written, in order, and
checks what each one prints.

Two substitutions only: `cargo run --release --` is the binary under test
($HUBCAST_BIN, so the test needs no release build), and `localhost:8787` is
the address the server under test listens on (it binds port 0 and says where;
HUBCAST_LISTEN=127.0.0.1:0 and HUBCAST_URL point the commands there, the
variables the README's configuration section names). Every server runs in its
own temporary directory, so `./hubcast-data` is fresh.

Every command of the README must match one of the CHECKS below (a new command
without a check fails this test), so the README cannot gain a command nobody
ran. Long-running commands (`serve`, `demo`, `sub`) are started in the
background and stopped by the command that replaces them, or at the end.

    HUBCAST_BIN=target/debug/hubcast python3 tests/readme/check.py
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN = os.environ.get("HUBCAST_BIN") or str(REPO / "target" / "debug" / "hubcast")
TIMEOUT = 20.0


def commands(text: str) -> List[str]:
    """The commands of every ```sh block: continuation lines joined, comments dropped."""
    out: List[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        logical = ""
        for line in block.splitlines():
            line = strip_comment(line).rstrip()
            if line.endswith("\\"):
                logical += line[:-1].rstrip() + " "
                continue
            logical = (logical + line.strip()).strip()
            if logical:
                out.append(logical)
            logical = ""
    return out


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` outside quotes after a space)."""
    quote: Optional[str] = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


class Background:
    """A long-running command: its stdout lines are collected by a thread."""

    def __init__(self, argv: str, env: Dict[str, str], cwd: str) -> None:
        self.lines: List[str] = []
        self.proc = subprocess.Popen(["bash", "-c", "exec " + argv], env=env, cwd=cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.stderr: List[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True).start()

    @staticmethod
    def _read(stream: object, into: List[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[List[str]], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if predicate(self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        fail(f"{what}; stdout: {self.lines[-10:]}; stderr: {self.stderr[-10:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    raise SystemExit(1)


class Run:
    """The state of one run through the README."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="hubcast-readme-")
        self.server: Optional[Background] = None
        self.server_command = ""
        self.port = 0
        self.subs: List[Background] = []
        self.seqs: Dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCAST_")}
        self.env.update(NO_COLOR="1", HUBCAST_LISTEN="127.0.0.1:0")
        for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            self.env.pop(var, None)

    def rewrite(self, command: str) -> str:
        command = command.replace("cargo run --release --", shlex.quote(BIN))
        return command.replace("localhost:8787", f"127.0.0.1:{self.port}").replace("127.0.0.1:8787", f"127.0.0.1:{self.port}")

    def start_server(self, command: str) -> None:
        self.stop_all()
        self.server = Background(self.rewrite(command), self.env, self.tmp.name)
        self.server_command = command
        self.server.wait_for(lambda lines: any(l.startswith("listening on http://") for l in lines),
                             f"`{command}` did not say where it listens")
        line = next(l for l in self.server.lines if l.startswith("listening on http://"))
        self.port = int(line.rsplit(":", 1)[1])
        self.env["HUBCAST_URL"] = f"http://127.0.0.1:{self.port}"

    def start_sub(self, command: str) -> Background:
        sub = Background(self.rewrite(command), self.env, self.tmp.name)
        self.subs.append(sub)
        return sub

    def run(self, command: str) -> str:
        if self.server is None:
            fail(f"`{command}` needs a server, and no README command started one before it")
        result = subprocess.run(["bash", "-c", self.rewrite(command)], env=self.env, cwd=self.tmp.name,
                                capture_output=True, text=True, timeout=TIMEOUT)
        if result.returncode != 0:
            fail(f"`{command}` exited with {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def stats(self, room: str) -> Dict[str, int]:
        url = f"http://127.0.0.1:{self.port}/v1/rooms/{room}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=TIMEOUT) as response:
            value: Dict[str, int] = json.loads(response.read())
            return value

    def stop_all(self) -> None:
        for sub in self.subs:
            sub.stop()
        self.subs.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None


def json_out(command: str, out: str) -> Dict[str, object]:
    try:
        value = json.loads(out)
    except ValueError:
        fail(f"`{command}` did not print JSON: {out!r}")
    if not isinstance(value, dict):
        fail(f"`{command}` printed {value!r}, not a JSON object")
    return value


def expect(ok: bool, command: str, what: str, out: object) -> None:
    if not ok:
        fail(f"`{command}`: expected {what}, got {out!r}")


# ------------------------------------------------------------------ checks
# Each is (pattern on the command as written, what to do with it).

def serve(r: Run, c: str) -> None:
    r.start_server(c)


def skip_suite(r: Run, c: str) -> None:
    print(f"   (not run here: {c} is the suite that runs this test)")


def demo_buy(r: Run, c: str) -> None:
    body = json_out(c, r.run(c))
    # The README: 200 with the trade, or 409 stale_quote with the current price.
    expect("trade" in body and "seq" in body or body.get("error") == "stale_quote", c,
           "a trade, or stale_quote", body)


def sub_live(r: Run, c: str) -> None:
    # "With the server running": the tour is on `serve`, not on a demo.
    if r.server_command != "cargo run --release -- serve":
        r.start_server("cargo run --release -- serve")
    r.start_sub(c)
    # `sub` without a cursor follows from now: the room's stats say when it is in.
    deadline = time.monotonic() + TIMEOUT
    while r.stats("market:42").get("subscribers", 0) < 1:
        if time.monotonic() > deadline:
            fail(f"`{c}` did not subscribe; stderr: {r.subs[-1].stderr[-10:]}")
        time.sleep(0.05)


def curl_publish(r: Run, c: str) -> None:
    body = json_out(c, r.run(c))
    expect(body.get("room") == "market:42" and isinstance(body.get("seq"), int), c, "a receipt", body)
    if "Idempotency-Key" in c:
        first = r.seqs.setdefault("order-7", body["seq"])  # type: ignore[arg-type]
        expect(body["seq"] == first, c, f"the first receipt's seq {first} (a retry appends nothing)", body)
    r.seqs["head"] = max(r.seqs.get("head", 0), body["seq"])  # type: ignore[arg-type]


def hubcast_pub(r: Run, c: str) -> None:
    r.run(c)
    r.seqs["head"] = r.seqs.get("head", 0) + 1
    # The live subscriber printed every event so far, in order.
    sub = r.subs[0] if r.subs else None
    if sub is not None:
        head = r.seqs["head"]
        sub.wait_for(lambda lines: len(event_lines(lines)) >= head, f"the subscriber did not print {head} events")
        expect([e["seq"] for e in event_lines(sub.lines)] == list(range(1, head + 1)), c,
               "the subscriber's events in seq order", sub.lines)


def event_lines(lines: List[str]) -> List[Dict[str, object]]:
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "seq" in value:
            out.append(value)
    return out


def sub_resume(r: Run, c: str) -> None:
    # "Stop it, publish a few more, and resume where it left off."
    for sub in r.subs:
        sub.stop()
    r.subs.clear()
    r.run(f"cargo run --release -- pub market:42 '{{\"more\":1}}'")
    r.seqs["head"] += 1
    cursor = int(c.rsplit(" ", 1)[1])
    sub = r.start_sub(c)
    head = r.seqs["head"]
    sub.wait_for(lambda lines: len(event_lines(lines)) >= head - cursor, f"`{c}` did not print the missed events")
    expect([e["seq"] for e in event_lines(sub.lines)] == list(range(cursor + 1, head + 1)), c,
           f"exactly the events after {cursor}", sub.lines)


def curl_conflict(r: Run, c: str) -> None:
    body = json_out(c, r.run(c))
    expect(body.get("error") == "conflict" and body.get("head") == r.seqs["head"], c,
           f"a conflict with head {r.seqs['head']}", body)


def curl_history(r: Run, c: str) -> None:
    body = json_out(c, r.run(c))
    seqs = [e["seq"] for e in body.get("events", [])]  # type: ignore[union-attr]
    expect(seqs == list(range(2, r.seqs["head"] + 1)), c, "the events after 1", body)


def curl_stats(r: Run, c: str) -> None:
    body = json_out(c, r.run(c))
    expect(body.get("head") == r.seqs["head"], c, f"head {r.seqs['head']}", body)


CHECKS: List[Tuple[str, Callable[[Run, str], None]]] = [
    (r"^cargo run --release -- serve$", serve),
    (r"^scripts/test\.sh$", skip_suite),
    (r"^cargo run --release -- demo( --reset)?$", serve),
    (r"^curl -s -X POST localhost:8787/demo/api/markets/[\w-]+/buy -d '.*'$", demo_buy),
    (r"^cargo run --release -- sub market:42$", sub_live),
    (r"^curl -s -X POST localhost:8787/v1/rooms/market:42/events (-H 'Idempotency-Key: [\w-]+' )?-d '\{\"data\":[^}]*\}\}'$",
     curl_publish),
    (r"^cargo run --release -- pub market:42 '.*'$", hubcast_pub),
    (r"^cargo run --release -- sub market:42 --cursor \d+$", sub_resume),
    (r"^curl -s -X POST localhost:8787/v1/rooms/market:42/events -d '.*\"expected_seq\":1\}'$", curl_conflict),
    (r"^curl -s 'localhost:8787/v1/rooms/market:42/events\?after=1&limit=100'$", curl_history),
    (r"^curl -s localhost:8787/v1/rooms/market:42$", curl_stats),
]


def main() -> None:
    if not Path(BIN).is_file():
        fail(f"no binary at {BIN} (build it, or set HUBCAST_BIN)")
    found = commands(README.read_text())
    if len(found) < 10:
        fail(f"found only {len(found)} commands in README.md's sh blocks")
    run = Run()
    try:
        for command in found:
            check = next((f for pattern, f in CHECKS if re.match(pattern, command)), None)
            if check is None:
                fail(f"README.md has a command this test does not know: `{command}` (add a check to {__file__})")
            print(f"-> {command}")
            check(run, command)  # type: ignore[misc]
    finally:
        run.stop_all()
        run.tmp.cleanup()
    print(f"all {len(found)} README commands work as written")


if __name__ == "__main__":
    main()
