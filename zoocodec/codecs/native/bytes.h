// Byte-level helpers shared by the coders: a growing writer and a bounds-checked
// reader of untrusted input. Every read past the end or out of range throws Corrupt.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace zc {

// A stream that cannot be decoded (truncated, inconsistent, or not ours).
struct Corrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bytes written to `out`, then the `tail` blocks in order (large coded bodies, moved in
// rather than copied: the caller copies everything once, into its own result).
struct Writer {
  std::vector<uint8_t> out;
  std::vector<std::vector<uint8_t>> tail;  // nothing goes to `out` once a block is here
  std::size_t size() const {
    std::size_t n = out.size();
    for (const auto& b : tail) n += b.size();
    return n;
  }
  void copy_to(uint8_t* dst) const {
    std::memcpy(dst, out.data(), out.size());
    dst += out.size();
    for (const auto& b : tail) {
      std::memcpy(dst, b.data(), b.size());
      dst += b.size();
    }
  }
  void byte(uint8_t b) { out.push_back(b); }
  void uvarint(uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<uint8_t>(v) | 0x80);
      v >>= 7;
    }
    out.push_back(static_cast<uint8_t>(v));
  }
  void bytes(const uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }
};

struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  Reader(const uint8_t* data, std::size_t n) : p(data), end(data + n) {}
  std::size_t left() const { return static_cast<std::size_t>(end - p); }
  uint8_t byte() {
    if (p >= end) throw Corrupt("truncated");
    return *p++;
  }
  // A varint no larger than `limit`.
  uint64_t uvarint(uint64_t limit) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        if (v > limit) throw Corrupt("value " + std::to_string(v) + " over its limit " + std::to_string(limit));
        return v;
      }
    }
    throw Corrupt("varint too long");
  }
  const uint8_t* take(std::size_t n) {
    if (n > left()) throw Corrupt("truncated");
    const uint8_t* q = p;
    p += n;
    return q;
  }
};

}  // namespace zc
