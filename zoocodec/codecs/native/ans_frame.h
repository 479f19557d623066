// The `ans` coder's frame (zoocodec/codecs/ans.py), parsed in one place for every decoder:
// the CPU's batched decode (plan.cpp) and the GPU's host side (kernels/decode.py, through
// the `ans_frame` binding).
//   mode byte: 0 rANS, 1 packed ints + zstd (not parsed here: ans.py inflates it)
//   rANS: lo (signed varint), k (a byte, raw low bits per symbol; 0 unless the alphabet is
//         wider than 2^16), then for k == 0 the full native stream of rans.h.
#pragma once
#include <cstdint>
#include <string>

#include "bytes.h"
#include "rans.h"

namespace zc::ans {

constexpr uint8_t RANS = 0, PACKED = 1;

struct Frame {
  int64_t lo = 0;
  rans::Parsed stream;
};

inline int64_t svarint(Reader& r) {
  uint64_t u = r.uvarint(uint64_t(1) << 62);
  return (u & 1) ? -static_cast<int64_t>((u + 1) >> 1) : static_cast<int64_t>(u >> 1);
}

// Parses a frame of `count` symbols into *f. Returns false for the frames this parser leaves
// to ans.py (packed, or raw low bits); throws Corrupt on anything inconsistent.
inline bool parse_frame(Reader& r, uint64_t count, Frame* f) {
  const uint8_t mode = r.byte();
  if (mode == PACKED) return false;
  if (mode != RANS) throw Corrupt("unknown coder mode " + std::to_string(mode));
  f->lo = svarint(r);
  const uint8_t k = r.byte();
  if (k > 48) throw Corrupt(std::to_string(k) + " raw low bits");
  if (k) return false;
  f->stream = rans::parse_whole(r, count);
  return true;
}

}  // namespace zc::ans
