#!/usr/bin/env python3
"""Draws bench/cluster/cluster.mjs's JSON timeline as a PNG: deliveries/s and
publishes/s, publish-to-receive p50/p99/p99.9 (per second of receipt, log
scale), and each node's, NATS's, PostgreSQL's and the clients' CPU; the
publish phases are shaded and a killed node is marked. Colours as in
bench/plot.py (hubcast orange, the percentiles as in bench/sweep_plot.py).

    python3 bench/cluster/plot.py target/bench/cluster/cluster.json [out.png]
"""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LATENCY = [("p50", "p50_ms", "#1971c2"), ("p99", "p99_ms", "#d9480f"), ("p99.9", "p999_ms", "#7048e8")]
NODE_COLORS = ["#d9480f", "#f08c00", "#e8590c", "#c92a2a", "#a61e4d", "#862e9c", "#5f3dc4", "#364fc7"]


def main():
    src = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".png")
    r = json.loads(src.read_text())
    tl = r["timeline"]
    t = [x["t"] for x in tl]

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    title = (f"hubcast cluster: {r['nodes']} nodes, {r['subscribers']:,} subscribers in {r['room_count']:,} rooms "
             f"({r['rooms']}), placement {r['placement']}")
    if r.get("label"):
        title = f"{r['label']}\n{title}"
    fig.suptitle(title, fontsize=11)

    ax1.plot(t, [x["deliveries"] for x in tl], color="#d9480f", label="deliveries/s")
    ax1.set_ylabel("deliveries/s")
    ax1b = ax1.twinx()
    ax1b.plot(t, [x["publishes_ok"] for x in tl], color="#1971c2", label="publishes/s (acknowledged)")
    failed = [x["publishes_failed"] for x in tl]
    if any(failed):
        ax1b.plot(t, failed, color="#c92a2a", linestyle=":", label="publishes/s failed")
    ax1b.set_ylabel("publishes/s")
    lines = ax1.get_legend_handles_labels()[0] + ax1b.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax1b.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc="upper left", fontsize=8)

    for name, key, color in LATENCY:
        pts = [(x["t"], x[key]) for x in tl if x.get(key)]
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], color=color, label=name)
    ax2.set_yscale("log")
    ax2.set_ylabel("publish → receive, ms")
    ax2.axhline(250, color="#868e96", linestyle="--", linewidth=0.8)
    ax2.legend(loc="upper left", fontsize=8)

    nodes = max((len(x.get("nodes_cpu", [])) for x in tl), default=0)
    for n in range(nodes):
        pts = [(x["t"], x["nodes_cpu"][n]) for x in tl if x.get("nodes_cpu") and x["nodes_cpu"][n] is not None]
        if pts:
            ax3.plot([p[0] for p in pts], [p[1] for p in pts], color=NODE_COLORS[n % len(NODE_COLORS)],
                     label=f"node {n + 1}", linewidth=1)
    for key, label, color in [("nats_cpu", "NATS", "#2f9e44"), ("pg_cpu", "PostgreSQL", "#1971c2"),
                              ("clients_cpu", "clients", "#868e96")]:
        pts = [(x["t"], x[key]) for x in tl if x.get(key) is not None]
        if pts:
            ax3.plot([p[0] for p in pts], [p[1] for p in pts], color=color, label=label, linewidth=1,
                     linestyle="--" if key == "clients_cpu" else "-")
    ax3.set_ylabel("CPU % (100 = one core)")
    ax3.set_xlabel("seconds since the clients started")
    ax3.legend(loc="upper left", fontsize=8, ncol=4)

    marks = r.get("marks", [])
    starts = [m["t"] for m in marks if m["what"] == "publish"]
    ends = [m["t"] for m in marks if m["what"] == "published"]
    for ax in (ax1, ax2, ax3):
        for a, b in zip(starts, ends):
            ax.axvspan(a, b, color="#fff4e6", zorder=0)
        for m in marks:
            if m["what"] == "kill":
                ax.axvline(m["t"], color="#c92a2a", linewidth=1)
        ax.grid(True, color="#e9ecef")
    for m in marks:
        if m["what"] == "kill":
            ax1.annotate(f"kill -9 node {m['node']}", (m["t"], 1), xycoords=("data", "axes fraction"),
                         xytext=(3, -12), textcoords="offset points", color="#c92a2a", fontsize=8)

    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
