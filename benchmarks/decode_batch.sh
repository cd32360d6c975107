#!/usr/bin/env bash
# Batched decode throughput and TPOT at batch 1, 4, 16, 64 on the default model and on the
# Llama-3.2-1B-shaped synthetic file (written first if missing), each sequence holding 128
# tokens of context. Not a test: results go to docs/performance.md ("Engine: batched decode").
#   benchmarks/decode_batch.sh [path/to/cleave] [extra `cleave profile` flags, e.g. -r 5]
# THREADS (default 1) sets -t: on a shared, oversubscribed machine the thread pool's
# fork-join waits dominate multi-threaded runs (see docs/performance.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cleave="${1:-${CLEAVE_BINARY:-$root/build/cleave}}"
shift || true
CLEAVE_BINARY="$cleave" "$root/scripts/make_synthetic_1b.sh"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|f16c|fma|avx512)' | sort | tr '\n' ' ')"
for model in "" "$root/.cache/models/synthetic-llama-3.2-1b-q4_0.gguf"; do
  "$cleave" profile ${model:+-m "$model"} --batch 1,4,16,64 --context 128 --steps 2 \
    -t "${THREADS:-1}" -r 3 "$@"
done
