#!/usr/bin/env python3
"""Draws the plots of a `cleave bench` result directory (called by the command; --no-plot skips).

Reads RESULT_DIR/summary.json and the per-request JSONL of each run, writes:
  attainment_vs_rate.png  SLO attainment per rate (sweep runs and goodput probes), the target
                          line, and the goodput marked;
  ttft_cdf.png, tpot_cdf.png  empirical CDFs per run with the objective marked;
  slo_scale.png           attainment vs SLO scale per run (when objectives were given).
Exits 2, with a warning, when matplotlib is not installed.
"""
import json
import math
import os
import sys


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rate_of(run):
    r = run.get("request_rate")
    return math.inf if r in (None, "inf") else float(r)


def cdf(ax, values, label):
    values = sorted(v for v in values if v is not None)
    if not values:
        return
    n = len(values)
    ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=label)


def main():
    if len(sys.argv) != 2:
        print("usage: plot_bench.py RESULT_DIR", file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; skipping plots "
              "(pip install -r tests/reference/requirements.txt)", file=sys.stderr)
        return 2
    out = sys.argv[1]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    runs = summary.get("runs", [])
    slo = summary.get("slo", {}) or {}
    target = summary.get("target_attainment", 0.9)
    goodput = summary.get("goodput")
    title = "%s, %s" % (summary.get("model_id", "?"), summary.get("workload", "?"))
    written = []

    # Attainment vs rate.
    points = [(rate_of(r), r["slo_attainment"], r.get("kind", "")) for r in runs
              if r.get("slo_attainment") is not None and math.isfinite(rate_of(r))]
    if points:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        sweep = sorted((p[0], p[1]) for p in points if p[2] != "goodput probe")
        probes = sorted((p[0], p[1]) for p in points if p[2] == "goodput probe")
        if sweep:
            ax.plot([p[0] for p in sweep], [100 * p[1] for p in sweep], "o-", label="rate runs")
        if probes:
            ax.plot([p[0] for p in probes], [100 * p[1] for p in probes], "s", mfc="none",
                    label="goodput probes")
        ax.axhline(100 * target, color="gray", ls="--", lw=1, label="target %.0f%%" % (100 * target))
        if goodput and goodput.get("goodput_rps") is not None:
            g = goodput["goodput_rps"]
            ax.axvline(g, color="tab:red", lw=1.5,
                       label="goodput %.3g req/s%s" % (g, "+" if goodput.get("saturated") else ""))
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("SLO attainment (%)")
        ax.set_ylim(-2, 102)
        objs = " & ".join("%s<=%gms" % (k.upper(), v) for k, v in slo.items())
        ax.set_title("%s\n%s" % (title, objs), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "attainment_vs_rate.png"), dpi=110)
        plt.close(fig)
        written.append("attainment_vs_rate.png")

    # Latency CDFs (at most 8 runs, by rate).
    shown = sorted(runs, key=rate_of)[:8]
    records = {r["requests_file"]: load_jsonl(os.path.join(out, r["requests_file"])) for r in shown}
    for metric, key in (("ttft", "ttft_ms"), ("tpot", "tpot_ms")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in shown:
            cdf(ax, [q.get(key) for q in records[r["requests_file"]] if q.get("success")],
                "%s req/s" % r.get("request_rate"))
        if metric in slo:
            ax.axvline(slo[metric], color="gray", ls="--", lw=1, label="SLO %g ms" % slo[metric])
        ax.set_xlabel("%s (ms)" % metric.upper())
        ax.set_ylabel("fraction of requests")
        ax.set_title("%s CDF, %s" % (metric.upper(), title), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "%s_cdf.png" % metric), dpi=110)
        plt.close(fig)
        written.append("%s_cdf.png" % metric)

    # SLO scale sweep.
    table = summary.get("slo_scales") or []
    if table:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        n_runs = len(table[0]["runs"])
        for i in range(min(n_runs, 8)):
            xs = [row["scale"] for row in table]
            ys = [100 * row["runs"][i]["attainment"] for row in table]
            ax.plot(xs, ys, "o-", label="%s req/s" % table[0]["runs"][i]["request_rate"])
        ax.axhline(100 * target, color="gray", ls="--", lw=1)
        ax.set_xlabel("SLO scale (both objectives multiplied)")
        ax.set_ylabel("SLO attainment (%)")
        ax.set_ylim(-2, 102)
        ax.set_title("SLO scale, %s" % title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "slo_scale.png"), dpi=110)
        plt.close(fig)
        written.append("slo_scale.png")
    print("plots: " + ", ".join(os.path.join(out, w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
