#!/usr/bin/env bash
# Goodput of colocated vs disaggregated serving on this machine at equal cores: `cleave serve
# -t 2` (one engine, chunked prefill, the vLLM / llama-server baseline) against `cleave serve
# --prefill-workers 1 --decode-workers 1` (one core each), on DistServe's chatbot and
# summarization workloads, measured with `cleave bench` (Poisson arrivals). Not a test: the
# report (benchmarks/goodput_report.py) goes into docs/performance.md.
#
#   benchmarks/goodput_compare.sh [OUT_DIR]
#
# For each mode and workload: 8 requests one at a time (the unloaded latencies the SLOs are
# scaled from), then a sweep over RATES_<workload> with NUM_PROMPTS requests per rate. Every
# request's TTFT/TPOT is kept (JSONL), so the report can score any SLO afterwards.
# Environment: WORKLOADS, RATES_chatbot, RATES_summarization, NUM_PROMPTS, LENGTH_SCALE, PORT,
# CLEAVE_BINARY, MODES ("colocated disaggregated"); SWEEP_NAME (default "sweep") and
# SKIP_UNLOADED=1 add more rates to an earlier OUT_DIR (the report reads every sweep* directory).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cleave="${CLEAVE_BINARY:-$root/build/cleave}"
out="${1:-$root/bench-results/goodput-$(date +%Y%m%d-%H%M%S)}"
port="${PORT:-8123}"
workloads="${WORKLOADS:-chatbot summarization}"
modes="${MODES:-colocated disaggregated}"
num_prompts="${NUM_PROMPTS:-40}"
length_scale="${LENGTH_SCALE:-0.25}"
RATES_chatbot="${RATES_chatbot:-1,2,3,4,5}"
RATES_summarization="${RATES_summarization:-0.5,1,1.5,2,2.5,3}"
sweep="${SWEEP_NAME:-sweep}"
mkdir -p "$out"
server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/machine.txt"
for mode in $modes; do
  case "$mode" in
    colocated) serve_args=(-t 2) ;;
    disaggregated) serve_args=(--prefill-workers 1 --decode-workers 1) ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  # Every rate of a sweep sends the same seeded prompts: with prefix caching on, later rates
  # would find the earlier rates' KV and skip most of their prefill.
  serve_args+=(--no-prefix-caching)
  "$cleave" serve --port "$port" "${serve_args[@]}" >"$out/$mode-server.log" 2>&1 &
  server_pid=$!
  for wl in $workloads; do
    rates_var="RATES_$wl"
    common=(--base-url "http://127.0.0.1:$port" --workload "$wl" --length-scale "$length_scale"
            --seed 0 --no-progress --no-plot --ready-timeout 300 --num-cores 2)
    if [[ -z "${SKIP_UNLOADED:-}" ]]; then
      echo "== $mode / $wl: unloaded"
      "$cleave" bench "${common[@]}" -n 8 --max-concurrency 1 --num-warmups 2 \
        --result-dir "$out/$mode/$wl/unloaded" >"$out/$mode-$wl-unloaded.txt" 2>&1
    fi
    echo "== $mode / $wl: rates ${!rates_var}"
    "$cleave" bench "${common[@]}" -n "$num_prompts" --rates "${!rates_var}" \
      --result-dir "$out/$mode/$wl/$sweep" >"$out/$mode-$wl-$sweep.txt" 2>&1
  done
  stop_server
done
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3
"$python" "$root/benchmarks/goodput_report.py" "$out"
