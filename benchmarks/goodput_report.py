#!/usr/bin/env python3
"""Scores the runs of benchmarks/goodput_compare.sh: attainment-vs-rate curves and goodput of
each serving mode under SLOs scaled from the unloaded latencies, as markdown and PNG plots.

  goodput_report.py OUT_DIR [--plots-dir DIR]

SLO attainment is joint per request (TTFT and TPOT both met; a failed request misses; a request
with one output token has no TPOT and meets it), as `cleave bench` defines it. Goodput is the
highest rate with attainment >= 90%, interpolated linearly between the last passing and the first
failing rate of the sweep (DistServe's curves read the same way); "< r" when even the lowest rate
fails, ">= r" when the highest passes.
"""
import argparse
import json
import os
import statistics
import sys

TARGET = 0.9
# (label, TTFT multiplier, TPOT multiplier) of the colocated unloaded medians.
SLOS = [
    ("both x2", 2, 2),
    ("both x3", 3, 3),
    ("both x5", 5, 5),
    ("TTFT x5, TPOT x1.5 (tight TPOT)", 5, 1.5),
    ("TTFT x5, TPOT x2", 5, 2),
    ("TTFT x2, TPOT x5 (tight TTFT)", 2, 5),
]


def load_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_runs(run_dir):
    """[(rate, records)] of one bench result directory, by rate."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    runs = []
    for run in summary["runs"]:
        name = run.get("requests_file") or run.get("file")
        path = name if os.path.isabs(name) else os.path.join(run_dir, os.path.basename(name))
        if not path.endswith(".jsonl"):
            path = os.path.splitext(path)[0] + ".jsonl"
        rate = run["request_rate"]
        runs.append((float("inf") if rate in (None, "inf") else float(rate), load_records(path)))
    return sorted(runs, key=lambda r: r[0])


def load_sweeps(wl_dir):
    """Every sweep* directory of one mode and workload, merged by rate."""
    runs = []
    for name in sorted(os.listdir(wl_dir)):
        if name.startswith("sweep") and os.path.isdir(os.path.join(wl_dir, name)):
            runs += load_runs(os.path.join(wl_dir, name))
    return sorted(runs, key=lambda r: r[0])


def meets(record, ttft_ms, tpot_ms):
    if not record.get("success"):
        return False
    if record["ttft_ms"] > ttft_ms:
        return False
    tpot = record.get("tpot_ms")
    return tpot is None or record.get("output_tokens", 0) < 2 or tpot <= tpot_ms


def attainment(records, ttft_ms, tpot_ms):
    return sum(meets(r, ttft_ms, tpot_ms) for r in records) / max(1, len(records))


def goodput(curve):
    """curve: [(rate, attainment)] ascending. Returns (value, text)."""
    last_pass = None
    for i, (rate, att) in enumerate(curve):
        if att >= TARGET:
            last_pass = i
            continue
        if last_pass is None:
            return 0.0, f"< {curve[0][0]:g}"
        r0, a0 = curve[last_pass]
        if last_pass != i - 1:  # non-monotone: stop at the first failure after a pass
            pass
        r1, a1 = rate, att
        value = r0 + (a0 - TARGET) / (a0 - a1) * (r1 - r0) if a0 != a1 else r0
        return value, f"{value:.2f}"
    return curve[-1][0], f">= {curve[-1][0]:g}"


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--plots-dir", default=None)
    args = ap.parse_args()
    out = args.out_dir
    plots_dir = args.plots_dir or out
    modes = [m for m in ("colocated", "disaggregated") if os.path.isdir(os.path.join(out, m))]
    if not modes:
        sys.exit(f"no mode directories under {out}")
    workloads = sorted({w for m in modes for w in os.listdir(os.path.join(out, m))})
    lines = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    for wl in workloads:
        unloaded = {}
        for m in modes:
            recs = [r for _, rs in load_runs(os.path.join(out, m, wl, "unloaded")) for r in rs]
            ok = [r for r in recs if r.get("success")]
            unloaded[m] = (
                median([r["ttft_ms"] for r in ok]),
                median([r["tpot_ms"] for r in ok if r.get("tpot_ms") is not None]),
                median([r["prompt_tokens"] for r in ok]),
                median([r["output_tokens"] for r in ok]),
            )
        base_ttft, base_tpot = unloaded.get("colocated", unloaded[modes[0]])[:2]
        lines.append(f"### {wl}\n")
        lines.append("| mode | unloaded median TTFT | unloaded median TPOT | median prompt / output tokens |")
        lines.append("|---|---|---|---|")
        for m in modes:
            t, p, pin, pout = unloaded[m]
            lines.append(f"| {m} | {t:.0f} ms | {p:.1f} ms | {pin:.0f} / {pout:.0f} |")
        lines.append("")
        sweeps = {m: load_sweeps(os.path.join(out, m, wl)) for m in modes}
        header = "| SLO (TTFT / TPOT) | " + " | ".join(f"{m} goodput (req/s)" for m in modes)
        if len(modes) == 2:
            header += " | disaggregated / colocated"
        lines.append(header + " |")
        lines.append("|---" * (len(modes) + 1 + (len(modes) == 2)) + "|")
        curves_for_plot = {}
        for label, kt, kp in SLOS:
            ttft, tpot = kt * base_ttft, kp * base_tpot
            cells, values = [], []
            for m in modes:
                curve = [(rate, attainment(rs, ttft, tpot)) for rate, rs in sweeps[m]]
                curves_for_plot[(label, m)] = curve
                v, text = goodput(curve)
                values.append(v)
                cells.append(text)
            row = f"| {label}: {ttft / 1e3:.2f} s / {tpot:.0f} ms | " + " | ".join(cells)
            if len(modes) == 2:
                ratio = values[1] / values[0] if values[0] > 0 else float("inf")
                row += f" | {ratio:.2f}x" if values[0] > 0 else " | n/a"
            lines.append(row + " |")
        lines.append("")
        lines.append("Attainment (%) per rate:\n")
        rates = sorted({rate for m in modes for rate, _ in sweeps[m]})
        lines.append("| SLO | mode | " + " | ".join(f"{r:g} req/s" for r in rates) + " |")
        lines.append("|---|---|" + "---|" * len(rates))
        for label, _, _ in SLOS:
            for m in modes:
                by_rate = dict(curves_for_plot[(label, m)])
                cells = [f"{100 * by_rate[r]:.0f}" if r in by_rate else "" for r in rates]
                lines.append(f"| {label} | {m} | " + " | ".join(cells) + " |")
        lines.append("")
        if plt is not None:
            fig, grid = plt.subplots(2, 3, figsize=(15, 7.5), sharey=True)
            axes = grid.flatten()
            for ax, (label, _, _) in zip(axes, SLOS):
                for m, style in zip(modes, ("o-", "s--")):
                    curve = curves_for_plot[(label, m)]
                    ax.plot([r for r, _ in curve], [100 * a for _, a in curve], style, label=m)
                ax.axhline(100 * TARGET, color="gray", lw=0.8, ls=":")
                ax.set_title(f"{wl}: {label}", fontsize=9)
                ax.set_xlabel("request rate (req/s)")
                ax.set_ylim(0, 105)
                ax.grid(alpha=0.3)
            for ax in grid[:, 0]:
                ax.set_ylabel("SLO attainment (%)")
            axes[0].legend()
            fig.tight_layout()
            os.makedirs(plots_dir, exist_ok=True)
            path = os.path.join(plots_dir, f"goodput_{wl}.png")
            fig.savefig(path, dpi=90)
            lines.append(f"![{wl} attainment vs rate]({os.path.basename(path)})\n")
    report = "\n".join(lines)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
