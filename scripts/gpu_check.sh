#!/usr/bin/env bash
# The GPU check of issue 13: one command on a GPU machine, under 8 minutes (each stage has a
# timeout inside a 470 s budget). It builds the native engine, compiles the CUDA kernels
# (nvcc for the resource report, CuPy's NVRTC as they run), runs `pytest -m gpu` (CPU vs GPU
# bit for bit: every method with a GPU path, the batched compress, the device-resident uniform
# quantizer of uniform.cu, the rANS encoder of rans_encode.cu (ans.encode's bytes), kmeans' device-resident
# indices and statistics (stats.cu), the rdoq/dq kernels of rdoq.cu, the GPU decoder, and every registered
# method's conformance on CUDA: round trip, quantize_many, GPU equal to CPU) and
# bench/bench_gpu.py (compress GPU vs CPU with the 20x and 1B-in-1-s targets, dq and rdoq among them
# from fmnist-cnn up, the rdoq/dq kernels alone vs NumPy, the GPU rANS encoder vs the native CPU one, load into GPU memory vs safetensors, decoder GB/s, k-means as a
# fraction of HBM; last, load of dq and grouped-uniform files), and bench/bench_decode_gpu.py
# (uniform at 2-16 bits, grouped uniform, dq levels, kmeans and lossless float planes on the GPU
# decoder: exact against the CPU, load and kernel speed; its JSON is rewritten after each spec).
# Everything lands in $OUT (default ./gpu-check-out): nvidia-smi.txt, build.log, nvcc.log,
# pytest.log, junit.xml, decode-gpu.log, decode-gpu.json, bench.log, gpu-bench.json.
#
# The H200 image (python3 3.12, torch 2.11 cu130, CuPy 14 cuda13x, nanobind, scikit-build-core,
# CMake, ninja, pytest, hypothesis, safetensors, pyarrow, pyyaml) lacks zstandard and jsonschema
# (with referencing, jsonschema-specifications, rpds-py), and Ray, PyAV, DALI (their tests skip).
# Bring the missing wheels in .whl/ (ignored by git, named in the run's `carry`):
#   1. here, on a CPU machine with pip:   bash scripts/gpu_check.sh --fetch-wheels
#   2. device tool:                        run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Without a GPU:                          bash scripts/gpu_check.sh --dry-run
#   (bash -n, nvcc -arch=sm_90 of every .cu, `pytest -m gpu` skipping cleanly, bench/bench_gpu.py --dry-run).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
WHEELS="zstandard jsonschema jsonschema-specifications referencing rpds-py"

if [ "$MODE" = "--fetch-wheels" ]; then
  grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null ||
    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
  exec "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $WHEELS
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
start=$(date +%s)
BUDGET=470
stage() { echo "== $1 at +$(( $(date +%s) - start )) s"; }
# a stage's timeout: its own limit, or what is left of the budget (at least 10 s)
limit() { local left=$(( BUDGET - ($(date +%s) - start) )); [ "$left" -lt "$1" ] && echo $(( left > 10 ? left : 10 )) || echo "$1"; }

if [ "$MODE" = "--dry-run" ]; then
  stage "dry run: bash -n, nvcc sm_90, pytest -m gpu (skips), bench --dry-run"
  bash -n "$0" || exit 1
  for f in zoocodec/kernels/*.cu; do
    nvcc -arch=sm_90 -std=c++17 -c -Xptxas -v "$f" -o /dev/null >> "$OUT/nvcc.log" 2>&1 || { echo "nvcc failed on $f"; exit 1; }
  done
  $PY -m pytest -q -p no:cacheprovider -m gpu -rs tests 2>&1 | tail -5
  $PY bench/bench_gpu.py --dry-run --out "$OUT" 2>&1 | tail -8
  exit $?
fi

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
if ! $PY -c "import zstandard, jsonschema" 2>/dev/null; then
  stage "installing carried wheels"
  ls .whl/*.whl >/dev/null 2>&1 || { echo "zstandard/jsonschema missing and no .whl/ carried: see the header"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

stage "building the native engine"
timeout "$(limit 110)" bash scripts/build_native.sh "$(command -v $PY)" > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }

stage "compiling the CUDA kernels (nvcc sm_90 report; CuPy NVRTC)"
for f in zoocodec/kernels/*.cu; do
  timeout 30 nvcc -arch=sm_90 -std=c++17 -c -Xptxas -v "$f" -o /dev/null >> "$OUT/nvcc.log" 2>&1 || echo "nvcc: $f failed (see nvcc.log)"
done
timeout "$(limit 60)" $PY -c "
from zoocodec.kernels import decode, kmeans, rans_encode, rdoq, stats, uniform
for m, names in ((stats, tuple(stats.KERNELS.values())),
                 (kmeans, ('lloyd_pass', 'lloyd_pass16', 'lloyd_small')), (rdoq, ('rdoq_decide', 'dq_trellis_1', 'dq_trellis_4')),
                 (rans_encode, tuple(f'rans_{p}_{k}' for p in ('histogram', 'encode') for k in rans_encode.KINDS.values())
                  + ('rans_gather',)),
                 (decode, tuple(k for k, _ in decode.KINDS.values()) + tuple(decode.PACKED_KERNELS.values())
                  + tuple(decode.DQ_KERNELS.values()) + ('rans_bytes', 'rans_index', 'dq_maps', 'planes_merge4',
                  'planes_merge2', 'huff_bytes')),
                 (uniform, tuple(uniform.KERNELS.values()) + ('pairwise_nodes',))):
    for n in names:
        m._module().get_function(n)
print('CUDA kernels compiled by NVRTC')
" 2>&1 | tail -3

stage "pytest -m gpu"
# only the files that hold gpu tests: the rest need packages this image lacks
timeout "$(limit 180)" $PY -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$OUT/junit.xml" \
  tests/test_device_gpu.py tests/kernels/test_decode_gpu.py tests/kernels/test_kmeans_gpu.py \
  tests/kernels/test_lowrank.py tests/kernels/test_prune.py tests/kernels/test_dither.py \
  tests/kernels/test_transform.py tests/methods/test_rdoq.py tests/kernels/test_uniform_device.py \
  tests/kernels/test_rdoq_kernels.py tests/kernels/test_rans_encode.py tests/kernels/test_stats.py \
  tests/methods/test_conformance.py tests/eval/test_lm.py tests/tuning/test_finetune.py tests/tuning/test_auto.py \
  tests/eval/test_anymodel.py 2>&1 | tee "$OUT/pytest.log" | tail -25
tests=${PIPESTATUS[0]}

stage "bench/bench_decode_gpu.py (uniform 2-16 bits, grouped, dq, kmeans, lossless, then ctx: load vs safetensors, GB/s, exact)"
timeout "$(limit 150)" $PY bench/bench_decode_gpu.py --params "${DECODE_PARAMS:-30e6}" \
  --dq-params "${DQ_PARAMS:-8e6}" --out "$OUT" 2>&1 | tee "$OUT/decode-gpu.log" | tail -14

stage "bench/bench_gpu.py"
timeout "$(limit 400)" $PY bench/bench_gpu.py --scale "${SCALE:-1.0}" --out "$OUT" 2>&1 | tee "$OUT/bench.log" | grep -v "^ " | tail -30
bench=${PIPESTATUS[0]}

stage "done (pytest rc $tests, bench rc $bench)"
exit $(( tests != 0 || bench != 0 ))
