#!/usr/bin/env bash
# Build the native engine (zoocodec/codecs/native/_engine*.so) in place, without pip:
# for a checkout used through PYTHONPATH, or after editing the C++.
#   scripts/build_native.sh [python]      (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v "${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute: CMake resolves relative paths elsewhere
cmake -S . -B build/native $(command -v ninja >/dev/null && echo -G Ninja) -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" >/dev/null
cmake --build build/native
