// zstd-coded float planes (codecs/floatplanes.py's mode 2) inflated inside the decoding pass
// (plan.cpp), by the zstd library vendored in third_party/zstd.
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc {

// Memory of an inflated plane, taken from the planes of earlier passes where one is free (a fresh
// block's pages are faulted in and zeroed by the kernel, as the output blocks' were: plan_bind.cpp),
// and given back to them when it goes out of scope. Not zeroed.
class Scratch {
 public:
  explicit Scratch(std::size_t n);
  Scratch(Scratch&& other) noexcept;
  Scratch& operator=(Scratch&&) = delete;
  Scratch(const Scratch&) = delete;
  ~Scratch();
  uint8_t* data() const { return p_; }

 private:
  uint8_t* p_ = nullptr;
  std::size_t size_ = 0;  // (what it holds, at least what was asked for)
};

// The zstd frames in `data` (size bytes) inflated into exactly `n` bytes at `out`; throws Corrupt
// (bytes.h) for a damaged frame or any other size. Never writes past out + n, and allocates no
// window (one pass into `out`), so a hostile frame costs no memory beyond the plane.
void unzstd(const uint8_t* data, std::size_t size, uint8_t* out, std::size_t n);

}  // namespace zc
