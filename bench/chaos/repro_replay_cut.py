#!/usr/bin/env python3
"""Reproduces a hubcast defect the chaos soak showed: a session that resumes
a backlog in one room while it follows other rooms live is cut as a slow
consumer (4009) again and again, though it reads far faster than the live
rate.

Why: the store replay of a subscription (session::join::replay) queues each
event with `Outbound::send`, which waits for room and so keeps the session's
outbound queue full for as long as the backlog lasts. Any live frame a hub of
another room offers meanwhile (`Outbound::offer`) finds the queue full, and
the session is closed with 4009. The client resumes from its cursor and loses
nothing, but it is cut every `limits.outbound_queue` frames or so, and each
resume replays again.

One node (SQLite, a temp dir, a free loopback port, default config); no
faults. Run with the chaos venv:

    bench/chaos/.venv/bin/python bench/chaos/repro_replay_cut.py \
        --hubcast-bin target/debug/hubcast [--backlog 5000] [--live-rate 2] [--read-delay 0.002]

Prints the cuts; exits 1 when the session was cut at least once (the defect
reproduced), 0 when it caught up on one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="hubcast-replay-cut-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCAST_")}
    # An empty config: the defaults (a file named with --config must exist).
    open(f"{workdir}/none.toml", "w").close()
    server = subprocess.Popen(
        [args.hubcast_bin, "serve", "--listen", f"127.0.0.1:{port}", "--store", f"sqlite://{workdir}/h.db",
         "--config", f"{workdir}/none.toml"],
        stdout=subprocess.DEVNULL, stderr=open(f"{workdir}/node.log", "wb"), env=env,
    )
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10, limits=httpx.Limits(max_connections=32)) as http:
            for _ in range(100):
                try:
                    if (await http.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            # The backlog: events in room `big` the client has not seen.
            sem = asyncio.Semaphore(32)

            async def one(n: int) -> None:
                async with sem:
                    r = await http.post(f"{base}/v1/rooms/big/events", json={"data": {"n": n, "pad": "x" * args.size}})
                    assert r.status_code == 201, r.text

            await asyncio.gather(*(one(n) for n in range(args.backlog)))
            print(f"backlog: {args.backlog} events of {args.size} bytes in room big")

            stop = asyncio.Event()

            async def live() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    await http.post(f"{base}/v1/rooms/live{n % 4}/events", json={"data": {"n": n}})
                    await asyncio.sleep(1 / args.live_rate)

            live_task = asyncio.create_task(live())
            started = time.monotonic()
            cursor, connects, cuts = 0, 0, []
            while cursor < args.backlog and time.monotonic() - started < 120:
                connects += 1
                try:
                    async with connect(f"ws://127.0.0.1:{port}/v1/ws", proxy=None, compression=None,
                                       max_size=2**24) as ws:
                        for i in range(4):
                            await ws.send(json.dumps({"type": "subscribe", "room": f"live{i}"}))
                        await ws.send(json.dumps({"type": "subscribe", "room": "big", "cursor": cursor}))
                        async for raw in ws:
                            msg = json.loads(raw)
                            await asyncio.sleep(args.read_delay)  # a client that reads at a steady pace
                            if msg.get("type") == "event" and msg.get("room") == "big":
                                assert msg["seq"] == cursor + 1, (msg["seq"], cursor)
                                cursor = msg["seq"]
                                if cursor == args.backlog:
                                    break
                except ConnectionClosed as err:
                    code = err.rcvd.code if err.rcvd else 1006
                    cuts.append((code, cursor, round(time.monotonic() - started, 2)))
                    print(f"connection {connects} closed with {code} at cursor {cursor} "
                          f"({time.monotonic() - started:.2f}s)")
            stop.set()
            await live_task
            took = time.monotonic() - started
            metrics = (await http.get(f"{base}/metrics")).text
            slow = next((line.split()[-1] for line in metrics.splitlines()
                         if line.startswith('hubcast_connections_closed_total{reason="slow_consumer"}')), "?")
            print(f"the node counted {slow} slow-consumer cut(s) "
                  f"(hubcast_connections_closed_total{{reason=\"slow_consumer\"}})")
            capacity = 1 / args.read_delay if args.read_delay > 0 else float("inf")
            print(f"caught up to {cursor}/{args.backlog} in {took:.1f}s over {connects} connections; "
                  f"{len(cuts)} cut(s); the client reads up to ~{capacity:.0f} frames/s, the live rooms publish "
                  f"{args.live_rate}/s")
            return 1 if cuts else 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hubcast-bin", default=os.environ.get("HUBCAST_BIN", "target/debug/hubcast"))
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--size", type=int, default=8000, help="bytes of padding per backlog event")
    parser.add_argument("--live-rate", type=float, default=2.0, help="events per second in the live rooms")
    parser.add_argument("--read-delay", type=float, default=0.002, help="seconds the client spends per frame")
    sys.exit(asyncio.run(main(parser.parse_args())))
