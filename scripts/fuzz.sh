#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each one for
# SECONDS (default 30) on a corpus seeded with valid files that GgufWriter makes. Exits non-zero
# if a target finds a crash (the reproducer is saved under build-fuzz/artifacts/). Skips, with
# exit code 0, when clang is not installed.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
if ! command -v clang++ >/dev/null 2>&1 || ! command -v clang >/dev/null 2>&1; then
  echo "fuzz.sh: clang/clang++ not found; skipping fuzzing (apt-get install clang)"
  exit 0
fi
build=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCLEAVE_BUILD_FUZZERS=ON -DCLEAVE_BUILD_TESTS=OFF -DCLEAVE_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "${FUZZ_JOBS:-2}" --target gguf_fuzz gguf_fuzz_seeds openai_request_fuzz \
  wire_fuzz wire_fuzz_seeds

mkdir -p "$build/corpus/gguf" "$build/corpus/openai_request" "$build/corpus/wire" "$build/artifacts"
printf '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}' \
  >"$build/corpus/openai_request/chat.json"
printf '{"model":"m","prompt":["a",[1,2]],"n":2,"logprobs":3,"stop":["x"]}' \
  >"$build/corpus/openai_request/completion.json"
"$build/fuzz/gguf_fuzz_seeds" "$build/corpus/gguf"
"$build/fuzz/wire_fuzz_seeds" "$build/corpus/wire"

status=0
for target in gguf_fuzz openai_request_fuzz wire_fuzz; do
  corpus=$build/corpus/${target%_fuzz}
  dict=(); [ "$target" = gguf_fuzz ] && dict=(-dict=fuzz/gguf.dict)
  echo "fuzz.sh: running $target for ${seconds}s"
  if ! "$build/fuzz/$target" "$corpus" -max_total_time="$seconds" -max_len=65536 \
      -timeout=10 -rss_limit_mb=2048 "${dict[@]}" -print_final_stats=1 \
      -artifact_prefix="$build/artifacts/$target-" 2>"$build/$target.log"; then
    tail -n 60 "$build/$target.log"
    echo "fuzz.sh: $target FAILED; reproducers in $build/artifacts/ (run: $build/fuzz/$target FILE)"
    status=1
  else
    grep -E "^(stat::number_of_executed_units|stat::new_units_added)" "$build/$target.log" || true
    echo "fuzz.sh: $target OK"
  fi
done
exit $status
