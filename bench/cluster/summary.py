#!/usr/bin/env python3
"""One Markdown table row per bench/cluster JSON result (per publish step), in
the columns of BENCHMARKS.md's "Cluster at scale (issue 20)" table, with the
standard library only.

    python3 bench/cluster/summary.py target/bench/cluster/cluster.json [more.json …]
"""
import json
import sys

HEADER = ("| run | nodes | subscribers (rooms) | publishes/s asked → achieved (failed) | deliveries/s "
          "| p50 / p99 / p99.9 ms | node CPU % / RSS MB | NATS / PG CPU % | reconcile queries/s, rooms/s "
          "| resumes | exact |\n|---|---|---|---|---|---|---|---|---|---|---|")


def n(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def rows(path):
    r = json.loads(open(path).read())
    e = r["exactness"]
    exact = f"{e['exact']:,} of {e['subscribers']:,}; missed {e['missed']:,}, doubled {e['duplicates']:,}"
    for st in r["steps"]:
        p, d, res = st["publish"], st["delivery"], st["resources"]
        reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(p["failures_by_reason"].items()))
        failed = f"{p['failed']:,}" + (f" ({reasons})" if reasons else "")
        lat = d["latency"]
        nodes = " · ".join("killed" if x["killed"] and x["cpu_pct"] is None else f"{n(x['cpu_pct'])} / {n(x['rss_mb'])}"
                           for x in res["nodes"])
        kill = f", node {st['kill']['node']} killed at {st['kill']['at_s']:.0f} s" if st.get("kill") else ""
        label = r.get("label") or r["date"][:16]
        if r.get("client", "node") != "node":
            label += f" ({r['client']} clients)"
        resumes = f"{r['resumes']['total']:,}" if st.get("kill") else "–"
        yield (f"| {label}{kill} | {r['nodes']} | {r['subscribers']:,} ({r['rooms']}, {r['placement']}) "
               f"| {st['rate']:,} → {n(p['achieved_per_s'])} ({failed}) | {n(d['per_s'])} "
               f"| {n(lat['p50_ms'], 1)} / {n(lat['p99_ms'], 1)} / {n(lat['p999_ms'], 1)} | {nodes} "
               f"| {n(res['nats']['cpu_pct'])} / {n(res['postgres']['cpu_pct'])} "
               f"| {n(res['reconcile_queries_per_s'], 1)}, {n(res['reconcile_rooms_per_s'])} | {resumes} | {exact} |")


def main():
    print(HEADER)
    for path in sys.argv[1:]:
        for row in rows(path):
            print(row)


if __name__ == "__main__":
    main()
