#!/usr/bin/env bash
# Resident memory of `cleave serve` on a model after a few requests, against the budget
# file size + KV cache + 10% (issue #4). Weights are used in place from the file mapping, so RSS
# should be the touched file pages + the KV cache + small working buffers.
#   benchmarks/serve_rss.sh [MODEL.gguf] [KV_TOKENS]
# Default: the Llama-3.2-1B-shaped synthetic file (written first if missing), 4096 KV tokens.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cleave="${CLEAVE_BINARY:-$root/build/cleave}"
model="${1:-$root/.cache/models/synthetic-llama-3.2-1b-q4_0.gguf}"
kv_tokens="${2:-4096}"
port="${PORT:-8139}"
[[ -f "$model" ]] || CLEAVE_BINARY="$cleave" "$root/scripts/make_synthetic_1b.sh"
log="$(mktemp)"
"$cleave" serve -m "$model" --kv-cache-tokens "$kv_tokens" -t 1 --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.5
done
for i in 1 2 3; do
  curl -sf "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d "{\"prompt\": \"Request $i: tell me about memory\", \"max_tokens\": 16}" >/dev/null
done
rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
kv_mib=$(sed -n 's/.*KV cache [0-9]* tokens ([0-9]* blocks, [a-z0-9_]*, \([0-9]*\) MiB).*/\1/p' "$log" | head -1)
file_kb=$(( $(stat -c %s "$model") / 1024 ))
budget_kb=$(( (file_kb + kv_mib * 1024) * 11 / 10 ))
echo "peak RSS $((rss_kb / 1024)) MiB; file $((file_kb / 1024)) MiB + KV ${kv_mib} MiB + 10% = $((budget_kb / 1024)) MiB"
if (( rss_kb <= budget_kb )); then echo "within budget"; else echo "OVER budget"; exit 1; fi
