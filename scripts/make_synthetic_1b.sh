#!/usr/bin/env bash
# Writes the Llama-3.2-1B-shaped synthetic model (random Q4_0 weights, ~0.7 GB) that batched
# decode benchmarks use, unless it is already there:
#   .cache/models/synthetic-llama-3.2-1b-q4_0.gguf
# Usage: scripts/make_synthetic_1b.sh [path/to/cleave]   (default: $CLEAVE_BINARY, else the first
# build*/cleave that has `synth`, else `cleave` on PATH).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.cache/models/synthetic-llama-3.2-1b-q4_0.gguf"
if [[ -s "$out" ]]; then
  echo "$out already exists"
  exit 0
fi
cleave="${1:-${CLEAVE_BINARY:-}}"
if [[ -z "$cleave" ]]; then
  # The first build that has the `synth` subcommand (older builds do not).
  for candidate in "$root"/build/cleave "$root"/build*/cleave; do
    if [[ -x "$candidate" ]] && "$candidate" synth --help >/dev/null 2>&1; then
      cleave="$candidate"
      break
    fi
  done
fi
cleave="${cleave:-cleave}"
mkdir -p "$(dirname "$out")"
"$cleave" synth --shape llama-3.2-1b --type q4_0 -o "$out"
