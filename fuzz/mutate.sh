#!/usr/bin/env bash
# The fuzz targets under gcc's AddressSanitizer + UBSan where clang/libFuzzer are missing
# (fuzz/run.sh needs them): each target's corpus replayed, then ROUNDS random mutations of it
# (fuzz/mutate.cpp). A sanitizer report or a crash stops it with a non-zero status.
#   fuzz/mutate.sh ROUNDS [TARGET...]     (targets as fuzz/run.sh; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:?usage: fuzz/mutate.sh ROUNDS [TARGET...]}
shift
TARGETS=${*:-rans rans_body floatplanes cabac fused planes huffman checked ctx cabacjob dqwalk groups side}
SRC=zoocodec/codecs/native
mkdir -p build/fuzz
# inflate.cpp holds the whole zstd library: compiled once, not once a target
inflate=build/fuzz/inflate-gcc.o
if [ ! "$inflate" -nt $SRC/inflate.cpp ] || [ ! "$inflate" -nt $SRC/third_party/zstd/zstd.c ]; then
  "${CXX:-g++}" -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -c $SRC/inflate.cpp -o "$inflate"
fi
for t in $TARGETS; do
  bin=build/fuzz/$t-gcc
  "${CXX:-g++}" -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -DZC_TARGET=$t fuzz/targets.cpp fuzz/mutate.cpp $SRC/rans.cpp $SRC/pool.cpp $SRC/floatplanes.cpp \
    $SRC/cabac.cpp $SRC/plan.cpp $SRC/ctx_frame.cpp $SRC/rans_avx2.cpp $SRC/huffman.cpp $SRC/checksum.cpp \
    $SRC/dq.cpp $SRC/quantize.cpp "$inflate" -pthread -o "$bin"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$bin" tests/fuzz_corpus/$t "$ROUNDS"
done
