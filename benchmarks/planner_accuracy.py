#!/usr/bin/env python3
"""The planner against measurements: for each mode and workload that
benchmarks/goodput_compare.sh measured, `cleave plan --predict-rates` simulates the same
requests (the lengths `cleave bench` sent, as a trace file, and the same seeded arrivals) on the
matching placement with a fitted profile of this machine, and the predicted SLO attainment is
set against the measured one at every rate.

  planner_accuracy.py OUT_DIR FIT.json [--cleave build/cleave] [--slo-scale 3]

The SLO is the colocated unloaded medians (TTFT, TPOT) times --slo-scale, as in the goodput
report. Prints a markdown table; the issue's bar is agreement within 5 percentage points.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goodput_report import attainment, load_runs, load_sweeps, median  # noqa: E402

PLACEMENT = {"colocated": "colocated", "disaggregated": "1p1d"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("fit")
    ap.add_argument("--cleave", default=os.path.join(os.path.dirname(__file__), "..", "build", "cleave"))
    ap.add_argument("--slo-scale", type=float, default=3.0)
    ap.add_argument("--cores", type=int, default=2,
                    help="cores the plan gives the colocated engine (its thread count)")
    args = ap.parse_args()
    out = args.out_dir
    modes = [m for m in PLACEMENT if os.path.isdir(os.path.join(out, m))]
    workloads = sorted({w for m in modes for w in os.listdir(os.path.join(out, m))})
    lines = [
        "| workload | mode | SLO TTFT / TPOT | rate (req/s) | measured | predicted | difference |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    diffs = []
    for wl in workloads:
        base = [r for _, rs in load_runs(os.path.join(out, "colocated", wl, "unloaded")) for r in rs
                if r.get("success")]
        ttft = args.slo_scale * median([r["ttft_ms"] for r in base])
        tpot = args.slo_scale * median([r["tpot_ms"] for r in base if r.get("tpot_ms") is not None])
        for m in modes:
            for rate, records in load_sweeps(os.path.join(out, m, wl)):
                # The lengths this run's requests had, in order, as a trace; same seeded arrivals.
                records = sorted(records, key=lambda r: r["index"])
                trace = os.path.join(out, m, wl, f"lengths_{rate:g}.jsonl")
                with open(trace, "w") as f:
                    for r in records:
                        out_len = r.get("expected_output_tokens") or r.get("output_tokens") or 1
                        f.write(json.dumps({"timestamp": 0, "input_length": r["prompt_tokens"],
                                            "output_length": out_len}) + "\n")
                cmd = [args.cleave, "plan", "--hardware", "local", "--profile", args.fit,
                       "--cores", str(args.cores), "--workload", "trace:" + trace,
                       "--predict-rates", f"{rate:g}", "--placement", PLACEMENT[m],
                       "--num-requests", str(len(records)), "--seed", "0",
                       "--ttft", f"{ttft / 1e3:.6f}", "--tpot", f"{tpot / 1e3:.6f}", "--json"]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"cleave plan failed: {' '.join(cmd)}\n{res.stderr}")
                pred = json.loads(res.stdout)["rates"][0]["attainment"]
                measured = attainment(records, ttft, tpot)
                diffs.append(abs(measured - pred))
                lines.append(f"| {wl} | {m} | {ttft / 1e3:.2f} s / {tpot:.0f} ms | {rate:g} | "
                             f"{100 * measured:.0f}% | {100 * pred:.0f}% | {100 * (pred - measured):+.0f} pp |")
    within = sum(d <= 0.05 for d in diffs)
    lines.append("")
    lines.append(f"{within} of {len(diffs)} points within 5 pp; mean |difference| "
                 f"{100 * sum(diffs) / max(1, len(diffs)):.1f} pp, max {100 * max(diffs, default=0):.0f} pp.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
