#include "inflate.h"

#include <algorithm>
#include <mutex>
#include <new>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bytes.h"

// zstd 1.5.7 (third_party/zstd/README.md), compiled in this one translation unit: every build of the
// engine, the fuzz builds included, gets it with no C compiler and no link flag. Its symbols stay
// inside the engine (the zstandard module loads its own copy beside it). Under the sanitizers (fuzz/)
// it does not poison its own workspaces: it declares ASan's functions without C linkage when
// compiled as C++; every access is checked all the same.
#define ZSTD_ASAN_DONT_POISON_WORKSPACE 1
#define ZSTD_MSAN_DONT_POISON_WORKSPACE 1
#define ZSTDLIB_VISIBLE __attribute__((visibility("hidden")))
#define ZSTDERRORLIB_VISIBLE __attribute__((visibility("hidden")))
#define ZDICTLIB_VISIBLE __attribute__((visibility("hidden")))
#include "third_party/zstd/zstd.c"

namespace zc {

namespace {

// Free plane memory kept for the next pass: at most KEEP bytes (minilm's fp32 word embeddings have
// two zstd planes of 11.7 MB; the output blocks keep their own, plan_bind.cpp).
constexpr std::size_t KEEP = std::size_t(64) << 20;
struct Idle {
  std::mutex lock;
  std::vector<std::pair<uint8_t*, std::size_t>> blocks;
  std::size_t bytes = 0;
};
Idle& idle() {
  static Idle* k = new Idle();  // never destroyed: pool threads may give back at teardown
  return *k;
}

struct Context {  // one decompression context a thread, made on its first plane
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~Context() { ZSTD_freeDCtx(dctx); }
};

}  // namespace

Scratch::Scratch(std::size_t n) {
  Idle& k = idle();
  {
    std::lock_guard<std::mutex> guard(k.lock);
    auto best = k.blocks.end();  // the smallest that fits, if it is not over twice the size
    for (auto it = k.blocks.begin(); it != k.blocks.end(); ++it)
      if (it->second >= n && it->second <= 2 * std::max<std::size_t>(n, 1) &&
          (best == k.blocks.end() || it->second < best->second))
        best = it;
    if (best != k.blocks.end()) {
      std::tie(p_, size_) = *best;
      k.bytes -= size_;
      k.blocks.erase(best);
      return;
    }
  }
  p_ = new uint8_t[std::max<std::size_t>(n, 1)];  // (not zeroed: the plane fills it)
  size_ = n;
}

Scratch::Scratch(Scratch&& other) noexcept
    : p_(std::exchange(other.p_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Scratch::~Scratch() {
  if (!p_) return;
  Idle& k = idle();
  {
    std::lock_guard<std::mutex> guard(k.lock);
    if (k.bytes + size_ <= KEEP) {
      k.blocks.emplace_back(p_, size_);
      k.bytes += size_;
      return;
    }
  }
  delete[] p_;
}

void unzstd(const uint8_t* data, std::size_t size, uint8_t* out, std::size_t n) {
  thread_local Context context;
  if (!context.dctx) throw std::bad_alloc();
  const std::size_t got = ZSTD_decompressDCtx(context.dctx, out, n, data, size);
  if (ZSTD_isError(got)) throw Corrupt(std::string("zstd plane: ") + ZSTD_getErrorName(got));
  if (got != n)
    throw Corrupt("zstd plane inflates to " + std::to_string(got) + " bytes, expected " + std::to_string(n));
}

}  // namespace zc
