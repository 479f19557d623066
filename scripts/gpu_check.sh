#!/usr/bin/env bash
# The GPU session's check (issue 13), one command on the device machine, under 8 minutes:
# build the native engine there, run `pytest -m gpu` (CPU vs GPU bit for bit), then
# bench/gpu.py (compress GPU vs CPU, load into GPU memory vs safetensors, decode GB/s).
# Everything it writes lands in $OUT (default ./gpu-check-out): build.log, pytest.log,
# junit.xml, bench.log, gpu-bench.json, nvidia-smi.txt.
#
# The H200 image has torch, CuPy (cuda13x), nanobind, scikit-build-core, CMake, ninja;
# it lacks zstandard (and Ray, PyAV, DALI: their tests skip). Bring zstandard as a wheel
# in .whl/ (ignored by git, named in the run's `carry`), fetched beforehand on a CPU machine:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl zstandard
# Then: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
start=$(date +%s)
stage() { echo "== $1 at +$(( $(date +%s) - start )) s"; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
if ! $PY -c "import zstandard" 2>/dev/null; then
  stage "installing carried wheels"
  ls .whl/*.whl >/dev/null 2>&1 || { echo "zstandard is missing and no .whl/ was carried (see the header)"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

stage "building the native engine"
timeout 150 bash scripts/build_native.sh "$(command -v $PY)" > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }

stage "pytest -m gpu"
# only the files that hold gpu tests: the rest need packages this image lacks
timeout 200 $PY -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$OUT/junit.xml" \
  tests/test_device_gpu.py tests/kernels/test_decode_gpu.py tests/kernels/test_kmeans_gpu.py \
  tests/kernels/test_lowrank.py tests/kernels/test_prune.py tests/kernels/test_dither.py \
  tests/kernels/test_transform.py tests/methods/test_rdoq.py 2>&1 | tee "$OUT/pytest.log"
tests=$?

stage "bench/gpu.py"
timeout 200 $PY bench/gpu.py --scale "${SCALE:-0.5}" --out "$OUT" 2>&1 | tee "$OUT/bench.log"
bench=$?

stage "done (pytest rc $tests, bench rc $bench)"
exit $(( tests != 0 || bench != 0 ))
