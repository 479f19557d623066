#!/usr/bin/env bash
# Coverage-guided fuzzing of the native decoders with libFuzzer under AddressSanitizer and
# UndefinedBehaviorSanitizer (needs clang and libFuzzer: on Debian
# `apt-get install clang-14 libfuzzer-14-dev libclang-rt-14-dev`; with gcc only, fuzz/mutate.sh
# replays the corpus and random mutations of it under the same sanitizers).
#   fuzz/run.sh SECONDS [TARGET...]     (targets: rans rans_body floatplanes cabac fused planes huffman
#                                        checked ctx cabacjob dqwalk groups side; default all)
# Each target starts from tests/fuzz_corpus/TARGET/ (kept in git, replayed by
# tests/codecs/native/test_fuzz_corpus.py; fuzz/seeds.py writes valid seeds) and merges
# back the smallest set of inputs that covers what it found. A crash, leak, hang
# (-timeout) or sanitizer report stops it with a non-zero status and a reproducer in
# build/fuzz/. Targets run one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
TARGETS=${*:-rans rans_body floatplanes cabac fused planes huffman checked ctx cabacjob dqwalk groups side}
CXX=${CXX:-$(command -v clang++ || command -v clang++-14)}
SRC=zoocodec/codecs/native
mkdir -p build/fuzz
# inflate.cpp holds the whole zstd library: compiled once, not once a target
inflate=build/fuzz/inflate.o
if [ ! "$inflate" -nt $SRC/inflate.cpp ] || [ ! "$inflate" -nt $SRC/third_party/zstd/zstd.c ]; then
  "$CXX" -std=c++17 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -c $SRC/inflate.cpp -o "$inflate"
fi
for t in $TARGETS; do
  bin=build/fuzz/$t
  "$CXX" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -DZC_TARGET=$t fuzz/targets.cpp $SRC/rans.cpp $SRC/pool.cpp $SRC/floatplanes.cpp $SRC/cabac.cpp $SRC/plan.cpp $SRC/ctx_frame.cpp $SRC/rans_avx2.cpp $SRC/huffman.cpp $SRC/checksum.cpp \
    $SRC/dq.cpp $SRC/quantize.cpp "$inflate" -o "$bin"
  mkdir -p tests/fuzz_corpus/$t
  echo "fuzzing $t for ${SECONDS_EACH}s"
  rm -rf build/fuzz/$t.work && mkdir -p build/fuzz/$t.work
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 \
    -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix=build/fuzz/$t- \
    build/fuzz/$t.work tests/fuzz_corpus/$t 2>&1 | tail -n 8
  mkdir -p build/fuzz/$t.min
  "$bin" -merge=1 build/fuzz/$t.min tests/fuzz_corpus/$t build/fuzz/$t.work >/dev/null 2>&1
  rm -rf tests/fuzz_corpus/$t && mv build/fuzz/$t.min tests/fuzz_corpus/$t
done
