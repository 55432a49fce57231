#!/usr/bin/env python3
"""Turns bench/compare.sh's JSON results into OUT/summary.md (a table with
ratios against hubcast) and OUT/compare.svg (deliveries/s per server and
latency percentiles per server), with the standard library only.

    python3 bench/plot.py OUT
"""
import json
import math
import pathlib
import sys

SCENARIOS = ["fanout-steady", "fanout-max", "rooms"]
SERVERS = ["hubcast", "hubcast-pusher", "sockudo", "socketio", "nchan"]
COLORS = {"hubcast": "#d9480f", "hubcast-pusher": "#f08c00", "sockudo": "#1971c2", "socketio": "#2f9e44", "nchan": "#7048e8"}
PERCENTILES = [("p50", "latency_p50_ms"), ("p90", "latency_p90_ms"), ("p99", "latency_p99_ms"), ("p99.9", "latency_p999_ms")]


def load(out):
    results = {}
    for scenario in SCENARIOS:
        for server in SERVERS:
            path = out / f"{server}-{scenario}.json"
            if path.exists():
                results[(server, scenario)] = json.loads(path.read_text())["results"]
    return results


def fmt(value, digits=1):
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def summary(results, out):
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    lines = [
        f"Run {machine.get('date', '?')} on {machine.get('cpus', '?')} × {machine.get('cpu', '?')}; "
        f"load average before: {machine.get('load_before', '?')}.",
        "",
        "| scenario | server | delivered | deliveries/s | hubcast ÷ server (deliveries/s) | p50 ms | p99 ms | p99.9 ms | max ms | server p99 ÷ hubcast p99 "
        "| server CPU µs/delivery (publish phase) | hubcast ÷ server (CPU/delivery) | server CPU µs/delivery (whole run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        ours = results.get(("hubcast", scenario))
        for server in SERVERS:
            r = results.get((server, scenario))
            if r is None:
                continue
            rate = r.get("deliveries_per_sec")
            p99 = r.get("latency_p99_ms")
            rate_ratio = p99_ratio = cpu_ratio = "–"
            cpu = r.get("server_cpu_us_per_delivery")
            if ours and server != "hubcast":
                if rate:
                    rate_ratio = f"{ours['deliveries_per_sec'] / rate:.2f}×"
                if p99 and ours.get("latency_p99_ms"):
                    p99_ratio = f"{p99 / ours['latency_p99_ms']:.2f}×"
                if cpu and ours.get("server_cpu_us_per_delivery"):
                    cpu_ratio = f"{ours['server_cpu_us_per_delivery'] / cpu:.2f}×"
            delivered = f"{r.get('deliveries', 0):,}/{r.get('deliveries_expected', 0):,}"
            lines.append(
                f"| {scenario} | {server} | {delivered} | {fmt(rate)} | {rate_ratio} | {fmt(r.get('latency_p50_ms'), 2)} "
                f"| {fmt(p99, 2)} | {fmt(r.get('latency_p999_ms'), 2)} | {fmt(r.get('latency_max_ms'), 2)} | {p99_ratio} "
                f"| {fmt(cpu, 2)} | {cpu_ratio} | {fmt(r.get('server_cpu_us_per_delivery_total'), 2)} |"
            )
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def svg(results, out):
    servers = [s for s in SERVERS if any((s, sc) in results for sc in SCENARIOS)]
    width, panel_h, top = 980, 300, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{3 * panel_h + 2 * top + 60}" '
             'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>']
    # Legend.
    for i, server in enumerate(servers):
        x = 60 + i * 140
        parts.append(f'<rect x="{x}" y="10" width="14" height="14" fill="{COLORS[server]}"/>')
        parts.append(f'<text x="{x + 20}" y="22">{server}</text>')

    def panel(y0, title, groups, values, log):
        """Grouped bars: groups × servers, values[(group, server)]."""
        left, right, h = 70, width - 20, panel_h - 60
        parts.append(f'<text x="{left}" y="{y0 + 16}" font-size="14" font-weight="bold">{title}</text>')
        finite = [v for v in values.values() if v and v > 0]
        if not finite:
            return
        hi = max(finite)
        lo = min(finite)
        if log:
            lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
            hi_e = max(hi_e, lo_e + 1)
            scale = lambda v: (math.log10(v) - lo_e) / (hi_e - lo_e)
            ticks = [10 ** e for e in range(lo_e, hi_e + 1)]
        else:
            step = 10 ** math.floor(math.log10(hi))
            top_v = math.ceil(hi / step) * step
            scale = lambda v: v / top_v
            ticks = [top_v * i / 4 for i in range(5)]
        base = y0 + 30 + h
        for t in ticks:
            y = base - scale(t) * h
            parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(t, 2 if t < 1 else 0)}</text>')
        group_w = (right - left) / len(groups)
        bar_w = min(40, (group_w - 20) / max(1, len(servers)))
        for g, group in enumerate(groups):
            gx = left + g * group_w + (group_w - bar_w * len(servers)) / 2
            parts.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{base + 18}" text-anchor="middle">{group}</text>')
            for s, server in enumerate(servers):
                v = values.get((group, server))
                if not v or v <= 0:
                    continue
                bh = max(1.0, scale(v) * h)
                x = gx + s * bar_w
                parts.append(f'<rect x="{x:.1f}" y="{base - bh:.1f}" width="{bar_w - 2:.1f}" height="{bh:.1f}" fill="{COLORS[server]}">'
                             f'<title>{server} {group}: {fmt(v, 2)}</title></rect>')
        parts.append(f'<line x1="{left}" x2="{right}" y1="{base}" y2="{base}" stroke="#333"/>')

    rates = {(sc, s): r.get("deliveries_per_sec") for (s, sc), r in results.items()}
    panel(top, "deliveries per second (log scale, higher is better)", SCENARIOS, rates, log=True)
    latency = {}
    for (s, sc), r in results.items():
        if sc == "fanout-steady":
            for label, key in PERCENTILES:
                latency[(label, s)] = r.get(key)
    panel(top + panel_h + 20, "fanout-steady publish→receive latency, ms (log scale, lower is better)",
          [p for p, _ in PERCENTILES], latency, log=True)
    cpu = {(sc, s): r.get("server_cpu_us_per_delivery") for (s, sc), r in results.items()}
    panel(top + 2 * panel_h + 40, "server CPU µs per delivery, publish phase (lower is better)",
          SCENARIOS, cpu, log=False)
    parts.append("</svg>")
    (out / "compare.svg").write_text("\n".join(parts) + "\n")


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    results = load(out)
    if not results:
        sys.exit(f"plot: no results in {out}")
    summary(results, out)
    svg(results, out)


if __name__ == "__main__":
    main()
