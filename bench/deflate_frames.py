#!/usr/bin/env python3
"""What permessage-deflate would save and cost on hubcast's frames.

tungstenite (the WebSocket stack under axum 0.8) cannot negotiate
permessage-deflate, so this measures the extension without it: each frame is
compressed as RFC 7692 does with `server_no_context_takeover` (a fresh raw
deflate stream per message, flushed with Z_SYNC_FLUSH, the trailing
00 00 ff ff removed), with zlib, the library browsers and most servers use.
With no context takeover a frame is compressed once per event and the same
bytes could go to every socket that negotiated the extension.

    python3 bench/deflate_frames.py            # a table
    python3 bench/deflate_frames.py --json     # the same numbers as JSON
"""
import json
import random
import sys
import time
import zlib

random.seed(7)


def event(room, seq, data):
    return json.dumps(
        {"type": "event", "room": room, "seq": seq, "ts": 1733440000000 + seq, "data": data},
        separators=(",", ":"),
    ).encode()


def tick(seq):
    return {"market": "btc-2026", "yes": round(random.random(), 4), "no": round(random.random(), 4), "volume": random.randint(1, 10**6)}


def chat(seq):
    words = "the quick brown fox jumps over a lazy dog while hubcast fans out every message in order".split()
    return {"user": f"user-{random.randint(1, 999)}", "text": " ".join(random.choice(words) for _ in range(18)), "reply_to": None}


def document(seq):
    return {
        "doc": "d-42",
        "ops": [{"op": "insert", "path": f"/blocks/{i}", "value": {"kind": "paragraph", "text": "lorem ipsum dolor sit amet " * 3}} for i in range(8)],
    }


def batch_frame(seq):
    events = [{"seq": seq + i, "ts": 1733440000000 + i, "data": tick(seq + i)} for i in range(64)]
    return json.dumps({"type": "batch", "room": "ticks:btc", "events": events}, separators=(",", ":")).encode()


def frames(kind, n=2000):
    if kind == "batch":
        return [batch_frame(i * 64) for i in range(n // 20)]
    make = {"tick": tick, "chat": chat, "document": document}[kind]
    return [event(f"{kind}:room-1", i, make(i)) for i in range(n)]


def pmd_no_context_takeover(frame, level):
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
    out = c.compress(frame) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload):
    d = zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff")


def best_of(rounds, work):
    """The fastest of `rounds` runs: the machine is shared, the minimum is the cost."""
    best = None
    for _ in range(rounds):
        start = time.perf_counter()
        out = work()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, out


def measure(kind, level):
    fs = frames(kind)
    raw = sum(len(f) for f in fs)
    compress_s, packed = best_of(7, lambda: [pmd_no_context_takeover(f, level) for f in fs])
    inflate_s, _ = best_of(7, lambda: [inflate(p) for p in packed])
    assert all(inflate(p) == f for p, f in zip(packed[:50], fs[:50]))
    comp = sum(len(p) for p in packed)
    return {
        "frame": kind,
        "level": level,
        "frames": len(fs),
        "avg_bytes": raw / len(fs),
        "avg_deflated": comp / len(fs),
        "saved_pct": 100.0 * (1 - comp / raw),
        "compress_us_per_frame": 1e6 * compress_s / len(fs),
        "inflate_us_per_frame": 1e6 * inflate_s / len(fs),
        "compress_mb_per_s": raw / compress_s / 1e6,
    }


def main():
    results = [measure(kind, level) for kind in ("tick", "chat", "document", "batch") for level in (1, 6)]
    if "--json" in sys.argv:
        print(json.dumps(results, indent=2))
        return
    print(f"{'frame':9} {'lvl':>3} {'bytes':>7} {'deflated':>8} {'saved':>6} {'deflate µs':>10} {'inflate µs':>10} {'MB/s':>6}")
    for r in results:
        print(
            f"{r['frame']:9} {r['level']:>3} {r['avg_bytes']:7.0f} {r['avg_deflated']:8.0f} {r['saved_pct']:5.1f}% "
            f"{r['compress_us_per_frame']:10.1f} {r['inflate_us_per_frame']:10.1f} {r['compress_mb_per_s']:6.1f}"
        )


if __name__ == "__main__":
    main()
