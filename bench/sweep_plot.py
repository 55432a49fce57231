#!/usr/bin/env python3
"""Turns bench/sweep.sh's JSON results into OUT/sweep.md (tables) and
OUT/sweep.svg (publishes/s and p99 by publishers; latency percentiles by room
size), with the standard library only.

    python3 bench/sweep_plot.py OUT
"""
import json
import math
import pathlib
import re
import statistics
import sys

LATENCY = [("p50", "latency_p50_ms", "#1971c2"), ("p99", "latency_p99_ms", "#d9480f"),
           ("p99.9", "latency_p999_ms", "#7048e8")]


def results(out, pattern):
    """{key: [results, …]} for files matching `pattern` (one group: the key)."""
    found = {}
    for path in sorted(out.glob("*.json")):
        m = re.fullmatch(pattern, path.name)
        if m:
            found.setdefault(int(m.group(1)), []).append(json.loads(path.read_text())["results"])
    return dict(sorted(found.items()))


def fmt(v, digits=1):
    return f"{v:,.0f}" if v >= 1000 else f"{v:.{digits}f}"


def tables(publish, latency, machine):
    lines = [f"Run {machine.get('date', '?')} on {machine.get('cpus', '?')} × {machine.get('cpu', '?')}; "
             f"load average before: {machine.get('load_before', '?')}.", ""]
    if publish:
        lines += ["| publishers | publishes/s (each run) | median | p50 ms | p99 ms | failed |",
                  "|---|---|---|---|---|---|"]
        for c, runs in publish.items():
            rates = [r["publishes_per_sec"] for r in runs]
            p50 = [r["publish_p50_ms"] for r in runs]
            p99 = [r["publish_p99_ms"] for r in runs]
            lines.append(f"| {c:,} | {' / '.join(fmt(x) for x in rates)} | {fmt(statistics.median(rates))} "
                         f"| {fmt(min(p50), 2)}–{fmt(max(p50), 2)} | {fmt(min(p99), 2)}–{fmt(max(p99), 2)} "
                         f"| {sum(r['failed'] for r in runs)} |")
        lines.append("")
    if latency:
        lines += ["| subscribers | deliveries/s | delivered | p50 ms | p99 ms | p99.9 ms | max ms |",
                  "|---|---|---|---|---|---|---|"]
        for s, (r, *_) in latency.items():
            lines.append(f"| {s:,} | {fmt(r['deliveries_per_sec'])} | {r['deliveries']:,}/{r['deliveries_expected']:,} "
                         f"| {fmt(r['latency_p50_ms'], 2)} | {fmt(r['latency_p99_ms'], 2)} "
                         f"| {fmt(r['latency_p999_ms'], 2)} | {fmt(r['latency_max_ms'], 2)} |")
    return "\n".join(lines) + "\n"


class Chart:
    """One panel with log-scaled x and y axes and labelled lines."""

    def __init__(self, parts, x0, y0, w, h, title, xs, ys, xlabel):
        self.parts, self.x0, self.y0, self.w, self.h = parts, x0, y0, w, h
        self.xlo, self.xhi = math.log10(min(xs)), math.log10(max(xs))
        self.ylo = math.floor(math.log10(min(ys)))
        self.yhi = max(math.ceil(math.log10(max(ys))), self.ylo + 1)
        parts.append(f'<text x="{x0}" y="{y0 - 12}" font-size="14" font-weight="bold">{title}</text>')
        for e in range(self.ylo, self.yhi + 1):
            y = self.y(10 ** e)
            parts.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(10 ** e, 2 if e < 0 else 0)}</text>')
        # From the right, leaving out a label closer than 45 px to the one after it
        # (log axes crowd at the top end).
        last = None
        for x in reversed(xs):
            if last is None or last - self.x(x) >= 45:
                parts.append(f'<text x="{self.x(x):.1f}" y="{y0 + h + 16}" text-anchor="middle">{fmt(x, 0)}</text>')
                last = self.x(x)
        parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle">{xlabel}</text>')
        parts.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y0 + h}" y2="{y0 + h}" stroke="#333"/>')

    def x(self, v):
        span = (self.xhi - self.xlo) or 1
        return self.x0 + (math.log10(v) - self.xlo) / span * self.w

    def y(self, v):
        return self.y0 + self.h - (math.log10(v) - self.ylo) / (self.yhi - self.ylo) * self.h

    def target(self, value, label):
        """A dashed horizontal line at an issue's target."""
        y = self.y(value)
        self.parts.append(f'<line x1="{self.x0}" x2="{self.x0 + self.w}" y1="{y:.1f}" y2="{y:.1f}" '
                          'stroke="#555" stroke-dasharray="5,4"/>')
        self.parts.append(f'<text x="{self.x0 + self.w}" y="{y - 4:.1f}" text-anchor="end" fill="#555">{label}</text>')

    def line(self, points, color, label, slot):
        path = " ".join(f"{self.x(x):.1f},{self.y(y):.1f}" for x, y in points)
        self.parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in points:
            self.parts.append(f'<circle cx="{self.x(x):.1f}" cy="{self.y(y):.1f}" r="3" fill="{color}">'
                              f'<title>{label} at {fmt(x, 0)}: {fmt(y, 2)}</title></circle>')
        lx, ly = self.x0 + 10 + slot * 90, self.y0 + self.h * 0.4
        self.parts.append(f'<rect x="{lx}" y="{ly:.1f}" width="12" height="12" fill="{color}"/>')
        self.parts.append(f'<text x="{lx + 16}" y="{ly + 11:.1f}">{label}</text>')


def svg(publish, latency):
    width, height = 980, 380
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>']
    if publish:
        cs = list(publish)
        rates = [(c, statistics.median(r["publishes_per_sec"] for r in runs)) for c, runs in publish.items()]
        p99 = [(c, statistics.median(r["publish_p99_ms"] for r in runs)) for c, runs in publish.items()]
        left = Chart(parts, 70, 50, 370, 270, "durable publishes/s (median) and p99 ms, by publishers",
                     cs, [v for _, v in rates + p99], "concurrent publishers (log)")
        left.target(50_000, "target 50,000/s")
        left.line(rates, "#d9480f", "publishes/s", 0)
        left.line(p99, "#1971c2", "p99 ms", 1)
    if latency:
        ss = list(latency)
        points = {label: [(s, max(runs[0][key], 0.001)) for s, runs in latency.items()] for label, key, _ in LATENCY}
        right = Chart(parts, 570, 50, 380, 270, "publish→receive latency ms at 100/s, by room size",
                      ss, [v for pts in points.values() for _, v in pts], "subscribers on the room (log)")
        right.target(5, "target p99 5 ms")
        for slot, (label, _, color) in enumerate(LATENCY):
            right.line(points[label], color, label, slot)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results-sweep")
    publish = results(out, r"publish-c(\d+)-run\d+\.json")
    latency = results(out, r"latency-s(\d+)\.json")
    if not publish and not latency:
        sys.exit(f"sweep_plot: no results in {out}")
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    (out / "sweep.md").write_text(tables(publish, latency, machine))
    (out / "sweep.svg").write_text(svg(publish, latency))


if __name__ == "__main__":
    main()
