// Byte planes of 2- and 4-byte floats (codecs/floatplanes.py frames them): the split for
// the encoder, and a decoder that rebuilds the values chunk by chunk on the thread pool,
// entropy-decoding each chunk's rANS substreams straight into a cache-sized buffer.
//
// A value's bits are rotated left by one (the sign becomes the lowest bit, the exponent
// fills the top byte); plane 0 holds the top byte of every value, plane width-1 the lowest.
#include "floatplanes.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "pool.h"
#include "rans.h"

namespace zc::planes {

namespace {

constexpr uint64_t CHUNK = 1 << 16;  // values a task splits or rebuilds when no plane is rANS-coded

template <class U>
inline U rotl1(U u) { return static_cast<U>(u << 1 | u >> (8 * sizeof(U) - 1)); }

// Restrict-qualified locals so the compiler vectorizes (byte stores may alias anything).
template <class U>
void split_chunk(const U* __restrict v, uint64_t m, uint8_t* const* plane, uint64_t lo) {
  if constexpr (sizeof(U) == 4) {
    uint8_t* __restrict p0 = plane[0] + lo;
    uint8_t* __restrict p1 = plane[1] + lo;
    uint8_t* __restrict p2 = plane[2] + lo;
    uint8_t* __restrict p3 = plane[3] + lo;
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = rotl1(v[i]);
      p0[i] = static_cast<uint8_t>(r >> 24);
      p1[i] = static_cast<uint8_t>(r >> 16);
      p2[i] = static_cast<uint8_t>(r >> 8);
      p3[i] = static_cast<uint8_t>(r);
    }
  } else {
    uint8_t* __restrict p0 = plane[0] + lo;
    uint8_t* __restrict p1 = plane[1] + lo;
    for (uint64_t i = 0; i < m; ++i) {
      uint16_t r = rotl1(v[i]);
      p0[i] = static_cast<uint8_t>(r >> 8);
      p1[i] = static_cast<uint8_t>(r);
    }
  }
}

template <class U>
void merge_chunk(U* __restrict o, uint64_t m, const uint8_t* const* src) {
  if constexpr (sizeof(U) == 4) {
    const uint8_t* __restrict p0 = src[0];
    const uint8_t* __restrict p1 = src[1];
    const uint8_t* __restrict p2 = src[2];
    const uint8_t* __restrict p3 = src[3];
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = uint32_t(p0[i]) << 24 | uint32_t(p1[i]) << 16 | uint32_t(p2[i]) << 8 | p3[i];
      o[i] = r >> 1 | r << 31;
    }
  } else {
    const uint8_t* __restrict p0 = src[0];
    const uint8_t* __restrict p1 = src[1];
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = uint32_t(p0[i]) << 8 | p1[i];
      o[i] = static_cast<uint16_t>(r >> 1 | r << 15);
    }
  }
}

struct Plane {
  int mode = RAW;
  const uint8_t* raw = nullptr;
  rans::Parsed coded;
};

template <class U>
void merge_into(U* out, uint64_t n, std::vector<Plane>& planes, int threads) {
  constexpr int W = sizeof(U);
  uint64_t chunk = 0;
  for (auto& p : planes)
    if (p.mode == RANS && p.coded.L > 0) {
      if (chunk && p.coded.chunk != chunk) throw Corrupt("planes cut into different substreams");
      chunk = p.coded.chunk;
    }
  if (!chunk) chunk = CHUNK;
  if (chunk > (uint64_t(1) << 24)) throw Corrupt("substreams over 2^24 values");
  parallel_for((n + chunk - 1) / chunk, threads, [&](std::size_t c) {
    uint64_t lo = c * chunk, m = std::min(n - lo, chunk);
    thread_local std::vector<uint8_t> buf;  // reused: a fresh 256 KB block would be mmapped
    const uint8_t* src[W];
    for (int k = 0; k < W; ++k) {
      Plane& p = planes[k];
      if (p.mode == RAW) {
        src[k] = p.raw + lo;
      } else {
        if (buf.size() < W * m) buf.resize(W * m);
        uint8_t* b = buf.data() + k * m;
        if (p.coded.L == 0)
          std::memset(b, static_cast<int>(p.coded.constant), m);
        else
          rans::decode_substream(p.coded, c, b);
        src[k] = b;
      }
    }
    merge_chunk<U>(out + lo, m, src);
  });
}

}  // namespace

template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads) {
  parallel_for((n + CHUNK - 1) / CHUNK, threads, [&](std::size_t c) {
    uint64_t lo = c * CHUNK, m = std::min(n - lo, CHUNK);
    split_chunk<U>(v + lo, m, plane, lo);
  });
}

void merge(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes, void* out,
           int threads) {
  if (width != 2 && width != 4) throw Corrupt("planes of a width other than 2 or 4 bytes");
  std::vector<Plane> planes(width);
  for (int k = 0; k < width; ++k) {
    planes[k].mode = modes[k];
    if (modes[k] == RAW) {
      if (sizes[k] != n) throw Corrupt("raw plane has the wrong length");
      planes[k].raw = data[k];
    } else if (modes[k] == RANS) {
      Reader r(data[k], sizes[k]);
      planes[k].coded = rans::parse(r, n);
      if (r.left()) throw Corrupt("bytes left after a plane");
      if (planes[k].coded.nsym > 256) throw Corrupt("plane symbols wider than a byte");
    } else {
      throw Corrupt("unknown plane mode");
    }
  }
  if (width == 2)
    merge_into(static_cast<uint16_t*>(out), n, planes, threads);
  else
    merge_into(static_cast<uint32_t*>(out), n, planes, threads);
}

void histogram(const uint8_t* p, uint64_t n, uint64_t* out) {
  uint32_t h[4][256] = {};
  std::fill(out, out + 256, 0);
  for (uint64_t lo = 0; lo < n; lo += uint64_t(1) << 30) {  // 32-bit counters per gigabyte
    uint64_t hi = std::min(n, lo + (uint64_t(1) << 30)), i = lo;
    for (; i + 4 <= hi; i += 4) ++h[0][p[i]], ++h[1][p[i + 1]], ++h[2][p[i + 2]], ++h[3][p[i + 3]];
    for (; i < hi; ++i) ++h[0][p[i]];
    for (int s = 0; s < 256; ++s) {
      out[s] += uint64_t(h[0][s]) + h[1][s] + h[2][s] + h[3][s];
      h[0][s] = h[1][s] = h[2][s] = h[3][s] = 0;
    }
  }
}

template void split<uint16_t>(const uint16_t*, uint64_t, uint8_t* const*, int);
template void split<uint32_t>(const uint32_t*, uint64_t, uint8_t* const*, int);

}  // namespace zc::planes
