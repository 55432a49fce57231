#!/usr/bin/env python3
"""Table of bench/results-issue21/s9: per round and size, base / new / nchan,
with the floor of that round and the ratios (CPU per delivery, publish phase)."""
import glob, json, os, re, sys

HERE = os.path.dirname(os.path.abspath(__file__))
rows = {}
for path in sorted(glob.glob(os.path.join(HERE, "*-r*-*/*-fanout-steady.json"))):
    m = re.match(r"(\d+)x(\d+)-r(\d+)-(\w+)$", os.path.basename(os.path.dirname(path)))
    size, rate, rnd, who = m.groups()
    r = json.load(open(path))["results"]
    load = json.load(open(os.path.join(os.path.dirname(path), "machine.json")))["load_before"]
    rows.setdefault((int(size), int(rate), int(rnd)), {})[who] = (r, load)
print("| run | server | delivered | deliveries/s | p50 ms | p99 ms | CPU µs/delivery | (whole run) | floor µs/write | × floor | ÷ nchan | load before |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for (size, rate, rnd), by in sorted(rows.items()):
    floor = None
    fp = os.path.join(HERE, f"floor-{size}x{rate}-r{rnd}.json")
    if os.path.exists(fp):
        fr = json.load(open(fp))["results"]
        floor = fr.get("cpu_us_per_write") or fr.get("us_per_write")
    nchan = by.get("nchan", (None,))[0]
    for who in ("base", "directalways", "direct2k", "new", "nchan"):
        if who not in by:
            continue
        r, load = by[who]
        cpu = r.get("server_cpu_us_per_delivery")
        ratio = f"{cpu / nchan['server_cpu_us_per_delivery']:.2f}×" if nchan and who != "nchan" and cpu else ""
        xf = f"{cpu / floor:.2f}×" if floor and cpu else ""
        print(f"| {size // 1000}k×{rate} #{rnd} | {who} | {r['deliveries']:,}/{r['deliveries_expected']:,} | "
              f"{r['deliveries_per_sec']:,.0f} | {r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | "
              f"{cpu} | {r.get('server_cpu_us_per_delivery_total')} | {floor if floor else ''} | {xf} | {ratio} | {load} |")
