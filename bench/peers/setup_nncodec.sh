#!/usr/bin/env bash
# Build NNCodec (PyPI `nncodec`, the MPEG NNR reference software) in its OWN virtual
# environment, for bench/bench_head_to_head.py. Never touches the project's venv.
#
# Why a separate venv: nncodec declares unpinned `torch>=2` and `torchvision>=0.15`, so a
# plain `pip install nncodec` replaces the project's pinned torch with a CUDA build and adds
# a torchvision that does not import beside it. Here torch is pinned to the project's
# version, nncodec goes in with --no-deps, and we add only what it imports (numpy<2 among
# them). Its C++ extension (DeepCABAC) compiles in about a minute.
#
# Usage: bench/peers/setup_nncodec.sh [VENV_DIR]   (default: .venv-nncodec at the repo root)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${1:-${NNCODEC_VENV:-$ROOT/.venv-nncodec}}"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
NNCODEC_VERSION="${NNCODEC_VERSION:-2.1.3}"

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# The CPU build is enough (and 4 GB smaller): set TORCH_INDEX=https://download.pytorch.org/whl/cpu
# where pip would otherwise pick a CUDA build.
"$VENV/bin/pip" install -q "torch==$TORCH_VERSION" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"}
"$VENV/bin/pip" install -q "numpy<2" h5py pandas scikit-learn opencv-python-headless tqdm click \
  pybind11 safetensors setuptools wheel
# --no-build-isolation: build against the pybind11 just installed (offline-friendly).
"$VENV/bin/pip" install -q --no-deps --no-build-isolation "nncodec==$NNCODEC_VERSION"
"$VENV/bin/python" "$ROOT/bench/peers/nncodec_runner.py" --self-test
echo "NNCodec $NNCODEC_VERSION ready in $VENV"
