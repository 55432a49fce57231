#!/usr/bin/env python3
"""Table of bench/results-issue21/s11: per round and scenario, each hubcast
build and nchan, the floor of that round (one-room sizes) and the ratios."""
import glob, json, os, re

HERE = os.path.dirname(os.path.abspath(__file__))
rows = {}
for path in sorted(glob.glob(os.path.join(HERE, "*-r*-*/*-*.json"))):
    if path.endswith(("machine.json", "-load.json")):
        continue
    m = re.match(r"(.+)-r(\d+)-([\w.]+)$", os.path.basename(os.path.dirname(path)))
    size, rnd, who = m.groups()
    r = json.load(open(path))["results"]
    load = json.load(open(os.path.join(os.path.dirname(path), "machine.json")))["load_before"]
    rows.setdefault((size, int(rnd)), {})[who] = (r, load)

def key(k):
    size, rnd = k
    order = ["1000x50", "2000x100", "10000xmax", "rooms"]
    return (order.index(size) if size in order else 9, size, rnd)

print("| run | server | delivered | deliveries/s | p50 ms | p99 ms | CPU µs/delivery | (whole run) | floor µs/write | × floor | ÷ nchan CPU | ÷ nchan deliveries/s | load before |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (size, rnd), by in sorted(rows.items(), key=lambda kv: key(kv[0])):
    floor = None
    fp = os.path.join(HERE, f"floor-{size}-r{rnd}.json")
    if os.path.exists(fp):
        floor = json.load(open(fp))["results"].get("cpu_us_per_write")
    nchan = by.get("nchan", (None,))[0]
    for who in sorted(by, key=lambda w: (w == "nchan", w)):
        r, load = by[who]
        cpu = r.get("server_cpu_us_per_delivery")
        cpu_ratio = f"{cpu / nchan['server_cpu_us_per_delivery']:.2f}×" if nchan and who != "nchan" and cpu else ""
        rate_ratio = f"{r['deliveries_per_sec'] / nchan['deliveries_per_sec']:.2f}×" if nchan and who != "nchan" else ""
        xf = f"{cpu / floor:.2f}×" if floor and cpu else ""
        print(f"| {size} #{rnd} | {who} | {r['deliveries']:,}/{r['deliveries_expected']:,} | "
              f"{r['deliveries_per_sec']:,.0f} | {r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | "
              f"{cpu} | {r.get('server_cpu_us_per_delivery_total')} | {floor or ''} | {xf} | {cpu_ratio} | {rate_ratio} | {load} |")
