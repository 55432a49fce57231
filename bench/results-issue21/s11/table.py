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


def plot(rounds=(21, 22, 23)):
    """s11/cpu.svg: median over `rounds` of CPU µs per delivery and p99 per
    scenario and server, the floor marked (grouped bars, hand-written SVG)."""
    import statistics
    sizes = ["1000x50", "2000x100", "10000xmax", "rooms"]
    servers = [("base", "#999999"), ("new", "#1f77b4"), ("nchan", "#d62728")]
    med = {}
    for size in sizes:
        for who, _ in servers:
            rs = [rows[(size, n)][who][0] for n in rounds if who in rows.get((size, n), {})]
            if rs:
                # At the maximum rate most deliveries arrive after the last
                # publish: the whole run's figure is the one to compare.
                key = "server_cpu_us_per_delivery_total" if size.endswith("max") else "server_cpu_us_per_delivery"
                med[(size, who, "cpu")] = statistics.median(r[key] for r in rs)
                med[(size, who, "p99")] = statistics.median(r["latency_p99_ms"] for r in rs)
        floors = [json.load(open(p))["results"]["cpu_us_per_write"] for n in rounds
                  for p in [os.path.join(HERE, f"floor-{size}-r{n}.json")] if os.path.exists(p)]
        if floors:
            med[(size, "floor", "cpu")] = statistics.median(floors)
    width, ph, top = 900, 280, 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * ph + top + 40}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    for i, (who, color) in enumerate(servers):
        out.append(f'<rect x="{70 + i * 150}" y="10" width="14" height="14" fill="{color}"/><text x="{90 + i * 150}" y="22">{"hubcast " + who if who != "nchan" else "nchan"}</text>')
    out.append(f'<line x1="{520}" x2="{545}" y1="17" y2="17" stroke="black" stroke-dasharray="4 3"/><text x="550" y="22">floor: one loopback write</text>')
    for p, (metric, title) in enumerate([("cpu", "server CPU µs per delivery (publish phase; 10,000 × max: whole run), median of rounds 21–23"),
                                         ("p99", "p99 publish→receive, ms, median of rounds 21–23 (log scale; lower is better)")]):
        y0 = top + p * (ph + 20)
        left, right, h = 60, width - 20, ph - 70
        base = y0 + 30 + h
        out.append(f'<text x="{left}" y="{y0 + 16}" font-size="14" font-weight="bold">{title}</text>')
        vals = [v for (s, w, m), v in med.items() if m == metric]
        if metric == "cpu":
            hi = max(vals) * 1.1
            scale = lambda v: v / hi
            ticks = [hi * i / 5 for i in range(6)]
        else:
            lo_e, hi_e = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
            scale = lambda v: (math.log10(v) - lo_e) / max(1, hi_e - lo_e)
            ticks = [10 ** e for e in range(lo_e, hi_e + 1)]
        for t in ticks:
            y = base - scale(t) * h
            out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.3g}</text>')
        gw = (right - left) / len(sizes)
        bw = 40
        for g, size in enumerate(sizes):
            gx = left + g * gw + (gw - bw * len(servers)) / 2
            label = {"1000x50": "1,000 × 50/s", "2000x100": "2,000 × 100/s", "10000xmax": "10,000 × max", "rooms": "rooms 2,000 × 5"}[size]
            out.append(f'<text x="{left + g * gw + gw / 2:.1f}" y="{base + 18}" text-anchor="middle">{label}</text>')
            for s, (who, color) in enumerate(servers):
                v = med.get((size, who, metric))
                if not v:
                    continue
                bh = max(1.0, scale(v) * h)
                x = gx + s * bw
                out.append(f'<rect x="{x:.1f}" y="{base - bh:.1f}" width="{bw - 3}" height="{bh:.1f}" fill="{color}"><title>{who} {size}: {v:.3g}</title></rect>')
                out.append(f'<text x="{x + bw / 2 - 1.5:.1f}" y="{base - bh - 4:.1f}" text-anchor="middle" font-size="10">{v:.3g}</text>')
            fl = med.get((size, "floor", metric))
            if fl:
                y = base - scale(fl) * h
                out.append(f'<line x1="{gx - 5:.1f}" x2="{gx + bw * len(servers) + 5:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="black" stroke-dasharray="4 3"/>')
        out.append(f'<line x1="{left}" x2="{right}" y1="{base}" y2="{base}" stroke="#333"/>')
    out.append("</svg>")
    open(os.path.join(HERE, "cpu.svg"), "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    import math
    plot()
